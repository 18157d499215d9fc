# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Log parsing, template normalisation, windows and their comparison."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils import _signals as sg

# ------------------------------------------------------------- templates


@pytest.mark.parametrize("message,template", [
    ("Execution failed: the LLM provider failed: upstream answered 503 Service Unavailable",
     "Execution failed: the LLM provider failed: upstream answered <num> Service Unavailable"),
    ("Prompt template fallback used for task", "Prompt template fallback used for task"),
    ("Cannot open the brain at /data/brain.sqlite: unable to open database file",
     "Cannot open the brain at <path>: unable to open database file"),
    ("MIGRATION_REQUIRED: the brain records migration(s) this release does not know: 0003_feedback",
     "MIGRATION_REQUIRED: the brain records migration(s) this release does not know: <id>"),
    ("Turn failed: KeyError: 'user_42'", "Turn failed: KeyError: '<str>'"),
    ('Tool "calculator" timed out after 3.5s', 'Tool "<str>" timed out after <num>'),
    ("Slow turn: took 1520ms (limit 1000 ms)", "Slow turn: took <num> (limit <num> ms)"),
    ("Retrying 3 of 5 at 2026-05-01T10:00:00.123Z", "Retrying <num> of <num> at <ts>"),
    ("Session 550e8400-e29b-41d4-a716-446655440000 expired", "Session <uuid> expired"),
    ("Provider https://api.example.com/v1/chat answered 429", "Provider <url> answered <num>"),
    ("Connection to 10.0.0.12:5432 refused", "Connection to <ip> refused"),
    ("Mail to ada@example.com bounced", "Mail to <email> bounced"),
    ("Cache 87% full, evicting 0x7f3a entries", "Cache <num>% full, evicting <id> entries"),
    ("the engine's brain is 2.3.0   ", "the engine's brain is <num>"),
    ("Release v2.3.0-rc1 loaded", "Release <id> loaded"),
    ("speed in km/s and and/or", "speed in km/s and and/or"),
])
def test_normalise_template(message, template):
    assert sg.normalise_template(message) == template


def test_normalise_template_replaces_the_lines_own_ids():
    message = "Context for task probe-abc-x could not be loaded (request req-xyz)"
    assert sg.normalise_template(message, "probe-abc-x", "req-xyz") == \
        "Context for task <task_id> could not be loaded (request <request_id>)"


def test_same_kind_same_template():
    a = sg.normalise_template("Turn eval-20260501-7 took 812 ms, 3 retries")
    b = sg.normalise_template("Turn eval-20260502-99 took 1204 ms, 11 retries")
    assert a == b


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("value,expected", [
    ("15m", 1000.0 - 900), ("90s", 910.0), ("1h30m", 1000.0 - 5400), ("2d", 1000.0 - 172800),
    ("1700000000", 1700000000.0), (1700000000, 1700000000.0),
    ("2024-01-01T00:00:00Z", 1704067200.0), ("2024-01-01T01:00:00+01:00", 1704067200.0),
    ("2024-01-01T00:00:00", 1704067200.0),
])
def test_parse_since(value, expected):
    assert sg.parse_since(value, 1000.0) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "soon", "15 minutes", "15x"])
def test_parse_since_refuses(value):
    with pytest.raises(sg.SignalsError):
        sg.parse_since(value, 0.0)


@pytest.mark.parametrize("spec,expected", [("duration_ms", ("duration_ms", 1.0)), ("elapsed_s", ("elapsed_s", 1000.0)),
                                           ("elapsed_seconds", ("elapsed_seconds", 1000.0)),
                                           ("took_us", ("took_us", 0.001)), ("took:s", ("took", 1000.0)),
                                           ("timing.total:ms", ("timing.total", 1.0))])
def test_parse_duration_field(spec, expected):
    assert sg.parse_duration_field(spec) == expected


@pytest.mark.parametrize("spec", ["duration", "took:minutes", ":ms"])
def test_parse_duration_field_refuses_to_guess(spec):
    with pytest.raises(sg.SignalsError):
        sg.parse_duration_field(spec)


