# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Drain one Engine: SIGTERM, a grace period, SIGKILL if need be, and an account of its turns.

What the contract documents, and all this file relies on: SIGTERM starts a
graceful shutdown in which in-flight turns finish, up to a grace period
(``docker stop --timeout`` semantics: SIGTERM, wait, SIGKILL); a turn cut
by SIGKILL is lost; logs are JSON lines with ``timestamp``, ``level``,
``logger``, ``request_id``, ``task_id``, ``message``, ``extra``; a turn logs
``"Starting execution"``; ``GET /execute/replay`` replays the buffered
events, among them ``thread_lifecycle`` started/completed and ``error``.

What it does not document (the [GAP]s) are options here: the completion
line of a turn (``completion_messages``; an Engine may log none, and then
the log account is *unknown* rather than guessed), whether an ERROR line
of a turn ends it, and the exit code of a clean drain (``clean_exit_codes``).

The accounting is pure: :func:`turn_events_from_logs` and
:func:`turn_events_from_replay` turn either source into a sequence of turn
starts and ends, :func:`fold_turns` counts the turns in flight at the
drain's position in that sequence and how each ended, and
:func:`settle_account` picks the account to report. :func:`drain_container`
does the Docker side.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ansible_collections.engineops.fleet.plugins.module_utils._docker import log_since

START_MESSAGE = "Starting execution"
DEFAULT_COMPLETION_MESSAGES: tuple[str, ...] = ("Execution completed", "Turn finished")
DEFAULT_CLEAN_EXIT_CODES: tuple[int, ...] = (0, 143)
DEFAULT_GRACE_PERIOD = 30
DEFAULT_LOG_WINDOW = 3600
ACCOUNTING_MODES = ("auto", "logs", "replay", "none")
SIGKILL_EXIT_CODE = 137
DRAIN_SIGNAL = "SIGTERM"

# Turn outcomes, as reported per turn.
COMPLETED = "completed"  # its completion line / completed event came
FAILED = "failed"  # it ended with an error (ERROR line of the turn, replay ``error`` event)
FINISHED = "finished"  # it ended, how is not known (the Engine exited by itself: by the contract it finished)
CUT = "cut"  # still running when SIGKILL came: lost
IN_FLIGHT = "in_flight"  # still running (check mode: nothing was stopped)
AMBIGUOUS = "ambiguous"  # cut or failed: an error event that names no turn could be its end

_FRACTION_RE = re.compile(r"\.(\d+)")


class DrainError(Exception):
    """The Engine could not be drained (or the drain could not be set up)."""


# --------------------------------------------------------------------------
# Turn events: the two sources, normalised
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnEvent:
    """A turn starting or ending, at ``position`` in its source (a log line index, a replay event index).

    An end with neither ``request_id`` nor ``task_id`` is *unattributed*: the
    replay's ``error`` event does not say which turn it ends.
    """

    kind: str  # "start" | "end"
    position: int
    task_id: str | None = None
    request_id: str | None = None
    at: str | None = None
    outcome: str | None = None  # ends only: COMPLETED or FAILED


