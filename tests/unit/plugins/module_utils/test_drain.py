# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._drain import (
    AMBIGUOUS,
    COMPLETED,
    CUT,
    FAILED,
    FINISHED,
    IN_FLIGHT,
    DrainError,
    DrainOptions,
    TurnAccount,
    TurnRecord,
    docker_time,
    drain_container,
    fold_turns,
    logs_show_completion,
    parse_log_record,
    settle_account,
    turn_events_from_logs,
    turn_events_from_replay,
)

# --------------------------------------------------------------------------
# Log lines as the three Engine profiles write them
# --------------------------------------------------------------------------


def line(message, *, request_id=None, task_id=None, level="INFO", **extra):
    return json.dumps({
        "timestamp": "2025-01-07T10:00:00.000Z",
        "level": level,
        "logger": "engine.execute",
        "request_id": request_id,
        "task_id": task_id,
        "message": message,
        "extra": extra,
    })


def start(rid, tid=None):
    return line("Starting execution", request_id=rid, task_id=tid or f"task-{rid}", direct=False, media=0)


def done_ms(rid, tid=None):
    return line("Execution completed", request_id=rid, task_id=tid or f"task-{rid}", duration_ms=120)


def done_s(rid, tid=None):
    return line("Turn finished", request_id=rid, task_id=tid or f"task-{rid}", elapsed_s=0.12)


def failed(rid, tid=None):
    return line("Execution failed: upstream 503", level="ERROR", request_id=rid, task_id=tid or f"task-{rid}",
                code="LLM_PROVIDER_ERROR")


BOOT = [
    line("Engine starting", port=8000),
    "not json at all",
    "[1, 2, 3]",
    line("Listening", host="0.0.0.0"),
    line("Ready", boot_seconds=0.5),
]
SHUTDOWN = [line("Shutdown requested", signal="SIGTERM", in_flight=1), line("Drain complete", in_flight=0)]


@pytest.mark.parametrize(
    "text, expected",
    [
        (line("Ready"), "Ready"),
        ("  " + line("Ready") + "  ", "Ready"),
        ("Traceback (most recent call last):", None),
        ("[1, 2]", None),
        ("{not json", None),
        ("", None),
    ],
)
def test_parse_log_record(text, expected):
    record = parse_log_record(text)
    assert (record or {}).get("message") == expected


@pytest.mark.parametrize(
    "lines, messages, kinds",
    [
        pytest.param([start("a"), done_ms("a")], None, [("start", None), ("end", COMPLETED)], id="duration_ms"),
        pytest.param([start("a"), done_s("a")], None, [("start", None), ("end", COMPLETED)], id="elapsed_s"),
        pytest.param([start("a")], None, [("start", None)], id="no-completion-line"),
        pytest.param([start("a"), done_ms("a")], ["Turn finished"], [("start", None)], id="other-wording-only"),
        pytest.param([start("a"), failed("a")], None, [("start", None), ("end", FAILED)], id="error-line"),
        pytest.param(
            [line("Checkpoint failed", level="ERROR", code="DATABASE_ERROR")], None, [], id="error-without-turn-ids"
        ),
        pytest.param(BOOT + SHUTDOWN, None, [], id="engine-own-drain-lines-ignored"),
    ],
)
def test_turn_events_from_logs(lines, messages, kinds):
    events = turn_events_from_logs(lines, messages or ("Execution completed", "Turn finished"))
    assert [(e.kind, e.outcome) for e in events] == kinds


def test_turn_events_from_logs_keep_ids_and_positions():
    events = turn_events_from_logs(BOOT + [start("r1", "t1"), done_s("r1", "t1")])
    assert [(e.position, e.request_id, e.task_id, e.at) for e in events] == [
        (5, "r1", "t1", "2025-01-07T10:00:00.000Z"),
        (6, "r1", "t1", "2025-01-07T10:00:00.000Z"),
    ]


def test_error_lines_do_not_end_turns_when_told_not_to():
    events = turn_events_from_logs([start("a"), failed("a")], error_ends_turn=False)
    assert [e.kind for e in events] == ["start"]


