"""How reliable are the verdicts of engine_eval and engine_metrics? A repeated-run check on the reference Engine.

For each of ``--runs`` runs (default 20) it gathers, on every Engine at the
same time, one eval run of the reference suite and one metrics window of
``--probes`` probe turns, then compares each Engine with the baseline
Engine (2.3.0) exactly as the modules do (the same module_utils functions,
without the Ansible wrapper):

- A/A: a second, independent 2.3.0 Engine (its own random seed), and the
  safe patch 2.3.1: any ``fail`` is a false alarm;
- each planted regression (bad-errors, bad-latency, bad-answers,
  bad-cache, bad-warning, bad-minor): anything but ``fail`` is a miss, and
  a ``fail`` of another signal than the planted one is reported too.

By default the baseline Engine is observed first and the others one after
the other, the way the modules are used (baseline, upgrade, compare);
``--parallel`` observes them all at once, the way a canary is compared
with its control cohort. Every Engine runs with its own
``ENGINE_SIM_SEED``, so the A/A pair is not one random stream twice; runs
reuse the containers, each run drawing fresh turns. Latency is measured on
this machine: other load on it shows up as latency noise (the load average
is printed with each run). Prints one table per module.

``--batched`` is the batched A/A run instead: a fleet of 10 Engines, every
gate on, a patch rollout in batches of 1-5-4 as the playbook runs it. The
whole fleet's baseline is taken once up front (the stale reference); then
each run, per batch: a baseline of the batch's Engines taken together right
before it (the same-concurrency reference), the swap to the other of two
releases identical in behaviour (2.3.0 and 2.3.1, alternating by run), and
the verify step, every Engine of the batch running its evals and its
metrics window at once while the next batch's Engines, not yet upgraded,
are observed in the same window (the control reference). A bad-latency and
a bad-errors Engine are verified with the 5- and 4-Engine batches, against
the references of a batch-mate. A false rollback is a fleet Engine whose
evals fail or whose signals fail against the reference the playbook uses
(the control cohort, else the fresh baseline); the stale baseline's
verdicts are counted too, with and without the rule that holds back a
load-sensitive regression there. Needs the Docker daemon and the images
(``make images``)::

    .venv/bin/python benchmarks/verdict_reliability.py --runs 20
    .venv/bin/python benchmarks/verdict_reliability.py --batched --runs 20
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests import _TREE  # noqa: E402  (importing tests makes ansible_collections.engineops.fleet importable)

from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDocker  # noqa: E402
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import (  # noqa: E402
    EngineClient,
    EngineClientError,
    EngineConnectionError,
    EngineHTTPError,
)
from ansible_collections.engineops.fleet.plugins.module_utils._evals import (  # noqa: E402
    EvalThresholds,
    TurnOutcome,
    compare_runs,
    parse_suite,
    run_suite,
)
from ansible_collections.engineops.fleet.plugins.module_utils._signals import (  # noqa: E402
    DEFAULT_PROBE_MESSAGES,
    LogOptions,
    ProbeOutcome,
    Thresholds,
    build_window,
    compare_windows,
    cpu_pressure,
    host_cpu_stall,
    merge_windows,
    parse_logs,
    run_probes,
    window_conditions,
)
from tests.testbed.fleet import Fleet, free_port_block  # noqa: E402

SUITE = ROOT / "evals" / "reference-suite.yml"
# label -> (release, planted eval regression?, failing metrics signals expected)
ENGINES = {
    "baseline": ("baseline", None, None),
    "A/A": ("baseline", False, set()),
    "patch": ("patch", False, set()),
    "bad-errors": ("bad-errors", True, {"error_rate", "new_templates"}),
    "bad-latency": ("bad-latency", False, {"latency"}),
    "bad-answers": ("bad-answers", True, set()),
    "bad-cache": ("bad-cache", False, {"cache_hit_ratio"}),
    "bad-warning": ("bad-warning", False, {"new_templates"}),
    "bad-minor": ("bad-minor", True, set()),
}


def start_engines(prefix: str) -> tuple[list[Fleet], dict[str, object]]:
    fleets, engines = [], {}
    labels = list(ENGINES)
    for index, label in enumerate(labels):
        fleet = Fleet(f"{prefix}{index}", 1, release=ENGINES[label][0], first_port=free_port_block(1), kind="bench")
        fleets.append(fleet)
        engines[label] = fleet.engines[0]

    def up(pair):
        index, fleet = pair
        fleet.down()
        fleet.seed(fleet.engines[0])
        fleet.start(fleet.engines[0], ENGINE_SIM_SEED=str(1000 + index * 7919))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(up, enumerate(fleets)))
    for fleet in fleets:
        fleet.wait_healthy(120)
    return fleets, engines


def eval_run(engine, suite, run_id: str) -> list[dict]:
    def execute(case, task, timeout):
        client = EngineClient(engine.url, key=engine.key, timeout=10)
        try:
            result = client.execute(case.message, task, media=case.media, direct=case.direct, timeout=timeout)
        except EngineHTTPError as exc:
            return TurnOutcome(error={"error": exc.code or f"HTTP_{exc.status}", "message": str(exc)})
        except EngineConnectionError as exc:
            return TurnOutcome(error={"error": "CONNECTION_ERROR", "message": str(exc)})
        finally:
            client.close()
        error = result.error or (None if result.completed else {"error": "INCOMPLETE", "message": ""})
        return TurnOutcome(text=result.text, tool_calls=list(result.tool_calls), usage=result.usage.to_dict(),
                           elapsed_ms=result.elapsed_ms, error=error)

    return run_suite(suite, run_id, execute, concurrency=4, default_timeout=60)


def metrics_window(engine, docker: EngineDocker, run_id: str, probes: int, concurrent_engines: int = 1) -> dict:
    since = time.time()

    def execute(message, task):
        client = EngineClient(engine.url, key=engine.key, timeout=10)
        outcome = ProbeOutcome(task_id=task)
        try:
            result = client.execute(message, task, timeout=60)
        except EngineHTTPError as exc:
            outcome.error, outcome.http_status = exc.code or f"HTTP_{exc.status}", exc.status
            return outcome
        except EngineClientError:
            outcome.error = "CONNECTION_ERROR"
            return outcome
        finally:
            client.close()
        outcome.started, outcome.completed, outcome.elapsed_ms = result.started, result.completed, result.elapsed_ms
        outcome.error = (result.error or {}).get("error") if result.error else (None if result.completed else "INCOMPLETE")
        outcome.input_tokens, outcome.cache_hit_tokens = result.usage.input_tokens, result.usage.cache_hit_tokens
        outcome.usage_events = result.usage.calls
        return outcome

    stall, started = host_cpu_stall(), time.monotonic()
    outcomes = run_probes(list(DEFAULT_PROBE_MESSAGES), probes, run_id, execute, concurrency=4)
    conditions = window_conditions(concurrent_engines, 4, probes,
                                   cpu_pressure(stall, host_cpu_stall(), time.monotonic() - started))
    time.sleep(1.0)
    logs = parse_logs(docker.logs(engine.name, since=since), LogOptions())
    return build_window(logs, outcomes, since, time.time(), {"name": engine.name}, conditions=conditions)


def one_run(run: int, engines: dict, docker: EngineDocker, suite, probes: int,
            parallel: bool) -> tuple[dict, dict]:
    """Every Engine's eval records and metrics window: the baseline first, then the others one by one (as the
    modules are used: baseline, upgrade, compare), or all side by side (as with a control cohort)."""
    def gather(label):
        run_id = f"bench{run}x{label.replace('/', '')}"
        return label, eval_run(engines[label], suite, run_id), metrics_window(engines[label], docker, run_id, probes)

    def control():
        return metrics_window(engines["baseline"], docker, f"bench{run}xcontrol", probes)

    labels = list(engines)
    if parallel:
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            gathered = list(pool.map(gather, labels))
    else:
        gathered = [gather(label) for label in labels]
    records = {label: r for label, r, _w in gathered}
    windows = {label: w for label, _r, w in gathered}
    # The environment control: the baseline Engine once more, last. If it fails against its own first window, the
    # machine itself changed during the run (other load), and latency verdicts of that run say so, not the releases.
    windows["baseline (again)"] = control()
    return records, windows


def table(title: str, rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = [title, "  ".join(str(h).ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def report(key: str, n: int, eval_verdicts, metric_verdicts, wrong_signal, cases: int, args) -> str:
    rows = []
    for label, (_release, planted_eval, _signals) in ENGINES.items():
        if label == "baseline":
            continue
        c = eval_verdicts[key, label]
        if planted_eval:
            rows.append((label, "regression", f"{c['fail']}/{n}", f"{n - c['fail']}/{n}", c["inconclusive"], c["pass"]))
        else:
            rows.append((label, "no eval regression", f"{c['fail']}/{n}", "-", c["inconclusive"], c["pass"]))
    text = table(f"engine_eval, reference suite ({cases} cases, repeat 1), {n} runs", rows,
                 ("release", "planted", "fail", "missed", "inconclusive", "pass"))
    rows = []
    for label, (_release, _planted_eval, planted) in ENGINES.items():
        if label == "baseline":
            continue
        c = metric_verdicts[key, label]
        other = ", ".join(f"{k} x{v}" for k, v in sorted(wrong_signal[key, label].items())) or "-"
        rows.append((label, ", ".join(sorted(planted)) or "none", f"{c['fail']}/{n}",
                     f"{n - c['fail']}/{n}" if planted else "-", c["inconclusive"], c["pass"], other))
    how = "side by side" if args.parallel else "one after the other"
    header = ("release", "planted signal", "fail", "missed", "inconclusive", "pass", "signal deviations")
    title = f"engine_metrics, {args.probes} probe turns per window ({how}), defaults, {n} runs"
    return text + "\n\n" + table(title, rows, header)


# ---------------------------------------------------------------- the batched A/A run

FLEET_SIZE = 10
BATCHES = ((0,), (1, 2, 3, 4, 5), (6, 7, 8, 9))  # 10 %, 50 %, 100 % of 10 Engines, as ansible's serial cuts them
PLANTED = {"bad-latency": {"latency"}, "bad-errors": {"error_rate", "new_templates"}}
PLANTED_IN = (1, 2)  # the batches the planted Engines are verified with


def batched_run(run: int, fleet: Fleet, planted: dict, docker: EngineDocker, suite, probes: int, stale: dict,
                stale_evals: dict) -> list[dict]:
    """One rollout of the fleet to the other behaviour-identical release; one row per verified Engine."""
    release = "patch" if run % 2 else "baseline"
    rows = []
    for number, batch in enumerate(BATCHES):
        engines = [fleet.engines[i] for i in batch]
        extra = list(planted.items()) if number in PLANTED_IN else []
        together = len(engines) + len(extra)
        mate = engines[0]  # the planted Engines stand in for an upgraded batch-mate: they get its references

        def step(tagged, n):
            """One play step in lockstep: every Engine's evals at once, then every metrics window at once."""
            evaluated = [(key, engine, tag) for key, engine, tag in tagged if not key.startswith("control")]
            with ThreadPoolExecutor(max_workers=len(tagged)) as pool:
                records = dict(zip([k for k, _e, _t in evaluated], pool.map(
                    lambda job: eval_run(job[1], suite, f"b{run}x{number}x{job[2]}"), evaluated)))
                windows = dict(zip([k for k, _e, _t in tagged], pool.map(
                    lambda job: metrics_window(job[1], docker, f"b{run}x{number}x{job[2]}", probes, n), tagged)))
            return {key: (records.get(key), windows[key]) for key, _e, _t in tagged}

        members = [(e.name, e, e.name[-2:]) for e in engines] + [(label, e, label[4:]) for label, e in extra]
        fresh = step([(k, e, "base" + t) for k, e, t in members], together)  # the just-in-time baseline
        with ThreadPoolExecutor(max_workers=len(engines)) as pool:
            list(pool.map(lambda pair: fleet.swap(pair[0], release, ENGINE_SIM_SEED=str(1000 + pair[1] * 7919 + run)),
                          zip(engines, batch)))
        fleet.wait_healthy(120, engines)
        upcoming = [fleet.engines[i] for i in BATCHES[number + 1]] if number + 1 < len(BATCHES) else []
        # The verify step, with the next batch's Engines observed alongside: every window's concurrency.
        verified = step([(k, e, "v" + t) for k, e, t in members]
                        + [("control " + e.name, e, "c" + e.name[-2:]) for e in upcoming], together + len(upcoming))
        control = merge_windows([verified["control " + e.name][1] for e in upcoming]) if upcoming else None
        for key in [e.name for e in engines] + [label for label, _e in extra]:
            ref_name = mate.name if key in PLANTED else key
            records, window = verified[key]
            base_records, base_window = fresh[ref_name]
            row = {"run": run, "batch": number + 1, "engine": key, "planted": PLANTED.get(key, set()),
                   "evals": compare_runs({"cases": base_records}, records, EvalThresholds()),
                   "fresh": compare_windows(base_window, window, Thresholds(seed=run)),
                   "control": None if control is None else compare_windows(control, window, Thresholds(seed=run),
                                                                           kind="control")}
            row["stale"] = compare_windows(stale[ref_name], window, Thresholds(seed=run))
            row["stale_eval"] = compare_runs({"cases": stale_evals[ref_name]}, records, EvalThresholds())["verdict"]
            row["eval"] = row["evals"]["verdict"]
            row["pressure"] = (window.get("conditions") or {}).get("cpu_pressure")
            rows.append(row)
    return rows