def parse_log_record(line: str) -> dict[str, Any] | None:
    """One log line as a JSON object, or ``None`` when it is not one (a stray print, a traceback)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def turn_events_from_logs(
    lines: Iterable[str],
    completion_messages: Sequence[str] = DEFAULT_COMPLETION_MESSAGES,
    *,
    start_message: str = START_MESSAGE,
    error_ends_turn: bool = True,
) -> list[TurnEvent]:
    """Turn starts and ends from the Engine's JSON log lines; ``position`` is the line's index.

    A start is a line whose ``message`` is ``start_message``; an end is a
    line whose ``message`` is one of ``completion_messages`` (outcome
    completed) or, with ``error_ends_turn``, an ERROR line that names a
    request or task (outcome failed).
    """
    completions = set(completion_messages)
    events = []
    for index, line in enumerate(lines):
        record = parse_log_record(line)
        if record is None:
            continue
        message = record.get("message")
        ids = {
            "task_id": _text(record.get("task_id")),
            "request_id": _text(record.get("request_id")),
            "at": _text(record.get("timestamp")),
        }
        if message == start_message:
            events.append(TurnEvent("start", index, **ids))
        elif isinstance(message, str) and message in completions:
            events.append(TurnEvent("end", index, outcome=COMPLETED, **ids))
        elif (
            error_ends_turn
            and str(record.get("level") or "").upper() == "ERROR"
            and (ids["task_id"] or ids["request_id"])
        ):
            events.append(TurnEvent("end", index, outcome=FAILED, **ids))
    return events


def logs_show_completion(lines: Iterable[str], completion_messages: Sequence[str]) -> bool:
    """Whether any log line is a completion line: the evidence that the Engine logs them in this form."""
    completions = set(completion_messages)
    for line in lines:
        record = parse_log_record(line)
        if record is not None and isinstance(record.get("message"), str) and record["message"] in completions:
            return True
    return False


def _event_name(event: Any) -> str:
    return str(getattr(event, "event", None) or (event.get("event") if isinstance(event, dict) else "") or "")


def _event_data(event: Any) -> Any:
    return getattr(event, "data", None) if not isinstance(event, dict) else event.get("data")


def turn_events_from_replay(events: Iterable[Any], offset: int = 0) -> list[TurnEvent]:
    """Turn starts and ends from replayed events (``SSEEvent`` or ``{"event", "data"}`` dicts).

    ``thread_lifecycle`` ``started``/``completed`` name their ``task_id``;
    an ``error`` event ends a turn (failed) without saying which.
    ``position`` is ``offset`` plus the event's index.
    """
    out = []
    for index, event in enumerate(events):
        name = _event_name(event)
        data = _event_data(event)
        position = offset + index
        at = _text(getattr(event, "id", None) if not isinstance(event, dict) else event.get("id"))
        if name == "thread_lifecycle" and isinstance(data, dict):
            phase = data.get("phase")
            task_id = _text(data.get("task_id"))
            if phase == "started":
                out.append(TurnEvent("start", position, task_id=task_id, at=at))
            elif phase == "completed":
                out.append(TurnEvent("end", position, task_id=task_id, at=at, outcome=COMPLETED))
        elif name == "error":
            out.append(TurnEvent("end", position, at=at, outcome=FAILED))
    return out


# --------------------------------------------------------------------------
# The account
# --------------------------------------------------------------------------


@dataclass
class TurnRecord:
    """One turn that was in flight when the drain began."""

    task_id: str | None
    request_id: str | None
    started_at: str | None
    outcome: str
    ended_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "request_id": self.request_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome,
        }


@dataclass
class TurnAccount:
    """The turns in flight when the drain began, and how many of them did not finish.

    ``None`` counts mean *unknown*; ``note`` then says why.
    """

    source: str  # "logs", "replay", "exit" (the contract, from a clean exit), "none"
    in_flight: int | None = None
    finished: int | None = None
    completed: int | None = None
    failed: int | None = None
    not_finished: int | None = None
    turns: list[TurnRecord] = field(default_factory=list)
    note: str | None = None

    @property
    def known(self) -> bool:
        return self.in_flight is not None

    @property
    def cut_turns(self) -> list[TurnRecord]:
        return [t for t in self.turns if t.outcome == CUT]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "in_flight": self.in_flight,
            "finished": self.finished,
            "completed": self.completed,
            "failed": self.failed,
            "not_finished": self.not_finished,
            "turns": [t.to_dict() for t in self.turns],
            "cut_turns": [t.to_dict() for t in self.cut_turns],
            "note": self.note,
        }


@dataclass
class _Open:
    event: TurnEvent
    end: TurnEvent | None = None
    unattributed_before: bool = False


def _matches(open_turn: _Open, end: TurnEvent) -> bool:
    start = open_turn.event
    if end.request_id and start.request_id:
        return end.request_id == start.request_id
    return bool(end.task_id) and end.task_id == start.task_id


def fold_turns(events: Sequence[TurnEvent], drain_position: int, *, final: bool, source: str) -> TurnAccount:
    """Count the turns in flight at ``drain_position`` and how each ended.

    A turn is in flight at the drain when it started and had not ended
    before ``drain_position``; a turn that started at or after it (accepted
    between the last look and the SIGTERM) is counted too. With ``final``
    (the container has exited) a turn that never ended was cut; without it
    (nothing stopped yet) it is still in flight. An end that names no turn
    closes the only open turn, or else is counted without a name, and the
    turns it may have ended are reported ``ambiguous``.
    """
    turns: list[_Open] = []
    unattributed: list[int] = []  # positions of ends that name no turn and could not be matched
    for event in sorted(events, key=lambda e: e.position):
        if event.kind == "start":
            turns.append(_Open(event))
            continue
        open_turns = [t for t in turns if t.end is None]
        if event.request_id is None and event.task_id is None:
            if len(open_turns) == 1:
                open_turns[0].end = event
            elif open_turns:
                unattributed.append(event.position)
            continue
        for candidate in open_turns:  # oldest first: a reused task_id continues a thread in order
            if _matches(candidate, event):
                candidate.end = event
                break
    in_flight = [t for t in turns if t.end is None or t.end.position >= drain_position]
    before = sum(1 for p in unattributed if p < drain_position)
    after = len(unattributed) - before
    open_at_end = [t for t in in_flight if t.end is None]
    # Ends before the drain that name no turn closed some of the open ones.
    count = max(0, len(in_flight) - before)
    unresolved = max(0, len(open_at_end) - before)
    failed_unnamed = min(after, unresolved)
    not_finished = unresolved - failed_unnamed
    ambiguous = bool(unattributed) and bool(open_at_end)
    records = []
    for turn in in_flight:
        if turn.end is not None:
            outcome, ended_at = turn.end.outcome or FINISHED, turn.end.at
        elif ambiguous:
            outcome, ended_at = AMBIGUOUS, None
        else:
            outcome, ended_at = (CUT if final else IN_FLIGHT), None
        records.append(TurnRecord(turn.event.task_id, turn.event.request_id, turn.event.at, outcome, ended_at))
    completed = sum(1 for r in records if r.outcome == COMPLETED)
    failed = sum(1 for r in records if r.outcome == FAILED) + failed_unnamed
    note = None
    if ambiguous:
        note = (
            f"{len(unattributed)} error event(s) name no turn; the turns they ended cannot be told apart, "
            "so the counts are exact but the turns left open are marked ambiguous"
        )
    if not final:
        return TurnAccount(source, in_flight=count, turns=records, note=note)
    return TurnAccount(
        source,
        in_flight=count,
        finished=completed + failed,
        completed=completed,
        failed=failed,
        not_finished=not_finished,
        turns=records,
        note=note,
    )


def settle_account(
    logs: TurnAccount | None,
    replay: TurnAccount | None,
    *,
    killed: bool,
    mode: str = "auto",
    logs_note: str | None = None,
) -> TurnAccount:
    """The account to report, from the log account, the replay account and how the Engine stopped.

    The log account wins when there is one (``None`` when the Engine logs
    no completion line, or logs could not be read). Next the replay account;
    when the Engine exited by itself within the grace, the contract says its
    in-flight turns finished, so a turn the replay left open only missed its
    last event. With neither source: if the Engine exited by itself, nothing
    was cut (source ``exit``) but the number in flight is unknown; if it
    was killed, both are unknown.
    """
    if mode == "none":
        return TurnAccount("none", note="turn accounting is off (turn_accounting=none)")
    if logs is not None:
        if not killed and logs.not_finished:
            extra = (
                f"the Engine exited by itself within the grace period, yet {logs.not_finished} turn(s) "
                "logged no end: it broke off turns on its own (a crash?) or did not log their end"
            )
            logs = replace(logs, note=f"{logs.note}; {extra}" if logs.note else extra)
        return logs
    if replay is not None:
        if killed or not replay.not_finished:
            return replay
        turns = [replace(t, outcome=FINISHED) if t.outcome in (CUT, AMBIGUOUS) else t for t in replay.turns]
        return replace(
            replay,
            turns=turns,
            finished=replay.in_flight,
            not_finished=0,
            note=(
                "the Engine exited by itself within the grace period, so by the contract every turn in flight "
                "finished; the replay was sampled and missed the end of some"
            ),
        )
    why = logs_note or "no source tells which turns were in flight"
    if killed:
        return TurnAccount("none", note=f"{why}; the grace period ran out and SIGKILL cut whatever was in flight")
    return TurnAccount(
        "exit",
        finished=None,
        not_finished=0,
        note=(
            f"{why}; the Engine exited by itself within the grace period, so by the contract every turn "
            "in flight finished"
        ),
    )


# --------------------------------------------------------------------------
# Docker side
# --------------------------------------------------------------------------


def docker_time(value: str | None) -> float | None:
    """Epoch seconds of a Docker timestamp (``2024-11-26T22:33:00.123456789Z``); ``None`` for the zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python before 3.11 reads at most 6 fraction digits; Docker writes 9.
    text = _FRACTION_RE.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


