# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Regression evals: the suite format, scoring of one answer, runs, and the comparison with a baseline.

A suite is a mapping (YAML or JSON)::

    name: reference
    defaults: {repeat: 1, timeout: 60}
    cases:
      - id: capital-france            # letters, digits, . _ -; unique
        category: facts
        input: {message: "What is the capital of France?"}   # media, direct optional
        expected:
          contains: Paris              # str or list: substrings, all required
          not_contains: [Lyon]         # substrings that must not appear
          keywords: [paris]            # words, case-insensitive, all required
          any_keywords: [paris, seine] # at least one
          regex: "\\bParis\\b"         # str or list: re.search, all must match
          json: {"id": 7}              # jmespath -> value, or a list of checks
          tool_calls: [{tool: calculator, input: {expression: "17 + 25"}}]
          max_latency_ms: 2000
        repeat: 3                      # optional, runs the case 3 times
        timeout: 30                    # optional, seconds for one turn

:func:`parse_suite` checks all of it and raises :class:`SuiteError` naming
the case and the field. :func:`score` checks one answer. :func:`summarise_case`
folds the repeats of a case; :func:`compare_runs` compares a run with a
baseline run and gives the verdict.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ansible_collections.engineops.fleet.plugins.module_utils._stats import (
    fisher_exact,
    mcnemar_exact,
    significant,
    median,
    median_lower_bound,
    median_upper_bound,
    wilcoxon_signed_rank,
)

JMESPATH_IMPORT_ERROR: str | None
JMESPATH_IMPORT_TRACEBACK: str | None
try:
    import jmespath
    from jmespath.exceptions import JMESPathError
except ImportError as _exc:  # pragma: no cover - exercised only without jmespath
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = str(_exc)
    JMESPATH_IMPORT_TRACEBACK = traceback.format_exc()

    class JMESPathError(Exception):  # type: ignore[no-redef]
        pass
else:
    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
    JMESPATH_IMPORT_TRACEBACK = None

BASELINE_FORMAT = "engineops.fleet.eval/1"
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CASE_KEYS = ("id", "category", "input", "expected", "repeat", "timeout", "description", "tags")
INPUT_KEYS = ("message", "media", "direct")
EXPECTED_KEYS = ("contains", "not_contains", "keywords", "any_keywords", "regex", "json", "tool_calls",
                 "max_latency_ms")
JSON_CHECK_KEYS = ("path", "equals", "contains", "matches", "exists", "type")
JSON_TYPES = {"string": str, "number": (int, float), "integer": int, "boolean": bool, "array": list,
              "object": dict, "null": type(None)}
SUITE_KEYS = ("name", "description", "version", "defaults", "cases")
DEFAULT_KEYS = ("repeat", "timeout")
EXCERPT = 200


class SuiteError(ValueError):
    """The suite is malformed; the message names the case and the field."""


class BaselineError(ValueError):
    """A stored baseline cannot be used."""


# ----------------------------------------------------------------- suite


@dataclass
class JsonCheck:
    path: str
    op: str  # equals | contains | matches | exists | type
    value: Any
    compiled: Any = None

    def describe(self) -> str:
        if self.op == "matches":
            return f"json {self.path!r} matches {self.value.pattern!r}"
        if self.op == "exists":
            return f"json {self.path!r} {'exists' if self.value else 'is absent'}"
        return f"json {self.path!r} {self.op} {json.dumps(self.value)}"


@dataclass
class Case:
    id: str
    category: str
    message: str
    media: list[Any] = field(default_factory=list)
    direct: bool = False
    contains: list[str] = field(default_factory=list)
    not_contains: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    any_keywords: list[str] = field(default_factory=list)
    regex: list[re.Pattern] = field(default_factory=list)
    json: list[JsonCheck] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    max_latency_ms: float | None = None
    repeat: int = 1
    timeout: float | None = None
    digest: str = ""

    def expectations(self) -> int:
        return (len(self.contains) + len(self.not_contains) + (1 if self.keywords else 0)
                + (1 if self.any_keywords else 0) + len(self.regex) + len(self.json or [])
                + (1 if self.tool_calls is not None else 0) + (1 if self.max_latency_ms is not None else 0))