def playbook_metrics(row: dict) -> dict:
    """The comparison the playbook acts on: the control cohort where there is one, else the fresh baseline."""
    return row["control"] or row["fresh"]


def batched_report(rows: list[dict], runs: int) -> str:
    fleet_rows = [r for r in rows if not r["planted"]]
    planted_rows = [r for r in rows if r["planted"]]

    def old_rule(comparison):  # the verdict before load-sensitive regressions were held back
        return any(s["verdict"] == "fail" or s.get("verdict_under_same_conditions") == "fail"
                   for s in comparison["signals"].values())

    out = []
    kinds = (("control cohort (same window)", lambda r: r["control"]),
             ("fresh baseline (same concurrency)", lambda r: r["fresh"]),
             ("stale up-front baseline", lambda r: r["stale"]))
    table_rows = []
    for title, pick in kinds:
        judged = [(r, pick(r)) for r in fleet_rows if pick(r) is not None]
        counts = Counter(c["verdict"] for _r, c in judged)
        old = sum(1 for _r, c in judged if old_rule(c))
        table_rows.append((title, len(judged), counts["fail"], counts["inconclusive"], counts["pass"], old))
    out.append(table(f"Batched A/A ({FLEET_SIZE} Engines, batches 1-5-4, every gate on), {runs} runs: "
                     "engine_metrics verdicts of the fleet's Engines", table_rows,
                     ("reference", "verdicts", "fail", "inconclusive", "pass", "fail without the rule")))
    evals = Counter(r["eval"] for r in fleet_rows)
    false_rollbacks = [r for r in fleet_rows if r["eval"] == "fail" or playbook_metrics(r)["verdict"] == "fail"]
    stale_evals = Counter(r["stale_eval"] for r in fleet_rows)
    out.append(f"engine_eval of the fleet's Engines against their fresh baseline: {evals['fail']} fail, "
               f"{evals['inconclusive']} inconclusive, {evals['pass']} pass; against the stale up-front one: "
               f"{stale_evals['fail']} fail, {stale_evals['inconclusive']} inconclusive, {stale_evals['pass']} pass")
    out.append(f"False rollbacks (evals fail, or signals fail against the control cohort, else the fresh baseline): "
               f"{len(false_rollbacks)} of {len(fleet_rows)} verified Engines")
    for r in false_rollbacks:
        out.append(f"  run {r['run']} batch {r['batch']} {r['engine']}: evals {r['eval']} "
                   f"({'; '.join(r['evals']['reasons'])[:300]}); signals {playbook_metrics(r)['verdict']} "
                   f"({'; '.join(playbook_metrics(r)['reasons'])[:300]})")
    planted_table = []
    for label, signals in PLANTED.items():
        mine = [r for r in planted_rows if r["engine"] == label]
        for title, pick in kinds + (("the playbook's (control, else fresh)", playbook_metrics),):
            judged = [pick(r) for r in mine if pick(r) is not None]
            caught = sum(1 for c in judged if c["verdict"] == "fail" and signals <= set(c["failing"]))
            planted_table.append((label, title, f"{caught}/{len(judged)}",
                                  Counter(c["verdict"] for c in judged)["inconclusive"]))
    out.append(table("Planted regressions verified in the same batches", planted_table,
                     ("release", "reference", "caught (planted signals fail)", "inconclusive")))
    for r in planted_rows:
        comparison = playbook_metrics(r)
        if comparison["verdict"] != "fail" or not r["planted"] <= set(comparison["failing"]):
            out.append(f"  missed: run {r['run']} batch {r['batch']} {r['engine']}: {comparison['verdict']} "
                       f"({'; '.join(comparison['reasons'])[:500]})")
    pressures = [r["pressure"] for r in fleet_rows if r["pressure"] is not None]
    if pressures:
        out.append(f"CPU pressure during the verify probes: median {sorted(pressures)[len(pressures) // 2]:.0%}, "
                   f"max {max(pressures):.0%}")
    return "\n\n".join(out)


