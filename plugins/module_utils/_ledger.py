# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The rollout ledger: one JSON record per rollout and Engine, on the controller.

A record lives at ``<ledger_dir>/<rollout_id>/<engine>.json`` and holds the
Engine's status in the rollout and every step recorded for it, each with its
time, inputs, outcome and evidence. Records are written atomically (mode
0600); inputs, facts and evidence are redacted before they are stored: the
value of any key named like a key, token, secret or password never reaches
the disk.

:func:`resume_action` decides, from a record and what ``engine_info`` says
now, what a re-run of the same rollout must do with the Engine.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ansible.module_utils.common.parameters import env_fallback

from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import (
    format_utc,
    parse_utc,
    utc_now,
    write_json_atomic,
)
from ansible_collections.engineops.fleet.plugins.module_utils._version import (
    Version,
    VersionError,
    coerce_version,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LEDGER_FORMAT = "engineops.fleet.ledger/1"
# The collection's state (the ledger, the reports) lives under one home, which
# an AWX job must be given as a path that outlives it (docs/awx.md).
DEFAULT_STATE_DIR = "~/.ansible/engineops"
STATE_DIR_ENV = "ENGINEOPS_STATE_DIR"
LEDGER_SUBDIR = "ledger"
REPORTS_SUBDIR = "reports"
DEFAULT_OPERATION = "upgrade"
REDACTED = "********"
MAX_NAME_LENGTH = 128
RECORD_SUFFIX = ".json"

# The Engine's status in a rollout, in the order an upgrade normally goes.
STATUSES = (
    "pending",
    "preflight_done",
    "snapshotted",
    "drained",
    "swapped",
    "healthy",
    "verified",
    "failed",
    "rolling_back",
    "rolled_back",
    "quarantined",
)
OUTCOMES = ("ok", "failed", "skipped", "inconclusive")
RESUME_ACTIONS = ("skip", "start", "finish_upgrade", "rollback")

# Statuses before anything was done to the Engine itself.
UNTOUCHED = ("pending", "preflight_done", "snapshotted")
# Statuses between the drain and the verification.
MID_UPGRADE = ("drained", "swapped", "healthy")
# Statuses that prove the Engine was touched.
TOUCHED = MID_UPGRADE + ("verified", "rolling_back", "rolled_back")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WORD_RE = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_WORD_RE = re.compile(r"^(?:.*keys?|.*tokens?|.*secrets?.*|.*passw(?:or)?ds?.*|.*passphrases?)$")
_SECRET_ANYWHERE_RE = re.compile(r"secret|passw(?:or)?d|passphrase|api_?key|private_?key|authorization|credential", re.IGNORECASE)
_ASSIGNMENT_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*[=:]\s*(.+)$", re.DOTALL)
_ANSIBLE_INTERNAL_KEYS = ("invocation", "diff", "_ansible_no_log", "_ansible_verbose_always",
                          "_ansible_verbose_override", "_ansible_item_label", "_ansible_delegated_vars")


class LedgerError(Exception):
    """Base class of the errors raised by this file."""


class LedgerNameError(LedgerError, ValueError):
    """A rollout id or an Engine name cannot name a ledger file."""


class LedgerRecordError(LedgerError):
    """A ledger record cannot be read, or is malformed."""


# -- redaction ----------------------------------------------------------------

def is_secret_key(name: object) -> bool:
    """Whether a key's name says its value is a secret (a key, a token, a secret, a password).

    The name is split into words (``_``, ``-``, ``.``, spaces, camelCase); it
    is secret when a word ends in ``key(s)`` or ``token(s)``, or the name has
    ``secret``, ``password``/``passwd``, ``passphrase``, ``api_key``,
    ``authorization`` or ``credential`` anywhere: ``engine_key``, ``X-Engine-Key``,
    ``LLM_API_KEY``, ``apiKey``, ``access_token``, ``input_tokens``, ``key_count``,
    ``client_secret``, ``db_password`` are secret; ``keywords`` is not. Erring on
    the safe side is deliberate.
    """
    if not isinstance(name, str) or name == "":
        return False
    if _SECRET_ANYWHERE_RE.search(name):
        return True
    words = _WORD_RE.findall(name)
    return any(_SECRET_WORD_RE.match(word.lower()) for word in words)


def redact(value: Any) -> Any:
    """A copy of ``value`` with the value of every secret-named key replaced by ``********``.

    Walks dicts, lists and tuples. Strings of the form ``NAME=value`` (an
    environment list) with a secret ``NAME`` keep the name only.
    """
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if is_secret_key(key) and item is not None and item != "":
                result[key] = REDACTED
            else:
                result[key] = redact(item)
        return result
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if isinstance(value, str):
        match = _ASSIGNMENT_RE.match(value)
        if match and is_secret_key(match.group(1)):
            return f"{match.group(1)}={REDACTED}"
    return value


def compact(value: Any, max_items: int = 50, max_chars: int = 4000, depth: int = 0, max_depth: int = 12) -> Any:
    """Evidence fit for a ledger: Ansible's bookkeeping keys dropped, long lists and strings cut (and said so)."""
    if depth > max_depth:
        return "(nested too deep, cut)"
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            key = str(key)
            if key in _ANSIBLE_INTERNAL_KEYS or key.startswith("_ansible_"):
                continue
            result[key] = compact(item, max_items, max_chars, depth + 1, max_depth)
        return result
    if isinstance(value, (list, tuple)):
        items = [compact(item, max_items, max_chars, depth + 1, max_depth) for item in list(value)[:max_items]]
        if len(value) > max_items:
            items.append(f"({len(value) - max_items} more items cut)")
        return items
    if isinstance(value, str) and len(value) > max_chars:
        return value[:max_chars] + f"... ({len(value) - max_chars} more characters cut)"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def clean(value: Any) -> Any:
    """:func:`compact`, then :func:`redact`: what may be stored."""
    return redact(compact(value))


# -- names and paths ------------------------------------------------------------

def validate_name(kind: str, name: object) -> str:
    """``name`` if it can name a ledger folder or file, else :class:`LedgerNameError` saying why."""
    rule = (f"use 1-{MAX_NAME_LENGTH} characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, without '..'")
    if not isinstance(name, str) or name == "":
        raise LedgerNameError(f"{kind} {name!r} is empty; {rule}")
    if len(name) > MAX_NAME_LENGTH:
        raise LedgerNameError(f"{kind} {name[:40]!r}... is {len(name)} characters long; {rule}")
    if not _NAME_RE.match(name):
        raise LedgerNameError(f"{kind} {name!r} cannot name a ledger file; {rule}")
    if ".." in name:
        raise LedgerNameError(f"{kind} {name!r} contains '..'; {rule}")
    return name


def default_rollout_id(target_version: object, operation: str = DEFAULT_OPERATION) -> str:
    """``<operation>-<target version>``, for example ``upgrade-2.4.0`` (build metadata dropped)."""
    try:
        version = coerce_version(target_version)  # type: ignore[arg-type]
    except VersionError as exc:
        raise LedgerNameError(f"Cannot derive a rollout id from target version {target_version!r}: {exc}") from None
    text = f"{version.major}.{version.minor}.{version.patch}"
    if version.prerelease:
        text += "-" + ".".join(version.prerelease)
    return validate_name("Rollout id", f"{validate_name('Operation', operation)}-{text}")


def rollout_dir(ledger_dir: str, rollout_id: str) -> str:
    """The folder of a rollout's records; refuses ids that would leave ``ledger_dir``."""
    validate_name("Rollout id", rollout_id)
    base = os.path.realpath(os.path.expanduser(os.fspath(ledger_dir)))
    path = os.path.join(base, rollout_id)
    resolved = os.path.realpath(path)
    if os.path.dirname(resolved) != base:
        raise LedgerNameError(
            f"Rollout id {rollout_id!r}: {path!r} resolves to {resolved!r}, outside the ledger folder {base!r}"
        )
    return path


def record_path(ledger_dir: str, rollout_id: str, engine: str) -> str:
    """``<ledger_dir>/<rollout_id>/<engine>.json``; refuses names that would leave the rollout's folder."""
    directory = rollout_dir(ledger_dir, rollout_id)
    validate_name("Engine name", engine)
    path = os.path.join(directory, engine + RECORD_SUFFIX)
    resolved = os.path.realpath(path)
    if os.path.dirname(resolved) != os.path.realpath(directory):
        raise LedgerNameError(
            f"Engine {engine!r}: {path!r} resolves to {resolved!r}, outside the rollout folder {directory!r}"
        )
    return path


# -- records ----------------------------------------------------------------

def new_record(rollout_id: str, engine: str, now: str | None = None) -> dict[str, Any]:
    """An empty record: status ``pending``, no step."""
    when = now or format_utc(utc_now())
    return {
        "format": LEDGER_FORMAT,
        "rollout_id": rollout_id,
        "engine": engine,
        "created": when,
        "updated": when,
        "status": "pending",
        "facts": {},
        "steps": [],
    }


def validate_record(data: Any, source: str = "record") -> dict[str, Any]:
    """``data`` if it is a ledger record this collection reads, else :class:`LedgerRecordError`."""
    if not isinstance(data, dict):
        raise LedgerRecordError(f"{source}: expected a JSON object, found {type(data).__name__}")
    if data.get("format") != LEDGER_FORMAT:
        raise LedgerRecordError(f"{source}: format {data.get('format')!r} is not {LEDGER_FORMAT!r}")
    for key in ("rollout_id", "engine", "created", "updated"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise LedgerRecordError(f"{source}: {key!r} must be a non-empty string, found {data.get(key)!r}")
    if data.get("status") not in STATUSES:
        raise LedgerRecordError(f"{source}: status {data.get('status')!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(data.get("facts"), dict):
        raise LedgerRecordError(f"{source}: 'facts' must be an object")
    steps = data.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise LedgerRecordError(f"{source}: 'steps' must be a list of objects")
    for index, step in enumerate(steps, 1):
        if not isinstance(step.get("step"), str) or step.get("outcome") not in OUTCOMES:
            raise LedgerRecordError(f"{source}: step {index} has no name or an unknown outcome {step.get('outcome')!r}")
    return data


def read_record(path: str) -> dict[str, Any] | None:
    """The record at ``path``, ``None`` if there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerRecordError(f"Cannot read ledger record {path!r}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LedgerRecordError(f"Ledger record {path!r} is not valid JSON ({exc}); it is left as it is") from None
    return validate_record(data, path)


def list_records(ledger_dir: str, rollout_id: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The records of a rollout, by Engine name, and the files that could not be read (``(file, reason)``)."""
    directory = rollout_dir(ledger_dir, rollout_id)
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    if not os.path.isdir(directory):
        return records, skipped
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(RECORD_SUFFIX) or entry.startswith("."):
            continue
        try:
            record = read_record(os.path.join(directory, entry))
        except LedgerError as exc:
            skipped.append((entry, str(exc)))
            continue
        if record is not None:
            records.append(record)
    records.sort(key=lambda r: r["engine"])
    return records, skipped


def _check_time(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    try:
        return format_utc(parse_utc(value))
    except ValueError as exc:
        raise LedgerRecordError(f"{name}: {exc}") from None


def append_step(
    record: dict[str, Any],
    step: str,
    outcome: str = "ok",
    status: str | None = None,
    inputs: dict[str, Any] | None = None,
    evidence: Any = None,
    note: str | None = None,
    started: str | None = None,
    facts: dict[str, Any] | None = None,
    now: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of ``record`` with one more step, and that step.

    ``status`` is the Engine's status after the step; a ``failed`` outcome
    without a status sets ``failed``. ``facts`` are merged into the record's
    facts. Inputs, facts and evidence are redacted (and evidence compacted).
    """
    if not isinstance(step, str) or not step.strip():
        raise LedgerRecordError("A step needs a name, for example 'drain'")
    if outcome not in OUTCOMES:
        raise LedgerRecordError(f"Outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    if status is not None and status not in STATUSES:
        raise LedgerRecordError(f"Status {status!r} is not one of {', '.join(STATUSES)}")
    if status is None and outcome == "failed":
        status = "failed"
    when = _check_time("time", now) or format_utc(utc_now())
    result = json.loads(json.dumps(record))  # a deep copy of plain JSON data
    entry: dict[str, Any] = {
        "seq": len(result["steps"]) + 1,
        "step": step.strip(),
        "time": when,
        "outcome": outcome,
        "status_before": result["status"],
        "status": status or result["status"],
    }
    begun = _check_time("started", started)
    if begun is not None:
        entry["started"] = begun
        entry["duration_seconds"] = round((parse_utc(when) - parse_utc(begun)).total_seconds(), 3)
    if note:
        entry["note"] = note
    if inputs:
        entry["inputs"] = clean(inputs)
    if evidence is not None and evidence != {}:
        entry["evidence"] = clean(evidence)
    result["steps"].append(entry)
    if facts:
        result["facts"].update(clean(facts))
    if status is not None:
        result["status"] = status
    result["updated"] = when
    return result, entry


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """An exclusive lock on ``path``'s lock file (``.<name>.lock`` beside it) while the block runs."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


@dataclass
class RecordResult:
    """What recording a step did (or, with ``dry_run``, would do)."""

    path: str
    before: dict[str, Any] | None
    record: dict[str, Any]
    step: dict[str, Any]
    written: bool


def record_step(ledger_dir: str, rollout_id: str, engine: str, step: str, dry_run: bool = False,
                target_version: str | None = None, **kwargs: Any) -> RecordResult:
    """Append a step to the Engine's record (created if missing), atomically; ``dry_run`` writes nothing.

    ``target_version`` is kept in the record's facts. Other arguments go to :func:`append_step`.
    """
    path = record_path(ledger_dir, rollout_id, engine)
    facts = dict(kwargs.pop("facts", None) or {})
    if target_version:
        facts.setdefault("target_version", target_version)
    if dry_run:
        before = read_record(path)
        record, entry = append_step(before or new_record(rollout_id, engine, kwargs.get("now")), step, facts=facts, **kwargs)
        entry["planned"] = True
        return RecordResult(path, before, record, entry, False)
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with _locked(path):
        before = read_record(path)
        if before is not None and (before["rollout_id"] != rollout_id or before["engine"] != engine):
            raise LedgerRecordError(
                f"Ledger record {path!r} is for engine {before['engine']!r} of rollout {before['rollout_id']!r}; "
                "it is left as it is"
            )
        record, entry = append_step(before or new_record(rollout_id, engine, kwargs.get("now")), step, facts=facts, **kwargs)
        write_json_atomic(path, record, mode=0o600)
    return RecordResult(path, before, record, entry, True)


# -- resume -------------------------------------------------------------------

@dataclass(frozen=True)
class ResumeDecision:
    """What a re-run of the rollout does with one Engine, and why."""

    action: str
    reason: str
    status: str | None = None
    last_step: str | None = None
    current_version: str | None = None
    target_version: str | None = None
    schema: str = "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "status": self.status,
            "last_step": self.last_step,
            "current_version": self.current_version,
            "target_version": self.target_version,
            "schema": self.schema,
        }


def _version_or_none(value: object) -> Version | None:
    if value is None or value == "":
        return None
    try:
        return coerce_version(value)  # type: ignore[arg-type]
    except VersionError:
        return None


def schema_state(record: dict[str, Any] | None, current_fingerprint: str | None = None) -> str:
    """``changed``, ``unchanged`` or ``unknown``: the brain's schema now against the pre-upgrade one.

    The pre-upgrade fingerprint is the record's fact ``fingerprint_before``;
    the current one is ``current_fingerprint``, else the fact ``fingerprint_after``.
    """
    facts = (record or {}).get("facts") or {}
    before = facts.get("fingerprint_before")
    after = current_fingerprint or facts.get("fingerprint_after")
    if not before or not after:
        return "unknown"
    return "unchanged" if before == after else "changed"


def resume_action(
    record: dict[str, Any] | None,
    engine_facts_version: str | None,
    target_version: str,
    current_fingerprint: str | None = None,
    engine_running: bool | None = None,
    retry_rolled_back: bool = False,
) -> ResumeDecision:
    """Decide what a re-run of the rollout does with the Engine.

    ``engine_facts_version`` is the version ``engine_info`` reads from the
    image tag now (``None`` when it cannot be read); ``current_fingerprint``
    the brain's schema fingerprint now, ``engine_running`` whether the
    container runs. Returns ``skip``, ``start`` (the whole upgrade, from the
    preflight), ``finish_upgrade`` (the remaining, idempotent upgrade steps
    and the verification, with the recorded snapshot and baseline) or
    ``rollback``, with the reason.
    """
    target = coerce_version(target_version)
    current = _version_or_none(engine_facts_version)
    on_target = current is not None and current == target
    now_text = str(current) if current is not None else "an unreadable version"
    schema = schema_state(record, current_fingerprint)
    steps = (record or {}).get("steps") or []
    status = (record or {}).get("status") if record else None
    last = steps[-1]["step"] if steps else None

    def decide(action: str, reason: str) -> ResumeDecision:
        return ResumeDecision(action, reason, status, last, None if current is None else str(current),
                              str(target), schema)

    if not steps:
        if on_target:
            return decide("start", f"nothing recorded for this Engine; it already runs {target}, so the preflight "
                                   "finds no upgrade to do and only verifies it")
        return decide("start", "nothing recorded for this Engine in this rollout")

    reached = {s.get("status") for s in steps}
    touched = bool(reached & set(TOUCHED)) or engine_running is False or on_target or schema == "changed"
    recorded_target = _version_or_none((record or {}).get("facts", {}).get("target_version"))
    if recorded_target is not None and recorded_target != target:
        if status == "rolling_back" or status in MID_UPGRADE or (status == "failed" and touched):
            return decide("rollback", f"the record is for target {recorded_target} and stopped at {status} "
                                      f"(step {last!r}): roll that back first")
        return decide("start", f"the record is for target {recorded_target}, not {target}")

    if status == "quarantined":
        return decide("skip", "quarantined in this rollout: left alone (release it by hand or use a new rollout id)")

    if status == "verified":
        if on_target:
            return decide("skip", f"already on {target} and verified")
        if schema == "changed":
            return decide("rollback", f"verified on {target} earlier, but now runs {now_text} on a brain a newer "
                                      "release migrated: restore the pre-upgrade snapshot")
        return decide("start", f"verified on {target} earlier, but now runs {now_text}: upgrade again")

    if status == "rolling_back":
        return decide("rollback", f"caught rolling back (step {last!r}): finish the rollback")

    if status == "rolled_back":
        if on_target:
            return decide("finish_upgrade", f"rolled back earlier, yet runs {target} now: verify it")
        if retry_rolled_back:
            return decide("start", "rolled back earlier in this rollout; retried as asked (retry_rolled_back)")
        return decide("skip", "rolled back earlier in this rollout: not retried (set retry_rolled_back, "
                              "or use a new rollout id)")

    if status == "failed":
        if not touched:
            return decide("start", f"failed at step {last!r} before the Engine was touched: start again")
        return decide("rollback", f"failed at step {last!r} after the Engine was touched: roll back")

    if status in UNTOUCHED:
        if on_target:
            return decide("finish_upgrade", f"stopped at {status}, yet the Engine already runs {target}: "
                                            "finish and verify it")
        if schema == "changed":
            return decide("rollback", f"stopped at {status}, but the brain's schema changed while the Engine "
                                      f"runs {now_text}: restore the pre-upgrade snapshot")
        if status == "snapshotted" and engine_running is False:
            return decide("finish_upgrade", "snapshotted and the Engine is stopped: the drain ran but was not "
                                            "recorded; finish the upgrade")
        return decide("start", f"stopped at {status} (step {last!r}) before the drain: the Engine was not touched")

    # drained, swapped, healthy: caught between the drain and the verification.
    if on_target:
        return decide("finish_upgrade", f"caught between the swap and the verification (at {status}, "
                                        f"step {last!r}): finish and verify")
    if current is None:
        return decide("rollback", f"caught at {status} (step {last!r}) and the Engine's version cannot be read: "
                                  "roll back to the recorded previous image")
    if schema == "changed":
        return decide("rollback", f"caught mid-swap at {status}: the brain was migrated but the Engine runs "
                                  f"{now_text}; restore the pre-upgrade snapshot")
    if status == "drained" or schema == "unchanged":
        return decide("finish_upgrade", f"caught at {status} (step {last!r}) before the swap took effect: the "
                                        f"Engine runs {now_text} on an unmigrated brain; finish the upgrade")
    return decide("rollback", f"caught at {status} (step {last!r}) on {now_text} and the schema cannot be "
                              "compared: roll back (an older image never starts on a brain a newer release "
                              "may have migrated)")


def state_path(explicit: str | None, state_dir: str | None, subdir: str) -> str:
    """The absolute folder of one kind of state: ``explicit`` when set, else ``<state_dir>/<subdir>``.

    ``state_dir`` defaults to :data:`DEFAULT_STATE_DIR`; ``~`` is expanded in both.
    """
    chosen = explicit or os.path.join(state_dir or DEFAULT_STATE_DIR, subdir)
    return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


# -- the task ------------------------------------------------------------------
# The engine_ledger module and the action plugin of the same name (which runs
# the task on the controller, in-process) share this argument spec and run_task().

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "state": {"type": "str", "choices": ["recorded", "read"], "default": "recorded"},
    "rollout_id": {"type": "str", "fallback": (env_fallback, ["ENGINEOPS_ROLLOUT_ID"])},
    "operation": {"type": "str", "default": DEFAULT_OPERATION},
    "target_version": {"type": "str"},
    "engine": {"type": "str"},
    "state_dir": {"type": "path", "default": DEFAULT_STATE_DIR, "fallback": (env_fallback, [STATE_DIR_ENV])},
    "ledger_dir": {"type": "path", "fallback": (env_fallback, ["ENGINEOPS_LEDGER_DIR"])},
    "step": {"type": "str"},
    "outcome": {"type": "str", "choices": list(OUTCOMES), "default": "ok"},
    "status": {"type": "str", "choices": list(STATUSES)},
    "note": {"type": "str"},
    "started": {"type": "str"},
    "inputs": {"type": "dict", "default": {}},
    "evidence": {"type": "dict"},
    "facts": {"type": "dict", "default": {}},
    "current_version": {"type": "str"},
    "current_fingerprint": {"type": "str"},
    "engine_running": {"type": "bool"},
    "retry_rolled_back": {"type": "bool", "default": False},
}
REQUIRED_IF = [("state", "recorded", ["engine", "step"])]


def _summary(record: dict[str, Any] | None) -> dict[str, Any]:
    if record is None:
        return {"status": None, "steps": 0}
    return {"status": record["status"], "steps": len(record["steps"])}


def run_task(params: dict[str, Any], check_mode: bool, diff: bool) -> dict[str, Any]:
    """Record or read as ``params`` (validated against :data:`ARGUMENT_SPEC`) say; the task's result.

    A failure is a result with ``failed=True`` and ``msg``. Ansible echoes a
    task's arguments back; the ``invocation`` returned here is redacted so that
    secrets in inputs, facts or evidence do not come back with them.
    """
    ledger_dir = state_path(params["ledger_dir"], params["state_dir"], LEDGER_SUBDIR)
    base: dict[str, Any] = {"ledger_dir": ledger_dir, "invocation": {"module_args": redact(params)}}

    def failed(msg: str, **partial: Any) -> dict[str, Any]:
        return {**base, "changed": False, "failed": True, "msg": msg, **partial}

    try:
        if params["rollout_id"]:
            rollout_id = validate_name("Rollout id", params["rollout_id"])
        elif params["target_version"]:
            rollout_id = default_rollout_id(params["target_version"], params["operation"])
        else:
            return failed("Cannot tell the rollout: set rollout_id (or ENGINEOPS_ROLLOUT_ID) or target_version")
    except LedgerError as exc:
        return failed(str(exc))
    base["rollout_id"] = rollout_id
    engine = params["engine"]

    if params["state"] == "recorded":
        try:
            result = record_step(
                ledger_dir, rollout_id, engine, params["step"], dry_run=check_mode,
                target_version=params["target_version"], outcome=params["outcome"], status=params["status"],
                inputs=params["inputs"], evidence=params["evidence"], note=params["note"],
                started=params["started"], facts=params["facts"],
            )
        except (LedgerError, OSError) as exc:
            return failed(f"Cannot record step {params['step']!r} of engine {engine} in rollout {rollout_id}: {exc}")
        out = {**base, "changed": True, "path": result.path, "exists": result.before is not None,
               "record": result.record, "recorded": result.step}
        if check_mode:
            out["msg"] = (f"Would record step {result.step['step']!r} ({result.step['outcome']}, status "
                          f"{result.step['status']}) for engine {engine} in {result.path}")
        if diff:
            out["diff"] = {"before": _summary(result.before), "after": _summary(result.record),
                           "before_header": result.path, "after_header": result.path}
        return out

    if not engine:
        try:
            records, skipped = list_records(ledger_dir, rollout_id)
        except (LedgerError, OSError) as exc:
            return failed(f"Cannot list the ledger of rollout {rollout_id}: {exc}")
        return {**base, "changed": False, "records": records,
                "skipped": [{"file": f, "reason": r} for f, r in skipped]}

    try:
        path = record_path(ledger_dir, rollout_id, engine)
        record = read_record(path)
    except LedgerError as exc:
        return failed(f"Cannot read the ledger of engine {engine} in rollout {rollout_id}: {exc}")
    out = {**base, "changed": False, "path": path, "exists": record is not None, "record": record}
    target = params["target_version"] or ((record or {}).get("facts") or {}).get("target_version")
    if target:
        try:
            decision = resume_action(record, params["current_version"], target, params["current_fingerprint"],
                                     params["engine_running"], params["retry_rolled_back"])
        except VersionError as exc:
            return failed(f"Cannot decide how to resume engine {engine}: {exc}", **out)
        out["resume"] = decision.to_dict()
    return out