@dataclass
class DrainOptions:
    grace_period: float = DEFAULT_GRACE_PERIOD
    completion_messages: tuple[str, ...] = DEFAULT_COMPLETION_MESSAGES
    turn_accounting: str = "auto"
    error_ends_turn: bool = True
    log_window: float = DEFAULT_LOG_WINDOW
    clean_exit_codes: tuple[int, ...] = DEFAULT_CLEAN_EXIT_CODES
    poll_interval: float = 0.2
    replay_interval: float = 0.5
    kill_wait: float = 30.0

    def validate(self, name: str) -> None:
        """Raise :class:`DrainError` naming the bad value and what would be right."""
        if self.grace_period < 0:
            raise DrainError(
                f"Cannot drain {name}: grace_period {self.grace_period} is negative; give the seconds between "
                f"SIGTERM and SIGKILL, 0 or more (docker stop --timeout, default {DEFAULT_GRACE_PERIOD})"
            )
        if self.turn_accounting not in ACCOUNTING_MODES:
            raise DrainError(
                f"Cannot drain {name}: turn_accounting {self.turn_accounting!r} is not one of "
                f"{', '.join(ACCOUNTING_MODES)}"
            )
        if self.log_window <= 0:
            raise DrainError(
                f"Cannot drain {name}: log_window {self.log_window} must be a positive number of seconds "
                f"(default {DEFAULT_LOG_WINDOW})"
            )
        if self.turn_accounting == "logs" and not [m for m in self.completion_messages if m]:
            raise DrainError(
                f"Cannot drain {name}: turn_accounting=logs needs the Engine's completion line in "
                "completion_messages (e.g. 'Execution completed'); with none, use replay (and engine_key) or auto"
            )


