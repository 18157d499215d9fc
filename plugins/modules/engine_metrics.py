#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_metrics
short_description: Error rate, latency, cache hit ratio and new warnings of an Engine over a window, judged against a baseline
version_added: 0.1.0
description:
  - The Engine has no metrics endpoint. This module gathers the post-upgrade signals of one window from what the
    Engine's contract documents, and compares them with a stored baseline window or with a control cohort.
  - From the Engine's JSON log lines since O(since) (C(docker logs --since)) it counts turns started
    (O(start_messages)), ERROR lines by code, turn durations where a completion line carries one
    (O(completion_messages), O(duration_log_fields); when none matches the result says "no duration in logs" instead
    of guessing), and the message templates of WARNING-or-above lines, with numbers, ids, paths, timestamps and quoted
    values normalised away.
  - It may send O(probes) representative turns itself (before reading the logs) for the client-side latency, the
    C(usage) events that give the cache hit ratio (the sum of C(cache_hit_tokens) over the sum of C(input_tokens)), and
    error events.
  - O(mode=observe) reports the window. O(mode=baseline) stores it in O(baseline). O(mode=compare) compares it with
    the window stored in O(baseline), or with the pooled windows of a O(control) cohort (Engines still on the old
    release, observed over the same window).
  - Every signal gets a verdict, V(pass), V(fail) or V(inconclusive), and so does the whole (V(fail) if any signal
    fails, else V(inconclusive) if any is); the module fails on V(fail) (and on V(inconclusive) with
    O(fail_on_inconclusive)). Where there is too little data the signal is V(inconclusive) and says how much more is
    needed; it is never a silent pass.
  - 'Error rate: failed turns over turns, from the logs (a turn with an ERROR line fails; probes the Engine refused
    count too), or from the probes without logs. V(fail): a one-sided two-proportion test (O(error_rate_test)) with
    p < O(alpha) and an increase of at least O(error_rate_floor). V(pass): the upper confidence bound of the increase
    (Newcombe) is below O(error_rate_margin).'
  - 'Latency, from the log durations and from the probes, each judged on its own (O(latency_source) says which
    decides): V(fail) when the P99 grew by O(p99_ratio) or more and its bootstrap confidence interval is above 1, or
    when the distribution moved up (Mann-Whitney p < O(alpha) and the median grew by O(median_ratio) or more).
    V(pass) when the upper bound of the P99 ratio is below O(p99_ratio). Needs O(min_latency_samples) samples on each
    side.'
  - 'Cache hit ratio, over probe turns: V(fail) when it dropped by O(cache_drop) (relative) or more and the bootstrap
    interval of current over baseline is below 1; V(pass) when its lower bound is above C(1 - cache_drop).'
  - 'New templates: V(fail) when a WARNING-or-above template absent from the baseline appears at least
    O(new_template_min_count) times; V(pass) when none did over at least O(min_turns) logged turns.'
  - 'Latency, and the error rate as far as it comes from timeouts and lost connections, are load-sensitive: a busy
    host slows every Engine on it. Every window records the conditions it was measured under (when, O(concurrent_engines),
    O(probe_concurrency), the CPU pressure of the host running the module during the probes). A load-sensitive
    regression fails only against a reference measured under the same conditions: a control cohort observed over an
    overlapping window, or a baseline taken at most O(reference_max_age) seconds before the window, with as many
    Engines observed at once, as many probes at a time and a CPU pressure at most O(load_tolerance) lower. Against any
    other reference (a stale baseline, one taken at a lower concurrency or under less load, one that records no
    conditions) it is V(inconclusive), and the reason says why. Errors the Engine reports, new templates and the cache
    hit ratio fail whatever the reference.'
