# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The eval suite parser, the scoring, the runner and the comparison with a baseline; the module in check mode."""

from __future__ import annotations

import copy
import json
import os
import threading

import pytest
import yaml

from ansible_collections.engineops.fleet.plugins.module_utils import _evals as ev

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
REFERENCE_SUITE = os.path.join(ROOT, "evals", "reference-suite.yml")


def case(**overrides):
    raw = {"id": "c1", "category": "facts", "input": {"message": "What is the capital of France?"},
           "expected": {"keywords": ["Paris"]}}
    raw.update(overrides)
    return raw


def suite(*cases, **top):
    return {"name": "t", "cases": list(cases) or [case()], **top}


# ------------------------------------------------------------------ parser


def test_reference_suite_parses_and_covers_every_category():
    with open(REFERENCE_SUITE, encoding="utf-8") as handle:
        parsed = ev.parse_suite(yaml.safe_load(handle), REFERENCE_SUITE)
    assert 30 <= len(parsed.cases) <= 40
    assert parsed.categories() == ["arithmetic", "facts", "json", "keywords", "latency", "regex"]
    assert any(c.tool_calls for c in parsed.cases) and any(c.json for c in parsed.cases)
    assert any(c.max_latency_ms for c in parsed.cases) and any(c.regex for c in parsed.cases)
    assert any(c.direct for c in parsed.cases)


def test_minimal_suite_and_defaults():
    parsed = ev.parse_suite(suite(case(), case(id="c2", repeat=5), defaults={"repeat": 3, "timeout": 9}))
    assert [c.repeat for c in parsed.cases] == [3, 5]
    assert parsed.cases[0].timeout == 9.0
    assert parsed.cases[0].digest and parsed.digest
    # A bare list of cases is a suite too.
    assert len(ev.parse_suite([case()]).cases) == 1


def test_digest_follows_input_and_expectations_only():
    first = ev.parse_suite(suite(case())).cases[0]
    other_category = ev.parse_suite(suite(case(category="geo"))).cases[0]
    other_expectation = ev.parse_suite(suite(case(expected={"keywords": ["Lyon"]}))).cases[0]
    assert first.digest == other_category.digest != other_expectation.digest


@pytest.mark.parametrize("raw,where,field", [
    (case(id="bad id"), "case 'bad id' (#1)", "id"),
    (case(id=None), "case #1", "id"),
    (case(category=""), "case 'c1' (#1)", "category"),
    (case(input="hello"), "case 'c1' (#1)", "input"),
    (case(input={"message": ""}), "case 'c1' (#1)", "input.message"),
    (case(input={"message": "x", "prompt": "y"}), "case 'c1' (#1)", "input.prompt"),
    (case(input={"message": "x", "direct": "yes"}), "case 'c1' (#1)", "input.direct"),
    (case(input={"message": "x", "media": "a.png"}), "case 'c1' (#1)", "input.media"),
    (case(expected={}), "case 'c1' (#1)", "expected"),
    (case(expected={"keyword": ["Paris"]}), "case 'c1' (#1)", "expected.keyword"),
    (case(expected={"contains": 42}), "case 'c1' (#1)", "expected.contains"),
    (case(expected={"contains": []}), "case 'c1' (#1)", "expected.contains"),
    (case(expected={"regex": "(unclosed"}), "case 'c1' (#1)", "expected.regex"),
    (case(expected={"regex": ["ok", "[z-a]"]}), "case 'c1' (#1)", "expected.regex[1]"),
    (case(expected={"json": {"items[?": 1}}), "case 'c1' (#1)", "expected.json.items[?"),
    (case(expected={"json": []}), "case 'c1' (#1)", "expected.json"),
    (case(expected={"json": [{"path": "id"}]}), "case 'c1' (#1)", "expected.json[0]"),
    (case(expected={"json": [{"path": "id", "equals": 1, "exists": True}]}), "case 'c1' (#1)", "expected.json[0]"),
    (case(expected={"json": [{"path": "id", "is": 1}]}), "case 'c1' (#1)", "expected.json[0].is"),
    (case(expected={"json": [{"path": "id", "type": "float"}]}), "case 'c1' (#1)", "expected.json[0].type"),
    (case(expected={"json": [{"path": "id", "matches": "("}]}), "case 'c1' (#1)", "expected.json[0].matches"),
    (case(expected={"tool_calls": {"tool": "calculator"}}), "case 'c1' (#1)", "expected.tool_calls"),
    (case(expected={"tool_calls": [{"name": "calculator"}]}), "case 'c1' (#1)", "expected.tool_calls[0].tool"),
    (case(expected={"tool_calls": [{"tool": "calc", "input": "1+1"}]}), "case 'c1' (#1)",
     "expected.tool_calls[0].input"),
    (case(expected={"max_latency_ms": -5}), "case 'c1' (#1)", "expected.max_latency_ms"),
    (case(expected={"max_latency_ms": True}), "case 'c1' (#1)", "expected.max_latency_ms"),
    (case(repeat=0), "case 'c1' (#1)", "repeat"),
    (case(repeat=1.5), "case 'c1' (#1)", "repeat"),
    (case(timeout="fast"), "case 'c1' (#1)", "timeout"),
    (case(weight=2), "case 'c1' (#1)", "weight"),
])
def test_malformed_case_names_the_case_and_the_field(raw, where, field):
    with pytest.raises(ev.SuiteError) as info:
        ev.parse_suite(suite(case(id="c0"), raw) if where.startswith("case 'c1'") else suite(raw))
    message = str(info.value)
    expected_where = where.replace("#1", "#2") if where.startswith("case 'c1'") else where
    assert expected_where in message and f"'{field}'" in message, message


