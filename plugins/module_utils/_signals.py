# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Post-upgrade signals over a window, and their comparison with a baseline or a control cohort.

Sources, as the Engine's contract documents them:

- its JSON log lines (``docker logs --since``): turns started (``"Starting
  execution"``), ERROR lines by code, turn durations where a completion
  line carries one (the contract leaves the line and the field open, so
  both are options; without a match the window says "no duration in
  logs"), and WARNING-or-above message templates (:func:`normalise_template`);
- probe turns the caller sends itself: client-side latency, ``usage``
  events (cache hit ratio ``sum(cache_hit_tokens) / sum(input_tokens)``),
  ``error`` events and refused calls.

:func:`build_window` turns both into a JSON-able *window*;
:func:`merge_windows` pools the windows of a control cohort;
:func:`compare_windows` judges a window against a baseline window, signal
by signal, with a three-valued verdict (pass, fail, inconclusive) and its
evidence. Latency and the error rate's timeouts are *load-sensitive*: a
window carries the ``conditions`` it was measured under
(:func:`window_conditions`), and :func:`reference_conditions` says whether
the reference was measured under the current window's; when it was not, a
load-sensitive regression alone is ``inconclusive``, never ``fail``.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ansible_collections.engineops.fleet.plugins.module_utils._stats import (
    bootstrap_ci,
    fisher_exact,
    mann_whitney_u,
    median,
    more_needed,
    newcombe_interval,
    paired_ratio_of_sums_ci,
    quantile,
    quantile_ratio,
    ratio_of_sums,
    significant,
    thin,
    two_proportion_ztest,
)

WINDOW_FORMAT = "engineops.fleet.metrics/1"
SIGNALS = ("error_rate", "latency", "cache_hit_ratio", "new_templates")
# Failures the client saw as a timeout or a lost connection, without an Engine error: a busy host makes them too.
TRANSPORT_ERRORS = ("TIMEOUT", "CONNECTION_ERROR")
CPU_PRESSURE_FILE = "/proc/pressure/cpu"  # Linux pressure stall information
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_ALIASES = {"WARN": "WARNING", "ERR": "ERROR", "FATAL": "CRITICAL", "CRIT": "CRITICAL"}
DEFAULT_START_MESSAGES = ("Starting execution",)
DEFAULT_COMPLETION_MESSAGES = ("Execution completed", "Turn finished", "Turn completed", "Execution finished")
DEFAULT_DURATION_FIELDS = ("duration_ms", "elapsed_ms", "latency_ms", "duration_s", "elapsed_s", "duration_seconds",
                           "elapsed_seconds")
DEFAULT_TEMPLATE_LEVELS = ("WARNING", "ERROR", "CRITICAL")
_UNITS = {"ms": 1.0, "s": 1000.0, "sec": 1000.0, "seconds": 1000.0, "us": 0.001, "ns": 0.000001}
_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TEMPLATE_MAX = 300


class SignalsError(ValueError):
    """An option or a stored window cannot be used."""


# ------------------------------------------------------------------ options


def parse_since(value: Any, now: float) -> float:
    """The window's start as epoch seconds.

    ``value`` is a duration before ``now`` with units (``90s``, ``15m``,
    ``1h30m``, ``2d``), epoch seconds (a bare number) or an ISO 8601 time
    (UTC when it has no offset).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    if not text:
        raise SignalsError("since is empty; give a duration such as 15m, epoch seconds or an ISO 8601 time")
    if re.fullmatch(r"(\d+(\.\d+)?[smhd])+", text):
        seconds = sum(float(n) * _SINCE_UNITS[u] for n, _f, u in re.findall(r"(\d+(\.\d+)?)([smhd])", text))
        return now - seconds
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SignalsError(f"since={text!r} is neither a duration (15m, 1h), epoch seconds nor an ISO 8601 "
                           "time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def parse_duration_field(spec: str) -> tuple[str, float]:
    """``(field path, factor to milliseconds)`` of a duration field option.

    ``name_ms`` is milliseconds; ``name_s``, ``name_sec``, ``name_seconds``
    seconds; ``name_us``, ``name_ns`` micro- and nanoseconds; ``name:unit``
    names the unit explicitly. A name without a unit is refused: the module
    says "no duration in logs" rather than guess one.
    """
    text = str(spec).strip()
    name, sep, unit = text.partition(":")
    if sep:
        if unit not in _UNITS or not name:
            raise SignalsError(f"duration field {text!r}: unit must be one of {', '.join(_UNITS)}")
        return name, _UNITS[unit]
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if name.endswith("_" + suffix):
            return name, _UNITS[suffix]
    raise SignalsError(f"duration field {text!r} does not say its unit; name it like duration_ms or elapsed_s, "
                       f"or add one as {text}:ms")


class LogOptions:
    """How to read the Engine's log lines (the [GAP]s of the contract are these options)."""

    def __init__(self, start_messages: Sequence[str] = DEFAULT_START_MESSAGES,
                 completion_messages: Sequence[str] = DEFAULT_COMPLETION_MESSAGES,
                 duration_fields: Sequence[str] = DEFAULT_DURATION_FIELDS,
                 template_levels: Sequence[str] = DEFAULT_TEMPLATE_LEVELS,
                 ignore_templates: Sequence[str] = (), max_samples: int = 2000) -> None:
        self.start_messages = list(start_messages)
        self.completion_messages = list(completion_messages)
        self.fields = [parse_duration_field(f) for f in duration_fields]
        self.template_levels = [normalise_level(level) for level in template_levels]
        unknown = [level for level in self.template_levels if level not in LEVELS]
        if unknown:
            raise SignalsError(f"template levels must be among {', '.join(LEVELS)}, got {', '.join(unknown)}")
        try:
            self.ignore = [re.compile(p) for p in ignore_templates]
        except re.error as exc:
            raise SignalsError(f"ignore_templates: invalid regular expression: {exc}") from None
        self.max_samples = max_samples
        self.starts = {m.strip().lower() for m in self.start_messages}
        self.completions = {m.strip().lower() for m in self.completion_messages}


def normalise_level(level: Any) -> str:
    text = str(level or "").strip().upper()
    return _LEVEL_ALIASES.get(text, text)


# ------------------------------------------------------------- templates

_TEMPLATE_RULES: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w:])"),
     "<ts>"),
    (re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+"), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"(?<!\w)'[^'\n]*'(?!\w)"), "'<str>'"),
    (re.compile(r'"[^"\n]*"'), '"<str>"'),
    (re.compile(r"(?<![\w/.<])/(?:[\w.@-]+/)*[\w.@-]+"), "<path>"),
)
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]*\d(?:[A-Za-z0-9_.\-]*[A-Za-z0-9_])?")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?(?:ms|s|us|ns|m|h|d|kb|mb|gb|b|x|%)?", re.IGNORECASE)


