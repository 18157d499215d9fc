#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_eval
short_description: Run a regression eval suite through an Engine, store it as a baseline or compare it with one
version_added: 0.1.0
description:
  - Runs every case of an eval suite through the Engine's C(POST /execute), each repeat as a fresh C(task_id)
    C(eval-<run>-<case>) (with C(-<n>) appended when a case repeats), parsing the event stream (text, tool calls,
    usage, errors), at most O(concurrency) turns at once, each bounded by a time-out.
  - Scores every answer deterministically against the case's expectations and records, per case, whether it passed,
    an excerpt of the answer, the elapsed time, the token usage and the error if any.
  - With O(mode=baseline) it stores the run in O(baseline) (a JSON file, kept next to the brain snapshot by the roles).
    With O(mode=compare) it compares the run with that stored baseline and gives a verdict, V(pass), V(fail) or
    V(inconclusive), with its evidence; the module fails on V(fail) (and on V(inconclusive) with
    O(fail_on_inconclusive)). With O(mode=run) it only runs and reports.
  - The verdict. A case that passed every repeat in the baseline and fails now is a regression. V(fail) when the
    paired test on the cases (McNemar's exact test on the discordant cases, one-sided) says more cases regressed than
    chance allows (p < O(alpha)), when a case's own repeats prove its regression (Fisher's exact test on its passes,
    p < O(alpha); needs O(repeat) of at least 4 at the default O(alpha)), or when the cases got slower (per-case paired
    latency, Wilcoxon signed-rank p < O(alpha) and a median ratio of at least O(latency_ratio)).
    V(inconclusive) when fewer than O(min_cases) cases can be compared, when some case regressed or became flaky
    (disagrees across repeats) without that being significant, or when the latency comparison cannot tell.
    V(pass) otherwise.
  - 'The suite is YAML or JSON: a mapping with C(name), optional C(defaults) (C(repeat), C(timeout)) and C(cases), a
    list of C({id, category, input: {message, media, direct}, expected: {...}, repeat, timeout}). Expectations:
    C(contains) and C(not_contains) (substrings), C(keywords) (all, whole words, any case), C(any_keywords) (at least
    one), C(regex) (one or a list, all must match), C(json) (the answer parsed as JSON and checked with jmespath
    expressions: a mapping of expression to expected value, or a list of C({path, equals|contains|matches|exists|type})),
    C(tool_calls) (a list of C({tool, input}), C(input) matched as a subset; an empty list means no tool call),
    C(max_latency_ms). A malformed suite fails the module with a message naming the case and the field.'
  - An example suite for the reference Engine is C(evals/reference-suite.yml) in the collection.
