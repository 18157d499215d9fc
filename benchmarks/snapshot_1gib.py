# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_snapshot's two copy paths on a >= 1 GiB brain under steady writes, against ``cp`` of the same file.

    .venv/bin/python benchmarks/snapshot_1gib.py [--size-mb 1100] [--rounds 3] [--output FILE]

1. Seeds a brain of ``--size-mb`` MiB on a new volume with the reference
   Engine's ``seed.py --size-mb`` in a throwaway container, then starts the
   Engine on it with its background learning job writing every 0.2 s.
2. Keeps turns flowing (``LoadGenerator``, ``--workers`` back to back) from a
   process of its own, so its threads take no GIL from the copy measured.
3. Per round, in turn: ``cp`` of the brain file on this host (the volume's
   mount point; not a consistent copy of a live brain, only the speed
   floor), the same followed by ``sync`` of the copy (on disk, as a
   snapshot is), ``docker cp`` of it (the daemon's own archive path,
   the floor for anything going through the Docker API), then
   ``BrainTransfer.snapshot_to`` both ways ``state=present`` can take:
   *direct* (SQLite's online backup API reading the brain through the
   volume's mount point into the snapshot folder, fsync, the sha256 of the
   copy on disk) and *archive* (the online ``.backup`` inside the Engine,
   the stream out through ``get_archive`` with the sha256 on the way, fsync,
   the read-back check, the clean-up), each followed by ``PRAGMA
   integrity_check`` and the schema fingerprint of the copy (the rest of
   ``state=present``).
4. Once, the whole module through ``ansible`` (``--module``, on by default;
   ``copy_method=auto``, which takes the direct path here).

Prints the figures, each path's throughput against ``cp``'s (the target:
at least 0.5, snapshot plus verification) and writes them as JSON to
``--output`` (default ``tests/output/bench/snapshot_1gib.json``, ignored by
git). Everything it starts carries the label ``io.engineops.testbed=<prefix>``
and is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tests  # noqa: E402  (makes the collection importable as ansible_collections.engineops.fleet)
from ansible_collections.engineops.fleet.plugins.module_utils._brain import (  # noqa: E402
    integrity_check,
    schema_fingerprint,
)
from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import BrainTransfer, DirectSource  # noqa: E402
from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDocker  # noqa: E402
from tests.testbed.fleet import DATA_PATH, Fleet, free_port_block  # noqa: E402
from tests.testbed.loadgen import LoadGenerator  # noqa: E402

MIB = 1024 * 1024
TARGET_THROUGHPUT_VS_CP = 0.5
PATHS = ("direct", "archive")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def seed_big_brain(fleet: Fleet, engine, size_mb: float) -> float:
    """A brain of about ``size_mb`` MiB on the Engine's new volume; returns the seconds it took."""
    started = time.monotonic()
    fleet.docker.volumes.create(engine.volume, labels=fleet.labels())
    fleet.docker.containers.run(
        fleet.image,
        ["python3", "/app/seed.py", "--rows", "2000", "--size-mb", str(size_mb), "--db", DATA_PATH],
        volumes={engine.volume: {"bind": "/data", "mode": "rw"}},
        labels=fleet.labels(), remove=True,
    )
    return time.monotonic() - started


def _load_process(engine, workers: int, pause: float, stop, results) -> None:
    """Turns to ``engine`` until ``stop`` is set, in a process of its own (so it takes no GIL from the copy)."""
    generator = LoadGenerator([engine], workers_per_engine=workers, seconds=24 * 3600, pause=pause).start()
    stop.wait()
    report = generator.stop()
    results.put([(t.outcome, t.started_at) for t in report.turns])


class BackgroundLoad:
    def __init__(self, engine, workers: int, pause: float) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        self.results = context.Queue()
        self.process = context.Process(target=_load_process, args=(engine, workers, pause, self.stop_event, self.results),
                                       daemon=True)
        self.process.start()

    def stop(self) -> list[tuple[str, float]]:
        self.stop_event.set()
        turns = self.results.get(timeout=120)
        self.process.join(30)
        return turns