def normalise_template(message: str, task_id: str | None = None, request_id: str | None = None) -> str:
    """A log message with its variable parts replaced, so messages of one kind share one template.

    The line's own ``task_id`` and ``request_id`` become ``<task_id>`` and
    ``<request_id>``; UUIDs, timestamps, URLs, e-mail and IP addresses,
    quoted values, absolute paths become ``<uuid>``, ``<ts>``, ``<url>``,
    ``<email>``, ``<ip>``, ``'<str>'``, ``<path>``; numbers (with a unit)
    ``<num>``; any other token holding a digit (ids, hashes, versions) ``<id>``.
    """
    text = str(message)
    for value, placeholder in ((task_id, "<task_id>"), (request_id, "<request_id>")):
        if isinstance(value, str) and len(value) >= 3:
            text = text.replace(value, placeholder)
    for pattern, placeholder in _TEMPLATE_RULES:
        text = pattern.sub(placeholder, text)
    text = _TOKEN.sub(lambda m: "<num>" if _NUMBER.fullmatch(m.group(0)) else "<id>", text)
    text = " ".join(text.split())
    return text if len(text) <= _TEMPLATE_MAX else text[:_TEMPLATE_MAX] + "..."


def template_key(level: str, template: str) -> str:
    return f"{level} {template}"


def _error_code(record: dict[str, Any], extra: dict[str, Any]) -> str:
    for key in ("code", "error_code", "error"):
        value = extra.get(key)
        if isinstance(value, str) and value:
            return value
    if isinstance(record.get("code"), str) and record["code"]:
        return record["code"]
    match = re.match(r"\s*([A-Z][A-Z0-9_]{2,})\b:", str(record.get("message") or ""))
    return match.group(1) if match else "UNKNOWN"


def _lookup(record: dict[str, Any], extra: dict[str, Any], path: str) -> Any:
    for root in (extra, record):
        value: Any = root
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                value = None
                break
            value = value[part]
        if value is not None:
            return value
    return None


# ------------------------------------------------------------------ logs


def parse_logs(lines: Iterable[str], options: LogOptions | None = None) -> dict[str, Any]:
    """The log signals of a window's lines (see the module doc); ``started_ids`` is left in for :func:`build_window`."""
    options = options or LogOptions()
    started: list[str | None] = []
    started_ids: set[str] = set()
    failed_ids: set[str] = set()
    errors_by_code: dict[str, int] = {}
    engine_errors = 0
    error_lines = 0
    completions = 0
    durations: list[float] = []
    duration_fields_seen: dict[str, int] = {}
    templates: dict[str, dict[str, Any]] = {}
    total = parsed = 0
    other_example = None
    for line in lines:
        if not line.strip():
            continue
        total += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            other_example = other_example or line[:200]
            continue
        parsed += 1
        level = normalise_level(record.get("level"))
        message = str(record.get("message") or "")
        extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
        task = record.get("task_id") if isinstance(record.get("task_id"), str) and record.get("task_id") else None
        lowered = message.strip().lower()
        if lowered in options.starts:
            started.append(task)
            if task:
                started_ids.add(task)
        if lowered in options.completions:
            completions += 1
            for name, factor in options.fields:
                value = _lookup(record, extra, name)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                        and value >= 0:
                    durations.append(float(value) * factor)
                    duration_fields_seen[name] = duration_fields_seen.get(name, 0) + 1
                    break
        if level in ("ERROR", "CRITICAL"):
            error_lines += 1
            code = _error_code(record, extra)
            errors_by_code[code] = errors_by_code.get(code, 0) + 1
            if task:
                failed_ids.add(task)
            else:
                engine_errors += 1
        if level in options.template_levels:
            template = normalise_template(message, task, record.get("request_id"))
            if any(p.search(template) for p in options.ignore):
                continue
            key = template_key(level, template)
            entry = templates.get(key)
            if entry is None:
                entry = templates[key] = {"key": key, "level": level, "template": template,
                                          "logger": record.get("logger"), "count": 0, "example": message[:300],
                                          "code": _error_code(record, extra) if level in ("ERROR", "CRITICAL")
                                          else None}
            entry["count"] += 1
    turns = len(started_ids) + sum(1 for t in started if t is None)
    failed = len(failed_ids & started_ids)
    if durations:
        source = ", ".join(f"extra.{k}" for k in sorted(duration_fields_seen))
        duration_note = None
    elif completions:
        source = None
        duration_note = (f"no duration in logs: {completions} completion line(s) carry none of the fields "
                         f"{', '.join(n for n, _f in options.fields)}")
    else:
        source = None
        duration_note = ("no duration in logs: no line matched the completion messages "
                         f"{', '.join(repr(m) for m in options.completion_messages)}")
    return {
        "available": True,
        "lines": total,
        "json_lines": parsed,
        "other_lines": total - parsed,
        "other_example": other_example,
        "turns_started": turns,
        "turns_failed": failed,
        "error_lines": error_lines,
        "engine_errors": engine_errors,
        "errors_by_code": dict(sorted(errors_by_code.items())),
        "completions": completions,
        "duration_source": source,
        "duration_note": duration_note,
        "durations_count": len(durations),
        "durations_ms": [round(v, 3) for v in thin(durations, options.max_samples)],
        "templates": sorted(templates.values(), key=lambda t: (-t["count"], t["key"])),
        "started_ids": started_ids,
    }