@dataclass
class DrainReport:
    """What draining one container did and saw."""

    name: str
    id: str
    was_running: bool
    state_before: str
    state: str
    signal: str | None = None
    grace_period: float = DEFAULT_GRACE_PERIOD
    elapsed: float | None = None
    grace_expired: bool = False
    killed: bool = False
    oom_killed: bool = False
    exit_code: int | None = None
    clean_exit: bool | None = None
    account: TurnAccount = field(default_factory=lambda: TurnAccount("none"))
    warnings: list[str] = field(default_factory=list)
    clean_exit_codes: tuple[int, ...] = DEFAULT_CLEAN_EXIT_CODES

    @property
    def changed(self) -> bool:
        return self.was_running

    def to_dict(self) -> dict[str, Any]:
        account = self.account.to_dict()
        return {
            "name": self.name,
            "id": self.id,
            "was_running": self.was_running,
            "state_before": self.state_before,
            "state": self.state,
            "signal": self.signal,
            "grace_period": self.grace_period,
            "elapsed": self.elapsed,
            "grace_expired": self.grace_expired,
            "killed": self.killed,
            "oom_killed": self.oom_killed,
            "exit_code": self.exit_code,
            "clean_exit": self.clean_exit,
            "in_flight": account["in_flight"],
            "finished": account["finished"],
            "completed": account["completed"],
            "failed": account["failed"],
            "not_finished": account["not_finished"],
            "turns": account["turns"],
            "cut_turns": account["cut_turns"],
            "account_source": account["source"],
            "account_note": account["note"],
        }


