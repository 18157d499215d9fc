"""engine_metrics against the reference Engine's release matrix and its [GAP] profiles, through the real ansible CLI.

A baseline window on the good release (2.3.0); a compare on each other
release must fail exactly the signal that release regresses and pass every
other one: error rate (bad-errors; its new ERROR line is also a new
template), P99 (bad-latency), cache hit ratio (bad-cache), a new warning
(bad-warning); the safe patch, bad-answers (not a signal this module sees)
and the same release twice pass. Every window is 80 probe turns: enough for
an error-rate pass (about 52 turns without errors) and a P99 (50 samples)
even when 30 % of the turns fail.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

PROBES = 80
EXPECTED_FAILING = {
    "A/A": set(),
    "patch": set(),
    "bad-answers": set(),
    "bad-errors": {"error_rate", "new_templates"},
    "bad-latency": {"latency"},
    "bad-cache": {"cache_hit_ratio"},
    "bad-warning": {"new_templates"},
}


def bring_up(make_fleet, specs):
    """One single-Engine fleet per (label, release, repository), started side by side."""
    fleets = {label: make_fleet(1, release=release, repository=repository, start=False)
              for label, release, repository in specs}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda f: f.up(), fleets.values()))
    return {label: fleet.engines[0] for label, fleet in fleets.items()}


def metrics_args(engine, **extra):
    # The window starts now: each Engine's earlier traffic (another window) stays out.
    return {"name": engine.name, "engine_key": engine.key, "since": f"{time.time():.3f}", "probes": PROBES,
            **extra}


def test_metrics_release_matrix(make_fleet, run_module, tmp_path):
    releases = ("baseline", "patch", "bad-answers", "bad-errors", "bad-latency", "bad-cache", "bad-warning")
    engines = bring_up(make_fleet, [(r, r, "september-engine") for r in releases])
    baseline = tmp_path / "baselines" / "metrics.json"

    recorded = run_module("engine_metrics", metrics_args(engines["baseline"], mode="baseline", baseline=str(baseline)))
    assert not recorded["failed"] and recorded["changed"] is True, recorded.get("msg")
    window = json.loads(baseline.read_text())
    assert window == recorded["window"]
    assert window["turns"] == PROBES and window["failed_turns"] == 0 and window["engine"]["version"] == "2.3.0"
    assert window["logs"]["turns_started"] == PROBES and window["logs"]["duration_source"] == "extra.duration_ms"
    assert window["probes"]["completed"] == PROBES and 0.79 < window["probes"]["cache_hit_ratio"] < 0.81
    assert window["logs"]["templates"] == []

    # Each signal's detection, one release after the other: the baseline counts as of the same conditions however
    # long ago and under whatever load it was taken (the rule holding latency back has its own test below).
    one_after_another = {"reference_max_age": 3600, "load_tolerance": 1.0}
    results = {"A/A": run_module("engine_metrics", metrics_args(engines["baseline"], mode="compare",
                                                                baseline=str(baseline), **one_after_another))}
    for name in releases[1:]:
        results[name] = run_module("engine_metrics", metrics_args(engines[name], mode="compare",
                                                                  baseline=str(baseline), **one_after_another))
    summary = {name: (r.get("verdict"), set(r["comparison"]["failing"]), set(r["comparison"]["inconclusive"]))
               for name, r in results.items()}
    expected = {name: ("fail" if failing else "pass", failing, set()) for name, failing in EXPECTED_FAILING.items()}
    assert summary == expected, {n: r["comparison"]["reasons"] for n, r in results.items()}
    for name, result in results.items():
        assert result["failed"] is bool(EXPECTED_FAILING[name]), (name, result.get("msg"))

    signals = {name: r["comparison"]["signals"] for name, r in results.items()}
    errors = signals["bad-errors"]["error_rate"]
    assert errors["current"]["failed"] >= 10 and errors["p_value"] < 1e-3
    assert errors["errors_by_code"] == {"LLM_PROVIDER_ERROR": errors["current"]["failed"]}
    assert [t["code"] for t in signals["bad-errors"]["new_templates"]["new"]] == ["LLM_PROVIDER_ERROR"]
    assert "<num> Service Unavailable" in signals["bad-errors"]["new_templates"]["new"][0]["template"]
    latency = {s["source"]: s for s in signals["bad-latency"]["latency"]["sources"]}
    assert latency["log durations"]["verdict"] == "fail" and latency["log durations"]["p99_ratio"] > 3
    assert latency["probe latency"]["p99_ratio"] > 1  # its interval may straddle 1 on a busy machine; the logs decide
    cache = signals["bad-cache"]["cache_hit_ratio"]
    assert cache["current_ratio"] < 0.05 and cache["drop"] > 0.9
    warning = signals["bad-warning"]["new_templates"]["new"]
    assert [(t["level"], t["template"]) for t in warning] == [("WARNING", "Prompt template fallback used for task")]
    assert warning[0]["count"] == PROBES
    assert "Signals of" in results["bad-cache"]["msg"] and "cache hit ratio fell" in results["bad-cache"]["msg"]

    # Check mode reads the logs but sends no probe: the probe-only signal cannot decide.
    checked = run_module("engine_metrics", dict(metrics_args(engines["patch"], mode="compare", baseline=str(baseline)),
                                                since="10m"), check=True)
    assert "check mode" in checked["probes_skipped"] and checked["window"]["probes"] is None
    assert checked["window"]["logs"]["turns_started"] == PROBES  # the compare's own probes, earlier
    assert checked["comparison"]["signals"]["cache_hit_ratio"]["verdict"] == "inconclusive"
    assert checked["verdict"] == "inconclusive" and not checked["failed"]


@pytest.mark.parametrize("repository,source", [("september-engine-alt", "extra.elapsed_s"), ("engine", None)])
def test_metrics_completion_log_profiles_and_control_cohort(make_fleet, run_module, repository, source):
    """Each [GAP] setting of the completion line; the canary (patch) against a control cohort on the old release."""
    engines = bring_up(make_fleet, [("control-1", "baseline", repository), ("control-2", "baseline", repository),
                                    ("canary", "patch", repository)])
    since = f"{time.time():.3f}"
    controls = [run_module("engine_metrics", dict(metrics_args(engines[label], probes=PROBES // 2), since=since))
                for label in ("control-1", "control-2")]
    for control in controls:
        assert not control["failed"] and "verdict" not in control
        logs = control["window"]["logs"]
        assert logs["duration_source"] == source
        if source:
            assert logs["durations_count"] == PROBES // 2 and 50 < sorted(logs["durations_ms"])[PROBES // 4] < 400
        else:
            assert logs["durations_ms"] == [] and logs["duration_note"].startswith("no duration in logs")
    canary = run_module("engine_metrics", dict(metrics_args(engines["canary"], mode="compare",
                                                            control=[c["window"] for c in controls]), since=since))
    assert canary["verdict"] == "pass", canary["comparison"]["reasons"]
    sources = {s["source"]: s for s in canary["comparison"]["signals"]["latency"]["sources"]}
    assert sources["probe latency"]["verdict"] == "pass" and sources["probe latency"]["baseline_samples"] == PROBES
    assert sources["log durations"]["verdict"] == ("pass" if source else "unavailable")
    if not source:
        assert "no duration in logs" in sources["log durations"]["reason"]


def test_metrics_latency_needs_a_reference_of_the_same_conditions(make_fleet, run_module, tmp_path):
    """A slowdown of the same release against a stale baseline is inconclusive; a planted one against a control
    cohort observed over the same window fails.

    The stand-in for a busy machine is the reference Engine's ``[sim:sleep=N]`` directive in the probe messages:
    the same release, the same container, every turn slower because of what the client asked, not of the release.
    """
    engines = bring_up(make_fleet, [("old", "baseline", "september-engine"), ("control", "baseline", "september-engine"),
                                    ("canary", "bad-latency", "september-engine")])
    baseline = tmp_path / "metrics.json"
    recorded = run_module("engine_metrics", metrics_args(engines["old"], mode="baseline", baseline=str(baseline),
                                                         concurrent_engines=2))
    assert not recorded["failed"], recorded.get("msg")
    assert recorded["window"]["conditions"]["concurrent_engines"] == 2
    assert json.loads(baseline.read_text())["conditions"] == recorded["window"]["conditions"]
    time.sleep(3)  # the baseline is now older than reference_max_age below
    slow = ["What is the capital of France? [sim:sleep=700]", "What is 17 + 25? [sim:sleep=700]"]
    stale = run_module("engine_metrics", metrics_args(engines["old"], mode="compare", baseline=str(baseline),
                                                      probe_messages=slow, reference_max_age=2,
                                                      signals=["latency", "error_rate"]))
    assert not stale["failed"] and stale["verdict"] == "inconclusive", stale["comparison"]["reasons"]
    latency = stale["comparison"]["signals"]["latency"]
    assert latency["verdict_under_same_conditions"] == "fail"  # the slowdown is real: same conditions would fail it
    assert "but the baseline was taken" in latency["reason"] and "inconclusive without a same-window reference" \
        in latency["reason"]
    assert stale["comparison"]["signals"]["error_rate"]["verdict"] == "pass"
    assert not stale["comparison"]["reference"]["same_conditions"]

    # The control and the canary over one window (the control observed first, from the same start).
    since = f"{time.time():.3f}"
    control = run_module("engine_metrics", dict(metrics_args(engines["control"]), since=since))
    canary = run_module("engine_metrics", dict(metrics_args(engines["canary"], mode="compare",
                                                            control=[control["window"]]), since=since))
    assert canary["failed"] and canary["verdict"] == "fail", canary["comparison"]["reasons"]
    assert canary["comparison"]["failing"] == ["latency"], canary["comparison"]["reasons"]
    reference = canary["comparison"]["reference"]
    assert reference["same_conditions"] and "control cohort of 1 Engine(s)" in reference["description"]


def test_metrics_refuses_bad_options(docker_client, run_module, tmp_path):
    result = run_module("engine_metrics", {"engine_url": "http://127.0.0.1:9", "logs": False, "probes": 0,
                                           "duration_log_fields": ["duration"]})
    assert result["failed"] and "does not say its unit" in result["msg"]
    result = run_module("engine_metrics", {"engine_url": "http://127.0.0.1:9", "logs": False, "mode": "compare",
                                           "baseline": str(tmp_path / "none.json")})
    assert result["failed"] and "no such file" in result["msg"]