def test_duplicate_ids_and_suite_level_errors():
    with pytest.raises(ev.SuiteError, match=r"case 'c1' \(#2\): field 'id' duplicates case #1"):
        ev.parse_suite(suite(case(), case()))
    with pytest.raises(ev.SuiteError, match="field 'cases'"):
        ev.parse_suite({"name": "x", "cases": []})
    with pytest.raises(ev.SuiteError, match="top-level field 'case'"):
        ev.parse_suite({"case": [case()]})
    with pytest.raises(ev.SuiteError, match="defaults.retries"):
        ev.parse_suite(suite(defaults={"retries": 2}))
    with pytest.raises(ev.SuiteError, match="case #1: must be a mapping"):
        ev.parse_suite(["What is 2 + 2?"])
    with pytest.raises(ev.SuiteError, match="must be a mapping"):
        ev.parse_suite("cases")


def test_select_categories():
    parsed = ev.parse_suite(suite(case(), case(id="c2", category="json")))
    assert [c.id for c in parsed.select(["json"]).cases] == ["c2"]
    with pytest.raises(ev.SuiteError, match="no case of category nope"):
        parsed.select(["nope"])


# ------------------------------------------------------------------ scoring


def one(**expected):
    return ev.parse_suite(suite(case(expected=expected))).cases[0]


@pytest.mark.parametrize("expected,text,ok", [
    ({"contains": "Paris"}, "The capital is Paris.", True),
    ({"contains": "paris"}, "The capital is Paris.", False),
    ({"contains": ["capital", "Paris"]}, "The capital is Paris.", True),
    ({"not_contains": ["Lyon"]}, "The capital is Lyon.", False),
    ({"keywords": ["paris", "CAPITAL"]}, "The capital is Paris.", True),
    ({"keywords": ["Par"]}, "The capital is Paris.", False),  # whole words
    ({"keywords": ["New Delhi"]}, "It is New Delhi.", True),
    ({"keywords": ["C++"]}, "I like C++.", True),
    ({"any_keywords": ["noted", "saved"]}, "This is saved to memory", True),
    ({"any_keywords": ["noted", "saved"]}, "Nothing", False),
    ({"regex": r"\b42\b"}, "The answer is 42.", True),
    ({"regex": [r"\b42\b", r"^The"]}, "the answer is 42.", False),
    ({"regex": r"(?i)^the"}, "the answer", True),
])
def test_text_expectations(expected, text, ok):
    assert (ev.score(one(**expected), text, [], 100.0, None) == []) is ok