@pytest.mark.parametrize(
    "lines, messages, expected",
    [
        ([start("a"), done_ms("a")], ("Execution completed", "Turn finished"), True),
        ([start("a"), done_s("a")], ("Execution completed", "Turn finished"), True),
        ([start("a"), done_s("a")], ("Execution completed",), False),
        ([start("a"), failed("a")], ("Execution completed", "Turn finished"), False),
        (BOOT + SHUTDOWN, ("Execution completed", "Turn finished"), False),
        ([], (), False),
    ],
)
def test_logs_show_completion(lines, messages, expected):
    assert logs_show_completion(lines, messages) is expected


# --------------------------------------------------------------------------
# Folding turn events into an account
# --------------------------------------------------------------------------


def _fold_logs(before, after, *, final=True, messages=("Execution completed", "Turn finished")):
    lines = BOOT + before + after
    return fold_turns(turn_events_from_logs(lines, messages), len(BOOT) + len(before), final=final, source="logs")


@pytest.mark.parametrize(
    "before, after, final, counts, outcomes",
    [
        pytest.param([], [], True, (0, 0, 0, 0), [], id="idle"),
        pytest.param([start("a"), done_ms("a")], [], True, (0, 0, 0, 0), [], id="finished-before-the-drain"),
        pytest.param([start("a")], [done_ms("a")], True, (1, 1, 1, 0), [COMPLETED], id="finished-during-the-drain"),
        pytest.param([start("a")], [done_s("a")], True, (1, 1, 1, 0), [COMPLETED], id="alt-wording"),
        pytest.param([start("a")], SHUTDOWN, True, (1, 0, 0, 1), [CUT], id="cut-by-sigkill"),
        pytest.param([start("a")], [], False, (1, None, None, None), [IN_FLIGHT], id="check-mode"),
        pytest.param([start("a")], [failed("a")], True, (1, 1, 0, 0), [FAILED], id="failed-during-the-drain"),
        pytest.param(
            [start("a"), start("b"), done_ms("a")], [done_ms("b")], True, (1, 1, 1, 0), [COMPLETED], id="one-of-two"
        ),
        pytest.param(
            [start("a"), start("b"), start("c")], [done_ms("b")], True, (3, 1, 1, 2), [CUT, COMPLETED, CUT],
            id="concurrent-by-request-id",
        ),
        pytest.param([], [start("late"), done_ms("late")], True, (1, 1, 1, 0), [COMPLETED], id="accepted-in-the-gap"),
        pytest.param(
            [start("r1", "thread"), done_ms("r1", "thread"), start("r2", "thread")],
            [done_ms("r2", "thread")],
            True,
            (1, 1, 1, 0),
            [COMPLETED],
            id="reused-task-id",
        ),
    ],
)
def test_fold_logs(before, after, final, counts, outcomes):
    account = _fold_logs(before, after, final=final)
    assert (account.in_flight, account.finished, account.completed, account.not_finished) == counts
    assert [t.outcome for t in account.turns] == outcomes


def test_fold_matches_by_task_id_when_the_engine_logs_no_request_id():
    lines = [start(None, "t1"), start(None, "t2"), done_ms(None, "t2")]
    lines = [json.dumps({**json.loads(x), "request_id": None}) for x in lines]
    account = fold_turns(turn_events_from_logs(lines), 2, final=True, source="logs")
    assert [(t.task_id, t.outcome) for t in account.turns] == [("t1", CUT), ("t2", COMPLETED)]


def test_cut_turns_are_listed_by_task():
    account = _fold_logs([start("r9", "chat-9")], [])
    assert [t.task_id for t in account.cut_turns] == ["chat-9"]
    assert account.to_dict()["cut_turns"][0]["request_id"] == "r9"


# --------------------------------------------------------------------------
# The replay source
# --------------------------------------------------------------------------


def ev(name, data=None, event_id=None):
    return SimpleNamespace(event=name, data=data, id=None if event_id is None else str(event_id))