@dataclass
class Suite:
    name: str
    cases: list[Case]
    digest: str

    def categories(self) -> list[str]:
        return sorted({c.category for c in self.cases})

    def select(self, categories: Sequence[str] | None = None, ids: Sequence[str] | None = None) -> Suite:
        cases = self.cases
        if categories:
            unknown = sorted(set(categories) - set(self.categories()))
            if unknown:
                raise SuiteError(f"suite {self.name!r} has no case of category {', '.join(unknown)}; "
                                 f"its categories: {', '.join(self.categories())}")
            cases = [c for c in cases if c.category in categories]
        if ids:
            known = {c.id for c in self.cases}
            unknown = sorted(set(ids) - known)
            if unknown:
                raise SuiteError(f"suite {self.name!r} has no case {', '.join(unknown)}")
            cases = [c for c in cases if c.id in ids]
        return Suite(self.name, cases, self.digest)


def _where(index: int, case_id: Any) -> str:
    return f"case {case_id!r} (#{index + 1})" if isinstance(case_id, str) and case_id else f"case #{index + 1}"


def _str_list(value: Any, where: str, name: str, allow_empty: bool = False) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v != "" for v in items):
        raise SuiteError(f"{where}: field '{name}' must be a non-empty string or a list of non-empty strings")
    if not items and not allow_empty:
        raise SuiteError(f"{where}: field '{name}' must not be an empty list")
    return list(items)


