# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A patch rollout of a fleet of per-user Engines: the collection against a plain playbook and a bare shell loop.

    .venv/bin/python benchmarks/rollout.py [--engines 10,50] [--modes batched,sequential]
        [--upgraders collection,collection-fast,playbook,loop] [--output FILE]

For each fleet size and rollout mode, each upgrader runs on a fresh fleet of
the same shape (``--engines`` Engines of ``--from``, default the baseline
2.3.0, moved to ``--to``, default the patch 2.3.1), one after the other:

- ``collection``: ``ansible-playbook playbooks/upgrade.yml`` of this checkout,
  every gate at its default (pre-flight snapshots, eval and signal baselines,
  evals and probes after the swap);
- ``collection-fast``: the same with ``engine_eval_enabled=false`` and
  ``engine_metrics_enabled=false`` (no evals, no probes);
- ``playbook``: ``benchmarks/peers/upgrade_plain.yml``, community.docker's
  docker_container recreating each container with the new image, then a
  ``uri`` health gate;
- ``loop``: ``benchmarks/peers/upgrade_loop.sh``, docker stop, docker run with
  the same arguments, curl ``/health`` until ok.

``batched`` is batches of 10 %, 50 %, 100 % (ansible-core's serial rule, the
Engines of a batch side by side), ``sequential`` one Engine at a time. While an
upgrader runs, every Engine has one turn in flight (``LoadGenerator``, 50 ms
between turns) and a prober asks its ``/health`` every 50 ms. From these and
from the Docker daemon's events it reports, per run:

- wall time, and the lower bound: per batch, the slowest Engine's
  stop-to-healthy (old container's stop to its exit, plus the new one's start
  to its first ok) plus the time the upgrader's gates need at that Engine's
  speed (the eval suite's turns and the signal probes, at their configured
  concurrency, at the Engine's median turn time on the new release), summed
  over the batches; and wall / lower bound;
- each Engine's outage (first non-ok ``/health`` or refused turn, up to the
  first ok of the new container) against its boot-to-healthy (the new
  container's StartedAt to its first ok);
- lost, refused and unreachable turns;
- the controller's CPU seconds (``getrusage(RUSAGE_CHILDREN)`` around the
  upgrader's process) and peak RSS (the sum over its process tree, sampled),
  per Engine.

Prints a markdown table and writes JSON to ``--output`` (default
``tests/output/bench/rollout.json``). Everything it starts carries the label
``io.engineops.testbed=<prefix>`` and is removed at the end. Timings depend on
the machine: compare the upgraders of one run, not runs of different days.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import docker  # noqa: E402
import yaml  # noqa: E402

import tests  # noqa: E402  (makes the collection importable as ansible_collections.engineops.fleet)
from ansible_collections.engineops.fleet.plugins.module_utils._evals import parse_suite  # noqa: E402
from tests.engine_sim import releases  # noqa: E402
from tests.testbed.fleet import LABEL, Fleet, free_port_block, remove_orphans  # noqa: E402
from tests.testbed.images import image_ref  # noqa: E402
from tests.testbed.loadgen import OUTCOMES, LoadGenerator  # noqa: E402

UPGRADERS = ("collection", "collection-fast", "playbook", "loop")
MODES = ("batched", "sequential")
BATCHES = ("10%", "50%", "100%")
PROBE_INTERVAL = 0.05
PEER_COLLECTIONS = os.path.join(ROOT, ".ansible", "peer-collections")
SUITE = os.path.join(ROOT, "evals", "reference-suite.yml")
# The collection's gate settings at their role defaults (roles/verify/defaults, engine_metrics' probe_concurrency).
GATES = {"eval_concurrency": 4, "metrics_probes": 60, "probe_concurrency": 4}
BAD_TURNS = ("refused", "unreachable", "http_error", "lost")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ pure parts


def serial_batches(hosts: list[str], serial: list[str] | int) -> list[list[str]]:
    """``hosts`` cut into batches as ansible-core's ``serial`` cuts a play's hosts.

    Each percentage is of all the hosts, rounded down, at least 1; the last
    value repeats until every host is in a batch.
    """
    values = [serial] if isinstance(serial, int) else list(serial)
    sizes = []
    for value in values:
        if isinstance(value, str) and value.endswith("%"):
            sizes.append(max(1, int(len(hosts) * float(value[:-1]) / 100)))
        else:
            sizes.append(max(1, int(value)))
    batches, start, index = [], 0, 0
    while start < len(hosts):
        size = sizes[min(index, len(sizes) - 1)]
        batches.append(hosts[start:start + size])
        start += size
        index += 1
    return batches


@dataclass
class Outage:
    """One Engine's outage as the prober saw it (times are epoch seconds)."""

    start: float | None  # first non-ok /health or refused turn before the new container's first ok
    first_ok: float | None  # first ok /health of the new container
    last_ok_before: float | None  # the old release's last ok /health

    @property
    def seconds(self) -> float | None:
        if self.start is None or self.first_ok is None:
            return None
        return self.first_ok - self.start


def outage(health: list[tuple[float, bool]], turns: list[tuple[float, bool]], new_start: float) -> Outage:
    """The outage around the swap to the container started at ``new_start``.

    ``health`` is the prober's samples (time, ok) and ``turns`` the turns'
    (start time, answered) with answered false for a turn refused, unreachable
    or cut, both in time order. The outage ends at the first ok sample at or
    after ``new_start``. It begins at the earliest bad sample after the old
    release's last ok sample, or bad turn after its last answered turn,
    whichever comes first.
    """
    first_ok = next((t for t, ok in health if ok and t >= new_start), None)
    if first_ok is None:
        return Outage(None, None, None)
    last_ok = max((t for t, ok in health if ok and t < new_start), default=None)
    last_answered = max((t for t, ok in turns if ok and t < new_start), default=float("-inf"))
    floor = last_ok if last_ok is not None else float("-inf")
    bad = [t for t, ok in health if not ok and floor < t < first_ok]
    bad += [t for t, ok in turns if not ok and last_answered < t < first_ok]
    return Outage(min(bad) if bad else first_ok, first_ok, last_ok)


def gate_seconds(turn_seconds: float, eval_turns: int, eval_concurrency: int, probes: int,
                 probe_concurrency: int) -> float:
    """What the post-swap gates need at an Engine's speed: the eval suite's turns then the probes, each
    ``concurrency`` at a time, every turn taking ``turn_seconds``."""
    rounds = math.ceil(eval_turns / eval_concurrency) if eval_turns else 0
    rounds += math.ceil(probes / probe_concurrency) if probes else 0
    return rounds * turn_seconds


def lower_bound(batches: list[list[str]], stop_to_healthy: dict[str, float], gates: dict[str, float]) -> float:
    """Per batch, the slowest Engine's stop-to-healthy plus its gates; summed over the batches."""
    return sum(max(stop_to_healthy[e] + gates.get(e, 0.0) for e in batch) for batch in batches)


def spread(values: list[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def parse_docker_time(value: str) -> float:
    """Docker's RFC 3339 time with nanoseconds (``2026-12-03T11:41:22.123456789Z``) as epoch seconds."""
    stamp, _dot, fraction = value.rstrip("Z").partition(".")
    seconds = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc).timestamp()
    return seconds + (float("0." + fraction) if fraction else 0.0)


# ------------------------------------------------------------------ measuring


class Prober:
    """``GET /health`` on every Engine every 50 ms, each Engine in a thread of its own."""

    def __init__(self, engines) -> None:
        self.engines = engines
        self.samples: dict[str, list[tuple[float, bool, float]]] = {e.name: [] for e in engines}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._probe, args=(e,), daemon=True) for e in engines]

    def start(self) -> Prober:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _probe(self, engine) -> None:
        client = engine.client(timeout=1)
        samples = self.samples[engine.name]
        while not self._stop.is_set():
            started = time.time()
            report = client.health(timeout=1)
            samples.append((started, report.ready, time.time() - started))
            self._stop.wait(max(0.0, PROBE_INTERVAL - (time.time() - started)))