def started(task, i=None):
    return ev("thread_lifecycle", {"phase": "started", "task_id": task}, i)


def completed(task, i=None):
    return ev("thread_lifecycle", {"phase": "completed", "task_id": task}, i)


def test_turn_events_from_replay_reads_objects_and_dicts():
    events = turn_events_from_replay(
        [started("t1", 1), ev("heartbeat", {}, 2), ev("text_delta", {"text": "x"}, 3), completed("t1", 4),
         {"event": "thread_lifecycle", "data": {"phase": "started", "task_id": "t2"}, "id": "5"},
         ev("error", {"error": "LLM_PROVIDER_ERROR", "message": "..."}, 6)],
        offset=10,
    )
    assert [(e.kind, e.task_id, e.outcome, e.position, e.at) for e in events] == [
        ("start", "t1", None, 10, "1"),
        ("end", "t1", COMPLETED, 13, "4"),
        ("start", "t2", None, 14, "5"),
        ("end", None, FAILED, 15, "6"),
    ]


def _fold_replay(before, during, final=True):
    events = turn_events_from_replay(before) + turn_events_from_replay(during, offset=len(before))
    return fold_turns(events, len(before), final=final, source="replay")


@pytest.mark.parametrize(
    "before, during, counts, outcomes",
    [
        pytest.param([started("a")], [completed("a")], (1, 1, 0, 0), [COMPLETED], id="completed"),
        pytest.param([started("a")], [], (1, 0, 0, 1), [CUT], id="cut"),
        pytest.param([started("a")], [ev("error")], (1, 1, 1, 0), [FAILED], id="error-with-one-open-turn"),
        pytest.param(
            [started("a"), started("b")], [ev("error")], (2, 1, 1, 1), [AMBIGUOUS, AMBIGUOUS],
            id="error-with-two-open-turns",
        ),
        pytest.param(
            [started("a"), started("b"), ev("error")], [], (1, 0, 0, 1), [AMBIGUOUS, AMBIGUOUS],
            id="error-before-the-drain",
        ),
        pytest.param([started("a"), completed("a")], [], (0, 0, 0, 0), [], id="done-before"),
    ],
)
def test_fold_replay(before, during, counts, outcomes):
    account = _fold_replay(before, during)
    assert (account.in_flight, account.finished, account.failed, account.not_finished) == counts
    assert [t.outcome for t in account.turns] == outcomes
    if AMBIGUOUS in outcomes:
        assert "name no turn" in account.note


# --------------------------------------------------------------------------
# Settling the account
# --------------------------------------------------------------------------


def _account(source, in_flight, not_finished, outcomes=()):
    turns = [TurnRecord(f"t{i}", None, None, o) for i, o in enumerate(outcomes)]
    return TurnAccount(source, in_flight=in_flight, finished=in_flight - not_finished, not_finished=not_finished,
                       turns=turns)


@pytest.mark.parametrize(
    "logs, replay, killed, mode, source, in_flight, not_finished",
    [
        pytest.param(_account("logs", 1, 0), _account("replay", 1, 1), False, "auto", "logs", 1, 0, id="logs-win"),
        pytest.param(_account("logs", 2, 2), None, True, "auto", "logs", 2, 2, id="logs-killed"),
        pytest.param(None, _account("replay", 1, 1, [CUT]), True, "auto", "replay", 1, 1, id="replay-killed"),
        pytest.param(None, _account("replay", 1, 1, [CUT]), False, "auto", "replay", 1, 0, id="replay-sampled"),
        pytest.param(None, None, False, "auto", "exit", None, 0, id="no-source-clean-exit"),
        pytest.param(None, None, True, "auto", "none", None, None, id="no-source-killed"),
        pytest.param(_account("logs", 1, 0), None, False, "none", "none", None, None, id="accounting-off"),
    ],
)
def test_settle_account(logs, replay, killed, mode, source, in_flight, not_finished):
    account = settle_account(logs, replay, killed=killed, mode=mode, logs_note="the logs say nothing")
    assert (account.source, account.in_flight, account.not_finished) == (source, in_flight, not_finished)
    if source == "replay" and not killed:
        assert [t.outcome for t in account.turns] == [FINISHED]
        assert "sampled" in account.note
    if source in ("exit", "none") and mode != "none":
        assert account.note.startswith("the logs say nothing")