def main_batched(args) -> int:
    with open(SUITE, encoding="utf-8") as handle:
        suite = parse_suite(yaml.safe_load(handle), str(SUITE))
    docker = EngineDocker()
    prefix = f"bench{os.getpid()}"
    started = time.monotonic()
    print(f"engineops.fleet from {_TREE}; batched A/A, {args.runs} runs", flush=True)
    fleet = Fleet(prefix, FLEET_SIZE, release="baseline", first_port=free_port_block(FLEET_SIZE), kind="bench")
    planted_fleets = {label: Fleet(f"{prefix}p{i}", 1, release=label, first_port=free_port_block(1), kind="bench")
                      for i, label in enumerate(PLANTED)}
    rows: list[dict] = []
    try:
        def up(pair):
            index, (owner, engine) = pair
            owner.seed(engine)
            owner.start(engine, ENGINE_SIM_SEED=str(1000 + index * 7919))

        everyone = [(fleet, e) for e in fleet.engines] + [(f, f.engines[0]) for f in planted_fleets.values()]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(up, enumerate(everyone)))
        for owner in [fleet, *planted_fleets.values()]:
            owner.wait_healthy(120)
        planted = {label: f.engines[0] for label, f in planted_fleets.items()}
        with ThreadPoolExecutor(max_workers=FLEET_SIZE) as pool:  # the old up-front pre-flight, every Engine at once
            up_front = dict(zip([e.name for e in fleet.engines], pool.map(
                lambda e: (eval_run(e, suite, f"pre{e.name[-2:]}"),
                           metrics_window(e, docker, f"pre{e.name[-2:]}", args.probes, FLEET_SIZE)), fleet.engines)))
        stale = {name: w for name, (_r, w) in up_front.items()}
        stale_evals = {name: r for name, (r, _w) in up_front.items()}
        for run in range(1, args.runs + 1):
            load = os.getloadavg()[0]
            mine = batched_run(run, fleet, planted, docker, suite, args.probes, stale, stale_evals)
            rows += mine
            marks = " ".join(f"{r['engine'][-2:] if not r['planted'] else r['engine']}="
                             f"{r['eval'][0]}{playbook_metrics(r)['verdict'][0]}" for r in mine)
            print(f"run {run:>2}: {marks} ({time.monotonic() - started:.0f}s, load {load:.1f}-"
                  f"{os.getloadavg()[0]:.1f})", flush=True)
    finally:
        if not args.keep:
            for owner in [fleet, *planted_fleets.values()]:
                owner.down()
    print()
    print(batched_report(rows, args.runs))
    print(f"\n{args.runs} runs in {time.monotonic() - started:.0f}s on {os.cpu_count()} CPUs")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--probes", type=int, default=80, help="probe turns per metrics window (default 80)")
    parser.add_argument("--parallel", action="store_true",
                        help="gather every Engine's window at the same time instead of one after the other")
    parser.add_argument("--batched", action="store_true",
                        help="the batched A/A run: a 10-Engine fleet upgraded in batches of 1-5-4, every gate on")
    parser.add_argument("--keep", action="store_true", help="leave the Engines running")
    args = parser.parse_args(argv)
    if args.batched:
        return main_batched(args)
    with open(SUITE, encoding="utf-8") as handle:
        suite = parse_suite(yaml.safe_load(handle), str(SUITE))
    docker = EngineDocker()  # DOCKER_HOST and the other DOCKER_* variables, else the local socket
    prefix = f"bench{os.getpid()}-"
    started = time.monotonic()
    print(f"engineops.fleet from {_TREE}; {args.runs} runs", flush=True)
    fleets, engines = start_engines(prefix)
    eval_verdicts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    metric_verdicts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    wrong_signal: dict[tuple[str, str], Counter] = defaultdict(Counter)
    notes: list[str] = []
    drift_runs: list[int] = []
    try:
        for run in range(1, args.runs + 1):
            load = os.getloadavg()[0]
            records, windows = one_run(run, engines, docker, suite, args.probes, args.parallel)
            baseline_eval = {"cases": records["baseline"]}
            control = compare_windows(windows["baseline"], windows["baseline (again)"], Thresholds(seed=run))
            drifted = control["verdict"] == "fail"
            if drifted:
                drift_runs.append(run)
            line = [f"run {run:>2}{' (drift)' if drifted else ''}:"]
            for label, (_release, planted_eval, planted_signals) in ENGINES.items():
                if label == "baseline":
                    continue
                ev = compare_runs(baseline_eval, records[label], EvalThresholds())
                mt = compare_windows(windows["baseline"], windows[label], Thresholds(seed=run))
                for key in ("all",) + (() if drifted else ("steady",)):
                    eval_verdicts[key, label][ev["verdict"]] += 1
                    metric_verdicts[key, label][mt["verdict"]] += 1
                    for signal in mt["failing"]:
                        if signal not in planted_signals:
                            wrong_signal[key, label][signal] += 1
                    for signal in planted_signals:
                        if signal not in mt["failing"]:
                            wrong_signal[key, label]["missed " + signal] += 1
                line.append(f"{label} e={ev['verdict'][0]} m={mt['verdict'][0]}")
                if (ev["verdict"] == "fail") is not bool(planted_eval) or ev["verdict"] == "inconclusive":
                    notes.append(f"  eval {label}: {ev['verdict']}: {'; '.join(ev['reasons'])[:400]}")
                if (mt["verdict"] == "fail") is not bool(planted_signals) or mt["verdict"] == "inconclusive" \
                        or set(mt["failing"]) != planted_signals:
                    notes.append(f"  metrics {label}: {mt['verdict']}: {'; '.join(mt['reasons'])[:400]}")
            print(" ".join(line), f"({time.monotonic() - started:.0f}s, load {load:.1f}-{os.getloadavg()[0]:.1f})",
                  flush=True)
            for note in notes:
                print(note, flush=True)
            notes.clear()
    finally:
        if not args.keep:
            for fleet in fleets:
                fleet.down()

    print()
    print(report("all", args.runs, eval_verdicts, metric_verdicts, wrong_signal, len(suite.cases), args))
    steady = args.runs - len(drift_runs)
    if drift_runs and steady:
        print(f"\nRuns {', '.join(map(str, drift_runs))} drifted (the baseline Engine failed against itself): "
              f"the same figures over the {steady} steady runs:")
        print(report("steady", steady, eval_verdicts, metric_verdicts, wrong_signal, len(suite.cases), args))
    n = args.runs
    print(f"\n{n} runs in {time.monotonic() - started:.0f}s; load average (1 min) at the end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