@pytest.mark.parametrize("checks,text,ok", [
    ({"id": 7}, '{"id": 7, "roles": ["user"]}', True),
    ({"id": 7}, '{"id": 8}', False),
    ({"id": 7.0}, '{"id": 7}', True),
    ({"length(items)": 3}, '{"items": [1, 2, 3]}', True),
    ({"items[0].name": "a"}, 'Here: ```json\n{"items": [{"name": "a"}]}\n```', True),
    ({"ok": True}, 'The result is {"ok": true} as asked.', True),
    ({"ok": True}, "no json here", False),
    ([{"path": "roles", "contains": "user"}], '{"roles": ["admin", "user"]}', True),
    ([{"path": "roles", "contains": "root"}], '{"roles": ["admin", "user"]}', False),
    ([{"path": "name", "contains": "Love"}], '{"name": "Ada Lovelace"}', True),
    ([{"path": "email", "matches": "@example\\.com$"}], '{"email": "a@example.com"}', True),
    ([{"path": "email", "matches": "@example\\.com$"}], '{"email": 5}', False),
    ([{"path": "email", "exists": True}], '{"name": 1}', False),
    ([{"path": "email", "exists": False}], '{"name": 1}', True),
    ([{"path": "active", "type": "boolean"}], '{"active": false}', True),
    ([{"path": "active", "type": "number"}], '{"active": false}', False),
    ([{"path": "n", "type": "integer"}], '{"n": 3}', True),
    ([{"path": "@", "type": "array"}], '[1, 2]', True),
    ({"status": "shipped", "currency": "EUR"}, '{"status": "paid", "currency": "EUR"}', False),
])
def test_json_expectations_with_jmespath(checks, text, ok):
    failures = ev.score(one(json=checks), text, [], 100.0, None)
    assert (failures == []) is ok, failures


def test_json_failure_says_what_it_got():
    failures = ev.score(one(json={"port": 8422}), '{"port": 8423}', [], 1.0, None)
    assert failures == ["json 'port' equals 8422: got 8423"]


@pytest.mark.parametrize("expected,calls,ok", [
    ([{"tool": "calculator", "input": {"expression": "17 + 25"}}],
     [{"tool": "calculator", "input": {"expression": "17 + 25"}}], True),
    ([{"tool": "calculator", "input": {"expression": "17 + 25"}}],
     [{"tool": "calculator", "input": {"expression": "17 - 25"}}], False),
    ([{"tool": "calculator"}], [{"tool": "calculator", "input": {"expression": "1"}}], True),
    (["calculator"], [], False),
    ([], [], True),
    ([], [{"tool": "search", "input": {}}], False),
    ([{"tool": "calculator"}, {"tool": "calculator"}], [{"tool": "calculator", "input": {}}], False),
])
def test_tool_call_expectations(expected, calls, ok):
    assert (ev.score(one(tool_calls=expected, contains="x"), "x", calls, 1.0, None) == []) is ok


def test_latency_and_error_fail_a_case():
    slow = one(contains="Paris", max_latency_ms=1000)
    assert ev.score(slow, "Paris", [], 999.0, None) == []
    assert ev.score(slow, "Paris", [], 1500.0, None) == ["max_latency_ms 1000: took 1500 ms"]
    failures = ev.score(slow, "Paris", [], 10.0, {"error": "LLM_PROVIDER_ERROR", "message": "upstream 503"})
    assert failures == ["error LLM_PROVIDER_ERROR: upstream 503"]


# -------------------------------------------------------------------- runs


def test_task_ids():
    assert ev.task_id("r1", "capital", 0, 1) == "eval-r1-capital"
    assert ev.task_id("r1", "capital", 2, 3) == "eval-r1-capital-3"


def test_run_suite_with_repeats_concurrency_and_a_crashing_client():
    parsed = ev.parse_suite(suite(case(), case(id="c2", repeat=3), case(id="c3")))
    seen, lock, active, peak = [], threading.Lock(), [0], [0]
    flip = {"n": 0}

    def execute(c, task, timeout):
        with lock:
            seen.append((task, timeout))
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            if c.id == "c3":
                raise RuntimeError("socket exploded")
            if c.id == "c2":
                with lock:
                    flip["n"] += 1
                    wrong = flip["n"] == 2
                return ev.TurnOutcome(text="Lyon" if wrong else "Paris", elapsed_ms=120.0)
            return ev.TurnOutcome(text="The capital is Paris.", elapsed_ms=100.0, usage={"input_tokens": 5})
        finally:
            with lock:
                active[0] -= 1

    records = ev.run_suite(parsed, "r9", execute, concurrency=2, default_timeout=7.0)
    assert [r["id"] for r in records] == ["c1", "c2", "c3"]
    assert sorted(task for task, _timeout in seen) == ["eval-r9-c1", "eval-r9-c2-1", "eval-r9-c2-2", "eval-r9-c2-3", "eval-r9-c3"]
    assert {timeout for _task, timeout in seen} == {7.0} and peak[0] <= 2
    c1, c2, c3 = records
    assert c1["status"] == "pass" and c1["runs"] == 1 and c1["elapsed_ms"] == 100.0
    assert c2["status"] == "flaky" and c2["passes"] == 2 and c2["runs"] == 3
    assert c3["status"] == "fail" and c3["errors"] == ["CLIENT_ERROR"] and "socket exploded" in c3["failures"][0]
    summary = ev.run_summary(records)
    assert summary == {"cases": 3, "turns": 5, "passed": 1, "failed": 1, "flaky": 1, "errors": 1,
                       "pass_rate": 0.6, "case_pass_rate": 0.3333}
    # repeat overrides the cases' own.
    again = ev.run_suite(parsed, "r9", execute, repeat=2)
    assert [r["runs"] for r in again] == [2, 2, 2]


