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
is printed with each run). Prints one table per module. Needs the Docker
daemon and the images (``make images``)::

    .venv/bin/python benchmarks/verdict_reliability.py --runs 20
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
    parse_logs,
    run_probes,
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


def metrics_window(engine, docker: EngineDocker, run_id: str, probes: int) -> dict:
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

    outcomes = run_probes(list(DEFAULT_PROBE_MESSAGES), probes, run_id, execute, concurrency=4)
    time.sleep(1.0)
    logs = parse_logs(docker.logs(engine.name, since=since), LogOptions())
    return build_window(logs, outcomes, since, time.time(), {"name": engine.name})


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--probes", type=int, default=80, help="probe turns per metrics window (default 80)")
    parser.add_argument("--parallel", action="store_true",
                        help="gather every Engine's window at the same time instead of one after the other")
    parser.add_argument("--keep", action="store_true", help="leave the Engines running")
    args = parser.parse_args(argv)
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