class TreeSampler:
    """The summed RSS of a process and its descendants, sampled every 0.2 s; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            parents: dict[int, int] = {}
            rss: dict[int, int] = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry)] = int(fields[1])
                rss[int(entry)] = int(fields[21]) * page
            tree, frontier = {self.pid}, [self.pid]
            while frontier:
                parent = frontier.pop()
                children = [p for p, pp in parents.items() if pp == parent and p not in tree]
                tree.update(children)
                frontier.extend(children)
            self.peak = max(self.peak, sum(rss.get(p, 0) for p in tree))
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.peak


def run_measured(cmd: list[str], env: dict[str, str], stdin: str | None, log_path: str) -> dict:
    """Run the upgrader; its wall time, exit code, the controller's CPU seconds and peak RSS of its tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
        sampler = TreeSampler(proc.pid)
        proc.communicate(stdin)
    wall = time.monotonic() - started
    peak = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rc": proc.returncode, "wall_seconds": wall, "cpu_seconds": cpu, "peak_rss_bytes": peak}


# ------------------------------------------------------------------ upgraders


def ansible_env(scratch: str, collections_path: str, forks: int) -> dict[str, str]:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_LOCAL_TEMP=os.path.join(scratch, "tmp"),
                ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_FORKS=str(forks), ANSIBLE_HOST_KEY_CHECKING="0")