def _state(attrs: dict[str, Any]) -> dict[str, Any]:
    return attrs.get("State") or {}


def is_running(attrs: dict[str, Any]) -> bool:
    """Running, paused or restarting: the container has (or is about to have) a process."""
    state = _state(attrs)
    return bool(state.get("Running") or state.get("Restarting") or state.get("Paused"))


def _fetch_logs(container: Any, since: float) -> list[str]:
    raw = container.logs(stdout=True, stderr=True, since=log_since(since))
    return raw.decode("utf-8", errors="replace").splitlines()


class _Replay:
    """The replay source: a snapshot before the SIGTERM, then polls until the Engine stops answering."""

    def __init__(self, client: Any, window: float) -> None:
        self.client = client
        self.window = window
        self.before: list[Any] = []
        self.during: list[Any] = []
        self.last_id: int = 0
        self.error: str | None = None
        self.usable = False

    def _ids(self, events: list[Any]) -> None:
        for event in events:
            try:
                self.last_id = max(self.last_id, int(getattr(event, "id", None) or 0))
            except (TypeError, ValueError):
                pass

    def snapshot(self) -> None:
        after = max(0, int((time.time() - self.window) * 1000))
        self.before = list(self.client.replay(after))
        self._ids(self.before)
        self.usable = True

    def poll(self) -> bool:
        try:
            events = list(self.client.replay(self.last_id))
        except Exception as exc:  # noqa: BLE001 - an Engine shutting down answers anything or nothing
            self.error = str(exc)
            return False
        known = {getattr(e, "id", None) for e in self.during}
        fresh = [e for e in events if getattr(e, "id", None) is None or getattr(e, "id", None) not in known]
        self.during.extend(fresh)
        self._ids(fresh)
        return True

    def account(self, final: bool) -> TurnAccount:
        events = turn_events_from_replay(self.before) + turn_events_from_replay(self.during, offset=len(self.before))
        return fold_turns(events, len(self.before), final=final, source="replay")


def _log_account(
    lines: list[str] | None, drain_position: int, options: DrainOptions, final: bool
) -> tuple[TurnAccount | None, str | None]:
    """The log account, or ``None`` and why when the logs cannot give one."""
    if lines is None:
        return None, "the container's logs could not be read"
    events = turn_events_from_logs(
        lines, options.completion_messages, error_ends_turn=options.error_ends_turn
    )
    starts = [e for e in events if e.kind == "start"]
    if options.turn_accounting == "auto" and starts and not logs_show_completion(lines, options.completion_messages):
        shown = ", ".join(repr(m) for m in options.completion_messages) or "none given"
        return None, (
            f"the Engine logged {len(starts)} {START_MESSAGE!r} line(s) but no completion line "
            f"({shown}) since it started or in the log window, so the logs cannot tell which turns finished "
            "(set completion_messages to the Engine's completion line, or give engine_key for the replay)"
        )
    return fold_turns(events, drain_position, final=final, source="logs"), None