def test_log_options_validate():
    with pytest.raises(sg.SignalsError, match="template levels"):
        sg.LogOptions(template_levels=["LOUD"])
    with pytest.raises(sg.SignalsError, match="ignore_templates"):
        sg.LogOptions(ignore_templates=["("])
    assert sg.LogOptions(template_levels=["warn"]).template_levels == ["WARNING"]


# ------------------------------------------------------------------- logs


def line(level, message, task=None, logger="engine.execute", **extra):
    return json.dumps({"timestamp": "2026-05-01T10:00:00.000Z", "level": level, "logger": logger,
                       "request_id": "r-" + (task or "none"), "task_id": task, "message": message, "extra": extra})


def engine_log(turns, profile="duration_ms", error_rate=0.0, latency=150.0, slow_share=0.0, warning="", seed=0):
    """Log lines the way the reference Engine writes them, for ``turns`` turns."""
    rng = random.Random(seed)
    lines = [line("INFO", "Engine starting", logger="engine.boot", port=8000), "not json: some stderr noise"]
    for n in range(turns):
        task = f"probe-r-{n}"
        lines.append(line("INFO", "Starting execution", task, direct=False, media=0))
        if warning:
            lines.append(line("WARNING", warning, task))
        ms = latency * rng.lognormvariate(0, 0.25) * (8 if rng.random() < slow_share else 1)
        if rng.random() < error_rate:
            lines.append(line("ERROR", "Execution failed: the LLM provider failed: upstream answered 503 Service "
                                       "Unavailable", task, code="LLM_PROVIDER_ERROR"))
        elif profile == "duration_ms":
            lines.append(line("INFO", "Execution completed", task, duration_ms=int(ms)))
        elif profile == "elapsed_s":
            lines.append(line("INFO", "Turn finished", task, elapsed_s=round(ms / 1000, 3)))
    return lines


def test_parse_logs_duration_ms_profile():
    logs = sg.parse_logs(engine_log(40, error_rate=0.25, seed=3))
    assert logs["turns_started"] == 40 and logs["other_lines"] == 1 and logs["other_example"].startswith("not json")
    assert logs["turns_failed"] == logs["errors_by_code"]["LLM_PROVIDER_ERROR"] > 0
    assert logs["durations_count"] == 40 - logs["turns_failed"] and logs["duration_source"] == "extra.duration_ms"
    template = logs["templates"][0]
    assert template["level"] == "ERROR" and template["code"] == "LLM_PROVIDER_ERROR"
    assert template["count"] == logs["turns_failed"] and "<num>" in template["template"]


def test_parse_logs_elapsed_s_profile_converts_to_ms():
    logs = sg.parse_logs(engine_log(30, profile="elapsed_s"))
    assert logs["duration_source"] == "extra.elapsed_s" and logs["durations_count"] == 30
    assert 100 < statistics.median(logs["durations_ms"]) < 250
    assert all(20 < d < 1000 for d in logs["durations_ms"])


def test_parse_logs_without_completion_line_says_so():
    logs = sg.parse_logs(engine_log(30, profile="none"))
    assert logs["durations_ms"] == [] and logs["duration_source"] is None
    assert logs["duration_note"].startswith("no duration in logs: no line matched")


def test_parse_logs_completion_without_known_field_says_so():
    lines = [line("INFO", "Starting execution", "t1"), line("INFO", "Execution completed", "t1", took=5)]
    logs = sg.parse_logs(lines)
    assert logs["durations_count"] == 0 and "carry none of the fields" in logs["duration_note"]
    custom = sg.parse_logs(lines, sg.LogOptions(duration_fields=["took:s"]))
    assert custom["durations_ms"] == [5000.0]