def _positive_number(value: Any, where: str, name: str, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0 or (
            isinstance(value, float) and not math.isfinite(value)):
        kind = "a positive integer" if integer else "a positive number"
        raise SuiteError(f"{where}: field '{name}' must be {kind}, got {value!r}")
    return value


def _compile_path(path: Any, where: str, name: str) -> Any:
    if not isinstance(path, str) or not path.strip():
        raise SuiteError(f"{where}: field '{name}' must be a non-empty jmespath expression")
    if not HAS_JMESPATH:
        raise SuiteError(f"{where}: field '{name}' needs the Python library jmespath, which is not installed")
    try:
        return jmespath.compile(path)
    except JMESPathError as exc:
        raise SuiteError(f"{where}: field '{name}': invalid jmespath expression {path!r}: {exc}") from None


def _json_checks(value: Any, where: str) -> list[JsonCheck]:
    checks: list[JsonCheck] = []
    if isinstance(value, dict):
        if not value:
            raise SuiteError(f"{where}: field 'expected.json' must not be empty")
        for path, expected in value.items():
            checks.append(JsonCheck(str(path), "equals", expected, _compile_path(path, where, f"expected.json.{path}")))
        return checks
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where}: field 'expected.json' must be a mapping of jmespath expression to value, "
                         "or a non-empty list of checks")
    for i, item in enumerate(value):
        name = f"expected.json[{i}]"
        if not isinstance(item, dict):
            raise SuiteError(f"{where}: field '{name}' must be a mapping with 'path' and one of equals, contains, "
                             "matches, exists, type")
        unknown = sorted(set(item) - set(JSON_CHECK_KEYS))
        if unknown:
            raise SuiteError(f"{where}: field '{name}.{unknown[0]}' is unknown; a check has "
                             f"{', '.join(JSON_CHECK_KEYS)}")
        compiled = _compile_path(item.get("path"), where, f"{name}.path")
        ops = [k for k in JSON_CHECK_KEYS[1:] if k in item]
        if len(ops) != 1:
            raise SuiteError(f"{where}: field '{name}' needs exactly one of equals, contains, matches, exists, type")
        op = ops[0]
        expected = item[op]
        if op == "matches":
            if not isinstance(expected, str) or not expected:
                raise SuiteError(f"{where}: field '{name}.matches' must be a non-empty regular expression")
            try:
                expected = re.compile(expected)
            except re.error as exc:
                raise SuiteError(f"{where}: field '{name}.matches': invalid regular expression: {exc}") from None
        elif op == "exists" and not isinstance(expected, bool):
            raise SuiteError(f"{where}: field '{name}.exists' must be true or false")
        elif op == "type" and expected not in JSON_TYPES:
            raise SuiteError(f"{where}: field '{name}.type' must be one of {', '.join(JSON_TYPES)}")
        checks.append(JsonCheck(item["path"], op, expected, compiled))
    return checks


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise SuiteError(f"{where}: field 'expected.tool_calls' must be a list of {{tool, input}} "
                         "(an empty list: no tool call at all)")
    calls = []
    for i, item in enumerate(value):
        name = f"expected.tool_calls[{i}]"
        if isinstance(item, str):
            item = {"tool": item}
        if not isinstance(item, dict) or not isinstance(item.get("tool"), str) or not item["tool"]:
            raise SuiteError(f"{where}: field '{name}.tool' must be a non-empty string")
        unknown = sorted(set(item) - {"tool", "input"})
        if unknown:
            raise SuiteError(f"{where}: field '{name}.{unknown[0]}' is unknown; a tool call has tool and input")
        if "input" in item and not isinstance(item["input"], dict):
            raise SuiteError(f"{where}: field '{name}.input' must be a mapping (matched as a subset)")
        calls.append({"tool": item["tool"], "input": item.get("input")})
    return calls


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def parse_case(raw: Any, index: int, defaults: dict[str, Any] | None = None) -> Case:
    """One case of a suite; :class:`SuiteError` names the case and the field that is wrong."""
    defaults = defaults or {}
    if not isinstance(raw, dict):
        raise SuiteError(f"{_where(index, None)}: must be a mapping with id, category, input and expected")
    case_id = raw.get("id")
    where = _where(index, case_id)
    if not isinstance(case_id, str) or not CASE_ID.match(case_id):
        raise SuiteError(f"{where}: field 'id' must be a string of letters, digits, '.', '_' or '-' "
                         f"(it becomes part of the task_id), got {case_id!r}")
    unknown = sorted(set(raw) - set(CASE_KEYS))
    if unknown:
        raise SuiteError(f"{where}: field '{unknown[0]}' is unknown; a case has {', '.join(CASE_KEYS)}")
    category = raw.get("category")
    if not isinstance(category, str) or not category.strip():
        raise SuiteError(f"{where}: field 'category' is required and must be a non-empty string")
    data = raw.get("input")
    if not isinstance(data, dict):
        raise SuiteError(f"{where}: field 'input' is required and must be a mapping with 'message'")
    unknown = sorted(set(data) - set(INPUT_KEYS))
    if unknown:
        raise SuiteError(f"{where}: field 'input.{unknown[0]}' is unknown; input has {', '.join(INPUT_KEYS)}")
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        raise SuiteError(f"{where}: field 'input.message' is required and must be a non-empty string")
    media = data.get("media", [])
    if not isinstance(media, list):
        raise SuiteError(f"{where}: field 'input.media' must be a list")
    direct = data.get("direct", False)
    if not isinstance(direct, bool):
        raise SuiteError(f"{where}: field 'input.direct' must be true or false")
    expected = raw.get("expected")
    if not isinstance(expected, dict) or not expected:
        raise SuiteError(f"{where}: field 'expected' is required and must be a mapping with at least one of "
                         f"{', '.join(EXPECTED_KEYS)}")
    unknown = sorted(set(expected) - set(EXPECTED_KEYS))
    if unknown:
        raise SuiteError(f"{where}: field 'expected.{unknown[0]}' is unknown; expectations are "
                         f"{', '.join(EXPECTED_KEYS)}")
    case = Case(id=case_id, category=category.strip(), message=message, media=list(media), direct=direct)
    if "contains" in expected:
        case.contains = _str_list(expected["contains"], where, "expected.contains")
    if "not_contains" in expected:
        case.not_contains = _str_list(expected["not_contains"], where, "expected.not_contains")
    if "keywords" in expected:
        case.keywords = _str_list(expected["keywords"], where, "expected.keywords")
    if "any_keywords" in expected:
        case.any_keywords = _str_list(expected["any_keywords"], where, "expected.any_keywords")
    if "regex" in expected:
        for i, pattern in enumerate(_str_list(expected["regex"], where, "expected.regex")):
            try:
                case.regex.append(re.compile(pattern))
            except re.error as exc:
                suffix = f"[{i}]" if isinstance(expected["regex"], list) else ""
                raise SuiteError(f"{where}: field 'expected.regex{suffix}': invalid regular expression "
                                 f"{pattern!r}: {exc}") from None
    if "json" in expected:
        case.json = _json_checks(expected["json"], where)
    if "tool_calls" in expected:
        case.tool_calls = _tool_calls(expected["tool_calls"], where)
    if "max_latency_ms" in expected:
        case.max_latency_ms = float(_positive_number(expected["max_latency_ms"], where, "expected.max_latency_ms"))
    case.repeat = int(_positive_number(raw.get("repeat", defaults.get("repeat", 1)), where, "repeat", integer=True))
    if raw.get("timeout", defaults.get("timeout")) is not None:
        case.timeout = float(_positive_number(raw.get("timeout", defaults.get("timeout")), where, "timeout"))
    # What makes two runs of a case comparable: its input and its expectations.
    case.digest = _digest({"input": {"message": message, "media": media, "direct": direct}, "expected": expected})
    return case