def test_settle_flags_turns_left_open_by_an_engine_that_exited_by_itself():
    account = settle_account(_account("logs", 1, 1, [CUT]), None, killed=False)
    assert account.not_finished == 1 and "exited by itself" in account.note


# --------------------------------------------------------------------------
# Options and Docker timestamps
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2025-01-07T10:00:00.123456789Z", 1736244000.123456),
        ("2025-01-07T10:00:00Z", 1736244000.0),
        ("2025-01-07T10:00:00.5+00:00", 1736244000.5),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_docker_time(value, expected):
    assert docker_time(value) == (pytest.approx(expected) if expected else None)


@pytest.mark.parametrize(
    "options, fragment",
    [
        (DrainOptions(grace_period=-1), "grace_period -1 is negative"),
        (DrainOptions(turn_accounting="guess"), "turn_accounting 'guess'"),
        (DrainOptions(log_window=0), "log_window 0"),
        (DrainOptions(turn_accounting="logs", completion_messages=()), "completion line"),
    ],
)
def test_options_are_validated(options, fragment):
    with pytest.raises(DrainError, match="engine-042") as err:
        options.validate("engine-042")
    assert fragment in str(err.value)


# --------------------------------------------------------------------------
# drain_container on a fake container (real time, short grace)
# --------------------------------------------------------------------------


class FakeContainer:
    """A container whose process stops ``stops_after`` seconds after SIGTERM (``None``: never)."""

    def __init__(self, lines, *, stops_after=0.05, exit_code=0, status="running", turn_ends_on_stop=None):
        self.name = "engine-042"
        self.id = "f" * 64
        self.lines = list(lines)
        self.stops_after = stops_after
        self.exit_code = exit_code
        self.status = status
        self.turn_ends_on_stop = turn_ends_on_stop
        self.term_at = None
        self.signals = []
        self.stopped_with = None

    @property
    def attrs(self):
        self._tick()
        running = self.status in ("running", "restarting")
        return {"State": {"Status": self.status, "Running": running, "Restarting": self.status == "restarting",
                          "Paused": False, "ExitCode": 0 if running else self.exit_code, "OOMKilled": False,
                          "StartedAt": "2020-01-01T00:00:00Z"}}

    def _tick(self):
        if (self.status == "running" and self.term_at is not None and self.stops_after is not None
                and time.monotonic() - self.term_at >= self.stops_after):
            self.status = "exited"
            if self.turn_ends_on_stop:
                self.lines.append(self.turn_ends_on_stop)

    def reload(self):
        self._tick()

    def kill(self, signal):
        self.signals.append(signal)
        if signal == "SIGTERM":
            self.term_at = time.monotonic()
        elif signal == "SIGKILL":
            self.status, self.exit_code = "exited", 137

    def stop(self, timeout):
        self.stopped_with = timeout
        self.status, self.exit_code = "exited", 0

    def logs(self, **kwargs):
        assert kwargs["since"] > 0
        return "\n".join(self.lines).encode()


def test_drain_of_a_container_that_finishes_its_turn():
    container = FakeContainer(BOOT + [start("r1", "chat-1")], stops_after=0.1, turn_ends_on_stop=done_ms("r1", "chat-1"))
    report = drain_container(container, DrainOptions(grace_period=5, poll_interval=0.01))
    assert container.signals == ["SIGTERM"]
    assert report.changed and not report.grace_expired and not report.killed
    assert report.exit_code == 0 and report.clean_exit is True
    assert 0.1 <= report.elapsed < 2
    assert (report.account.source, report.account.in_flight, report.account.not_finished) == ("logs", 1, 0)
    assert report.to_dict()["turns"][0]["outcome"] == COMPLETED