def test_parse_logs_counts_turns_errors_and_engine_errors():
    lines = [
        line("INFO", "Starting execution", "a"), line("INFO", "Starting execution", "b"),
        line("ERROR", "boom", "a", code="INTERNAL_ERROR"), line("ERROR", "again", "a", code="INTERNAL_ERROR"),
        line("ERROR", "DATABASE_ERROR: disk full", None),  # not a turn's error
        line("ERROR", "late error of an older turn", "zzz", error="TASK_NOT_FOUND"),
        line("WARN", "Heartbeat late by 3 s", "b"),
    ]
    logs = sg.parse_logs(lines)
    assert logs["turns_started"] == 2 and logs["turns_failed"] == 1
    assert logs["errors_by_code"] == {"DATABASE_ERROR": 1, "INTERNAL_ERROR": 2, "TASK_NOT_FOUND": 1}
    assert logs["engine_errors"] == 1 and logs["error_lines"] == 4
    levels = {t["level"] for t in logs["templates"]}
    assert levels == {"ERROR", "WARNING"}


def test_parse_logs_ignore_templates():
    lines = [line("WARNING", "Heartbeat late by 3 s", "b"), line("WARNING", "Disk nearly full", None)]
    logs = sg.parse_logs(lines, sg.LogOptions(ignore_templates=["^Heartbeat"]))
    assert [t["template"] for t in logs["templates"]] == ["Disk nearly full"]


# ----------------------------------------------------------------- windows