# ---------------------------------------------------------------- probes


@dataclass
class ProbeOutcome:
    """One probe turn: what the client saw."""

    task_id: str
    started: bool = False
    completed: bool = False
    elapsed_ms: float | None = None
    error: str | None = None  # error code (error event, HTTP error, transport)
    http_status: int | None = None
    input_tokens: int = 0
    cache_hit_tokens: int = 0
    usage_events: int = 0

    @property
    def ok(self) -> bool:
        return self.completed and self.error is None


DEFAULT_PROBE_MESSAGES = (
    "What is the capital of France?",
    "What is 17 + 25?",
    "Return JSON for the user with id 7",
    "Summarise what we discussed so far.",
    "What is the boiling point of water at sea level in Celsius?",
)


def run_probes(messages: Sequence[str], count: int, run_id: str, execute: Callable[[str, str], ProbeOutcome],
               concurrency: int = 4) -> list[ProbeOutcome]:
    """Send ``count`` probe turns (``probe-<run>-<n>``, cycling through ``messages``), ``concurrency`` at a time.

    ``execute(message, task_id)`` runs one turn and reports it; it must not
    raise for an Engine-side failure.
    """
    if not messages:
        raise SignalsError("probes need at least one message")
    jobs = [(f"probe-{run_id}-{n + 1}", messages[n % len(messages)]) for n in range(count)]

    def work(job: tuple[str, str]) -> ProbeOutcome:
        task, message = job
        try:
            return execute(message, task)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            return ProbeOutcome(task_id=task, error=f"CLIENT_ERROR: {type(exc).__name__}")

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(work, jobs))


def probe_signals(outcomes: Sequence[ProbeOutcome], max_samples: int = 2000) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.ok:
            code = outcome.error or "INCOMPLETE"
            errors[code] = errors.get(code, 0) + 1
    latencies = [o.elapsed_ms for o in outcomes if o.ok and o.elapsed_ms is not None]
    usage = [[o.cache_hit_tokens, o.input_tokens] for o in outcomes if o.usage_events and o.input_tokens > 0]
    return {
        "available": True,
        "sent": len(outcomes),
        "completed": sum(1 for o in outcomes if o.ok),
        "failed": sum(1 for o in outcomes if not o.ok),
        "errors_by_code": dict(sorted(errors.items())),
        "latency_count": len(latencies),
        "latencies_ms": [round(v, 3) for v in thin(latencies, max_samples)],
        "usage": usage[:max_samples],
        "input_tokens": sum(u[1] for u in usage),
        "cache_hit_tokens": sum(u[0] for u in usage),
        "cache_hit_ratio": ratio_of_sums([(u[0], u[1]) for u in usage]),
    }


# ---------------------------------------------------------------- window


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_window(logs: dict[str, Any] | None, probes: Sequence[ProbeOutcome] | None, since: float | None,
                 until: float | None, engine: dict[str, Any] | None = None, max_samples: int = 2000,
                 conditions: dict[str, Any] | None = None) -> dict[str, Any]:
    """A window of signals: the log signals, the probe signals, and the turn error rate combining them.

    With logs, turns are the turns the log says started, plus probes the
    Engine refused before starting them (5xx, unreachable); failures are
    turns with an ERROR line, plus those refused probes. Without logs,
    probes alone. ``transport_failed_turns`` are the failures the client saw
    as a timeout or a lost connection (:data:`TRANSPORT_ERRORS`);
    ``conditions`` (:func:`window_conditions`) says what the window was
    measured under.
    """
    probe_data = None if probes is None else probe_signals(probes, max_samples)
    log_data = None
    if logs is not None:
        log_data = dict(logs)
        started_ids = log_data.pop("started_ids", set())
    turns = failed = transport = 0
    if log_data is not None:
        turns, failed = log_data["turns_started"], log_data["turns_failed"]
        for outcome in probes or ():
            if not outcome.started and outcome.task_id not in started_ids:
                turns += 1
                failed += 1
                transport += outcome.error in TRANSPORT_ERRORS
    elif probe_data is not None:
        turns, failed = probe_data["sent"], probe_data["failed"]
        transport = sum(1 for o in probes or () if not o.ok and o.error in TRANSPORT_ERRORS)
    return {
        "format": WINDOW_FORMAT,
        "engine": engine,
        "since": _iso(since),
        "until": _iso(until),
        "seconds": None if since is None or until is None else round(until - since, 3),
        "turns": turns,
        "failed_turns": failed,
        "transport_failed_turns": transport,
        "error_rate": None if not turns else round(failed / turns, 6),
        "logs": log_data,
        "probes": probe_data,
        "members": 1,
        "conditions": conditions,
    }