options:
  name:
    description:
      - Name of the Engine's container. Used to find the Engine's URL and to record its image and version.
      - Without it, O(engine_url) must be set.
    type: str
  suite:
    description:
      - Path of the suite file (YAML or JSON) on the host that runs the module.
      - Exactly one of O(suite) and O(suite_data) is required.
    type: path
  suite_data:
    description:
      - The suite itself, for example C("{{ lookup('ansible.builtin.file', 'suite.yml') | from_yaml }}").
    type: dict
  mode:
    description:
      - V(run) runs the suite and reports. V(baseline) runs it and stores the run in O(baseline).
        V(compare) runs it and compares it with the run stored in O(baseline).
    type: str
    choices: [run, baseline, compare]
    default: run
  baseline:
    description:
      - Path of the baseline file, written by O(mode=baseline) and read by O(mode=compare). Its folder is created.
      - Required with O(mode=baseline) and O(mode=compare).
    type: path
  force:
    description:
      - With O(mode=baseline), run and write the baseline even when the file exists.
      - If V(false), an existing baseline file is kept and reported unchanged, so a resumed rollout does not
        overwrite its pre-upgrade baseline.
    type: bool
    default: true
  run_id:
    description:
      - The run's id, part of every C(task_id). Letters, digits, C(.), C(_) and C(-).
      - By default the UTC time and a random suffix, so that every run uses fresh threads.
    type: str
  categories:
    description:
      - Run only the cases of these categories.
    type: list
    elements: str
  repeat:
    description:
      - Run every case this many times, overriding the suite's C(repeat). Repeats measure flakiness and let a single
        case's regression be confirmed.
    type: int
  concurrency:
    description:
      - How many turns run at once.
    type: int
    default: 4
  case_timeout:
    description:
      - Seconds one turn may take, unless the case or the suite's C(defaults) set C(timeout). A turn over time fails
        its case with a V(TIMEOUT) error.
    type: float
    default: 60
  message_field:
    description:
      - Name of the C(/execute) body field that carries the message. The contract names it C(message); a major
        release may rename it (the reference Engine 3.0.0 calls it C(prompt)).
    type: str
    default: message
  alpha:
    description:
      - Significance level of the tests (McNemar, Fisher, Wilcoxon) and one minus the confidence of the latency bound.
    type: float
    default: 0.05
  min_cases:
    description:
      - The fewest cases that must be comparable (in the suite and the baseline, same input and expectations) for a
        V(pass); below it the verdict is V(inconclusive). With fewer than 5 cases even all regressing is not
        significant at O(alpha=0.05).
    type: int
    default: 10
  latency_ratio:
    description:
      - Median per-case slowdown (current over baseline elapsed time) that fails the comparison when significant,
        and that the upper confidence bound must stay under for a V(pass).
      - An eval run is a few dozen turns close together, so load on the host from anything else slows all of them;
        the default only catches a gross slowdown. M(engineops.fleet.engine_metrics) judges latency on the Engine's
        own turn timings.
    type: float
    default: 2.0
  fail_on_inconclusive:
    description:
      - Fail the module when the verdict is V(inconclusive), not only when it is V(fail).
    type: bool
    default: false
  answer_excerpt:
    description:
      - Characters of each answer kept in the result and the baseline.
    type: int
    default: 200
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: partial
    description: Checks the suite and the baseline and reports the plan, without sending turns.
    details:
      - In check mode the suite (and in O(mode=compare) the baseline) is read and checked, and the planned turns are
        reported in RV(planned); no turn is sent, since every turn writes to the Engine's brain, and no file is
        written.
  diff_mode:
    support: none
    description: The baseline file is data, not configuration; no diff is shown.
  idempotent:
    support: partial
    description:
      - O(mode=run) and O(mode=compare) change nothing but the Engine's conversation history.
      - O(mode=baseline) writes the baseline on every run (reported as changed), unless O(force=false) and the file
        exists.
requirements:
  - jmespath (Python library), for C(json) expectations
  - PyYAML (Python library), for suites written in YAML
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Baseline the evals before the upgrade
  engineops.fleet.engine_eval:
    name: engine-042
    suite: /etc/engineops/evals/reference-suite.yml
    mode: baseline
    baseline: /var/lib/engineops/baselines/engine-042/eval.json

- name: After the upgrade, compare with the baseline (fails on a regression)
  engineops.fleet.engine_eval:
    name: engine-042
    suite: /etc/engineops/evals/reference-suite.yml
    mode: compare
    baseline: /var/lib/engineops/baselines/engine-042/eval.json
  register: evals

- name: Show the verdict and the regressions
  ansible.builtin.debug:
    msg: "{{ evals.verdict }}: {{ evals.comparison.reasons }}"

- name: Evals of a 3.x staging Engine, whose /execute takes prompt, three repeats per case
  engineops.fleet.engine_eval:
    engine_url: http://127.0.0.1:9100
    suite_data: "{{ lookup('ansible.builtin.file', 'evals/reference-suite.yml') | from_yaml }}"
    message_field: prompt
    repeat: 3
"""

RETURN = r"""
verdict:
  description: V(pass), V(fail) or V(inconclusive).
  returned: with O(mode=compare), outside check mode
  type: str
  sample: fail