def time_docker_cp(container: str, path: str, dst: str) -> float:
    """The daemon's own archive path, through the docker CLI: the floor for any copy through the Docker API."""
    started = time.monotonic()
    subprocess.run(["docker", "cp", f"{container}:{path}", dst], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    os.unlink(dst)
    return elapsed


def time_cp(src: str, dst: str, durable: bool = False) -> float:
    """``cp`` (into the page cache), or with ``durable`` ``cp`` then ``sync`` of the copy (on disk, like a snapshot)."""
    started = time.monotonic()
    subprocess.run(["cp", src, dst], check=True)
    if durable:
        subprocess.run(["sync", dst], check=True)
    elapsed = time.monotonic() - started
    os.unlink(dst)
    return elapsed


def time_snapshot(transfer: BrainTransfer, docker: EngineDocker, name: str, dst: str, verify: bool,
                  path: str) -> dict:
    facts = docker.facts(name)
    started = time.monotonic()
    if path == "direct":
        direct = transfer.direct_source(facts)
        if direct.path is None:
            raise SystemExit(f"bench: the direct path is not possible here: {direct.problem}")
    else:
        direct = DirectSource(None)
    copy = transfer.snapshot_to(facts, dst, direct=direct)
    figures = {"copy_path": time.monotonic() - started, "backup": copy.seconds["backup"],
               "transfer_and_check": copy.seconds.get("transfer", copy.seconds.get("hash")), "bytes": copy.file.size,
               "method": copy.method, "copy_method": copy.copy_method}
    if verify:
        started = time.monotonic()
        ok = integrity_check(dst).ok
        schema_fingerprint(dst)
        figures["integrity_and_fingerprint"] = time.monotonic() - started
        figures["integrity_ok"] = ok
    os.unlink(dst)
    return figures


def time_module(name: str, snapshot_dir: str, scratch: str) -> tuple[float, dict]:
    """One ``state=present`` through the ansible CLI; the result is read back from the tree callback."""
    tree = os.path.join(scratch, "tree")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=tests._TREE, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree",
               ANSIBLE_CALLBACK_TREE_DIR=tree, ANSIBLE_LOCAL_TEMP=os.path.join(scratch, "ansible-tmp"))
    args = json.dumps({"name": name, "snapshot_dir": snapshot_dir, "timeout": 1800})
    started = time.monotonic()
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-i", "localhost,",
                           "-c", "local", "-m", "engineops.fleet.engine_snapshot", "-a", args],
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    try:
        with open(os.path.join(tree, "localhost"), encoding="utf-8") as handle:
            result = json.load(handle)
    except (OSError, ValueError):
        raise SystemExit(f"bench: the module run left no result:\n{proc.stdout}\n{proc.stderr}") from None
    if result.get("failed"):
        raise SystemExit(f"bench: the module failed: {result.get('msg')}")
    return elapsed, result


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1100.0, help="brain size in MiB (default 1100, >= 1 GiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="load generator workers (default 2)")
    parser.add_argument("--pause", type=float, default=0.05, help="pause of each worker between turns (default 0.05 s)")
    parser.add_argument("--no-module", dest="module", action="store_false", help="skip the run through ansible")
    parser.add_argument("--output", default=os.path.join(ROOT, "tests", "output", "bench", "snapshot_1gib.json"))
    args = parser.parse_args(argv)

    fleet = Fleet("bench" + secrets.token_hex(3), 1, kind="bench", first_port=free_port_block(1))
    engine = fleet.engines[0]
    scratch = tempfile.mkdtemp(prefix="snapshot-bench-")
    load = None
    try:
        log(f"seeding a {args.size_mb:g} MiB brain on {engine.volume}")
        seed_seconds = seed_big_brain(fleet, engine, args.size_mb)
        fleet.start(engine, ENGINE_SIM_BACKGROUND_WRITE_SECONDS="0.2")
        fleet.wait_healthy(300)
        brain = fleet.brain_path(engine)
        brain_bytes = os.path.getsize(brain)
        log(f"brain {brain_bytes / MIB:.0f} MiB seeded in {seed_seconds:.0f}s; Engine up, starting load")
        load = BackgroundLoad(engine, args.workers, args.pause)
        time.sleep(5)

        load_before = list(os.getloadavg())
        docker = EngineDocker(timeout=600)
        transfer = BrainTransfer(docker, timeout=1800)
        cp_runs, cps_runs, dcp_runs, windows = [], [], [], []
        snap_runs: dict[str, list[dict]] = {path: [] for path in PATHS}
        for round_no in range(1, args.rounds + 1):
            cp_runs.append(time_cp(brain, os.path.join(scratch, "cp.db")))
            cps_runs.append(time_cp(brain, os.path.join(scratch, "cp-sync.db"), durable=True))
            dcp_runs.append(time_docker_cp(engine.name, DATA_PATH, os.path.join(scratch, "docker-cp.db")))
            for path in PATHS:
                started = time.time()
                figures = time_snapshot(transfer, docker, engine.name, os.path.join(scratch, "snap.db"), verify=True,
                                        path=path)
                windows.append((started, time.time()))
                snap_runs[path].append(figures)
                log(f"round {round_no}: cp {cp_runs[-1]:.2f}s, cp+sync {cps_runs[-1]:.2f}s, docker cp "
                    f"{dcp_runs[-1]:.2f}s; {path}: copy path {figures['copy_path']:.2f}s (backup {figures['backup']:.2f}s, "
                    f"transfer or hash {figures['transfer_and_check']:.2f}s), integrity+fingerprint "
                    f"{figures['integrity_and_fingerprint']:.2f}s")
                if not figures["integrity_ok"]:
                    raise SystemExit(f"bench: a snapshot ({path}) failed integrity_check")
        module = None
        if args.module:
            started = time.time()
            elapsed, result = time_module(engine.name, os.path.join(scratch, "snapshots"), scratch)
            windows.append((started, time.time()))
            module = {"seconds": round(elapsed, 3), "backup": result.get("backup"), "size": result["snapshot"]["size"]}
            log(f"module through ansible: {elapsed:.2f}s ({(result.get('backup') or {}).get('copy_method')})")
        turns = load.stop()
        load = None
        kinds = [turn[0] for turn in turns]
        outcomes = {outcome: kinds.count(outcome) for outcome in sorted(set(kinds))}
        during = [turn for turn in turns if any(a <= turn[1] <= b for a, b in windows)]
        cp_median = median(cp_runs)
        figures = {
            "brain_bytes": brain_bytes,
            "brain_mib": round(brain_bytes / MIB, 1),
            "rounds": args.rounds,
            "cp_seconds": [round(v, 3) for v in cp_runs],
            "cp_median_seconds": cp_median,
            "cp_mib_per_s": round(brain_bytes / MIB / cp_median, 1),
            "cp_sync_seconds": [round(v, 3) for v in cps_runs],
            "cp_sync_median_seconds": median(cps_runs),
            "docker_cp_seconds": [round(v, 3) for v in dcp_runs],
            "docker_cp_median_seconds": median(dcp_runs),
            "target_throughput_vs_cp": TARGET_THROUGHPUT_VS_CP,
            "paths": {},
        }
        for path, runs in snap_runs.items():
            copy_median = median([r["copy_path"] for r in runs])
            present = median([r["copy_path"] + r["integrity_and_fingerprint"] for r in runs])
            figures["paths"][path] = {
                "method": runs[0]["method"],
                "copy_path_seconds": [round(r["copy_path"], 3) for r in runs],
                "copy_path_median_seconds": copy_median,
                "backup_median_seconds": median([r["backup"] for r in runs]),
                "transfer_or_hash_median_seconds": median([r["transfer_and_check"] for r in runs]),
                "integrity_and_fingerprint_median_seconds": median([r["integrity_and_fingerprint"] for r in runs]),
                "present_without_ansible_median_seconds": present,
                "present_mib_per_s": round(brain_bytes / MIB / present, 1),
                # Throughput against cp's: cp's seconds over the snapshot's (1 = as fast as cp).
                "throughput_vs_cp": round(cp_median / present, 2),
                "throughput_vs_cp_sync": round(median(cps_runs) / present, 2),
                "throughput_vs_docker_cp": round(median(dcp_runs) / present, 2),
                "meets_target": cp_median / present >= TARGET_THROUGHPUT_VS_CP,
            }
        figures.update({
            "module": module,
            "load": {"workers": args.workers, "pause": args.pause, "turns": len(turns), "outcomes": outcomes,
                     "turns_per_second_during_snapshots": round(len(during) / sum(b - a for a, b in windows), 1),
                     "turns_started_during_snapshots": len(during),
                     "completed_during_snapshots": sum(turn[0] == "completed" for turn in during)},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "docker": fleet.docker.version().get("Version"),
                        "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
        })
        print(json.dumps(figures, indent=2))
        print(f"cp {cp_median:.2f}s, cp+sync {figures['cp_sync_median_seconds']:.2f}s, docker cp "
              f"{figures['docker_cp_median_seconds']:.2f}s ({figures['brain_mib']:.0f} MiB brain, "
              f"{figures['load']['completed_during_snapshots']} turns completed during the snapshots)")
        for path, row in figures["paths"].items():
            print(f"{path}: snapshot + verification {row['present_without_ansible_median_seconds']:.2f}s, throughput "
                  f"{row['throughput_vs_cp']:.2f}x cp's (target {TARGET_THROUGHPUT_VS_CP}x: "
                  f"{'met' if row['meets_target'] else 'missed'}), {row['throughput_vs_cp_sync']:.2f}x cp+sync's, "
                  f"{row['throughput_vs_docker_cp']:.2f}x docker cp's")
        if args.output:
            os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
            with open(args.output, "w", encoding="utf-8") as handle:
                json.dump(figures, handle, indent=2)
                handle.write("\n")
            log(f"figures written to {args.output}")
        return 0
    finally:
        if load is not None:
            load.stop()
        fleet.down()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
