from __future__ import annotations

import json

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import HealthReport
from ansible_collections.engineops.fleet.plugins.module_utils._health import ContainerEvent, last_error, wait_ready


def _log(level, message, **extra):
    return json.dumps({"timestamp": "t", "level": level, "logger": "l", "request_id": None,
                       "task_id": None, "message": message, "extra": extra})


@pytest.mark.parametrize(
    "lines, expected",
    [
        ([], None),
        ([_log("INFO", "Listening")], None),
        ([_log("ERROR", "Brain is newer", code="MIGRATION_REQUIRED"), _log("INFO", "bye")],
         "MIGRATION_REQUIRED: Brain is newer"),
        ([_log("ERROR", "first", code="A"), _log("ERROR", "second", code="B")], "B: second"),
        ([_log("ERROR", "Missing required environment variable LLM_EMBEDDING_MODEL")],
         "Missing required environment variable LLM_EMBEDDING_MODEL"),
        (["Traceback (most recent call last):", _log("ERROR", "x", code="C"), "not json"], "C: x"),
    ],
)
def test_last_error(lines, expected):
    assert last_error(lines) == expected


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _report(ready):
    return HealthReport(url="u", ready=ready, reason=None if ready else "HTTP 503, status 'starting'")


def test_wait_returns_when_ready():
    clock = FakeClock()
    answers = iter([False, False, True])
    outcome = wait_ready(lambda: _report(next(answers)), None, 10, 1, clock, clock.sleep)
    assert outcome.ready and outcome.probes == 3 and outcome.waited_seconds == 2


def test_wait_times_out_with_last_reason():
    clock = FakeClock()
    outcome = wait_ready(lambda: _report(False), None, 5, 2, clock, clock.sleep)
    assert not outcome.ready
    assert outcome.waited_seconds == 5 and outcome.probes == 4  # t=0, 2, 4, 5
    assert outcome.report.reason.startswith("HTTP 503")


def test_wait_stops_at_once_when_the_container_dies():
    clock = FakeClock()
    event = ContainerEvent("exited", 3, 0, ["line"], "MIGRATION_REQUIRED: x")
    watches = iter([None, event])
    outcome = wait_ready(lambda: _report(False), lambda: next(watches), 100, 1, clock, clock.sleep)
    assert not outcome.ready and outcome.container_event is event and outcome.probes == 2


def test_zero_timeout_probes_once():
    clock = FakeClock()
    outcome = wait_ready(lambda: _report(False), None, 0, 1, clock, clock.sleep)
    assert outcome.probes == 1 and not outcome.ready


def test_failure_names_the_containers_death_and_its_last_error():
    clock = FakeClock()
    event = ContainerEvent("restarted", 3, 2, ["line"], "MIGRATION_REQUIRED: x")
    outcome = wait_ready(lambda: _report(False), lambda: event, 100, 1, clock, clock.sleep)
    assert outcome.failure("engine-042") == (
        "engine-042 restarted (exit code 3, restart count 2) while waiting for /health to be ready: MIGRATION_REQUIRED: x"
    )
    assert outcome.result()["container_event"]["error"] == "MIGRATION_REQUIRED: x"


def test_failure_of_a_time_out_gives_the_last_reason_and_result_leaves_the_internals_out():
    clock = FakeClock()
    outcome = wait_ready(lambda: _report(False), None, 5, 2, clock, clock.sleep)
    assert outcome.failure("engine-042") == "engine-042 not ready after 5s: HTTP 503, status 'starting'"
    result = outcome.result()
    assert result["ready"] is False and result["probes"] == 4 and result["reason"].startswith("HTTP 503")
    assert not {"body", "elapsed_ms", "error", "container_event"} & set(result)