def parse_suite(data: Any, source: str = "suite") -> Suite:
    """A :class:`Suite` from parsed YAML/JSON; :class:`SuiteError` on any malformed case or field."""
    if isinstance(data, list):
        data = {"cases": data}
    if not isinstance(data, dict):
        raise SuiteError(f"{source}: must be a mapping with 'cases' (or a list of cases)")
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise SuiteError(f"{source}: top-level field '{unknown[0]}' is unknown; a suite has {', '.join(SUITE_KEYS)}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SuiteError(f"{source}: field 'defaults' must be a mapping")
    unknown = sorted(set(defaults) - set(DEFAULT_KEYS))
    if unknown:
        raise SuiteError(f"{source}: field 'defaults.{unknown[0]}' is unknown; defaults has {', '.join(DEFAULT_KEYS)}")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise SuiteError(f"{source}: field 'cases' must be a non-empty list of cases")
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_cases):
        case = parse_case(raw, index, defaults)
        if case.id in seen:
            raise SuiteError(f"{_where(index, case.id)}: field 'id' duplicates case #{seen[case.id] + 1}")
        seen[case.id] = index
        cases.append(case)
    name = data.get("name", source)
    if not isinstance(name, str) or not name:
        raise SuiteError(f"{source}: field 'name' must be a non-empty string")
    return Suite(name=name, cases=cases, digest=_digest([c.digest for c in cases]))


# ---------------------------------------------------------------- scoring


def _word_re(word: str) -> re.Pattern:
    left = r"(?<!\w)" if re.match(r"\w", word) else ""
    right = r"(?!\w)" if re.search(r"\w$", word) else ""
    return re.compile(left + re.escape(word) + right, re.IGNORECASE)


def extract_json(text: str) -> tuple[bool, Any]:
    """The JSON value an answer carries: the whole text, a fenced block, or the first object or array in it."""
    stripped = text.strip()
    try:
        return True, json.loads(stripped)
    except ValueError:
        pass
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        try:
            return True, json.loads(fenced.group(1))
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return True, value
    return False, None


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _subset(e, a) for e, a in zip(expected, actual))
    if isinstance(expected, (int, float)) and not isinstance(expected, bool) and \
            isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return float(expected) == float(actual)
    return expected == actual


def _json_check(check: JsonCheck, document: Any) -> str | None:
    try:
        value = check.compiled.search(document) if check.compiled is not None else jmespath.search(check.path, document)
    except JMESPathError as exc:
        return f"{check.describe()}: cannot evaluate: {exc}"
    if check.op == "exists":
        if (value is not None) != check.value:
            return f"{check.describe()}: got {json.dumps(value)}"
        return None
    if check.op == "equals":
        return None if _subset(check.value, value) and _subset(value, check.value) else \
            f"{check.describe()}: got {json.dumps(value)}"
    if check.op == "contains":
        if isinstance(value, str) and isinstance(check.value, str):
            ok = check.value in value
        elif isinstance(value, list):
            ok = any(_subset(check.value, item) for item in value)
        else:
            ok = False
        return None if ok else f"{check.describe()}: got {json.dumps(value)}"
    if check.op == "matches":
        ok = isinstance(value, str) and check.value.search(value) is not None
        return None if ok else f"{check.describe()}: got {json.dumps(value)}"
    kind = JSON_TYPES[check.value]
    ok = isinstance(value, kind) and not (check.value in ("number", "integer") and isinstance(value, bool))
    return None if ok else f"{check.describe()}: got {type(value).__name__} {json.dumps(value)}"


def _tool_name(call: Any) -> str:
    if isinstance(call, dict):
        return str(call.get("tool") or call.get("name") or "")
    return str(call)