def write_inventory(fleet: Fleet, scratch: str) -> str:
    hosts = {e.name: {"engine_url": e.url, "engine_key": e.key, "engine_port": e.port, "engine_volume": e.volume}
             for e in fleet.engines}
    inventory = {"all": {
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "engine_snapshot_dir": os.path.join(scratch, "snapshots"),
            "engine_baseline_dir": os.path.join(scratch, "baselines"),
            "engine_ledger_dir": os.path.join(scratch, "ledger"),
        },
        "children": {"engines": {"hosts": hosts}},
    }}
    path = os.path.join(scratch, "inventory.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(inventory, handle)
    return path


def upgrader_command(upgrader: str, mode: str, fleet: Fleet, target: str, scratch: str
                     ) -> tuple[list[str], dict[str, str], str | None]:
    """The command line, environment and standard input of one upgrader run."""
    bindir = os.path.dirname(sys.executable)
    forks = len(fleet.engines)
    serial: list[str] | int = 1 if mode == "sequential" else list(BATCHES)
    if upgrader in ("collection", "collection-fast"):
        extra = {"engine_target_version": target, "engine_rollout": mode, "engine_batches": list(BATCHES),
                 "engine_rollout_id": f"bench-{os.path.basename(scratch)}"}
        if upgrader == "collection-fast":
            extra.update(engine_eval_enabled=False, engine_metrics_enabled=False)
        cmd = [os.path.join(bindir, "ansible-playbook"), "playbooks/upgrade.yml", "-i", write_inventory(fleet, scratch),
               "-e", json.dumps(extra)]
        return cmd, ansible_env(scratch, tests._TREE, forks), None
    if upgrader == "playbook":
        extra = {"target_version": target, "peer_serial": serial}
        cmd = [os.path.join(bindir, "ansible-playbook"), os.path.join(ROOT, "benchmarks", "peers", "upgrade_plain.yml"),
               "-i", write_inventory(fleet, scratch), "-e", json.dumps(extra)]
        return cmd, ansible_env(scratch, PEER_COLLECTIONS, forks), None
    if upgrader == "loop":
        words = {e.name: f"{e.name}:{e.port}:{e.volume}" for e in fleet.engines}
        batches = serial_batches([e.name for e in fleet.engines], serial)
        stdin = "".join(" ".join(words[name] for name in batch) + "\n" for batch in batches)
        return ["bash", os.path.join(ROOT, "benchmarks", "peers", "upgrade_loop.sh"), target], dict(os.environ), stdin
    raise ValueError(f"unknown upgrader {upgrader!r}; known: {', '.join(UPGRADERS)}")


# ------------------------------------------------------------------ one run


class EventRecorder:
    """The Docker daemon's container events of a fleet, streamed while it runs (the daemon keeps only the last
    few hundred for ``since``): ``events`` is a list of {id, name, old_name, action, time}."""

    def __init__(self, fleet: Fleet) -> None:
        self.events: list[dict] = []
        self._stream = fleet.docker.events(decode=True, filters={"type": "container", "label": f"{LABEL}={fleet.prefix}"})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                attributes = event.get("Actor", {}).get("Attributes", {})
                self.events.append({"id": event.get("Actor", {}).get("ID", ""), "name": attributes.get("name", ""),
                                    "old_name": attributes.get("oldName", "").lstrip("/"),
                                    "action": event.get("Action", ""), "time": event["timeNano"] / 1e9})
        except Exception:  # noqa: BLE001 - the stream ends with an error when it is closed
            return

    def stop(self) -> list[dict]:
        time.sleep(0.5)  # the last events of the run reach the stream
        self._stream.close()
        self._thread.join(5)
        return self.events


def old_container_exits(events: list[dict], name: str, new_id: str) -> list[float]:
    """When the containers that were called ``name`` before ``new_id`` exited (``die``), renamed or not."""
    ids = {e["id"] for e in events if name in (e["name"], e["old_name"]) and e["id"] != new_id}
    return sorted(e["time"] for e in events if e["id"] in ids and e["action"] == "die")


def engine_figures(raw: dict, target_image: str, gates_on: bool, eval_turns: int) -> dict[str, dict]:
    """Per Engine: its outage, boot-to-healthy, stop time, median turn time on the new release and gates.

    ``raw`` is what a run recorded: ``health`` (name -> [time, ok, seconds]), ``turns`` (the load generator's
    turns as dicts), ``events`` (the Docker daemon's, see :class:`EventRecorder`), ``started_at``, ``images``
    and ``ids`` (name -> the final container's StartedAt, image and id).
    """
    figures = {}
    for name, samples in raw["health"].items():
        new_start = parse_docker_time(raw["started_at"][name])
        health = [(t, ok) for t, ok, _elapsed in samples]
        mine = [t for t in raw["turns"] if t["engine"] == name]
        out = outage(health, [(t["started_at"], t["outcome"] not in BAD_TURNS) for t in mine], new_start)
        dies = [t for t in old_container_exits(raw["events"], name, raw["ids"][name]) if t < new_start]
        stop_seconds = (dies[-1] - out.start) if dies and out.start is not None and dies[-1] >= out.start else 0.0
        boot = (out.first_ok - new_start) if out.first_ok is not None else None
        after = [t["elapsed_ms"] / 1000 for t in mine
                 if t["outcome"] == "completed" and out.first_ok and t["started_at"] >= out.first_ok]
        turn_seconds = statistics.median(after) if after else None
        gates = 0.0
        if gates_on and turn_seconds is not None:
            gates = gate_seconds(turn_seconds, eval_turns, GATES["eval_concurrency"], GATES["metrics_probes"],
                                 GATES["probe_concurrency"])
        outcomes: dict[str, int] = {}
        for turn in mine:
            outcomes[turn["outcome"]] = outcomes.get(turn["outcome"], 0) + 1
        figures[name] = {
            "upgraded": raw["images"][name] == target_image,
            "outage_seconds": None if out.seconds is None else round(out.seconds, 3),
            "boot_to_healthy_seconds": None if boot is None else round(boot, 3),
            "stop_seconds": round(stop_seconds, 3),
            "stop_to_healthy_seconds": None if boot is None else round(stop_seconds + boot, 3),
            "turn_seconds": None if turn_seconds is None else round(turn_seconds, 3),
            "gate_seconds": round(gates, 3),
            "health_samples": len(health),
            "health_slower_than_0_5s": sum(1 for _t, _ok, elapsed in samples if elapsed > 0.5),
            "turns": outcomes,
        }
    return figures


def summarise(run: dict, raw: dict, eval_turns: int) -> dict:
    """``run`` (what was measured around the upgrader) completed with the figures computed from ``raw``."""
    gates_on = run["upgrader"] == "collection"
    per_engine = engine_figures(raw, run["to"], gates_on, eval_turns)
    names = list(raw["health"])
    batches = serial_batches(names, 1 if run["mode"] == "sequential" else list(BATCHES))
    # An Engine left on (or rolled back to) the old release has no swap to measure: it counts for nothing.
    upgraded = {n: f for n, f in per_engine.items() if f["upgraded"]}
    bound = None
    if all(f["stop_to_healthy_seconds"] is not None for f in upgraded.values()):
        bound = lower_bound(batches, {n: upgraded[n]["stop_to_healthy_seconds"] if n in upgraded else 0.0 for n in names},
                            {n: f["gate_seconds"] for n, f in upgraded.items()})
    counts = {outcome: 0 for outcome in OUTCOMES}
    for turn in raw["turns"]:
        counts[turn["outcome"]] += 1
    engines = run["engines"]
    return {
        **run,
        "batches": [len(b) for b in batches],
        "upgraded": len(upgraded),
        "lower_bound_seconds": None if bound is None else round(bound, 2),
        "wall_over_lower_bound": None if not bound else round(run["wall_seconds"] / bound, 2),
        "gates_in_lower_bound": gates_on,
        "outage_seconds": spread([f["outage_seconds"] for f in upgraded.values()]),
        "boot_to_healthy_seconds": spread([f["boot_to_healthy_seconds"] for f in upgraded.values()]),
        "stop_seconds": spread([f["stop_seconds"] for f in upgraded.values()]),
        "turns": counts,
        "controller_cpu_seconds_per_engine": round(run["controller_cpu_seconds"] / engines, 3),
        "controller_peak_rss_mib_per_engine": round(run["controller_peak_rss_mib"] / engines, 1),
        "per_engine": per_engine,
    }


def one_run(engines: int, mode: str, upgrader: str, args) -> tuple[dict, dict]:
    """One upgrader on a fresh fleet: what was measured around it, and the raw samples."""
    prefix = "bench" + secrets.token_hex(3)
    fleet = Fleet(prefix, engines, release=args.from_release, first_port=free_port_block(engines), kind="bench")
    scratch = tempfile.mkdtemp(prefix=f"rollout-bench-{upgrader}-")
    target = releases.tag(args.to_release)
    load = prober = recorder = None
    try:
        log(f"{engines} Engines, {mode}, {upgrader}: fleet {prefix} of {fleet.image} coming up")
        fleet.up(wait=180)
        recorder = EventRecorder(fleet)
        prober = Prober(fleet.engines).start()
        load = LoadGenerator(fleet.engines, seconds=6 * 3600, pause=PROBE_INTERVAL, turn_timeout=60).start()
        time.sleep(args.settle)
        cmd, env, stdin = upgrader_command(upgrader, mode, fleet, target, scratch)
        log(f"  running {upgrader}: {' '.join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[:2])}")
        measured = run_measured(cmd, env, stdin, os.path.join(scratch, "upgrader.log"))
        log(f"  {upgrader} exited {measured['rc']} after {measured['wall_seconds']:.1f}s")
        try:
            fleet.wait_healthy(120)
        except TimeoutError as exc:
            log(f"  {exc}")
        time.sleep(args.settle)
        report = load.stop()
        load = None
        prober.stop()
        events, recorder = recorder.stop(), None
        containers = {e.name: fleet.container(e).attrs for e in fleet.engines}
        raw = {"health": prober.samples, "turns": [vars(t) for t in report.turns],
               "events": events,
               "started_at": {n: c["State"]["StartedAt"] for n, c in containers.items()},
               "images": {n: c["Config"]["Image"] for n, c in containers.items()},
               "ids": {n: c["Id"] for n, c in containers.items()}}
        log_tail = ""
        if measured["rc"] != 0:
            with open(os.path.join(scratch, "upgrader.log"), encoding="utf-8", errors="replace") as handle:
                log_tail = handle.read()[-4000:]
            log(f"  the upgrader failed; the end of its output:\n{log_tail}")
        run = {
            "engines": engines, "mode": mode, "upgrader": upgrader, "from": fleet.image,
            "to": image_ref(args.to_release), "rc": measured["rc"],
            "wall_seconds": round(measured["wall_seconds"], 2),
            "controller_cpu_seconds": round(measured["cpu_seconds"], 2),
            "controller_peak_rss_mib": round(measured["peak_rss_bytes"] / 2**20, 1),
            "upgrader_output_tail": log_tail,
        }
        return run, raw
    finally:
        if load is not None:
            load.stop()
        if prober is not None:
            prober.stop()
        if recorder is not None:
            recorder.stop()
        fleet.down()
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------ report


def _fmt(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _range(figures: dict) -> str:
    if figures["median"] is None:
        return "-"
    return f"{figures['median']:.1f} ({figures['min']:.1f}-{figures['max']:.1f})"


def markdown(runs: list[dict]) -> str:
    lines = [
        "| Engines | mode | upgrader | upgraded | wall s | lower bound s | wall / bound | outage s, median (min-max) "
        "| boot-to-healthy s | lost | refused | unreachable | CPU s / Engine | peak RSS MiB / Engine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        failed = "" if r["rc"] == 0 else f" (rc {r['rc']})"
        lines.append(
            f"| {r['engines']} | {r['mode']} | {r['upgrader']} | {r['upgraded']}/{r['engines']}{failed} "
            f"| {r['wall_seconds']:.0f} "
            f"| {_fmt(r['lower_bound_seconds'])} | {_fmt(r['wall_over_lower_bound'])} | {_range(r['outage_seconds'])} "
            f"| {_range(r['boot_to_healthy_seconds'])} | {r['turns']['lost']} | {r['turns']['refused']} "
            f"| {r['turns']['unreachable']} | {r['controller_cpu_seconds_per_engine']:.2f} "
            f"| {r['controller_peak_rss_mib_per_engine']:.1f} |")
    ratios = fast_against_peer(runs)
    if ratios:
        lines += ["", "| Engines | mode | collection-fast wall / playbook wall | collection wall / playbook wall |",
                  "|---|---|---|---|"]
        lines += [f"| {n} | {m} | {_fmt(fast)} | {_fmt(full)} |" for (n, m), (fast, full) in ratios.items()]
    return "\n".join(lines)


def fast_against_peer(runs: list[dict]) -> dict[tuple[int, str], tuple[float | None, float | None]]:
    """(Engines, mode) -> (collection-fast wall / playbook wall, collection wall / playbook wall)."""
    walls = {(r["engines"], r["mode"], r["upgrader"]): r["wall_seconds"] for r in runs}
    ratios = {}
    for (n, m, upgrader), peer in walls.items():
        if upgrader != "playbook" or not peer:
            continue
        fast, full = walls.get((n, m, "collection-fast")), walls.get((n, m, "collection"))
        ratios[n, m] = (None if fast is None else round(fast / peer, 2), None if full is None else round(full / peer, 2))
    return ratios


def machine() -> dict:
    with open("/proc/meminfo", encoding="ascii") as handle:
        mem_kib = int(handle.readline().split()[1])
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "memory_gib": round(mem_kib / 2**20, 1), "python": platform.python_version(),
            "load_average": list(os.getloadavg())}


def raw_path(raw_dir: str, run: dict) -> str:
    return os.path.join(raw_dir, f"{run['engines']}-{run['mode']}-{run['upgrader']}.json")


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="10", help="fleet sizes, comma-separated (default 10; e.g. 10,50)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"rollout modes (default {','.join(MODES)})")
    parser.add_argument("--upgraders", default=",".join(UPGRADERS), help=f"upgraders (default {','.join(UPGRADERS)})")
    parser.add_argument("--from", dest="from_release", default="baseline", help="release name of the fleet")
    parser.add_argument("--to", dest="to_release", default="patch", help="release name to upgrade to")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of traffic before and after the upgrader")
    parser.add_argument("--output", default=os.path.join(ROOT, "tests", "output", "bench", "rollout.json"))
    parser.add_argument("--recompute", action="store_true",
                        help="recompute the figures of --output from the raw samples beside it (rollout-raw/)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(v) for v in _csv(args.engines)]
    except ValueError:
        parser.error(f"--engines {args.engines!r}: comma-separated whole numbers, e.g. 10,50")
    modes, upgraders = _csv(args.modes), _csv(args.upgraders)
    for name, values, known in (("--modes", modes, MODES), ("--upgraders", upgraders, UPGRADERS)):
        unknown = sorted(set(values) - set(known))
        if unknown or not values:
            parser.error(f"{name} {','.join(values)!r}: unknown {', '.join(unknown) or 'empty'}; choose from {', '.join(known)}")
    if any(n < 1 for n in sizes):
        parser.error(f"--engines {args.engines!r}: each size must be at least 1")
    for release in (args.from_release, args.to_release):
        releases.release(release)  # a clear error for an unknown name
    if not args.recompute and "playbook" in upgraders and not os.path.exists(
            os.path.join(PEER_COLLECTIONS, "ansible_collections", "community", "docker", "MANIFEST.json")):
        parser.error(f"community.docker is not in {PEER_COLLECTIONS}: run `make bench-rollout` (or "
                     f"{sys.executable} benchmarks/peers/community_docker.py {PEER_COLLECTIONS}) first")

    with open(SUITE, encoding="utf-8") as handle:
        suite = parse_suite(yaml.safe_load(handle), SUITE)
    eval_turns = sum(case.repeat for case in suite.cases)
    raw_dir = os.path.join(os.path.dirname(os.path.abspath(args.output)), "rollout-raw")
    if args.recompute:
        with open(args.output, encoding="utf-8") as handle:
            figures = json.load(handle)
        runs = []
        for run in figures["runs"]:
            with open(raw_path(raw_dir, run), encoding="utf-8") as handle:
                runs.append(summarise(run, json.load(handle), eval_turns))
        figures["runs"] = runs
    else:
        remove_orphans(docker.from_env(timeout=120), kind="bench")
        figures = {"machine": machine(), "gates": {**GATES, "eval_turns": eval_turns}, "runs": []}
        os.makedirs(raw_dir, exist_ok=True)
        for size in sizes:
            for mode in modes:
                for upgrader in upgraders:
                    run, raw = one_run(size, mode, upgrader, args)
                    with open(raw_path(raw_dir, run), "w", encoding="utf-8") as handle:
                        json.dump(raw, handle)
                    figures["runs"].append(summarise(run, raw, eval_turns))
                    write_json(args.output, figures)
        figures["machine"]["load_average_after"] = list(os.getloadavg())
    write_json(args.output, figures)
    m = figures["machine"]
    shapes = sorted({f"{r['from']} -> {r['to']}" for r in figures["runs"]})
    print(f"{m['date']}, {m['cpus']} cores, {m['memory_gib']} GiB; {', '.join(shapes)}\n")
    print(markdown(figures["runs"]))
    log(f"figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