def test_drain_that_outlives_the_grace_is_killed():
    container = FakeContainer(BOOT + [start("r1", "chat-1")], stops_after=None)
    report = drain_container(container, DrainOptions(grace_period=0.2, poll_interval=0.01,
                                                     turn_accounting="logs"))
    assert container.signals == ["SIGTERM", "SIGKILL"]
    assert report.grace_expired and report.killed and report.exit_code == 137 and report.clean_exit is False
    assert report.elapsed >= 0.2
    assert [t.task_id for t in report.account.cut_turns] == ["chat-1"]


def test_zero_grace_kills_at_once():
    container = FakeContainer(BOOT, stops_after=None)
    report = drain_container(container, DrainOptions(grace_period=0, poll_interval=0.01))
    assert container.signals == ["SIGTERM", "SIGKILL"] and report.killed and report.elapsed < 1


def test_unclean_exit_code_is_reported():
    container = FakeContainer(BOOT, exit_code=1)
    report = drain_container(container, DrainOptions(grace_period=5, poll_interval=0.01))
    assert report.exit_code == 1 and not report.killed and report.clean_exit is False


def test_exit_143_is_clean_by_default():
    report = drain_container(FakeContainer(BOOT, exit_code=143), DrainOptions(poll_interval=0.01))
    assert report.clean_exit is True


def test_stopped_container_is_left_alone():
    container = FakeContainer(BOOT, status="exited", exit_code=0)
    report = drain_container(container, DrainOptions())
    assert not report.changed and container.signals == [] and report.signal is None
    assert report.to_dict()["account_source"] == "none"


def test_check_mode_sends_nothing_and_counts_turns_in_flight():
    container = FakeContainer(BOOT + [start("a"), done_ms("a"), start("b", "chat-b")])
    report = drain_container(container, DrainOptions(), check_mode=True)
    assert container.signals == [] and report.changed and report.state == "running"
    assert report.account.in_flight == 1
    assert [(t.task_id, t.outcome) for t in report.account.turns] == [("chat-b", IN_FLIGHT)]


def test_no_completion_line_and_no_replay_is_unknown_not_guessed():
    container = FakeContainer(BOOT + [start("a")], stops_after=0.05)
    report = drain_container(container, DrainOptions(poll_interval=0.01))
    assert report.account.source == "exit" and report.account.in_flight is None
    assert report.account.not_finished == 0
    assert "no completion line" in report.account.note


def test_restart_loop_is_stopped_with_docker_stop():
    container = FakeContainer(BOOT, status="restarting")
    report = drain_container(container, DrainOptions(grace_period=7))
    assert container.stopped_with == 7 and report.signal == "docker stop" and report.changed


class FakeReplay:
    def __init__(self, before, during=(), fail=False):
        self.batches = [list(before), list(during)]
        self.fail = fail
        self.calls = []

    def replay(self, after_ms=0):
        self.calls.append(after_ms)
        if self.fail:
            raise RuntimeError("HTTP 401 INVALID_KEY")
        return self.batches.pop(0) if self.batches else []


def test_replay_counts_the_cut_turn_when_the_logs_cannot():
    container = FakeContainer(BOOT + [start("a")], stops_after=None)
    replay = FakeReplay([started("chat-1", 1000)])
    report = drain_container(container, DrainOptions(grace_period=0.3, poll_interval=0.01), replay_client=replay)
    assert report.account.source == "replay"
    assert [(t.task_id, t.outcome) for t in report.account.turns] == [("chat-1", CUT)]
    assert replay.calls[1] == 1000  # polls resume after the last event seen


def test_replay_mode_fails_before_anything_is_sent():
    container = FakeContainer(BOOT)
    with pytest.raises(DrainError, match="nothing was stopped"):
        drain_container(container, DrainOptions(turn_accounting="replay"), replay_client=FakeReplay([], fail=True))
    assert container.signals == []
    with pytest.raises(DrainError, match="engine_key"):
        drain_container(container, DrainOptions(turn_accounting="replay"))
    assert container.signals == []