def score(case: Case, text: str, tool_calls: Sequence[Any], elapsed_ms: float | None,
          error: dict[str, Any] | None) -> list[str]:
    """The reasons why an answer fails ``case`` (empty: it passes). An error fails the case whatever it said."""
    failures: list[str] = []
    if error:
        failures.append(f"error {error.get('error', 'UNKNOWN')}: {error.get('message', '')}".rstrip(": "))
        return failures
    for needle in case.contains:
        if needle not in text:
            failures.append(f"contains {needle!r}: not found")
    for needle in case.not_contains:
        if needle in text:
            failures.append(f"not_contains {needle!r}: found")
    if case.keywords:
        missing = [w for w in case.keywords if not _word_re(w).search(text)]
        if missing:
            failures.append(f"keywords: missing {', '.join(repr(w) for w in missing)}")
    if case.any_keywords and not any(_word_re(w).search(text) for w in case.any_keywords):
        failures.append(f"any_keywords: none of {', '.join(repr(w) for w in case.any_keywords)}")
    for pattern in case.regex:
        if not pattern.search(text):
            failures.append(f"regex {pattern.pattern!r}: no match")
    if case.json is not None:
        ok, document = extract_json(text)
        if not ok:
            failures.append("json: the answer carries no JSON")
        else:
            for check in case.json:
                problem = _json_check(check, document)
                if problem:
                    failures.append(problem)
    if case.tool_calls is not None:
        made = list(tool_calls)
        if not case.tool_calls and made:
            failures.append(f"tool_calls: expected none, made {', '.join(_tool_name(c) for c in made)}")
        for want in case.tool_calls:
            match = next((c for c in made if _tool_name(c) == want["tool"] and (
                want["input"] is None or (isinstance(c, dict) and _subset(want["input"], c.get("input"))))), None)
            if match is None:
                shown = ", ".join(json.dumps(c, sort_keys=True) for c in made) or "none"
                what = want["tool"] + (f" with input {json.dumps(want['input'], sort_keys=True)}" if want["input"] else "")
                failures.append(f"tool_calls: no call of {what} (made: {shown})")
            else:
                made.remove(match)
    if case.max_latency_ms is not None and elapsed_ms is not None and elapsed_ms > case.max_latency_ms:
        failures.append(f"max_latency_ms {case.max_latency_ms:g}: took {elapsed_ms:.0f} ms")
    return failures


# ------------------------------------------------------------------- runs


def task_id(run_id: str, case_id: str, repeat_index: int, repeats: int) -> str:
    """``eval-<run>-<case>``, with ``-<n>`` (1-based) when the case repeats."""
    base = f"eval-{run_id}-{case_id}"
    return base if repeats == 1 else f"{base}-{repeat_index + 1}"


def attempt_record(case: Case, task: str, text: str, tool_calls: Sequence[Any], usage: dict[str, Any] | None,
                   elapsed_ms: float | None, error: dict[str, Any] | None, excerpt: int = EXCERPT) -> dict[str, Any]:
    """One run of one case, scored."""
    failures = score(case, text, tool_calls, elapsed_ms, error)
    return {
        "task_id": task,
        "passed": not failures,
        "failures": failures,
        "answer": text if len(text) <= excerpt else text[:excerpt] + "...",
        "tool_calls": [_tool_name(c) for c in tool_calls],
        "elapsed_ms": None if elapsed_ms is None else round(float(elapsed_ms), 1),
        "usage": usage,
        "error": error,
    }


