"""engine_eval against the reference Engine's release matrix, through the real ansible CLI.

The baseline is recorded on the good release (2.3.0); a compare on each
other release must catch exactly that release's regression: the wrong
answers of bad-answers and bad-minor (the very cases the fake model gets
wrong), the errors of bad-errors, and nothing on the releases whose
regression evals cannot see (cache, warnings, a slow tail) nor on the safe
patch or the same release twice.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

import tests

ROOT = Path(tests._ROOT)
SUITE = ROOT / "evals" / "reference-suite.yml"
WRONG_ANSWERS = ("bad-answers", "bad-minor")
UNSEEN = ("patch", "bad-cache", "bad-warning", "bad-latency")


def wrong_case_ids() -> set[str]:
    """The suite's cases the reference Engine answers wrong at the bad releases' ENGINE_SIM_WRONG_RATE (0.4)."""
    spec = importlib.util.spec_from_file_location("engine_sim_engine", ROOT / "tests" / "engine_sim" / "app" / "engine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    good, bad = module.FakeModel(wrong_rate=0.0), module.FakeModel(wrong_rate=0.4)
    cases = yaml.safe_load(SUITE.read_text())["cases"]
    return {c["id"] for c in cases
            if good.reply(c["input"]["message"], c["input"].get("direct", False)).text
            != bad.reply(c["input"]["message"], c["input"].get("direct", False)).text}


def bring_up(make_fleet, releases):
    """One single-Engine fleet per release, started side by side."""
    fleets = {name: make_fleet(1, release=name, start=False) for name in releases}
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda f: f.up(), fleets.values()))
    return {name: fleet.engines[0] for name, fleet in fleets.items()}


def eval_args(engine, **extra):
    return {"name": engine.name, "engine_key": engine.key, "suite": str(SUITE), **extra}


def test_eval_release_matrix(make_fleet, run_module, tmp_path):
    engines = bring_up(make_fleet, ("baseline", "patch", *WRONG_ANSWERS, "bad-errors", "bad-cache", "bad-warning",
                                    "bad-latency"))
    baseline = tmp_path / "baselines" / "engine" / "eval.json"

    # Check mode: the plan, no turn sent, no file.
    planned = run_module("engine_eval", eval_args(engines["baseline"], mode="baseline", baseline=str(baseline)),
                         check=True)
    assert not planned["failed"] and planned["planned"]["turns"] == 39 and not baseline.exists()

    recorded = run_module("engine_eval", eval_args(engines["baseline"], mode="baseline", baseline=str(baseline)))
    assert not recorded["failed"] and recorded["changed"] is True, recorded.get("msg")
    assert recorded["run"]["passed"] == 39 and recorded["run"]["errors"] == 0
    stored = json.loads(baseline.read_text())
    assert stored["engine"]["version"] == "2.3.0" and len(stored["cases"]) == 39
    assert stored["cases"][0]["attempts"][0]["task_id"] == f"eval-{stored['run_id']}-capital-france"
    assert oct(baseline.stat().st_mode & 0o777) == "0o600"

    # force=false keeps an existing baseline without running anything.
    kept = run_module("engine_eval", eval_args(engines["baseline"], mode="baseline", baseline=str(baseline),
                                               force=False))
    assert kept["changed"] is False and kept["run"]["run_id"] == stored["run_id"]

    # The same release twice (A/A), the safe patch, and the regressions evals cannot see: pass.
    results = {"A/A": run_module("engine_eval", eval_args(engines["baseline"], mode="compare",
                                                          baseline=str(baseline)))}
    for name in (*UNSEEN, *WRONG_ANSWERS, "bad-errors"):
        results[name] = run_module("engine_eval", eval_args(engines[name], mode="compare", baseline=str(baseline)))
    verdicts = {name: r.get("verdict") for name, r in results.items()}
    expected = {"A/A": "pass", **dict.fromkeys(UNSEEN, "pass"), **dict.fromkeys(WRONG_ANSWERS, "fail"),
                "bad-errors": "fail"}
    assert verdicts == expected, {n: results[n]["comparison"]["reasons"] for n in results if "comparison" in results[n]}
    for name in ("A/A", *UNSEEN):
        assert not results[name]["failed"] and results[name]["comparison"]["regressions"] == []

    # Wrong answers: exactly the cases the release answers wrong, each for its answer.
    wrong = wrong_case_ids()
    assert len(wrong) == 17
    for name in WRONG_ANSWERS:
        comparison = results[name]["comparison"]
        assert results[name]["failed"] and "wrong answer" in results[name]["msg"]
        assert {r["id"] for r in comparison["regressions"]} == wrong
        assert {r["cause"] for r in comparison["regressions"]} == {"answer"}
        assert comparison["mcnemar"]["regressions"] == 17 and comparison["mcnemar"]["p_value"] < 1e-4
        assert comparison["pass_rate"]["delta"] < -0.4 and comparison["fixes"] == []

    # Errors: every regression is an LLM_PROVIDER_ERROR, significant.
    errors = results["bad-errors"]["comparison"]
    assert {r["cause"] for r in errors["regressions"]} == {"error"}
    assert {code for r in errors["regressions"] for code in r["errors"]} == {"LLM_PROVIDER_ERROR"}
    assert errors["mcnemar"]["p_value"] < 0.05 and errors["mcnemar"]["fixes"] == 0

    # The A/A latency comparison has its evidence.
    latency = results["A/A"]["comparison"]["latency"]
    assert latency["verdict"] == "pass" and latency["pairs"] == 39 and latency["upper_bound_ratio"] < 1.5


def test_eval_message_field_for_a_major_release(make_fleet, run_module):
    """3.0.0 renamed the body field message to prompt: message_field follows it."""
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    fleet.swap(engine, "major", LLM_EMBEDDING_MODEL="sim-embed")
    fleet.wait_healthy(60)
    args = eval_args(engine, categories=["facts"], concurrency=2)
    refused = run_module("engine_eval", args)
    assert not refused["failed"] and refused["run"]["failed"] == 11
    assert {c["errors"][0] for c in refused["cases"]} == {"INVALID_REQUEST"}
    assert "renamed to 'prompt'" in refused["cases"][0]["failures"][0]
    answered = run_module("engine_eval", dict(args, message_field="prompt", repeat=2))
    assert answered["run"]["passed"] == 11 and answered["run"]["turns"] == 22
    assert answered["cases"][0]["attempts"][1]["task_id"].endswith("-capital-france-2")


def test_eval_malformed_suite_and_missing_baseline(docker_client, run_module, tmp_path):
    suite = yaml.safe_load(SUITE.read_text())
    suite["cases"][3]["expected"]["regex"] = "(unclosed"
    bad = tmp_path / "suite.yml"
    bad.write_text(yaml.safe_dump(suite))
    result = run_module("engine_eval", {"engine_url": "http://127.0.0.1:9", "suite": str(bad)})
    assert result["failed"] and "case 'capital-japan' (#4)" in result["msg"] and "'expected.regex'" in result["msg"]
    missing = run_module("engine_eval", {"engine_url": "http://127.0.0.1:9", "suite": str(SUITE), "mode": "compare",
                                         "baseline": os.fspath(tmp_path / "nope.json")})
    assert missing["failed"] and "record one first with mode=baseline" in missing["msg"]