comparison:
  description: The evidence of the verdict.
  returned: with O(mode=compare), outside check mode
  type: dict
  contains:
    verdict:
      description: The same as RV(verdict).
      type: str
    reasons:
      description: Why, in words.
      type: list
      elements: str
    cases_compared:
      description: Cases present in both runs with the same input and expectations.
      type: int
    regressions:
      description: Cases that passed every repeat in the baseline and fail every repeat now, with the failures, the
        answer, the error codes, C(cause) (V(answer) or V(error)) and the case's own Fisher p-value.
      type: list
      elements: dict
    confirmed_regressions:
      description: Ids of the regressions proven by their repeats alone.
      type: list
      elements: str
    newly_flaky:
      description: Cases that passed every repeat in the baseline and disagree across repeats now.
      type: list
      elements: dict
    fixes:
      description: Cases that failed (or were flaky) in the baseline and pass now.
      type: list
      elements: dict
    unstable:
      description: Other cases whose outcome moved to or from flaky.
      type: list
      elements: dict
    new_cases:
      description: Cases not in the baseline (not compared).
      type: list
      elements: str
    changed_cases:
      description: Cases whose input or expectations changed since the baseline (not compared).
      type: list
      elements: str
    missing_cases:
      description: Baseline cases not run now.
      type: list
      elements: str
    mcnemar:
      description: McNemar's exact test on the cases that passed on one side only.
      type: dict
      sample: {"regressions": 12, "fixes": 0, "discordant": 12, "p_value": 0.00024, "p_value_two_sided": 0.00049}
    pass_rate:
      description: Share of passing turns over the compared cases, in the baseline and now, and the difference.
      type: dict
      sample: {"baseline": 1.0, "current": 0.6667, "delta": -0.3333}
    latency:
      description: Paired per-case latency comparison (median ratio, Wilcoxon p-value, confidence bound, slowest cases).
      type: dict
    thresholds:
      description: The thresholds used.
      type: dict
run:
  description: Summary of this run.
  returned: outside check mode, and when an existing baseline was kept
  type: dict
  contains:
    run_id:
      description: The run's id.
      type: str
    suite:
      description: The suite's name.
      type: str
    cases:
      description: Cases run.
      type: int
    turns:
      description: Turns sent.
      type: int
    passed:
      description: Cases that passed every repeat.
      type: int
    failed:
      description: Cases that failed every repeat.
      type: int
    flaky:
      description: Cases that disagree across repeats.
      type: int
    errors:
      description: Turns that ended in an error.
      type: int
    pass_rate:
      description: Share of passing turns.
      type: float
    case_pass_rate:
      description: Share of cases that passed every repeat.
      type: float
    elapsed_seconds:
      description: How long the run took.
      type: float
cases:
  description:
    - One record per case. C(status) is V(pass) (every repeat passed), V(fail) (none) or V(flaky).
    - C(attempts) has one entry per repeat with C(task_id), C(passed), C(failures), C(answer) (an excerpt),
      C(tool_calls), C(elapsed_ms), C(usage) and C(error).
  returned: outside check mode
  type: list
  elements: dict
  sample:
    - id: capital-italy
      category: facts
      status: fail
      passed: false
      passes: 0
      runs: 1
      failures: ["keywords: missing 'Rome'"]
      answer: The capital of Italy is Milan.
      elapsed_ms: 161.2
baseline:
  description: Path of the baseline file written or read.
  returned: with O(mode=baseline) or O(mode=compare)
  type: str
planned:
  description: What would run, in check mode.
  returned: in check mode
  type: dict
  sample: {"cases": 36, "turns": 36, "categories": ["arithmetic", "facts"], "baseline_cases": 36}