def summarise_case(case: Case, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """A case's record from its attempts: ``status`` is pass (all passed), fail (none) or flaky."""
    passes = sum(1 for a in attempts if a["passed"])
    runs = len(attempts)
    status = "pass" if passes == runs else ("fail" if passes == 0 else "flaky")
    latencies = [a["elapsed_ms"] for a in attempts if a["error"] is None and a["elapsed_ms"] is not None]
    errors = sorted({a["error"]["error"] for a in attempts if a["error"]})
    first_failure = next((a for a in attempts if not a["passed"]), None)
    return {
        "id": case.id,
        "category": case.category,
        "digest": case.digest,
        "status": status,
        "passed": status == "pass",
        "passes": passes,
        "runs": runs,
        "errors": errors,
        "failures": first_failure["failures"] if first_failure else [],
        "answer": (first_failure or attempts[0])["answer"] if attempts else "",
        "elapsed_ms": None if not latencies else round(median(latencies), 1),
        "attempts": attempts,
    }


def run_summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    turns = sum(c["runs"] for c in cases)
    passes = sum(c["passes"] for c in cases)
    counts = {s: sum(1 for c in cases if c["status"] == s) for s in ("pass", "fail", "flaky")}
    return {
        "cases": len(cases),
        "turns": turns,
        "passed": counts["pass"],
        "failed": counts["fail"],
        "flaky": counts["flaky"],
        "errors": sum(1 for c in cases for a in c["attempts"] if a["error"]),
        "pass_rate": None if not turns else round(passes / turns, 4),
        "case_pass_rate": None if not cases else round(counts["pass"] / len(cases), 4),
    }


@dataclass
class TurnOutcome:
    """What one turn said, as the runner needs it (built from the SSE client's ``TurnResult``)."""

    text: str = ""
    tool_calls: list[Any] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    elapsed_ms: float | None = None
    error: dict[str, Any] | None = None


def run_suite(suite: Suite, run_id: str, execute: Callable[[Case, str, float], TurnOutcome],
              concurrency: int = 4, default_timeout: float = 60.0, repeat: int | None = None,
              excerpt: int = EXCERPT) -> list[dict[str, Any]]:
    """Run every case (``repeat`` overrides each case's own) and return the case records, in suite order.

    ``execute(case, task_id, timeout)`` runs one turn; it must not raise
    for an Engine-side failure but report it in ``TurnOutcome.error``.
    At most ``concurrency`` turns run at once.
    """
    jobs: list[tuple[int, int, Case, str, float]] = []
    for index, case in enumerate(suite.cases):
        repeats = repeat or case.repeat
        for r in range(repeats):
            jobs.append((index, r, case, task_id(run_id, case.id, r, repeats), case.timeout or default_timeout))
    attempts: dict[tuple[int, int], dict[str, Any]] = {}

    def work(job: tuple[int, int, Case, str, float]) -> None:
        index, r, case, task, timeout = job
        try:
            outcome = execute(case, task, timeout)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            outcome = TurnOutcome(error={"error": "CLIENT_ERROR", "message": f"{type(exc).__name__}: {exc}"})
        attempts[(index, r)] = attempt_record(case, task, outcome.text, outcome.tool_calls, outcome.usage,
                                              outcome.elapsed_ms, outcome.error, excerpt)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(work, jobs))
    records = []
    for index, case in enumerate(suite.cases):
        repeats = repeat or case.repeat
        records.append(summarise_case(case, [attempts[(index, r)] for r in range(repeats)]))
    return records


def check_baseline(data: Any, path: str) -> dict[str, Any]:
    """A stored eval baseline, checked enough to be compared with."""
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT or not isinstance(data.get("cases"), list):
        raise BaselineError(f"{path} is not an eval baseline of this collection (format {BASELINE_FORMAT})")
    for i, case in enumerate(data["cases"]):
        if not isinstance(case, dict) or not {"id", "status", "passes", "runs"} <= set(case):
            raise BaselineError(f"{path}: case #{i + 1} lacks id, status, passes or runs")
    return data


# ------------------------------------------------------------- comparison


@dataclass
class EvalThresholds:
    alpha: float = 0.05
    min_cases: int = 10
    latency_ratio: float = 2.0


def _repeats_to_confirm(alpha: float) -> int:
    """Repeats per side needed for an all-pass vs all-fail case to be significant on its own (Fisher, one-sided)."""
    k = 1
    while not significant(fisher_exact([[k, 0], [0, k]], "greater"), alpha) and k < 50:
        k += 1
    return k