def test_answer_excerpt():
    record = ev.attempt_record(one(contains="x"), "t", "x" * 500, [], None, 1.0, None, excerpt=10)
    assert record["answer"] == "x" * 10 + "..."


# --------------------------------------------------------------- comparison


def records(outcomes, latency=150.0, repeats=1):
    """Case records from {id: passes} (passes out of ``repeats``)."""
    out = []
    for cid, passes in outcomes.items():
        status = "pass" if passes == repeats else ("fail" if passes == 0 else "flaky")
        out.append({"id": cid, "category": "facts", "digest": "d-" + cid, "status": status,
                    "passed": status == "pass", "passes": passes, "runs": repeats, "errors": [],
                    "failures": [] if status == "pass" else ["keywords: missing 'Paris'"], "answer": "",
                    "elapsed_ms": latency(cid) if callable(latency) else latency, "attempts": []})
    return out


def baseline_of(outcomes, **kw):
    return {"format": ev.BASELINE_FORMAT, "cases": records(outcomes, **kw)}


def jitter(cid):
    """Deterministic per-case latency near 150 ms (no ties)."""
    return 150.0 + (sum(ord(ch) for ch in cid) % 37) - 18 + len(cid) / 100


ALL_PASS = {f"c{i:02d}": 1 for i in range(36)}
TH = ev.EvalThresholds()


def test_a_a_passes():
    result = ev.compare_runs(baseline_of(ALL_PASS, latency=jitter), records(ALL_PASS, latency=jitter), TH)
    assert result["verdict"] == "pass", result["reasons"]
    assert result["cases_compared"] == 36 and result["mcnemar"]["discordant"] == 0
    assert result["pass_rate"] == {"baseline": 1.0, "current": 1.0, "delta": 0.0}
    assert result["latency"]["verdict"] == "pass"


def test_many_regressions_fail_with_evidence():
    now = dict(ALL_PASS, **{f"c{i:02d}": 0 for i in range(12)})
    result = ev.compare_runs(baseline_of(ALL_PASS), records(now), TH)
    assert result["verdict"] == "fail"
    assert result["mcnemar"]["regressions"] == 12 and result["mcnemar"]["p_value"] == pytest.approx(0.5 ** 12)
    assert len(result["regressions"]) == 12 and result["regressions"][0]["cause"] == "answer"
    assert result["pass_rate"]["delta"] == pytest.approx(-12 / 36, abs=1e-4)


def test_one_unconfirmed_regression_is_inconclusive_and_says_what_to_do():
    now = dict(ALL_PASS, c05=0)
    result = ev.compare_runs(baseline_of(ALL_PASS), records(now), TH)
    assert result["verdict"] == "inconclusive"
    assert result["regressions"][0]["id"] == "c05"
    assert any("repeat >= 4" in r for r in result["reasons"]), result["reasons"]


def test_a_regression_confirmed_by_its_repeats_fails():
    base = baseline_of({k: 4 for k in ALL_PASS}, repeats=4)
    now = records(dict({k: 4 for k in ALL_PASS}, c05=0), repeats=4)
    result = ev.compare_runs(base, now, TH)
    assert result["verdict"] == "fail" and result["confirmed_regressions"] == ["c05"]
    assert result["regressions"][0]["p_value"] == pytest.approx(1 / 70)


def test_newly_flaky_is_inconclusive():
    base = baseline_of({k: 3 for k in ALL_PASS}, repeats=3)
    now = records(dict({k: 3 for k in ALL_PASS}, c01=2), repeats=3)
    result = ev.compare_runs(base, now, TH)
    assert result["verdict"] == "inconclusive" and [c["id"] for c in result["newly_flaky"]] == ["c01"]