def probes(n, cache=0.8, error_rate=0.0, latency=160.0, slow_share=0.0, seed=0, refused=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        outcome = sg.ProbeOutcome(task_id=f"probe-r-{i}", started=True)
        if rng.random() < error_rate:
            outcome.error = "LLM_PROVIDER_ERROR"
            outcome.elapsed_ms = latency
        else:
            outcome.completed = True
            outcome.elapsed_ms = latency * rng.lognormvariate(0, 0.25) * (8 if rng.random() < slow_share else 1)
            tokens = 1200 + rng.randrange(40)
            outcome.input_tokens, outcome.cache_hit_tokens, outcome.usage_events = tokens, int(tokens * cache), 1
        out.append(outcome)
    for i in range(refused):
        out.append(sg.ProbeOutcome(task_id=f"probe-refused-{i}", error="DRAINING", http_status=503))
    return out


SAME = sg.window_conditions(concurrent_engines=1, probe_concurrency=4, probes=80, cpu_pressure=0.1)
UNSET = object()


def window(turns=80, seed=0, profile="duration_ms", error_rate=0.0, slow_share=0.0, cache=0.8, warning="",
           refused=0, with_logs=True, with_probes=True, since=1000.0, until=1900.0, conditions=UNSET, name="engine-x"):
    """A window over [since, until] (by default every window the same span, under the same conditions)."""
    logs = sg.parse_logs(engine_log(turns, profile, error_rate, slow_share=slow_share, warning=warning, seed=seed)) \
        if with_logs else None
    return sg.build_window(logs, probes(turns, cache, error_rate, slow_share=slow_share, seed=seed + 100,
                                        refused=refused) if with_probes else None, since, until,
                           {"name": name}, conditions=SAME if conditions is UNSET else conditions)


def test_build_window_combines_logs_and_refused_probes():
    w = window(40, error_rate=0.3, seed=2, refused=3)
    logs = w["logs"]
    assert "started_ids" not in logs
    assert w["turns"] == logs["turns_started"] + 3 and w["failed_turns"] == logs["turns_failed"] + 3
    assert w["since"] == "1970-01-01T00:16:40.000Z" and w["seconds"] == 900.0
    json.dumps(w)  # storable as is
    probe_only = window(40, with_logs=False, refused=2)
    assert probe_only["turns"] == 42 and probe_only["failed_turns"] == 2 and probe_only["logs"] is None


def test_probe_signals():
    signals = sg.probe_signals(probes(20, cache=0.5, refused=2))
    assert signals["sent"] == 22 and signals["completed"] == 20 and signals["errors_by_code"] == {"DRAINING": 2}
    assert signals["cache_hit_ratio"] == pytest.approx(0.5, abs=0.002) and len(signals["usage"]) == 20


def test_run_probes_cycles_messages_with_fresh_task_ids():
    seen = []

    def execute(message, task):
        seen.append((task, message))
        if task.endswith("-3"):
            raise RuntimeError("bug")
        return sg.ProbeOutcome(task_id=task, started=True, completed=True, elapsed_ms=1.0)

    outcomes = sg.run_probes(["a", "b"], 5, "r1", execute, concurrency=2)
    assert sorted(seen) == [("probe-r1-1", "a"), ("probe-r1-2", "b"), ("probe-r1-3", "a"), ("probe-r1-4", "b"),
                            ("probe-r1-5", "a")]
    assert outcomes[2].error.startswith("CLIENT_ERROR") and outcomes[0].ok


def test_merge_windows_pools_a_cohort():
    a, b = window(30, seed=1, warning="Disk nearly full"), window(50, seed=2)
    merged = sg.merge_windows([a, b])
    assert merged["turns"] == 80 and merged["members"] == 2
    assert merged["logs"]["turns_started"] == 80 and merged["logs"]["durations_count"] == 80
    assert len(merged["logs"]["durations_ms"]) == 80 and len(merged["probes"]["usage"]) == 80
    assert merged["logs"]["templates"][0]["count"] == 30
    assert sg.merge_windows([a]) is a
    with pytest.raises(sg.SignalsError):
        sg.merge_windows([])


def test_check_window():
    with pytest.raises(sg.SignalsError, match="not a metrics window"):
        sg.check_window({"format": "x"}, "b.json")
    assert sg.check_window(window(5), "w")


# -------------------------------------------------------------- comparison

TH = sg.Thresholds()


def verdicts(result):
    return {name: signal["verdict"] for name, signal in result["signals"].items()}


def test_a_a_passes_every_signal():
    result = sg.compare_windows(window(80, seed=1), window(80, seed=2), TH)
    assert result["verdict"] == "pass", result["reasons"]
    assert verdicts(result) == dict.fromkeys(sg.SIGNALS, "pass")


@pytest.mark.parametrize("change,failing", [
    ({"error_rate": 0.3}, {"error_rate", "new_templates"}),  # the new ERROR line is a new template too
    ({"slow_share": 0.1}, {"latency"}),
    ({"cache": 0.03}, {"cache_hit_ratio"}),
    ({"warning": "Prompt template fallback used for task"}, {"new_templates"}),
])
def test_each_planted_regression_fails_its_signal_only(change, failing):
    result = sg.compare_windows(window(80, seed=1), window(80, seed=2, **change), TH)
    assert result["verdict"] == "fail"
    assert set(result["failing"]) == failing, result["reasons"]
    assert not result["inconclusive"], result["reasons"]


def test_error_rate_evidence():
    result = sg.compare_error_rate(window(80, seed=1), window(80, seed=2, error_rate=0.3), TH)
    assert result["verdict"] == "fail" and result["p_value"] < 1e-4
    assert result["p_value"] == result["fisher_p_value"] and result["ztest_p_value"] < 1e-4
    assert result["errors_by_code"] == {"LLM_PROVIDER_ERROR": result["current"]["failed"]}
    z = sg.compare_error_rate(window(80, seed=1), window(80, seed=2, error_rate=0.3),
                              sg.Thresholds(error_rate_test="ztest"))
    assert z["p_value"] == z["ztest_p_value"]


def test_error_rate_below_the_floor_does_not_fail():
    base = {"turns": 20000, "failed_turns": 100}
    cur = {"turns": 20000, "failed_turns": 180}  # 0.5% -> 0.9%: significant, but under the 2-point floor
    result = sg.compare_error_rate(base, cur, TH)
    assert result["p_value"] < 1e-5 and result["verdict"] == "pass"


def test_error_rate_with_too_little_data_says_how_much_more():
    small = sg.compare_error_rate({"turns": 30, "failed_turns": 0}, {"turns": 30, "failed_turns": 0}, TH)
    assert small["verdict"] == "inconclusive" and small["more_turns_needed"] > 0
    # At the rates seen, that many more turns decide.
    more = small["more_turns_needed"]
    decided = sg.compare_error_rate({"turns": 30, "failed_turns": 0}, {"turns": 30 + more, "failed_turns": 0}, TH)
    assert decided["verdict"] == "pass" or "baseline" in small["reason"]
    tiny = sg.compare_error_rate({"turns": 100, "failed_turns": 0}, {"turns": 5, "failed_turns": 0}, TH)
    assert tiny["verdict"] == "inconclusive" and tiny["more_turns_needed"] == 15
    never = sg.compare_error_rate({"turns": 100, "failed_turns": 0}, {"turns": 100, "failed_turns": 3}, TH)
    assert never["verdict"] == "inconclusive" and never["more_turns_needed"] is not None


def test_a_a_with_zero_errors_needs_about_52_turns():
    assert sg.compare_error_rate({"turns": 55, "failed_turns": 0}, {"turns": 55, "failed_turns": 0}, TH)[
        "verdict"] == "pass"
    assert sg.compare_error_rate({"turns": 45, "failed_turns": 0}, {"turns": 45, "failed_turns": 0}, TH)[
        "verdict"] == "inconclusive"


def test_latency_sources_and_insufficient_data():
    result = sg.compare_latency(window(80, seed=1), window(80, seed=2, slow_share=0.1), TH)
    by_source = {s["source"]: s for s in result["sources"]}
    assert by_source["log durations"]["verdict"] == "fail" and by_source["probe latency"]["verdict"] == "fail"
    assert by_source["log durations"]["p99_ratio"] > 3 and by_source["log durations"]["p99_ratio_ci"][0] > 1
    small = sg.compare_latency(window(30, seed=1), window(30, seed=2), TH)
    assert small["verdict"] == "inconclusive" and small["more_samples_needed"] == 20
    assert all(s["verdict"] == "insufficient" for s in small["sources"])


def test_no_duration_in_logs_falls_back_to_probes_and_says_so():
    result = sg.compare_latency(window(80, seed=1, profile="none"), window(80, seed=2, profile="none"), TH)
    logs = result["sources"][0]
    assert logs["verdict"] == "unavailable" and "no duration in logs" in logs["reason"]
    assert result["verdict"] == "pass" and result["sources"][1]["verdict"] == "pass"


def test_latency_source_decides():
    base, cur = window(80, seed=1), window(80, seed=2)
    cur["probes"]["latencies_ms"] = [v * 3 for v in cur["probes"]["latencies_ms"]]  # slow client side only
    auto = sg.compare_latency(base, cur, TH)
    assert auto["verdict"] == "pass" and [s["decides"] for s in auto["sources"]] == [True, False]
    assert "not deciding: probe latency" in auto["reason"]
    assert sg.compare_latency(base, cur, sg.Thresholds(latency_source="both"))["verdict"] == "fail"
    assert sg.compare_latency(base, cur, sg.Thresholds(latency_source="probes"))["verdict"] == "fail"
    assert sg.compare_latency(base, cur, sg.Thresholds(latency_source="logs"))["verdict"] == "pass"
    # Too few log durations: the probes decide.
    base["logs"]["durations_ms"] = base["logs"]["durations_ms"][:10]
    fallback = sg.compare_latency(base, cur, TH)
    assert fallback["verdict"] == "fail" and [s["decides"] for s in fallback["sources"]] == [False, True]


def test_latency_is_reproducible_from_the_seed():
    a, b = window(80, seed=1), window(80, seed=2, slow_share=0.05)
    assert sg.compare_latency(a, b, TH) == sg.compare_latency(a, b, TH)


def test_uniform_slowdown_fails_on_the_distribution():
    base = window(80, seed=1)
    slow = window(80, seed=2)
    slow["logs"]["durations_ms"] = [d * 1.6 for d in slow["logs"]["durations_ms"]]
    source = sg.compare_latency(base, slow, TH)["sources"][0]
    assert source["verdict"] == "fail" and "distribution shifted" in source["reason"]


def test_cache_ratio():
    ok = sg.compare_cache(window(40, seed=1), window(40, seed=2, cache=0.79), TH)
    assert ok["verdict"] == "pass"
    bad = sg.compare_cache(window(40, seed=1), window(40, seed=2, cache=0.03), TH)
    assert bad["verdict"] == "fail" and bad["drop"] > 0.9 and bad["relative_ci"][1] < 0.1
    few = sg.compare_cache(window(40, seed=1), window(5, seed=2), TH)
    assert few["verdict"] == "inconclusive" and few["more_turns_needed"] == 5
    nothing = sg.compare_cache(window(40, seed=1, cache=0.0), window(40, seed=2, cache=0.0), TH)
    assert nothing["verdict"] == "pass"


def test_new_templates():
    base = window(40, seed=1, warning="Disk nearly full")
    same = sg.compare_templates(base, window(40, seed=2, warning="Disk nearly full"), TH)
    assert same["verdict"] == "pass" and same["new"] == []
    new = sg.compare_templates(base, window(40, seed=2, warning="Prompt template fallback used for task"), TH)
    assert new["verdict"] == "fail" and new["new"][0]["template"] == "Prompt template fallback used for task"
    assert new["new"][0]["count"] == 40
    quiet = sg.compare_templates(base, window(5, seed=2), TH)
    assert quiet["verdict"] == "inconclusive" and quiet["more_turns_needed"] == 15
    no_logs = sg.compare_templates(base, window(40, with_logs=False), TH)
    assert no_logs["verdict"] == "inconclusive"
    rare = sg.compare_templates(base, window(40, seed=2, warning="x"), sg.Thresholds(new_template_min_count=50))
    assert rare["verdict"] == "pass"


def test_compare_windows_selected_signals_and_control_cohort():
    cohort = sg.merge_windows([window(40, seed=i) for i in range(3)])
    canary = window(60, seed=9, cache=0.03)
    result = sg.compare_windows(cohort, canary, TH, ["cache_hit_ratio", "error_rate"])
    assert set(result["signals"]) == {"cache_hit_ratio", "error_rate"}
    assert result["verdict"] == "fail" and result["failing"] == ["cache_hit_ratio"]
    assert result["thresholds"]["p99_ratio"] == 1.5


# ------------------------------------------------- conditions of the reference


def slower(w, factor):
    """``w`` with every latency (log durations and probes) ``factor`` times longer: load, not a release."""
    w["logs"]["durations_ms"] = [d * factor for d in w["logs"]["durations_ms"]]
    w["probes"]["latencies_ms"] = [d * factor for d in w["probes"]["latencies_ms"]]
    return w


@pytest.mark.parametrize("text,expected", [
    ("some avg10=0.03 avg60=0.39 avg300=3.71 total=6176294252\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
     6176294252.0),
    ("full avg10=0.00 total=5\n", None),
    ("", None),
])
def test_cpu_stall_microseconds(text, expected):
    assert sg.cpu_stall_microseconds(text) == expected


@pytest.mark.parametrize("before,after,seconds,expected", [
    (1_000_000.0, 1_500_000.0, 2.0, 0.25),
    (0.0, 9_000_000.0, 2.0, 1.0),  # capped
    (None, 5.0, 1.0, None),
    (5.0, 1.0, 1.0, None),  # a counter going back (another host): unknown
    (1.0, 2.0, 0.0, None),
])
def test_cpu_pressure(before, after, seconds, expected):
    assert sg.cpu_pressure(before, after, seconds) == expected


def test_host_cpu_stall(tmp_path):
    pressure = tmp_path / "cpu"
    pressure.write_text("some avg10=1.00 avg60=0.50 avg300=0.10 total=42\n")
    assert sg.host_cpu_stall(str(pressure)) == 42.0
    assert sg.host_cpu_stall(str(tmp_path / "none")) is None


def conditions(engines=1, concurrency=4, pressure=0.1):
    return sg.window_conditions(engines, concurrency, 80, pressure)


@pytest.mark.parametrize("base_kwargs,same,words", [
    ({}, True, "same conditions"),
    ({"since": 1500.0, "until": 2500.0}, True, "same conditions"),  # overlapping
    ({"since": 500.0, "until": 900.0}, True, "same conditions"),  # ended 100 s before: fresh
    ({"since": 0.0, "until": 640.0}, False, "was taken 6 min before this window"),
    ({"conditions": None}, False, "does not record when and at what concurrency"),
    ({"conditions": conditions(engines=1)}, False, "had 1 Engine(s) observed at once, now 5"),
    ({"conditions": conditions(engines=8, pressure=0.9)}, True, "same conditions"),  # more load then
    ({"conditions": conditions(engines=5, concurrency=2)}, False, "had 2 probe(s) at a time, now 4"),
    ({"conditions": conditions(engines=5, pressure=0.05)}, False, "saw CPU pressure 5%, now 60%"),
    ({"conditions": conditions(engines=5, pressure=None)}, True, "same conditions"),  # not measured: not used
])
def test_reference_conditions(base_kwargs, same, words):
    cur = window(10, since=1000.0, until=1900.0, conditions=conditions(engines=5, pressure=0.6))
    base = window(10, **{"conditions": conditions(engines=5, pressure=0.5), **base_kwargs})
    result = sg.reference_conditions(base, cur, TH)
    assert result["same_conditions"] is same, result
    assert words in result["description"]
    assert result["current"]["concurrent_engines"] == 5 and len(result["members"]) == 1


def test_reference_conditions_of_a_control_cohort_name_the_member_that_differs():
    cohort = sg.merge_windows([window(10, name="engine-1"), window(10, name="engine-2", since=0.0, until=100.0)])
    result = sg.reference_conditions(cohort, window(10), TH, "control")
    assert not result["same_conditions"]
    assert result["differences"] == ["the control window of engine-2 was taken 15 min before this window "
                                     "(at most 3 min)"]
    same = sg.reference_conditions(sg.merge_windows([window(10), window(10)]), window(10), TH, "control")
    assert same["same_conditions"] and "control cohort of 2 Engine(s)" in same["description"]


def test_load_only_slowdown_against_a_stale_baseline_is_inconclusive_with_the_reason():
    stale = window(80, seed=1, since=0.0, until=640.0)
    busy = slower(window(80, seed=2), 1.7)
    result = sg.compare_windows(stale, busy, TH)
    assert result["verdict"] == "inconclusive" and result["failing"] == [] and "latency" in result["inconclusive"]
    latency = result["signals"]["latency"]
    assert latency["verdict_under_same_conditions"] == "fail"
    assert latency["reason"].startswith("log durations: P99 x")
    assert "; but the baseline was taken 6 min before this window" in latency["reason"]
    assert latency["reason"].endswith("inconclusive without a same-window reference")
    assert not result["reference"]["same_conditions"]
    # The same slowdown against a fresh baseline at the same concurrency fails.
    fresh = sg.compare_windows(window(80, seed=1, since=600.0, until=950.0), slower(window(80, seed=2), 1.7), TH)
    assert fresh["verdict"] == "fail" and fresh["failing"] == ["latency"] and fresh["reference"]["same_conditions"]


def test_planted_latency_regression_against_a_same_window_control_fails():
    cohort = sg.merge_windows([window(40, seed=i, name=f"engine-{i}") for i in range(3)])
    result = sg.compare_windows(cohort, window(80, seed=9, slow_share=0.1), TH, kind="control")
    assert result["verdict"] == "fail" and result["failing"] == ["latency"], result["reasons"]


@pytest.mark.parametrize("change,failing", [
    ({"error_rate": 0.3}, {"error_rate", "new_templates"}),
    ({"cache": 0.03}, {"cache_hit_ratio"}),
    ({"warning": "Prompt template fallback used for task"}, {"new_templates"}),
])
def test_regressions_that_are_not_load_fail_against_a_stale_baseline(change, failing):
    result = sg.compare_windows(window(80, seed=1, conditions=None), window(80, seed=2, **change), TH)
    assert result["verdict"] == "fail" and set(result["failing"]) == failing, result["reasons"]


def timeouts(w, count):
    """``w`` with ``count`` more probes that timed out before the Engine started them."""
    return sg.build_window(None, probes(80, seed=5) + [sg.ProbeOutcome(task_id=f"t{i}", error="TIMEOUT")
                                                       for i in range(count)],
                           1000.0, 1900.0, {"name": "engine-x"}, conditions=w["conditions"])


def test_error_rate_from_timeouts_alone_is_inconclusive_against_other_conditions():
    base = window(80, seed=1, with_logs=False)
    busy = timeouts(window(1), 20)
    assert busy["transport_failed_turns"] == 20 and busy["failed_turns"] == 20
    same = sg.compare_windows(base, busy, TH, ["error_rate"])
    assert same["verdict"] == "fail"  # same conditions: a timeout is a failed turn
    stale = dict(base, conditions=None)
    result = sg.compare_windows(stale, busy, TH, ["error_rate"])["signals"]["error_rate"]
    assert result["verdict"] == "inconclusive" and "20 of them timeouts or lost connections" in result["reason"]
    # Engine errors on top of the timeouts still fail.
    errors = sg.build_window(None, probes(80, seed=5, error_rate=0.3) + [sg.ProbeOutcome(task_id="t", error="TIMEOUT")],
                             1000.0, 1900.0, {"name": "engine-x"}, conditions=SAME)
    assert sg.compare_windows(stale, errors, TH, ["error_rate"])["verdict"] == "fail"


# ------------------------------------------------------------------ the module


def run_module(args, capsys):
    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.engineops.fleet.plugins.modules import engine_metrics

    with patch_module_args(args):
        with pytest.raises(SystemExit):
            engine_metrics.main()
    return json.loads(capsys.readouterr().out)


def test_module_without_data_is_inconclusive_never_a_silent_pass(capsys, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(window(80, seed=1)))
    args = {"engine_url": "http://127.0.0.1:9", "logs": False, "probes": 0, "mode": "compare", "baseline": str(path)}
    result = run_module(args, capsys)
    assert not result.get("failed") and result["verdict"] == "inconclusive"
    assert set(result["comparison"]["inconclusive"]) == set(sg.SIGNALS)
    assert result["window"]["turns"] == 0
    assert result["window"]["conditions"] == {"concurrent_engines": 1, "probe_concurrency": 4, "probes": 0,
                                              "cpu_pressure": None}
    reference = result["comparison"]["reference"]  # a baseline file of 1970
    assert not reference["same_conditions"] and "the baseline was taken" in reference["description"]
    strict = run_module(dict(args, fail_on_inconclusive=True), capsys)
    assert strict["failed"] and "inconclusive" in strict["msg"]


def test_module_compares_with_a_control_cohort(capsys):
    control = [window(40, seed=i) for i in range(2)]
    result = run_module({"engine_url": "http://127.0.0.1:9", "logs": False, "probes": 0, "mode": "compare",
                         "control": control, "signals": ["error_rate"]}, capsys)
    assert result["verdict"] == "inconclusive"
    assert result["comparison"]["signals"]["error_rate"]["baseline"]["turns"] == 80


@pytest.mark.parametrize("args,message", [
    ({"logs": True}, "logs=true needs name"),
    ({"since": "soon"}, "since='soon'"),
    ({"p99_ratio": 0.9}, "p99_ratio=0.9 must be above 1"),
    ({"duration_log_fields": ["took"]}, "does not say its unit"),
    ({"mode": "compare", "control": [{"format": "x"}]}, "not a metrics window"),
    ({"concurrent_engines": 0}, "concurrent_engines=0 must be at least 1"),
    ({"reference_max_age": 0}, "reference_max_age=0.0 must be above 0"),
    ({"load_tolerance": 2}, "load_tolerance=2.0 must be between 0 and 1"),
])
def test_module_refuses_bad_options(capsys, args, message):
    base = {"engine_url": "http://127.0.0.1:9", "logs": False, "probes": 0}
    result = run_module(dict(base, **args), capsys)
    assert result["failed"] and message in result["msg"], result["msg"]