def _latency_comparison(pairs: list[tuple[str, float, float]], th: EvalThresholds) -> dict[str, Any]:
    """Paired per-case latency: Wilcoxon signed-rank on log ratios, and a bound on the median ratio."""
    result: dict[str, Any] = {"pairs": len(pairs), "threshold_ratio": th.latency_ratio}
    if len(pairs) < th.min_cases:
        result.update(verdict="inconclusive", median_ratio=None, p_value=None, upper_bound_ratio=None,
                      reason=f"{len(pairs)} cases with a latency on both sides; at least {th.min_cases} are needed "
                             f"({th.min_cases - len(pairs)} more)")
        return result
    logs = [math.log(cur / base) for _i, base, cur in pairs if base > 0 and cur > 0]
    test = wilcoxon_signed_rank(logs, "greater")
    ratio = math.exp(median(logs))
    upper = median_upper_bound(logs, 1 - th.alpha)
    lower = median_lower_bound(logs, 1 - th.alpha)
    upper_ratio = None if upper is None else math.exp(upper)
    slowest = sorted(pairs, key=lambda p: p[2] / p[1] if p[1] else 0, reverse=True)[:5]
    result.update(
        median_ratio=round(ratio, 3),
        p_value=test["p_value"],
        upper_bound_ratio=None if upper_ratio is None else round(upper_ratio, 3),
        lower_bound_ratio=None if lower is None else round(math.exp(lower), 3),
        slowest=[{"id": i, "baseline_ms": b, "current_ms": c, "ratio": round(c / b, 2) if b else None}
                 for i, b, c in slowest],
    )
    if significant(test["p_value"], th.alpha) and ratio >= th.latency_ratio:
        result.update(verdict="fail", reason=f"cases are slower: median ratio x{ratio:.2f} >= x{th.latency_ratio:g} "
                                             f"(Wilcoxon signed-rank p={test['p_value']:.3g})")
    elif upper_ratio is not None and upper_ratio < th.latency_ratio:
        result.update(verdict="pass", reason=f"median latency ratio x{ratio:.2f}, below x{th.latency_ratio:g} with "
                                             f"{1 - th.alpha:.0%} confidence (bound x{upper_ratio:.2f})")
    else:
        result.update(verdict="inconclusive",
                      reason=f"median latency ratio x{ratio:.2f} cannot be told from x{th.latency_ratio:g} with "
                             f"{len(pairs)} cases (Wilcoxon p={test['p_value']:.3g}); add cases or repeats")
    return result


def _causes(regressions: list[dict[str, Any]], newly_flaky: list[dict[str, Any]]) -> str:
    """``"12 wrong answers (a, b, ...), 3 errors LLM_PROVIDER_ERROR (c, ...), 1 newly flaky (d)"``."""
    def ids(entries: list[dict[str, Any]]) -> str:
        shown = ", ".join(e["id"] for e in entries[:8])
        return shown + (", ..." if len(entries) > 8 else "")

    parts = []
    answers = [r for r in regressions if r.get("cause") == "answer"]
    errors = [r for r in regressions if r.get("cause") == "error"]
    if answers:
        parts.append(f"{len(answers)} wrong answer(s) ({ids(answers)})")
    if errors:
        codes = sorted({code for r in errors for code in r.get("errors", [])})
        parts.append(f"{len(errors)} error(s) {', '.join(codes)} ({ids(errors)})")
    if newly_flaky:
        parts.append(f"{len(newly_flaky)} newly flaky ({ids(newly_flaky)})")
    return "; ".join(parts)