def test_too_few_cases_is_inconclusive_even_when_all_pass():
    few = {"a": 1, "b": 1, "c": 1}
    result = ev.compare_runs(baseline_of(few), records(few), TH)
    assert result["verdict"] == "inconclusive" and "7 more" in " ".join(result["reasons"])


def test_errors_are_regressions_with_cause_error():
    now = records(dict(ALL_PASS, **{f"c{i:02d}": 0 for i in range(10)}))
    for record in now[:10]:
        record["errors"] = ["LLM_PROVIDER_ERROR"]
    result = ev.compare_runs(baseline_of(ALL_PASS), now, TH)
    assert result["verdict"] == "fail" and {r["cause"] for r in result["regressions"]} == {"error"}


def test_fixes_and_failing_baseline_cases_are_not_regressions():
    base = dict(ALL_PASS, c00=0, c01=0)
    result = ev.compare_runs(baseline_of(base), records(ALL_PASS), TH)
    assert result["verdict"] == "pass" and [f["id"] for f in result["fixes"]] == ["c00", "c01"]


def test_changed_new_and_missing_cases_are_not_compared():
    base = baseline_of(ALL_PASS)
    now = records(ALL_PASS)
    now[0]["digest"] = "changed"
    now[0]["status"], now[0]["passes"] = "fail", 0
    now.append(records({"brand-new": 0})[0])
    del now[1]
    result = ev.compare_runs(base, now, TH)
    assert result["changed_cases"] == ["c00"] and result["new_cases"] == ["brand-new"]
    assert result["missing_cases"] == ["c01"] and result["cases_compared"] == 34
    assert result["verdict"] == "pass"


def test_slower_cases_fail_on_latency():
    result = ev.compare_runs(baseline_of(ALL_PASS, latency=jitter),
                             records(ALL_PASS, latency=lambda c: jitter(c) * 3), TH)
    assert result["verdict"] == "fail" and result["latency"]["verdict"] == "fail"
    assert result["latency"]["median_ratio"] == pytest.approx(3.0, rel=0.01)


def test_a_few_slow_cases_do_not_fail_latency():
    slow = {"c00", "c01", "c02"}
    result = ev.compare_runs(baseline_of(ALL_PASS, latency=jitter),
                             records(ALL_PASS, latency=lambda c: jitter(c) * (8 if c in slow else 1.01)), TH)
    assert result["latency"]["verdict"] == "pass", result["latency"]


def test_check_baseline():
    with pytest.raises(ev.BaselineError):
        ev.check_baseline({"format": "other"}, "b.json")
    with pytest.raises(ev.BaselineError, match="case #1"):
        ev.check_baseline({"format": ev.BASELINE_FORMAT, "cases": [{"id": "x"}]}, "b.json")
    assert ev.check_baseline(baseline_of(ALL_PASS), "b.json")["cases"]


# ---------------------------------------------------- the module, check mode


def run_module(args, capsys):
    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.engineops.fleet.plugins.modules import engine_eval

    with patch_module_args(args):
        with pytest.raises(SystemExit):
            engine_eval.main()
    return json.loads(capsys.readouterr().out)


def test_module_check_mode_plans_without_sending(capsys, tmp_path):
    result = run_module({"engine_url": "http://127.0.0.1:9", "suite": REFERENCE_SUITE, "repeat": 2,
                         "categories": ["json", "arithmetic"], "_ansible_check_mode": True}, capsys)
    assert not result.get("failed"), result
    assert result["planned"]["cases"] == 15 and result["planned"]["turns"] == 30
    assert result["changed"] is False


def test_module_malformed_suite_names_case_and_field(capsys, tmp_path):
    bad = copy.deepcopy(suite(case(), case(id="json-1", expected={"json": {"items[?": 1}})))
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(bad))
    result = run_module({"engine_url": "http://127.0.0.1:9", "suite": str(path)}, capsys)
    assert result["failed"] and "case 'json-1' (#2)" in result["msg"] and "expected.json.items[?" in result["msg"]


def test_module_compare_needs_an_existing_baseline(capsys, tmp_path):
    result = run_module({"engine_url": "http://127.0.0.1:9", "suite_data": suite(), "mode": "compare",
                         "baseline": str(tmp_path / "none.json"), "_ansible_check_mode": True}, capsys)
    assert result["failed"] and "no such file" in result["msg"]