def drain_container(
    container: Any,
    options: DrainOptions,
    *,
    replay_client: Any = None,
    check_mode: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainReport:
    """SIGTERM the container, wait up to the grace period, SIGKILL if it still runs, and account for its turns.

    ``replay_client`` (an ``EngineClient`` with the key) enables the replay
    source. In check mode nothing is sent; the report counts the turns in
    flight now. Raises :class:`DrainError` when the container cannot be
    signalled or does not stop.
    """
    options.validate(container.name)
    container.reload()
    attrs = container.attrs
    state = _state(attrs)
    status = state.get("Status") or "unknown"
    report = DrainReport(
        name=container.name,
        id=container.id,
        was_running=is_running(attrs),
        state_before=status,
        state=status,
        grace_period=options.grace_period,
        clean_exit_codes=tuple(options.clean_exit_codes),
    )
    if not report.was_running:
        report.exit_code = state.get("ExitCode") if status not in ("created",) else None
        report.oom_killed = bool(state.get("OOMKilled"))
        report.account = TurnAccount("none", note=f"the container was not running ({status}): nothing to drain")
        return report

    mode = options.turn_accounting
    pre_lines: list[str] | None = None
    since = 0.0
    if mode in ("auto", "logs"):
        started = docker_time(state.get("StartedAt")) or 0.0
        since = max(started, time.time() - options.log_window)
        try:
            pre_lines = _fetch_logs(container, since)
        except Exception as exc:  # noqa: BLE001 - any log driver failure only costs the log account
            if mode == "logs":
                raise DrainError(
                    f"Cannot read the logs of {container.name} for turn_accounting=logs: {exc}; "
                    "use a log driver docker logs can read (json-file, local, journald), or turn_accounting=auto"
                ) from None
            report.warnings.append(f"Cannot read the logs of {container.name}: {exc}")
    replay: _Replay | None = None
    wants_replay = mode == "replay" or (
        mode == "auto"
        and replay_client is not None
        and not (pre_lines is not None and logs_show_completion(pre_lines, options.completion_messages))
    )
    if wants_replay:
        if replay_client is None:
            raise DrainError(
                f"Cannot drain {container.name} with turn_accounting=replay: GET /execute/replay needs the "
                "Engine's key; set engine_key (or ENGINE_KEY), or use turn_accounting=auto"
            )
        replay = _Replay(replay_client, options.log_window)
        try:
            replay.snapshot()
        except Exception as exc:  # noqa: BLE001
            if mode == "replay":
                raise DrainError(
                    f"Cannot read the replay of {container.name} before draining it: {exc}; nothing was stopped"
                ) from None
            report.warnings.append(f"Cannot read the replay of {container.name}: {exc}")
            replay = None
    drain_position = len(pre_lines) if pre_lines is not None else 0

    if check_mode:
        logs_account, why = (None, None)
        if pre_lines is not None:
            logs_account, why = _log_account(pre_lines, drain_position, options, final=False)
        replay_account = replay.account(final=False) if replay is not None else None
        chosen = logs_account or replay_account
        report.signal = DRAIN_SIGNAL
        report.account = chosen or TurnAccount(
            "none", note=why or ("turn accounting is off" if mode == "none" else "no source of turns")
        )
        return report

    if state.get("Restarting"):
        # Between two runs of a restart loop no process is there to signal: docker stop cancels the loop.
        began = time.monotonic()
        try:
            container.stop(timeout=int(options.grace_period))
        except Exception as exc:  # noqa: BLE001
            raise DrainError(f"Cannot stop {container.name} (in a restart loop): {exc}") from None
        container.reload()
        state = _state(container.attrs)
        report.signal = "docker stop"
        report.elapsed = round(time.monotonic() - began, 3)
        report.state = state.get("Status") or "unknown"
        report.exit_code = state.get("ExitCode")
        report.oom_killed = bool(state.get("OOMKilled"))
        report.killed = report.exit_code == SIGKILL_EXIT_CODE or report.oom_killed
        report.clean_exit = not report.killed and report.exit_code in options.clean_exit_codes
        report.account = TurnAccount("none", note="the container was in a restart loop: no turn could be in flight")
        return report

    report.signal = DRAIN_SIGNAL
    began = time.monotonic()
    deadline = began + options.grace_period
    try:
        container.kill(signal=DRAIN_SIGNAL)
    except Exception as exc:  # noqa: BLE001
        container.reload()
        if is_running(container.attrs):
            raise DrainError(f"Cannot send {DRAIN_SIGNAL} to {container.name}: {exc}") from None
    next_replay = began + options.replay_interval
    sent_kill = False
    while True:
        container.reload()
        if not _state(container.attrs).get("Running"):
            break
        now = time.monotonic()
        if now >= deadline:
            if replay is not None:
                replay.poll()  # the last look before the kill: turns in flight keep the Engine answering
            try:
                container.kill(signal="SIGKILL")
            except Exception as exc:  # noqa: BLE001
                container.reload()
                if _state(container.attrs).get("Running"):
                    raise DrainError(
                        f"Cannot SIGKILL {container.name} after its grace period of {options.grace_period}s: {exc}"
                    ) from None
            sent_kill = True
            kill_deadline = time.monotonic() + options.kill_wait
            while True:
                container.reload()
                if not _state(container.attrs).get("Running"):
                    break
                if time.monotonic() > kill_deadline:
                    raise DrainError(
                        f"Cannot stop {container.name}: still running {options.kill_wait:.0f}s after SIGKILL "
                        "(the Docker daemon or the kernel is stuck)"
                    )
                sleep(options.poll_interval)
            break
        if replay is not None and now >= next_replay:
            replay.poll()
            next_replay = now + options.replay_interval
        sleep(min(options.poll_interval, max(0.0, deadline - now)) or options.poll_interval)

    report.elapsed = round(time.monotonic() - began, 3)
    state = _state(container.attrs)
    report.state = state.get("Status") or "unknown"
    report.exit_code = state.get("ExitCode")
    report.oom_killed = bool(state.get("OOMKilled"))
    report.grace_expired = sent_kill
    # A container that exits by itself in the instant the SIGKILL goes out outlived the grace all the same,
    # but did not die of it (and is accounted for as if it had: no guess that its turns finished).
    report.killed = report.oom_killed or (sent_kill and report.exit_code == SIGKILL_EXIT_CODE)
    report.clean_exit = not report.killed and report.exit_code in options.clean_exit_codes

    logs_account, why = None, None
    if mode in ("auto", "logs") and pre_lines is not None:
        try:
            post_lines: list[str] | None = _fetch_logs(container, since)
        except Exception as exc:  # noqa: BLE001
            post_lines = None
            report.warnings.append(f"Cannot read the logs of {container.name} after the drain: {exc}")
        logs_account, why = _log_account(post_lines, drain_position, options, final=True)
    elif mode in ("auto", "logs"):
        why = "the container's logs could not be read"
    replay_account = replay.account(final=True) if replay is not None else None
    report.account = settle_account(
        logs_account, replay_account, killed=report.killed or report.grace_expired, mode=mode, logs_note=why
    )
    return report


def drain_warnings(report: DrainReport) -> list[str]:
    """What an operator must hear about a drain: the report's own warnings, cut turns, a SIGKILL, an unclean exit."""
    out = list(report.warnings)
    account = report.account
    if account.not_finished:
        cut = ", ".join(t.task_id or t.request_id or "?" for t in account.cut_turns)
        why = (
            f"the grace period of {report.grace_period:g}s ran out and SIGKILL cut them"
            if report.grace_expired
            else f"the Engine exited (code {report.exit_code}) without logging their end"
        )
        out.append(
            f"{account.not_finished} of {account.in_flight} turn(s) in flight on {report.name} did not finish: "
            + why + (f" ({cut})" if cut else "")
        )
    elif report.grace_expired and account.not_finished is None:
        out.append(
            f"The grace period of {report.grace_period:g}s of {report.name} ran out and SIGKILL was sent; which turns "
            f"were cut is unknown: {account.note}"
        )
    if report.was_running and report.clean_exit is False and not report.killed and report.exit_code is not None:
        out.append(
            f"{report.name} exited with code {report.exit_code} after SIGTERM, not one of the clean exit codes "
            f"{list(report.clean_exit_codes)} (clean_exit_codes)"
        )
    return out