def compare_runs(baseline: dict[str, Any], current: list[dict[str, Any]], th: EvalThresholds) -> dict[str, Any]:
    """Compare the case records of a run with a stored baseline run; the verdict and its evidence.

    Verdict, in this order:

    - ``fail`` when the paired test on the cases (McNemar exact, one-sided)
      says more cases regressed than chance allows (p < alpha), when a
      case's own repeats prove its regression (Fisher exact on its passes,
      p < alpha), or when the cases got slower (paired latency);
    - ``inconclusive`` when fewer than ``min_cases`` cases can be compared,
      when some case regressed or became flaky without significance, or
      when the latency comparison cannot decide;
    - ``pass`` otherwise.
    """
    before = {c["id"]: c for c in baseline.get("cases", [])}
    now = {c["id"]: c for c in current}
    compared: list[tuple[dict[str, Any], dict[str, Any]]] = []
    new_cases, changed_cases = [], []
    for case in current:
        old = before.get(case["id"])
        if old is None:
            new_cases.append(case["id"])
        elif old.get("digest") and case.get("digest") and old["digest"] != case["digest"]:
            changed_cases.append(case["id"])
        else:
            compared.append((old, case))
    missing = [i for i in before if i not in now]

    regressions, fixes, newly_flaky, unstable, confirmed = [], [], [], [], []
    strict_b = strict_c = 0
    for old, case in compared:
        was, is_ = old["status"], case["status"]
        entry = {"id": case["id"], "category": case.get("category"), "baseline": f"{old['passes']}/{old['runs']}",
                 "current": f"{case['passes']}/{case['runs']}", "failures": case.get("failures", []),
                 "answer": case.get("answer", ""), "errors": case.get("errors", [])}
        if was == "pass" and is_ != "pass":
            strict_b += 1
        elif was != "pass" and is_ == "pass":
            strict_c += 1
        if was == "pass" and is_ == "fail":
            entry["cause"] = "error" if case.get("errors") else "answer"
            p = fisher_exact([[old["passes"], old["runs"] - old["passes"]],
                              [case["passes"], case["runs"] - case["passes"]]], "greater")
            entry["p_value"] = p
            regressions.append(entry)
            if significant(p, th.alpha):
                confirmed.append(case["id"])
        elif was == "pass" and is_ == "flaky":
            newly_flaky.append(entry)
        elif was in ("fail", "flaky") and is_ == "pass":
            fixes.append(entry)
        elif "flaky" in (was, is_) and was != is_:
            unstable.append(entry)
    mcnemar = mcnemar_exact(strict_b, strict_c)

    def rate(records: list[dict[str, Any]]) -> float | None:
        runs = sum(r["runs"] for r in records)
        return None if not runs else sum(r["passes"] for r in records) / runs

    base_rate = rate([o for o, _c in compared])
    cur_rate = rate([c for _o, c in compared])
    pairs = [(c["id"], float(o["elapsed_ms"]), float(c["elapsed_ms"])) for o, c in compared
             if o.get("elapsed_ms") and c.get("elapsed_ms")]
    latency = _latency_comparison(pairs, th)

    reasons: list[str] = []
    verdict = "pass"
    if significant(mcnemar["p_value"], th.alpha):
        verdict = "fail"
        causes = _causes(regressions, newly_flaky)
        reasons.append(f"{strict_b} of {len(compared)} cases regressed against {strict_c} fixed "
                       f"(McNemar exact p={mcnemar['p_value']:.3g} < {th.alpha:g})" + (f": {causes}" if causes else ""))
    if confirmed:
        verdict = "fail"
        reasons.append(f"regression confirmed by its repeats: {', '.join(confirmed)}")
    if latency["verdict"] == "fail":
        verdict = "fail"
        reasons.append(latency["reason"])
    if verdict != "fail":
        if len(compared) < th.min_cases:
            verdict = "inconclusive"
            reasons.append(f"only {len(compared)} cases compared; at least {th.min_cases} are needed "
                           f"({th.min_cases - len(compared)} more)")
        if regressions:
            verdict = "inconclusive"
            k = _repeats_to_confirm(th.alpha)
            reasons.append(f"{len(regressions)} case(s) passed in the baseline and fail now "
                           f"({', '.join(r['id'] for r in regressions)}), not significant "
                           f"(McNemar p={mcnemar['p_value']:.3g}); rerun with repeat >= {k} to confirm or clear them")
        if newly_flaky:
            verdict = "inconclusive"
            reasons.append(f"{len(newly_flaky)} case(s) passed every repeat in the baseline and disagree across "
                           f"repeats now ({', '.join(r['id'] for r in newly_flaky)})")
        if latency["verdict"] == "inconclusive":
            verdict = "inconclusive"
            reasons.append(f"latency: {latency['reason']}")
    if verdict == "pass":
        reasons.append(f"no case regressed among {len(compared)} compared ({strict_c} fixed); {latency['reason']}")
    return {
        "verdict": verdict,
        "reasons": reasons,
        "cases_compared": len(compared),
        "regressions": regressions,
        "confirmed_regressions": confirmed,
        "newly_flaky": newly_flaky,
        "fixes": fixes,
        "unstable": unstable,
        "new_cases": new_cases,
        "changed_cases": changed_cases,
        "missing_cases": missing,
        "mcnemar": mcnemar,
        "pass_rate": {
            "baseline": None if base_rate is None else round(base_rate, 4),
            "current": None if cur_rate is None else round(cur_rate, 4),
            "delta": None if base_rate is None or cur_rate is None else round(cur_rate - base_rate, 4),
        },
        "latency": latency,
        "thresholds": {"alpha": th.alpha, "min_cases": th.min_cases, "latency_ratio": th.latency_ratio},
    }