options:
  name:
    description:
      - Name of the Engine's container, whose logs are read. Also used to find its URL for the probes.
      - Without it, O(engine_url) must be set and only probes are used.
    type: str
  mode:
    description:
      - V(observe) gathers the window and reports it in RV(window) (usable in another Engine's O(control)).
        V(baseline) also stores it in O(baseline). V(compare) compares it with O(baseline) or O(control).
    type: str
    choices: [observe, baseline, compare]
    default: observe
  baseline:
    description:
      - Path of the baseline window file, written by O(mode=baseline) and read by O(mode=compare). Its folder is
        created.
    type: path
  control:
    description:
      - Windows of a control cohort (the RV(window) results of O(mode=observe) on Engines still on the old release,
        over the same window), pooled and used instead of O(baseline) by O(mode=compare).
    type: list
    elements: dict
  force:
    description:
      - With O(mode=baseline), write the baseline even when the file exists. If V(false), an existing file is kept.
    type: bool
    default: true
  since:
    description:
      - Start of the window, up to now. A duration before now with a unit (V(90s), V(15m), V(1h30m), V(2d)), epoch
        seconds, or an ISO 8601 time (UTC without an offset).
    type: str
    default: 15m
  logs:
    description:
      - Read the container's logs. Needs O(name).
    type: bool
    default: true
  probes:
    description:
      - How many probe turns to send (each a fresh C(task_id) C(probe-<run>-<n>)); V(0) sends none. Probes are the
        only source of the cache hit ratio. They are real turns and are written to the Engine's brain.
      - On an Engine with no other traffic, 60 is about the fewest that can give a V(pass) at the default thresholds
        (an error-rate increase bounded below 5 points needs about 52 turns without errors, a P99 50 samples).
    type: int
    default: 60
  probe_messages:
    description:
      - The messages the probes cycle through. Choose turns representative of the Engine's real traffic.
      - The default is a small set of questions the reference Engine knows.
    type: list
    elements: str
  probe_concurrency:
    description:
      - How many probe turns run at once. Recorded in the window's conditions.
    type: int
    default: 4
  concurrent_engines:
    description:
      - How many Engines' windows are being gathered at the same time as this one, this one included (the size of
        the batch being verified or baselined together). Recorded in the window's conditions; a reference gathered
        with fewer Engines at once is not of the same conditions.
    type: int
    default: 1
  reference_max_age:
    description:
      - Seconds between the end of a reference window and the start of this one beyond which the reference no longer
        describes the current conditions; overlapping windows (a control cohort) always qualify.
    type: float
    default: 180
  load_tolerance:
    description:
      - How much higher the CPU pressure (the share of time some task of the host running the module waited for a
        CPU, from C(/proc/pressure/cpu)) may be now than during the reference's probes for the reference to count as
        of the same conditions. Not used when either side could not measure it (no probes, no pressure file).
    type: float
    default: 0.2
  probe_timeout:
    description:
      - Seconds one probe turn may take; a probe over time counts as a failed turn (V(TIMEOUT)).
    type: float
    default: 60
  message_field:
    description:
      - Name of the C(/execute) body field carrying the probe's message (V(prompt) on the reference Engine 3.x).
    type: str
    default: message
  run_id:
    description:
      - Id of this observation, part of the probes' C(task_id). By default the UTC time and a random suffix.
    type: str
  start_messages:
    description:
      - Log messages that mark the start of a turn. The contract documents C(Starting execution).
    type: list
    elements: str
    default: ["Starting execution"]
  completion_messages:
    description:
      - Log messages that mark the end of a turn and may carry its duration. The contract does not say which line
        that is; the default covers the known forms.
    type: list
    elements: str
    default: ["Execution completed", "Turn finished", "Turn completed", "Execution finished"]
  duration_log_fields:
    description:
      - Fields of a completion line that may hold the turn's duration, looked up in C(extra) and then at the top
        level of the line (dots walk into objects). The first present one is used.
      - A name ending in C(_ms) is milliseconds; C(_s), C(_sec) or C(_seconds) seconds; C(_us), C(_ns) micro- and
        nanoseconds; C(name:unit) gives the unit explicitly. A name without a unit is refused.
    type: list
    elements: str
    default: [duration_ms, elapsed_ms, latency_ms, duration_s, elapsed_s, duration_seconds, elapsed_seconds]
  template_levels:
    description:
      - Log levels whose message templates are compared.
    type: list
    elements: str
    default: [WARNING, ERROR, CRITICAL]
  ignore_templates:
    description:
      - Regular expressions; templates matching one are left out (known noise).
    type: list
    elements: str
    default: []
  signals:
    description:
      - The signals that make the verdict.
    type: list
    elements: str
    choices: [error_rate, latency, cache_hit_ratio, new_templates]
    default: [error_rate, latency, cache_hit_ratio, new_templates]
  alpha:
    description:
      - Significance level of every test, and one minus the confidence of every bound.
    type: float
    default: 0.05
  error_rate_test:
    description:
      - The one-sided two-proportion test of the error rate. V(fisher) is Fisher's exact test (right with few errors),
        V(ztest) the pooled z-test.
    type: str
    choices: [fisher, ztest]
    default: fisher
  error_rate_floor:
    description:
      - The smallest absolute increase of the error rate that can fail (0.02 is two percentage points), so that a
        significant but negligible increase on a busy Engine does not roll it back.
    type: float
    default: 0.02
  error_rate_margin:
    description:
      - A V(pass) needs the increase of the error rate to be below this with 1 - O(alpha) confidence. With no error
        on either side that takes about 52 turns on each side at the defaults.
    type: float
    default: 0.05
  min_turns:
    description:
      - The fewest turns on each side for an error-rate verdict, and the fewest logged turns for the absence of new
        templates to mean something.
    type: int
    default: 20
  p99_ratio:
    description:
      - P99 growth (current over baseline) that fails when its confidence interval is above 1; a V(pass) needs the
        interval's upper bound below it.
    type: float
    default: 1.5
  latency_source:
    description:
      - Which latency source decides the latency signal; both are always reported.
      - V(auto) uses the Engine's own turn timings (log durations) when both windows have O(min_latency_samples) of
        them, else the probes' client-side latency (which also carries the network and the load of the host running
        the module). V(logs) and V(probes) use that source only; V(both) fails when either fails.
    type: str
    choices: [auto, logs, probes, both]
    default: auto
  median_ratio:
    description:
      - Median growth that fails when the Mann-Whitney test is significant (a slowdown of every turn, which the P99
        alone tells late).
      - Load on the host from anything else moves the median too; below 1.5 such noise fails healthy Engines now
        and then (see the collection's reliability figures).
    type: float
    default: 1.5
  min_latency_samples:
    description:
      - The fewest latency samples on each side (per source) for a latency verdict; a P99 from fewer is little more
        than the maximum.
    type: int
    default: 50
  cache_drop:
    description:
      - Relative drop of the cache hit ratio that fails (0.25 is a quarter of the baseline's ratio).
    type: float
    default: 0.25
  min_usage_turns:
    description:
      - The fewest probe turns with usage events on each side for a cache hit ratio verdict.
    type: int
    default: 10
  new_template_min_count:
    description:
      - How often a new template must appear in the window to fail.
    type: int
    default: 1
  bootstrap_resamples:
    description:
      - Resamples of the bootstrap intervals (P99 ratio, cache hit ratio).
    type: int
    default: 2000
  seed:
    description:
      - Seed of the bootstrap, so that a verdict is reproducible from the same windows.
    type: int
    default: 0
  max_samples:
    description:
      - Latency samples kept per source in a window (evenly spaced order statistics beyond that).
    type: int
    default: 2000
  fail_on_inconclusive:
    description:
      - Fail the module when the verdict is V(inconclusive), not only when it is V(fail).
    type: bool
    default: false
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: partial
    description: Reads and compares the logs, without sending probes.
    details:
      - In check mode the logs are read and compared as usual, but no probe is sent (probes write to the Engine's
        brain), so the signals that need probes are V(inconclusive) unless the logs carry them; no file is written.
  diff_mode:
    support: none
    description: The baseline file is data, not configuration; no diff is shown.
  idempotent:
    support: partial
    description:
      - O(mode=observe) and O(mode=compare) change nothing but the Engine's conversation history (probes).
      - O(mode=baseline) writes the baseline on every run (reported as changed), unless O(force=false) and the file
        exists.
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Record the signals of the last 30 minutes before the upgrade
  engineops.fleet.engine_metrics:
    name: engine-042
    mode: baseline
    since: 30m
    probes: 60
    baseline: /var/lib/engineops/baselines/engine-042/metrics.json

- name: One hour after the upgrade, compare
  engineops.fleet.engine_metrics:
    name: engine-042
    mode: compare
    since: 1h
    probes: 60
    baseline: /var/lib/engineops/baselines/engine-042/metrics.json
  register: metrics

- name: Observe the control cohort over the canary's window
  engineops.fleet.engine_metrics:
    name: "{{ inventory_hostname }}"
    since: "{{ canary_started_at }}"
  register: control_metrics
  when: inventory_hostname in groups['control']

- name: Compare the canary with the control cohort
  engineops.fleet.engine_metrics:
    name: "{{ inventory_hostname }}"
    mode: compare
    since: "{{ canary_started_at }}"
    control: "{{ groups['control'] | map('extract', hostvars, ['control_metrics', 'window']) | list }}"
  when: inventory_hostname in groups['canary']

- name: Right before the batch drains, a baseline taken at the concurrency of its verification
  engineops.fleet.engine_metrics:
    name: "{{ inventory_hostname }}"
    mode: baseline
    since: 2m
    concurrent_engines: "{{ ansible_play_batch | length }}"
    baseline: /var/lib/engineops/baselines/{{ inventory_hostname }}/metrics.json

- name: After the swap, compare at the same concurrency (latency can fail only if the baseline is fresh)
  engineops.fleet.engine_metrics:
    name: "{{ inventory_hostname }}"
    mode: compare
    since: "{{ engine_swapped_at }}"
    concurrent_engines: "{{ ansible_play_batch | length }}"
    baseline: /var/lib/engineops/baselines/{{ inventory_hostname }}/metrics.json

- name: An Engine whose completion line logs took=<seconds>
  engineops.fleet.engine_metrics:
    name: engine-042
    completion_messages: ["Request done"]
    duration_log_fields: ["took:s"]
"""

RETURN = r"""
verdict:
  description: V(pass), V(fail) or V(inconclusive).
  returned: with O(mode=compare)
  type: str
  sample: fail
comparison:
  description: The evidence of the verdict.
  returned: with O(mode=compare)
  type: dict
  contains:
    verdict:
      description: The same as RV(verdict).
      type: str
    failing:
      description: The signals that fail.
      type: list
      elements: str
    inconclusive:
      description: The signals that cannot decide.
      type: list
      elements: str
    reasons:
      description: Why, in words.
      type: list
      elements: str
    signals:
      description:
        - One entry per signal in O(signals), each with C(verdict), C(reason) and the evidence.
        - C(error_rate) has the baseline and current turns, failures and rates, C(increase), C(upper_bound_increase),
          C(p_value) (of O(error_rate_test)), C(fisher_p_value), C(ztest_p_value), C(errors_by_code) and
          C(more_turns_needed) when inconclusive.
        - C(latency) has C(sources), one per source (V(log durations), V(probe latency)) with its own C(verdict),
          C(decides), sample counts, P50 and P99 on each side, C(p99_ratio) and its C(p99_ratio_ci), C(median_ratio),
          C(mann_whitney_p) and C(more_samples_needed) when inconclusive.
        - C(cache_hit_ratio) has both ratios, C(relative), C(drop) and C(relative_ci).
        - C(new_templates) has C(new), the new templates with level, template, logger, count, example and code.
      type: dict
    reference:
      description:
        - Whether the reference was measured under the conditions of this window. C(same_conditions) (a load-sensitive
          signal can fail only when true), C(description) and C(differences) in words, the C(current) conditions and
          those of each reference window in C(members).
        - A load-sensitive signal held back to V(inconclusive) has C(verdict_under_same_conditions=fail) in its entry.
      type: dict
    thresholds:
      description: The thresholds used.
      type: dict
window:
  description:
    - The signals of this window, as stored by O(mode=baseline) and as taken by O(control).
    - C(turns), C(failed_turns) and C(error_rate) combine logs and probes; C(transport_failed_turns) are the failed
      turns the client saw time out or lose their connection; C(conditions) has C(concurrent_engines),
      C(probe_concurrency), C(probes) and C(cpu_pressure) (null where not measured); C(logs) has the log signals (C(turns_started),
      C(errors_by_code), C(durations_ms), C(duration_source) or C(duration_note), C(templates)); C(probes) the probe
      signals (C(sent), C(completed), C(errors_by_code), C(latencies_ms), C(usage), C(cache_hit_ratio)).
  returned: always
  type: dict
  sample:
    format: engineops.fleet.metrics/1
    since: "2026-05-01T10:00:00.000Z"
    until: "2026-05-01T10:15:00.000Z"
    turns: 64
    failed_turns: 0
    transport_failed_turns: 0
    error_rate: 0.0
    conditions: {"concurrent_engines": 5, "probe_concurrency": 4, "probes": 60, "cpu_pressure": 0.31}
    logs: {"turns_started": 64, "duration_source": "extra.duration_ms", "durations_count": 64}
    probes: {"sent": 60, "completed": 60, "cache_hit_ratio": 0.7996}
baseline:
  description: Path of the baseline file written or read.
  returned: when O(baseline) is set
  type: str
probes_skipped:
  description: Why no probe was sent although O(probes) asked for some (check mode, no URL).
  returned: when probes were skipped
  type: str
elapsed_seconds:
  description: How long the module took (probes, log reading and the comparison).
  returned: when the signals were measured
  type: float
  sample: 12.4
"""

import datetime
import json
import os
import secrets
import threading
import time

from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule, engine_tls_verify
from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDockerError
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import (
    EngineClient,
    EngineClientError,
    EngineConnectionError,
    EngineHTTPError,
    EngineTimeoutError,
)
from ansible_collections.engineops.fleet.plugins.module_utils._signals import (
    DEFAULT_COMPLETION_MESSAGES,
    DEFAULT_DURATION_FIELDS,
    DEFAULT_PROBE_MESSAGES,
    DEFAULT_START_MESSAGES,
    DEFAULT_TEMPLATE_LEVELS,
    SIGNALS,
    LogOptions,
    ProbeOutcome,
    SignalsError,
    Thresholds,
    build_window,
    check_window,
    compare_windows,
    cpu_pressure,
    host_cpu_stall,
    merge_windows,
    parse_logs,
    parse_since,
    run_probes,
    window_conditions,
)
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import write_json_atomic

# Time for the last probes' completion lines to reach the log after their streams ended.
LOG_SETTLE_SECONDS = 1.0
RUN_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def probe_runner(em: EngineModule, first: EngineClient):
    """``execute(message, task_id)`` for the probes, one HTTP client per worker thread, and ``close()``."""
    local = threading.local()
    params = em.params
    clients = [first]
    lock = threading.Lock()

    def execute(message: str, task: str) -> ProbeOutcome:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = EngineClient(first.base_url, key=params["engine_key"],
                                                 verify_tls=engine_tls_verify(params),
                                                 timeout=params["request_timeout"])
            with lock:
                clients.append(client)
        outcome = ProbeOutcome(task_id=task)
        started = time.monotonic()
        try:
            result = client.execute(message, task, field=params["message_field"], timeout=params["probe_timeout"])
        except EngineHTTPError as exc:
            outcome.http_status = exc.status
            outcome.error = exc.code or f"HTTP_{exc.status}"
            outcome.elapsed_ms = (time.monotonic() - started) * 1000.0
            return outcome
        except EngineTimeoutError as exc:
            outcome.error = "TIMEOUT"
            outcome.started = bool(exc.partial and exc.partial.started)
            return outcome
        except EngineConnectionError as exc:
            outcome.error = "CONNECTION_ERROR"
            outcome.started = bool(exc.partial and exc.partial.started)
            return outcome
        except EngineClientError:
            outcome.error = "CLIENT_ERROR"
            return outcome
        outcome.started = result.started
        outcome.completed = result.completed
        outcome.elapsed_ms = result.elapsed_ms
        if result.error:
            outcome.error = result.error.get("error") or "UNKNOWN"
        elif not result.completed:
            outcome.error = "INCOMPLETE"
        outcome.input_tokens = result.usage.input_tokens
        outcome.cache_hit_tokens = result.usage.cache_hit_tokens
        outcome.usage_events = result.usage.calls
        return outcome

    def close() -> None:
        with lock:
            for client in clients:
                client.close()

    return execute, close


def load_reference(em: EngineModule) -> dict:
    """The window to compare with: the stored baseline, or the control cohort pooled."""
    params = em.params
    if params["control"]:
        try:
            windows = [check_window(w, f"control[{i}]") for i, w in enumerate(params["control"])]
            return merge_windows(windows, params["max_samples"])
        except SignalsError as exc:
            em.fail(f"Cannot use the control cohort: {exc}")
    path = params["baseline"]
    try:
        with open(path, encoding="utf-8") as handle:
            return check_window(json.load(handle), path)
    except FileNotFoundError:
        em.fail(f"Cannot compare with the metrics baseline {path}: there is no such file; record one first with "
                "mode=baseline")
    except (OSError, ValueError) as exc:
        em.fail(f"Cannot use the metrics baseline {path}: {exc}")
    raise AssertionError("unreachable")


def log_options(em: EngineModule) -> LogOptions:
    p = em.params
    try:
        return LogOptions(p["start_messages"], p["completion_messages"], p["duration_log_fields"], p["template_levels"],
                          p["ignore_templates"], p["max_samples"])
    except SignalsError as exc:
        em.fail(f"Invalid log options: {exc}")
    raise AssertionError("unreachable")


def thresholds(em: EngineModule) -> Thresholds:
    p = em.params
    th = Thresholds(
        alpha=p["alpha"], error_rate_floor=p["error_rate_floor"], error_rate_margin=p["error_rate_margin"],
        error_rate_test=p["error_rate_test"], min_turns=p["min_turns"], p99_ratio=p["p99_ratio"],
        median_ratio=p["median_ratio"], min_latency_samples=p["min_latency_samples"],
        latency_source=p["latency_source"], cache_drop=p["cache_drop"],
        min_usage_turns=p["min_usage_turns"], new_template_min_count=p["new_template_min_count"],
        bootstrap_resamples=p["bootstrap_resamples"], seed=p["seed"], reference_max_age=p["reference_max_age"],
        load_tolerance=p["load_tolerance"],
    )
    problems = []
    if not 0 < th.alpha < 0.5:
        problems.append(f"alpha={th.alpha} must be between 0 and 0.5")
    for name in ("error_rate_floor", "error_rate_margin", "cache_drop", "load_tolerance"):
        if not 0 <= getattr(th, name) <= 1:
            problems.append(f"{name}={getattr(th, name)} must be between 0 and 1")
    for name in ("p99_ratio", "median_ratio"):
        if getattr(th, name) <= 1:
            problems.append(f"{name}={getattr(th, name)} must be above 1")
    for name in ("min_turns", "min_latency_samples", "min_usage_turns", "new_template_min_count"):
        if getattr(th, name) < 1:
            problems.append(f"{name}={getattr(th, name)} must be at least 1")
    if th.reference_max_age <= 0:
        problems.append(f"reference_max_age={th.reference_max_age} must be above 0 seconds")
    if th.bootstrap_resamples < 100:
        problems.append(f"bootstrap_resamples={th.bootstrap_resamples} must be at least 100")
    if problems:
        em.fail("Invalid thresholds: " + "; ".join(problems))
    return th


def main() -> None:
    em = EngineModule(
        {
            "name": {"type": "str"},
            "mode": {"type": "str", "choices": ["observe", "baseline", "compare"], "default": "observe"},
            "baseline": {"type": "path"},
            "control": {"type": "list", "elements": "dict"},
            "force": {"type": "bool", "default": True},
            "since": {"type": "str", "default": "15m"},
            "logs": {"type": "bool", "default": True},
            "probes": {"type": "int", "default": 60},
            "probe_messages": {"type": "list", "elements": "str"},
            "probe_concurrency": {"type": "int", "default": 4},
            "concurrent_engines": {"type": "int", "default": 1},
            "reference_max_age": {"type": "float", "default": 180.0},
            "load_tolerance": {"type": "float", "default": 0.2},
            "probe_timeout": {"type": "float", "default": 60.0},
            "message_field": {"type": "str", "default": "message"},
            "run_id": {"type": "str"},
            "start_messages": {"type": "list", "elements": "str", "default": list(DEFAULT_START_MESSAGES)},
            "completion_messages": {"type": "list", "elements": "str", "default": list(DEFAULT_COMPLETION_MESSAGES)},
            "duration_log_fields": {"type": "list", "elements": "str", "default": list(DEFAULT_DURATION_FIELDS)},
            "template_levels": {"type": "list", "elements": "str", "default": list(DEFAULT_TEMPLATE_LEVELS)},
            "ignore_templates": {"type": "list", "elements": "str", "default": []},
            "signals": {"type": "list", "elements": "str", "choices": list(SIGNALS), "default": list(SIGNALS)},
            "alpha": {"type": "float", "default": 0.05},
            "error_rate_test": {"type": "str", "choices": ["fisher", "ztest"], "default": "fisher"},
            "error_rate_floor": {"type": "float", "default": 0.02},
            "error_rate_margin": {"type": "float", "default": 0.05},
            "min_turns": {"type": "int", "default": 20},
            "p99_ratio": {"type": "float", "default": 1.5},
            "median_ratio": {"type": "float", "default": 1.5},
            "latency_source": {"type": "str", "choices": ["auto", "logs", "probes", "both"], "default": "auto"},
            "min_latency_samples": {"type": "int", "default": 50},
            "cache_drop": {"type": "float", "default": 0.25},
            "min_usage_turns": {"type": "int", "default": 10},
            "new_template_min_count": {"type": "int", "default": 1},
            "bootstrap_resamples": {"type": "int", "default": 2000},
            "seed": {"type": "int", "default": 0},
            "max_samples": {"type": "int", "default": 2000},
            "fail_on_inconclusive": {"type": "bool", "default": False},
        },
        required_one_of=[("name", "engine_url")],
        required_if=[("mode", "baseline", ("baseline",)), ("mode", "compare", ("baseline", "control"), True)],
        mutually_exclusive=[("baseline", "control")],
    )
    params = em.params
    mode, path = params["mode"], params["baseline"]
    th = thresholds(em)
    if params["probes"] < 0 or params["probe_concurrency"] < 1 or params["probe_timeout"] <= 0:
        em.fail("probes must be >= 0, probe_concurrency >= 1 and probe_timeout > 0")
    if params["concurrent_engines"] < 1:
        em.fail(f"concurrent_engines={params['concurrent_engines']} must be at least 1 (this Engine)")
    if params["max_samples"] < 10:
        em.fail(f"max_samples={params['max_samples']} must be at least 10")
    if params["logs"] and not params["name"]:
        em.fail("logs=true needs name, the Engine's container; set logs=false to rely on probes alone")
    options = log_options(em)
    began = time.monotonic()
    now = time.time()
    since = now
    try:
        since = parse_since(params["since"], now)
    except SignalsError as exc:
        em.fail(str(exc))
    if since > now:
        em.fail(f"since={params['since']} is in the future")
    run_id = params["run_id"] or (datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
                                  + secrets.token_hex(2))
    if not run_id or any(c not in RUN_ID_CHARS for c in run_id):
        em.fail(f"run_id={run_id!r} must be letters, digits, '.', '_' or '-'")
    reference = load_reference(em) if mode == "compare" else None
    result: dict = {"changed": False}
    if path:
        result["baseline"] = path
    if mode == "baseline" and not params["force"] and os.path.exists(path):
        kept = None
        try:
            with open(path, encoding="utf-8") as handle:
                kept = check_window(json.load(handle), path)
        except (OSError, ValueError) as exc:
            em.fail(f"Cannot read the existing metrics baseline {path}: {exc}")
        em.exit(**result, window=kept, msg=f"The metrics baseline {path} exists and force=false: kept")

    facts = None
    engine = None
    if params["name"]:
        facts = em.facts(params["name"])
        engine = {"name": facts.name, "image": facts.image, "version": facts.version}
    outcomes = None
    pressure = None
    if params["probes"] > 0:
        if em.check_mode:
            result["probes_skipped"] = "check mode: probes are turns, and turns write to the Engine's brain"
        else:
            if facts is not None and not facts.running:
                em.fail(f"Cannot probe {facts.name}: its container is {facts.state}, not running")
            first = em.http(facts)
            execute, close = probe_runner(em, first)
            stall_before, probes_started = host_cpu_stall(), time.monotonic()
            try:
                outcomes = run_probes(params["probe_messages"] or list(DEFAULT_PROBE_MESSAGES), params["probes"],
                                      run_id, execute, params["probe_concurrency"])
            finally:
                close()
            pressure = cpu_pressure(stall_before, host_cpu_stall(), time.monotonic() - probes_started)
            refused = [o for o in outcomes if o.http_status is not None and 400 <= o.http_status < 500]
            if refused:
                em.fail(f"The probes of {params['name'] or first.base_url} were refused with {refused[0].error} "
                        f"(HTTP {refused[0].http_status}): check engine_key and message_field", **result)
            time.sleep(LOG_SETTLE_SECONDS)
    logs = None
    if params["logs"]:
        lines: list = []
        try:
            lines = em.docker.logs(params["name"], since=since)
        except EngineDockerError as exc:
            em.fail(f"Cannot read the logs of {params['name']}: {exc}", **result)
        logs = parse_logs(lines, options)
    conditions = window_conditions(params["concurrent_engines"], params["probe_concurrency"],
                                   len(outcomes or ()), pressure)
    window = build_window(logs, outcomes, since, time.time(), engine, params["max_samples"], conditions)
    result["window"] = window
    result["elapsed_seconds"] = round(time.monotonic() - began, 3)

    if mode == "baseline":
        if not em.check_mode:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
                write_json_atomic(path, window)
            except OSError as exc:
                em.fail(f"Cannot write the metrics baseline {path}: {exc}", **result)
        result["changed"] = True
    elif mode == "compare":
        comparison = compare_windows(reference, window, th, params["signals"],
                                     "control" if params["control"] else "baseline")
        result.update(verdict=comparison["verdict"], comparison=comparison)
        who = params["name"] or params["engine_url"]
        against = path or f"a control cohort of {reference.get('members', 1)} Engine(s)"
        if comparison["verdict"] == "fail" or (comparison["verdict"] == "inconclusive"
                                               and params["fail_on_inconclusive"]):
            em.fail(f"Signals of {who} against {against}: {comparison['verdict']}: " + "; ".join(comparison["reasons"]),
                    **result)
    em.exit(**result)


if __name__ == "__main__":
    main()