"""

import datetime
import json
import os
import secrets
import threading
import time
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule, engine_tls_verify
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import (
    EngineClient,
    EngineClientError,
    EngineConnectionError,
    EngineHTTPError,
    EngineTimeoutError,
)
from ansible_collections.engineops.fleet.plugins.module_utils._evals import (
    BASELINE_FORMAT,
    CASE_ID,
    HAS_JMESPATH,
    JMESPATH_IMPORT_TRACEBACK,
    BaselineError,
    EvalThresholds,
    SuiteError,
    TurnOutcome,
    check_baseline,
    compare_runs,
    parse_suite,
    run_suite,
    run_summary,
)
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import write_json_atomic

YAML_IMPORT_TRACEBACK = None
try:
    import yaml
except ImportError:  # pragma: no cover - exercised only without PyYAML
    HAS_YAML = False
    YAML_IMPORT_TRACEBACK = traceback.format_exc()
else:
    HAS_YAML = True


def load_suite(em: EngineModule):
    """The suite from ``suite`` (a file) or ``suite_data``; fails the module with the case and field when malformed."""
    params = em.params
    data = None
    if params["suite_data"] is not None:
        data, source = params["suite_data"], "suite_data"
    else:
        path = params["suite"]
        text = ""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            em.fail(f"Cannot read the eval suite {path}: {exc.strerror or exc}")
        source = path
        if path.endswith(".json") or text.lstrip().startswith(("{", "[")):
            try:
                data = json.loads(text)
            except ValueError as exc:
                em.fail(f"The eval suite {path} is not valid JSON: {exc}")
        else:
            if not HAS_YAML:
                em.fail(missing_required_lib("PyYAML"), exception=YAML_IMPORT_TRACEBACK)
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                em.fail(f"The eval suite {path} is not valid YAML: {exc}")
    try:
        suite = parse_suite(data, source)
        if not HAS_JMESPATH and any(c.json is not None for c in suite.cases):
            em.fail(missing_required_lib("jmespath"), exception=JMESPATH_IMPORT_TRACEBACK)
        return suite.select(params["categories"])
    except SuiteError as exc:
        em.fail(f"Malformed eval suite {source}: {exc}")
    raise AssertionError("unreachable")


def read_baseline(em: EngineModule, path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return check_baseline(data, path)
    except FileNotFoundError:
        em.fail(f"Cannot compare with the eval baseline {path}: there is no such file; record one first with "
                "mode=baseline")
    except (OSError, ValueError) as exc:
        em.fail(f"Cannot use the eval baseline {path}: {exc}")
    raise AssertionError("unreachable")


def turn_runner(em: EngineModule, first: EngineClient):
    """``execute(case, task_id, timeout)`` for the runner, one HTTP client per worker thread, and ``close()``."""
    local = threading.local()
    params = em.params
    clients = [first]
    lock = threading.Lock()

    def execute(case, task: str, timeout: float) -> TurnOutcome:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = EngineClient(first.base_url, key=params["engine_key"],
                                                 verify_tls=engine_tls_verify(params),
                                                 timeout=params["request_timeout"])
            with lock:
                clients.append(client)
        started = time.monotonic()
        try:
            result = client.execute(case.message, task, field=params["message_field"], media=case.media,
                                    direct=case.direct, timeout=timeout)
        except EngineHTTPError as exc:
            return TurnOutcome(elapsed_ms=(time.monotonic() - started) * 1000.0,
                               error={"error": exc.code or f"HTTP_{exc.status}", "message": str(exc)})
        except EngineTimeoutError as exc:
            return _partial(exc, "TIMEOUT", started)
        except EngineConnectionError as exc:
            return _partial(exc, "CONNECTION_ERROR", started)
        except EngineClientError as exc:
            return TurnOutcome(error={"error": "CLIENT_ERROR", "message": str(exc)})
        error = result.error
        if error is None and not result.completed:
            error = {"error": "INCOMPLETE", "message": "the event stream ended without a completed lifecycle event"}
        return TurnOutcome(text=result.text, tool_calls=list(result.tool_calls), usage=result.usage.to_dict(),
                           elapsed_ms=result.elapsed_ms, error=error)

    def close() -> None:
        with lock:
            for client in clients:
                client.close()

    return execute, close


def _partial(exc: EngineConnectionError, code: str, started: float) -> TurnOutcome:
    partial = exc.partial
    return TurnOutcome(text=partial.text if partial else "", tool_calls=list(partial.tool_calls) if partial else [],
                       usage=partial.usage.to_dict() if partial else None,
                       elapsed_ms=(time.monotonic() - started) * 1000.0, error={"error": code, "message": str(exc)})


def default_run_id() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(2)


def main() -> None:
    em = EngineModule(
        {
            "name": {"type": "str"},
            "suite": {"type": "path"},
            "suite_data": {"type": "dict"},
            "mode": {"type": "str", "choices": ["run", "baseline", "compare"], "default": "run"},
            "baseline": {"type": "path"},
            "force": {"type": "bool", "default": True},
            "run_id": {"type": "str"},
            "categories": {"type": "list", "elements": "str"},
            "repeat": {"type": "int"},
            "concurrency": {"type": "int", "default": 4},
            "case_timeout": {"type": "float", "default": 60.0},
            "message_field": {"type": "str", "default": "message"},
            "alpha": {"type": "float", "default": 0.05},
            "min_cases": {"type": "int", "default": 10},
            "latency_ratio": {"type": "float", "default": 2.0},
            "fail_on_inconclusive": {"type": "bool", "default": False},
            "answer_excerpt": {"type": "int", "default": 200},
        },
        required_one_of=[("name", "engine_url"), ("suite", "suite_data")],
        mutually_exclusive=[("suite", "suite_data")],
        required_if=[("mode", "baseline", ("baseline",)), ("mode", "compare", ("baseline",))],
    )
    params = em.params
    if params["repeat"] is not None and params["repeat"] < 1:
        em.fail(f"repeat={params['repeat']} must be at least 1")
    if params["concurrency"] < 1:
        em.fail(f"concurrency={params['concurrency']} must be at least 1")
    if params["case_timeout"] <= 0:
        em.fail(f"case_timeout={params['case_timeout']} must be a positive number of seconds")
    if not 0 < params["alpha"] < 0.5:
        em.fail(f"alpha={params['alpha']} must be between 0 and 0.5")
    if params["latency_ratio"] <= 1:
        em.fail(f"latency_ratio={params['latency_ratio']} must be above 1")
    run_id = params["run_id"] or default_run_id()
    if not CASE_ID.match(run_id):
        em.fail(f"run_id={run_id!r} must be letters, digits, '.', '_' or '-' (it becomes part of every task_id)")

    suite = load_suite(em)
    if not suite.cases:
        em.fail(f"No case of the eval suite {suite.name!r} is selected by categories={params['categories']}")
    mode, path = params["mode"], params["baseline"]
    baseline = read_baseline(em, path) if mode == "compare" else None
    result: dict = {"changed": False}
    if path:
        result["baseline"] = path

    if mode == "baseline" and not params["force"] and os.path.exists(path):
        kept = read_baseline(em, path)
        em.exit(**result, run=dict(kept.get("summary") or {}, run_id=kept.get("run_id"),
                                   suite=(kept.get("suite") or {}).get("name")),
                msg=f"The eval baseline {path} exists and force=false: kept")

    if em.check_mode:
        turns = sum(params["repeat"] or c.repeat for c in suite.cases)
        planned = {"cases": len(suite.cases), "turns": turns, "categories": suite.categories(), "run_id": run_id}
        if baseline is not None:
            planned["baseline_cases"] = len(baseline["cases"])
        em.exit(changed=mode == "baseline", planned=planned, **{k: v for k, v in result.items() if k != "changed"})

    facts = None
    if params["name"]:
        facts = em.facts(params["name"])
        if not facts.running:
            em.fail(f"Cannot run evals on {facts.name}: its container is {facts.state}, not running")
    first = em.http(facts)
    started = time.monotonic()
    execute, close = turn_runner(em, first)
    try:
        records = run_suite(suite, run_id, execute, params["concurrency"], params["case_timeout"], params["repeat"],
                            params["answer_excerpt"])
    finally:
        close()
    summary = dict(run_summary(records), run_id=run_id, suite=suite.name,
                   elapsed_seconds=round(time.monotonic() - started, 3))
    result.update(run=summary, cases=records)

    if mode == "baseline":
        engine = {"name": params["name"], "url": first.base_url, "image": facts.image if facts else None,
                  "version": facts.version if facts else None}
        data = {
            "format": BASELINE_FORMAT,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "run_id": run_id,
            "suite": {"name": suite.name, "digest": suite.digest, "cases": len(suite.cases)},
            "engine": engine,
            "message_field": params["message_field"],
            "summary": summary,
            "cases": records,
        }
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, mode=0o700, exist_ok=True)
            write_json_atomic(path, data)
        except OSError as exc:
            em.fail(f"Cannot write the eval baseline {path}: {exc}", **result)
        result["changed"] = True
        em.exit(**result)

    if mode == "compare":
        try:
            comparison = compare_runs(baseline, records, EvalThresholds(
                alpha=params["alpha"], min_cases=params["min_cases"], latency_ratio=params["latency_ratio"]))
        except BaselineError as exc:
            em.fail(f"Cannot compare with the eval baseline {path}: {exc}", **result)
        result.update(verdict=comparison["verdict"], comparison=comparison)
        who = params["name"] or first.base_url
        if comparison["verdict"] == "fail" or (comparison["verdict"] == "inconclusive"
                                               and params["fail_on_inconclusive"]):
            em.fail(f"Evals of {who} against {path}: {comparison['verdict']}: " + "; ".join(comparison["reasons"]),
                    **result)
    em.exit(**result)


if __name__ == "__main__":
    main()