def window_conditions(concurrent_engines: int, probe_concurrency: int, probes: int,
                      cpu_pressure: float | None) -> dict[str, Any]:
    """What a window was measured under, stored with it: see :func:`reference_conditions`.

    ``concurrent_engines`` is how many Engines' windows were being gathered
    at once (the caller knows: a batch's size); ``cpu_pressure`` the share
    of the probes' time some task of the measuring host waited for a CPU
    (:func:`cpu_pressure`), ``None`` where the host cannot tell.
    """
    return {"concurrent_engines": concurrent_engines, "probe_concurrency": probe_concurrency, "probes": probes,
            "cpu_pressure": None if cpu_pressure is None else round(cpu_pressure, 4)}


def cpu_stall_microseconds(text: str) -> float | None:
    """The ``some ... total=`` of a Linux pressure file (``/proc/pressure/cpu``): microseconds some task waited."""
    match = re.search(r"^some\b.*\btotal=(\d+)", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def host_cpu_stall(path: str = CPU_PRESSURE_FILE) -> float | None:
    """Microseconds some task of this host has waited for a CPU since boot; ``None`` without pressure stall info."""
    try:
        with open(path, encoding="ascii") as handle:
            return cpu_stall_microseconds(handle.read())
    except OSError:
        return None


def cpu_pressure(stall_before: float | None, stall_after: float | None, seconds: float) -> float | None:
    """The share of ``seconds`` some task waited for a CPU, from two :func:`cpu_stall_microseconds` readings."""
    if stall_before is None or stall_after is None or seconds <= 0 or stall_after < stall_before:
        return None
    return min(1.0, (stall_after - stall_before) / (seconds * 1_000_000.0))


def member_conditions(window: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditions of each window pooled in ``window`` (one entry for a single window), with its times."""
    if "member_conditions" in window:
        return list(window["member_conditions"])
    engine = window.get("engine") if isinstance(window.get("engine"), dict) else {}
    return [{"engine": engine.get("name"), "since": window.get("since"), "until": window.get("until"),
             **(window.get("conditions") or {}), "recorded": isinstance(window.get("conditions"), dict)}]


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def reference_conditions(reference: dict[str, Any], current: dict[str, Any], th: "Thresholds",
                         kind: str = "baseline") -> dict[str, Any]:
    """Whether the reference windows were measured under the current window's conditions, and if not, why.

    Each pooled window of the reference must record its conditions, overlap
    the current window or have ended at most ``th.reference_max_age``
    seconds before it began, have been gathered with no fewer Engines at
    once and no fewer probes at a time than now, and have seen a CPU
    pressure at most ``th.load_tolerance`` below now's (when both hosts
    could tell). Only a heavier load now can explain a slowdown, so a
    reference measured under more load is no difference. ``kind`` is
    ``baseline`` or ``control`` (a control cohort), for the words.
    """
    now = current.get("conditions") if isinstance(current.get("conditions"), dict) else {}
    since, until = _epoch(current.get("since")), _epoch(current.get("until"))
    members = member_conditions(reference)
    cohort = kind == "control"
    differences: list[str] = []
    for member in members:
        what = f"the control window of {member.get('engine') or 'an Engine'}" if cohort else "the baseline"
        if not member.get("recorded", True) or not now:
            differences.append(f"{what} does not record when and at what concurrency it was taken" if now else
                               "this window does not record its conditions")
            continue
        own: list[str] = []
        start, end = _epoch(member.get("since")), _epoch(member.get("until"))
        if end is None or since is None or until is None:
            own.append("has no times to compare")
        elif not (start is not None and start <= until and end >= since) and since - end > th.reference_max_age:
            own.append(f"was taken {_span(since - end)} before this window (at most {_span(th.reference_max_age)})")
        for key, label in (("concurrent_engines", "Engine(s) observed at once"),
                           ("probe_concurrency", "probe(s) at a time")):
            then, cur = member.get(key), now.get(key)
            if not isinstance(then, int) or not isinstance(cur, int) or cur > then:
                own.append(f"had {then if isinstance(then, int) else 'unknown'} {label}, now {cur}")
        then, cur = member.get("cpu_pressure"), now.get("cpu_pressure")
        if isinstance(then, (int, float)) and isinstance(cur, (int, float)) and cur - then > th.load_tolerance:
            own.append(f"saw CPU pressure {then:.0%}, now {cur:.0%} (tolerance {th.load_tolerance:.0%})")
        if own:
            differences.append(f"{what} " + ", ".join(own))
    same = not differences
    if same:
        description = (f"a control cohort of {len(members)} Engine(s) observed under the same conditions" if cohort
                       else "a baseline taken under the same conditions")
    else:
        more = len(differences) - 3
        description = "; ".join(differences[:3]) + (f" (and {more} more)" if more > 0 else "")
    return {"same_conditions": same, "description": description, "differences": differences,
            "current": now or None, "members": members}


def check_window(data: Any, what: str) -> dict[str, Any]:
    """A stored or passed window, checked enough to be compared."""
    if not isinstance(data, dict) or data.get("format") != WINDOW_FORMAT:
        raise SignalsError(f"{what} is not a metrics window of this collection (format {WINDOW_FORMAT}); "
                           "record one with mode=baseline, or pass the window result of mode=observe")
    for key in ("turns", "failed_turns"):
        if not isinstance(data.get(key), int):
            raise SignalsError(f"{what} lacks {key}")
    return data


_LOG_COUNTS = ("lines", "json_lines", "other_lines", "turns_started", "turns_failed", "error_lines", "engine_errors",
               "completions", "durations_count")
_PROBE_COUNTS = ("sent", "completed", "failed", "latency_count", "input_tokens", "cache_hit_tokens")


def merge_windows(windows: Sequence[dict[str, Any]], max_samples: int = 2000) -> dict[str, Any]:
    """Pool the windows of a control cohort into one (counts summed, samples and templates joined)."""
    if not windows:
        raise SignalsError("a control cohort needs at least one window")
    if len(windows) == 1:
        return windows[0]
    logs = [w["logs"] for w in windows if w.get("logs")]
    probes = [w["probes"] for w in windows if w.get("probes")]
    merged_logs = None
    if logs:
        templates: dict[str, dict[str, Any]] = {}
        for entry in (t for lg in logs for t in lg.get("templates", [])):
            if entry["key"] in templates:
                templates[entry["key"]]["count"] += entry["count"]
            else:
                templates[entry["key"]] = dict(entry)
        codes: dict[str, int] = {}
        for lg in logs:
            for code, count in lg.get("errors_by_code", {}).items():
                codes[code] = codes.get(code, 0) + count
        durations = [d for lg in logs for d in lg.get("durations_ms", [])]
        sources = sorted({lg["duration_source"] for lg in logs if lg.get("duration_source")})
        merged_logs = {
            "available": True,
            **{k: sum(lg.get(k, 0) for lg in logs) for k in _LOG_COUNTS},
            "errors_by_code": dict(sorted(codes.items())),
            "duration_source": ", ".join(sources) or None,
            "duration_note": None if durations else "no duration in logs of any member",
            "durations_ms": thin(durations, max_samples),
            "templates": sorted(templates.values(), key=lambda t: (-t["count"], t["key"])),
        }
    merged_probes = None
    if probes:
        codes = {}
        for pr in probes:
            for code, count in pr.get("errors_by_code", {}).items():
                codes[code] = codes.get(code, 0) + count
        usage = [u for pr in probes for u in pr.get("usage", [])]
        merged_probes = {
            "available": True,
            **{k: sum(pr.get(k, 0) for pr in probes) for k in _PROBE_COUNTS},
            "errors_by_code": dict(sorted(codes.items())),
            "latencies_ms": thin([v for pr in probes for v in pr.get("latencies_ms", [])], max_samples),
            "usage": usage,
            "cache_hit_ratio": ratio_of_sums([(u[0], u[1]) for u in usage]),
        }
    turns = sum(w["turns"] for w in windows)
    failed = sum(w["failed_turns"] for w in windows)
    return {
        "format": WINDOW_FORMAT,
        "engine": {"cohort": [w.get("engine") for w in windows]},
        "since": min((w["since"] for w in windows if w.get("since")), default=None),
        "until": max((w["until"] for w in windows if w.get("until")), default=None),
        "seconds": None,
        "turns": turns,
        "failed_turns": failed,
        "transport_failed_turns": sum(int(w.get("transport_failed_turns") or 0) for w in windows),
        "error_rate": None if not turns else round(failed / turns, 6),
        "logs": merged_logs,
        "probes": merged_probes,
        "members": sum(int(w.get("members") or 1) for w in windows),
        "member_conditions": [m for w in windows for m in member_conditions(w)],
    }


# ------------------------------------------------------------ comparison


@dataclass
class Thresholds:
    """The comparison's knobs; the module documents each default."""

    alpha: float = 0.05
    error_rate_floor: float = 0.02
    error_rate_margin: float = 0.05
    error_rate_test: str = "fisher"
    min_turns: int = 20
    p99_ratio: float = 1.5
    median_ratio: float = 1.5
    min_latency_samples: int = 50
    latency_source: str = "auto"
    cache_drop: float = 0.25
    min_usage_turns: int = 10
    new_template_min_count: int = 1
    bootstrap_resamples: int = 2000
    seed: int = 0
    reference_max_age: float = 180.0
    load_tolerance: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def compare_error_rate(base: dict[str, Any], cur: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """Turn error rate: one-sided two-proportion test (Fisher exact or pooled z) plus an absolute floor.

    ``fail``: the increase is significant and at least ``error_rate_floor``.
    ``pass``: the upper (1 - alpha) bound of the increase (Newcombe) is
    below ``error_rate_margin``. Otherwise ``inconclusive``, with how many
    more turns would decide at the rates seen.
    """
    x1, n1, x2, n2 = base["failed_turns"], base["turns"], cur["failed_turns"], cur["turns"]
    out: dict[str, Any] = {"baseline": {"turns": n1, "failed": x1, "rate": _r(x1 / n1) if n1 else None},
                           "current": {"turns": n2, "failed": x2, "rate": _r(x2 / n2) if n2 else None},
                           "errors_by_code": (cur.get("logs") or {}).get("errors_by_code")
                           or (cur.get("probes") or {}).get("errors_by_code") or {}}
    if n1 < th.min_turns or n2 < th.min_turns:
        need = max(th.min_turns - n2, 0)
        who = "baseline" if n1 < th.min_turns and n2 >= th.min_turns else "current window"
        out.update(verdict="inconclusive", more_turns_needed=need or None,
                   reason=f"too few turns: {n1} in the baseline, {n2} now; at least {th.min_turns} each "
                          f"(the {who} needs {max(th.min_turns - (n1 if who == 'baseline' else n2), 0)} more)")
        return out

    def evaluate(x_cur: int, n_cur: int) -> tuple[str, float, float, float]:
        fisher = fisher_exact([[x_cur, n_cur - x_cur], [x1, n1 - x1]], "greater")
        _z, ztest = two_proportion_ztest(x1, n1, x_cur, n_cur, "greater")
        p = fisher if th.error_rate_test == "fisher" else ztest
        _lo, hi = newcombe_interval(x1, n1, x_cur, n_cur, 1 - 2 * th.alpha)
        increase = x_cur / n_cur - x1 / n1
        if significant(p, th.alpha) and increase >= th.error_rate_floor:
            return "fail", p, hi, increase
        if hi < th.error_rate_margin:
            return "pass", p, hi, increase
        return "inconclusive", p, hi, increase

    verdict, p, upper, increase = evaluate(x2, n2)
    fisher = fisher_exact([[x2, n2 - x2], [x1, n1 - x1]], "greater")
    z, ztest = two_proportion_ztest(x1, n1, x2, n2, "greater")
    out.update(verdict=verdict, increase=_r(increase), upper_bound_increase=_r(upper), p_value=p,
               fisher_p_value=fisher, z=_r(z, 3), ztest_p_value=ztest, test=th.error_rate_test)
    rate1, rate2 = x1 / n1, x2 / n2
    if verdict == "fail":
        out["reason"] = (f"error rate up from {rate1:.1%} to {rate2:.1%} ({x2}/{n2} turns failed), "
                         f"p={p:.3g} < {th.alpha:g}, increase >= floor {th.error_rate_floor:.1%}")
    elif verdict == "pass":
        out["reason"] = (f"error rate {rate2:.1%} vs {rate1:.1%}: increase below {th.error_rate_margin:.1%} with "
                         f"{1 - th.alpha:.0%} confidence (bound {upper:.1%})")
    else:
        ratio = x2 / n2

        def decided(m: int) -> bool:
            return evaluate(int(round(ratio * (n2 + m))), n2 + m)[0] != "inconclusive"

        need = more_needed(decided, 1_000_000)
        out["more_turns_needed"] = need
        tail = (f"about {need} more turns at this rate would decide" if need is not None else
                "more turns now cannot decide at this rate: the baseline window is too small")
        out["reason"] = (f"error rate {rate2:.1%} vs {rate1:.1%} (p={p:.3g}); the increase could still be up to "
                         f"{upper:.1%} (margin {th.error_rate_margin:.1%}); {tail}")
    return out


def _latency_source(name: str, a: list[float], b: list[float], th: Thresholds) -> dict[str, Any]:
    out: dict[str, Any] = {"source": name, "baseline_samples": len(a), "current_samples": len(b)}
    if not a or not b:
        out.update(verdict="unavailable", reason=f"{name}: no samples in the " +
                   ("baseline" if not a else "current window"))
        return out
    out.update(baseline_p50=_r(quantile(a, 0.5), 1), current_p50=_r(quantile(b, 0.5), 1),
               baseline_p99=_r(quantile(a, 0.99), 1), current_p99=_r(quantile(b, 0.99), 1))
    if len(a) < th.min_latency_samples or len(b) < th.min_latency_samples:
        need = max(th.min_latency_samples - len(b), 0)
        out.update(verdict="insufficient", more_samples_needed=need or None,
                   reason=f"{name}: {len(a)} baseline and {len(b)} current samples; at least "
                          f"{th.min_latency_samples} each are needed for a P99 "
                          f"({max(th.min_latency_samples - len(a), 0)} more in the baseline, {need} more now)")
        return out
    base_p99 = quantile(a, 0.99)
    ratio = quantile(b, 0.99) / base_p99 if base_p99 > 0 else None
    ci = bootstrap_ci(a, b, quantile_ratio(0.99), 1 - 2 * th.alpha, th.bootstrap_resamples, th.seed)
    mw = mann_whitney_u(b, a, "greater")
    base_median = median(a)
    median_ratio = median(b) / base_median if base_median > 0 else None
    out.update(p99_ratio=_r(ratio, 3), p99_ratio_ci=None if ci is None else [_r(ci[0], 3), _r(ci[1], 3)],
               median_ratio=_r(median_ratio, 3), mann_whitney_p=mw["p_value"], auc=_r(mw["auc"], 3))
    reasons = []
    if ratio is not None and ci is not None and ci[0] > 1.0 and ratio >= th.p99_ratio:
        reasons.append(f"P99 x{ratio:.2f} ({quantile(b, 0.99):.0f} ms vs {base_p99:.0f} ms), "
                       f"{1 - 2 * th.alpha:.0%} CI x{ci[0]:.2f}-x{ci[1]:.2f} above 1")
    if significant(mw["p_value"], th.alpha) and median_ratio is not None and median_ratio >= th.median_ratio:
        reasons.append(f"latency distribution shifted up: median x{median_ratio:.2f}, "
                       f"Mann-Whitney p={mw['p_value']:.3g}")
    if reasons:
        out.update(verdict="fail", reason=f"{name}: " + "; ".join(reasons))
    elif ci is not None and ci[1] < th.p99_ratio:
        out.update(verdict="pass", reason=f"{name}: P99 x{ratio:.2f}, below x{th.p99_ratio:g} with "
                                          f"{1 - th.alpha:.0%} confidence (bound x{ci[1]:.2f}); "
                                          f"median x{median_ratio:.2f}")
    else:
        # The interval's half-width shrinks about as 1/sqrt(n).
        need = None
        if ci is not None and ratio is not None:
            gap = th.p99_ratio - ratio
            half = ci[1] - ratio
            if gap > 0 and half > 0:
                need = max(1, int(math.ceil(len(b) * ((half / gap) ** 2 - 1))))
        out.update(verdict="inconclusive", more_samples_needed=need,
                   reason=f"{name}: P99 x{ratio:.2f} cannot be told from x{th.p99_ratio:g} "
                          f"(CI {'n/a' if ci is None else f'x{ci[0]:.2f}-x{ci[1]:.2f}'})"
                          + (f"; about {need} more samples would decide" if need else ""))
    return out


LATENCY_SOURCES = ("auto", "logs", "probes", "both")


def compare_latency(base: dict[str, Any], cur: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """Latency from the log durations and from the probes; each source is judged, ``latency_source`` says which decide.

    Per source: ``fail`` when the P99 ratio is at least ``p99_ratio`` and its
    bootstrap interval is above 1, or when the distribution moved up
    (Mann-Whitney p < alpha and median ratio >= ``median_ratio``); ``pass``
    when the interval's upper bound is below ``p99_ratio``.

    ``auto``: the Engine's own turn timings (log durations) decide when both
    sides have enough of them, else the probes' client-side latency, which
    also carries the network and the client's host. ``logs`` or ``probes``:
    that source only. ``both``: either source can fail the signal.
    """
    sources = []
    blogs, clogs = base.get("logs") or {}, cur.get("logs") or {}
    if blogs or clogs:
        result = _latency_source("log durations", list(blogs.get("durations_ms") or []),
                                 list(clogs.get("durations_ms") or []), th)
        if result["verdict"] == "unavailable":
            note = clogs.get("duration_note") or blogs.get("duration_note") or "no duration in logs"
            result["reason"] = f"log durations: {note}"
        sources.append(result)
    bprobes, cprobes = base.get("probes") or {}, cur.get("probes") or {}
    if bprobes or cprobes:
        sources.append(_latency_source("probe latency", list(bprobes.get("latencies_ms") or []),
                                       list(cprobes.get("latencies_ms") or []), th))
    by_name = {s["source"]: s for s in sources}
    enough = [s for s in sources if s["verdict"] not in ("unavailable", "insufficient")]
    if th.latency_source == "logs":
        deciding = [by_name["log durations"]] if "log durations" in by_name else []
    elif th.latency_source == "probes":
        deciding = [by_name["probe latency"]] if "probe latency" in by_name else []
    elif th.latency_source == "both":
        deciding = sources
    else:
        deciding = enough[:1] or sources
    for source in sources:
        source["decides"] = source in deciding
    verdicts = [s["verdict"] for s in deciding]
    if "fail" in verdicts:
        verdict = "fail"
    elif "inconclusive" in verdicts:
        verdict = "inconclusive"
    elif "pass" in verdicts:
        verdict = "pass"
    else:
        verdict = "inconclusive"
    relevant = [s for s in deciding if s["verdict"] == verdict] or deciding
    reason = "; ".join(s["reason"] for s in relevant) if relevant else \
        f"no latency source ({th.latency_source}): no duration in logs and no probes"
    others = [s for s in sources if s not in deciding and s["verdict"] in ("fail", "inconclusive")]
    if others:
        reason += " (not deciding: " + "; ".join(s["reason"] for s in others) + ")"
    needs = [s.get("more_samples_needed") for s in deciding if s.get("more_samples_needed")]
    out = {"verdict": verdict, "reason": reason, "sources": sources, "latency_source": th.latency_source}
    if verdict == "inconclusive" and needs:
        out["more_samples_needed"] = min(needs)
    return out


def compare_cache(base: dict[str, Any], cur: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """Cache hit ratio ``sum(cache_hit_tokens) / sum(input_tokens)`` over probe turns: relative drop.

    ``fail``: the ratio dropped by at least ``cache_drop`` (relative) and
    the bootstrap interval of current/baseline is below 1. ``pass``: the
    interval's lower bound is above ``1 - cache_drop``.
    """
    a = [(float(u[0]), float(u[1])) for u in (base.get("probes") or {}).get("usage") or []]
    b = [(float(u[0]), float(u[1])) for u in (cur.get("probes") or {}).get("usage") or []]
    r1, r2 = ratio_of_sums(a) if a else None, ratio_of_sums(b) if b else None
    out: dict[str, Any] = {"baseline_ratio": _r(r1), "current_ratio": _r(r2), "baseline_turns": len(a),
                           "current_turns": len(b), "threshold_drop": th.cache_drop}
    if len(a) < th.min_usage_turns or len(b) < th.min_usage_turns:
        need = max(th.min_usage_turns - len(b), 0)
        out.update(verdict="inconclusive", more_turns_needed=need or None,
                   reason=f"too few turns with usage events: {len(a)} in the baseline, {len(b)} now; at least "
                          f"{th.min_usage_turns} each (probe turns carry them)")
        return out
    if not r1:
        out.update(verdict="pass", reason="the baseline had no cache hits: there is no ratio to lose")
        return out
    relative = (r2 or 0.0) / r1
    ci = paired_ratio_of_sums_ci(a, b, 1 - 2 * th.alpha, th.bootstrap_resamples, th.seed)
    out.update(relative=_r(relative), drop=_r(1 - relative), relative_ci=None if ci is None else
               [_r(ci[0]), _r(ci[1])])
    if ci is not None and 1 - relative >= th.cache_drop and ci[1] < 1.0:
        out.update(verdict="fail", reason=f"cache hit ratio fell from {r1:.3f} to {r2:.3f} "
                                          f"({1 - relative:.0%} drop >= {th.cache_drop:.0%}; "
                                          f"CI of the relative ratio {ci[0]:.2f}-{ci[1]:.2f})")
    elif ci is not None and ci[0] > 1 - th.cache_drop:
        out.update(verdict="pass", reason=f"cache hit ratio {r2:.3f} vs {r1:.3f}: any drop is below "
                                          f"{th.cache_drop:.0%} with {1 - th.alpha:.0%} confidence")
    else:
        out.update(verdict="inconclusive",
                   reason=f"cache hit ratio {r2:.3f} vs {r1:.3f} cannot be told from a {th.cache_drop:.0%} drop "
                          f"with {len(b)} turns; probe more")
    return out


def compare_templates(base: dict[str, Any], cur: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """WARNING-or-above message templates the baseline never logged."""
    blogs, clogs = base.get("logs"), cur.get("logs")
    if not clogs or not blogs:
        return {"verdict": "inconclusive", "new": [],
                "reason": "no logs in the " + ("current window" if not clogs else "baseline") + " to compare"}
    known = {t["key"] for t in blogs.get("templates", [])}
    new = [t for t in clogs.get("templates", []) if t["key"] not in known and t["count"] >= th.new_template_min_count]
    turns = clogs.get("turns_started", 0)
    out: dict[str, Any] = {"new": new, "baseline_templates": len(known),
                           "current_templates": len(clogs.get("templates", []))}
    if new:
        shown = "; ".join(f"{t['level']} {t['template']!r} x{t['count']}" for t in new[:5])
        out.update(verdict="fail", reason=f"{len(new)} new template(s) at WARNING or above: {shown}")
    elif turns < th.min_turns:
        out.update(verdict="inconclusive", more_turns_needed=th.min_turns - turns,
                   reason=f"no new template, but only {turns} turns were logged; at least {th.min_turns} are needed "
                          f"for the absence to mean something")
    else:
        out.update(verdict="pass", reason=f"no new WARNING-or-above template over {turns} turns")
    return out


LOAD_SENSITIVE = ("latency", "error_rate")


def _without_transport_failures(window: dict[str, Any]) -> dict[str, Any]:
    lost = int(window.get("transport_failed_turns") or 0)
    return {**window, "turns": window["turns"] - lost, "failed_turns": window["failed_turns"] - lost}


def guard_load_sensitive(name: str, result: dict[str, Any], base: dict[str, Any], cur: dict[str, Any],
                         th: Thresholds, reference: dict[str, Any]) -> dict[str, Any]:
    """A load-sensitive signal's ``fail`` against a reference of other conditions becomes ``inconclusive``.

    Latency always; the error rate when the failures left after removing
    timeouts and lost connections (``transport_failed_turns``) no longer
    fail: Engine errors fail whatever the reference.
    """
    if reference["same_conditions"] or result["verdict"] != "fail" or name not in LOAD_SENSITIVE:
        return result
    tail = f"; but {reference['description']}: inconclusive without a same-window reference"
    if name == "error_rate":
        lost = int(cur.get("transport_failed_turns") or 0)
        if not lost:
            return result
        without = compare_error_rate(_without_transport_failures(base), _without_transport_failures(cur), th)
        if without["verdict"] == "fail":
            return result
        reason = (f"{result['reason']}, {lost} of them timeouts or lost connections; without those "
                  f"{without['verdict']} ({without['reason']})" + tail)
    else:
        reason = result["reason"] + tail
    return {**result, "verdict": "inconclusive", "verdict_under_same_conditions": "fail", "reason": reason}


def compare_windows(base: dict[str, Any], cur: dict[str, Any], th: Thresholds,
                    signals: Sequence[str] = SIGNALS, kind: str = "baseline") -> dict[str, Any]:
    """Every selected signal's verdict, and the overall one: fail if any fails, else inconclusive if any is.

    A load-sensitive regression fails only against a reference measured
    under the current window's conditions (:func:`reference_conditions`,
    :func:`guard_load_sensitive`); ``kind`` says whether ``base`` is a
    ``baseline`` or a ``control`` cohort.
    """
    judges = {"error_rate": compare_error_rate, "latency": compare_latency, "cache_hit_ratio": compare_cache,
              "new_templates": compare_templates}
    reference = reference_conditions(base, cur, th, kind)
    results = {name: guard_load_sensitive(name, judges[name](base, cur, th), base, cur, th, reference)
               for name in signals}
    failing = [n for n, r in results.items() if r["verdict"] == "fail"]
    unsure = [n for n, r in results.items() if r["verdict"] == "inconclusive"]
    verdict = "fail" if failing else ("inconclusive" if unsure else "pass")
    reasons = [f"{n}: {results[n]['reason']}" for n in (failing or unsure or list(results))]
    return {"verdict": verdict, "failing": failing, "inconclusive": unsure, "reasons": reasons,
            "signals": results, "reference": reference, "thresholds": th.to_dict()}
