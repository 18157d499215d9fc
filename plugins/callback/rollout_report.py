# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout_report
type: aggregate
short_description: Write the rollout report and show which Engines are draining, booting or being observed
version_added: 0.1.0
description:
  - At the end of every playbook run, writes a report of each rollout the run recorded steps for with
    M(engineops.fleet.engine_ledger) into a new folder C(<directory>/<rollout_id>-<timestamp>/), as
    C(report.json), C(report.md) and C(report.html), a self-contained page (inline CSS, no script, no external
    resource) with an SVG timeline of the batches (one row per Engine, one bar per step coloured by its outcome)
    and, per Engine, the evidence of each gate (health, evals, metrics verdicts with their p-values and deltas),
    the rollback mode and the lost-write account of a brain restore.
  - The report is drawn from the ledger records of the rollout (also the Engines of earlier, interrupted runs of the
    same rollout) and from the play recap. In check mode, the steps M(engineops.fleet.engine_ledger) would record
    are shown as planned.
  - Prints a short summary table (Engine, from and to versions, outcome, gate verdicts) and the paths of the files.
  - While the run goes, prints a line when an Engine starts a long wait (draining, booting, being observed) and
    when a wait is retried.
  - The value of any key named like a key, token, secret or password is never written nor printed.
requirements:
  - Enable it in C(ansible.cfg) with C(callbacks_enabled = engineops.fleet.rollout_report), or with
    E(ANSIBLE_CALLBACKS_ENABLED).
options:
  state_dir:
    description:
      - The home of the collection's state, as O(engineops.fleet.engine_ledger#module:state_dir) of the module; the
        reports go to its C(reports) folder and the ledger is read from its C(ledger) folder unless O(directory) or
        O(ledger_dir) say otherwise.
      - Under AWX, a path that outlives the job, so that the reports outlive it too.
    type: path
    default: ~/.ansible/engineops
    ini:
      - section: engineops_rollout_report
        key: state_dir
    env:
      - name: ENGINEOPS_STATE_DIR
    vars:
      - name: engine_state_dir
  directory:
    description:
      - The folder in which each report gets its own folder C(<rollout_id>-<timestamp>); created if missing.
      - A relative path is taken from the current folder (from the folder of C(ansible.cfg) when set there).
      - If not set, C(<state_dir>/reports).
    type: path
    ini:
      - section: engineops_rollout_report
        key: directory
    env:
      - name: ENGINEOPS_ROLLOUT_REPORT_DIR
    vars:
      - name: engine_report_dir
  ledger_dir:
    description:
      - The ledger's folder, as O(engineops.fleet.engine_ledger#module:ledger_dir) of the module.
      - Used for a rollout named by O(rollout_id) when the run recorded nothing; otherwise the folder the module
        reported is read.
      - If not set, C(<state_dir>/ledger).
    type: path
    ini:
      - section: engineops_rollout_report
        key: ledger_dir
    env:
      - name: ENGINEOPS_LEDGER_DIR
    vars:
      - name: engine_ledger_dir
  rollout_id:
    description:
      - Report on this rollout only. By default, on every rollout the run recorded steps for (and on the play
        recap alone, in a folder named C(run-<timestamp>), when it recorded none).
    type: str
    ini:
      - section: engineops_rollout_report
        key: rollout_id
    env:
      - name: ENGINEOPS_ROLLOUT_ID
    vars:
      - name: engine_rollout_id
  progress:
    description:
      - Print a line when an Engine starts a long wait (drain, boot, observation, evals, snapshot) or retries one.
    type: bool
    default: true
    ini:
      - section: engineops_rollout_report
        key: progress
    env:
      - name: ENGINEOPS_ROLLOUT_PROGRESS
notes:
  - Variables in O(state_dir), O(directory), O(ledger_dir) and O(rollout_id) are read from extra vars (C(-e)) only.
seealso:
  - module: engineops.fleet.engine_ledger
author:
  - engineops.fleet contributors (@engineops)
"""

import html
import json
import os
import tempfile
from datetime import datetime
from typing import Any

from ansible import constants as C
from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.engineops.fleet.plugins.module_utils._ledger import (
    LEDGER_FORMAT,
    LEDGER_SUBDIR,
    MID_UPGRADE,
    REPORTS_SUBDIR,
    LedgerError,
    list_records,
    redact,
    state_path,
    validate_name,
)
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import (
    format_utc,
    parse_utc,
    utc_now,
    write_json_atomic,
)
from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError, coerce_version
from ansible_collections.engineops.fleet.plugins.module_utils._version import upgrade_kind as version_upgrade_kind

REPORT_FORMAT = "engineops.fleet.report/1"
GATES = ("health", "evals", "metrics")
STAT_KEYS = ("ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored")
OUTCOME_COLOURS = {"ok": "#2e7d32", "failed": "#c62828", "skipped": "#9e9e9e", "inconclusive": "#f9a825"}
STATUS_COLOURS = {"verified": "#2e7d32", "failed": "#c62828", "rolled_back": "#ef6c00", "rolling_back": "#ef6c00",
                  "quarantined": "#6a1b9a"}
# The long waits worth a progress line, by module name.
ACTIVITIES = {
    "engine_drain": "draining",
    "engine_health": "booting (waiting for /health)",
    "engine_container": "swapping its image",
    "engine_snapshot": "snapshotting its brain",
    "engine_eval": "running evals",
    "engine_metrics": "being observed",
}
_FONT = 'font-family="sans-serif" font-size="11"'
SIGNAL_ORDER = ("error_rate", "latency", "cache_hit_ratio", "new_templates")
SNAPSHOT_ACTIVITIES = {"restored": "restoring its brain", "verified": "verifying a snapshot", "list": None,
                       "absent": None}


# -- drawing evidence out of ledger steps --------------------------------------

def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _verdict_from_outcome(outcome: str | None) -> str:
    return {"ok": "pass", "failed": "fail", "inconclusive": "inconclusive", "skipped": "skipped"}.get(outcome or "", "n/a")


def _health_gate(evidence: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    ready = bool(evidence.get("ready"))
    figures = {k: evidence.get(k) for k in ("status_code", "status", "failing_subsystems", "waited_seconds",
                                            "uptime_seconds", "reason") if evidence.get(k) not in (None, "", [])}
    event = evidence.get("container_event")
    if isinstance(event, dict):
        figures["container_event"] = {k: event.get(k) for k in ("reason", "exit_code", "restart_count", "error")}
    if ready:
        details = [f"HTTP {_num(evidence.get('status_code'))}, status {evidence.get('status', 'ok')}"
                   + (f", after {_num(evidence.get('waited_seconds'), 3)} s" if evidence.get("waited_seconds") is not None else "")]
    else:
        details = [f"not ready: {evidence.get('reason') or 'no reason given'}"]
        if evidence.get("failing_subsystems"):
            details.append("failing subsystems: " + ", ".join(map(str, evidence["failing_subsystems"])))
        if isinstance(event, dict):
            details.append(f"container {event.get('reason')}, exit code {_num(event.get('exit_code'))}"
                           + (f": {event['error']}" if event.get("error") else ""))
    return ("pass" if ready else "fail"), figures, details


def _evals_gate(evidence: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    comparison = evidence.get("comparison") if isinstance(evidence.get("comparison"), dict) else {}
    verdict = evidence.get("verdict") or comparison.get("verdict") or "n/a"
    mcnemar = comparison.get("mcnemar") if isinstance(comparison.get("mcnemar"), dict) else {}
    pass_rate = comparison.get("pass_rate") if isinstance(comparison.get("pass_rate"), dict) else {}
    regressions = comparison.get("regressions") if isinstance(comparison.get("regressions"), list) else []
    ids = [str(r.get("id")) for r in regressions if isinstance(r, dict) and r.get("id")]
    figures: dict[str, Any] = {
        "cases_compared": comparison.get("cases_compared"),
        "p_value": mcnemar.get("p_value"),
        "pass_rate_baseline": pass_rate.get("baseline"),
        "pass_rate_current": pass_rate.get("current"),
        "pass_rate_delta": pass_rate.get("delta"),
        "regressions": len(regressions),
        "regression_ids": ids[:20],
    }
    details = []
    if pass_rate:
        details.append(f"pass rate {_num(pass_rate.get('baseline'))} -> {_num(pass_rate.get('current'))} "
                       f"(delta {_num(pass_rate.get('delta'))})")
    if mcnemar:
        details.append(f"McNemar p={_num(mcnemar.get('p_value'))} over {_num(mcnemar.get('discordant'))} "
                       f"discordant cases")
    if regressions:
        details.append(f"{len(regressions)} regression(s): " + ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else ""))
    if comparison.get("cases_compared") is not None:
        details.append(f"{comparison['cases_compared']} cases compared")
    if not details and isinstance(evidence.get("run"), dict):
        details.append(f"pass rate {_num(evidence['run'].get('pass_rate'))} over {_num(evidence['run'].get('cases'))} cases")
    details.extend(str(r) for r in (comparison.get("reasons") or [])[:3])
    return str(verdict), {k: v for k, v in figures.items() if v not in (None, [])}, details


def _metrics_gate(evidence: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    comparison = evidence.get("comparison") if isinstance(evidence.get("comparison"), dict) else {}
    verdict = evidence.get("verdict") or comparison.get("verdict") or "n/a"
    signals = comparison.get("signals") if isinstance(comparison.get("signals"), dict) else {}
    figures: dict[str, Any] = {}
    details = []
    ordered = [n for n in SIGNAL_ORDER if n in signals] + sorted(n for n in signals if n not in SIGNAL_ORDER)
    for name in ordered:
        signal = signals[name]
        if not isinstance(signal, dict):
            continue
        fig: dict[str, Any] = {"verdict": signal.get("verdict")}
        if name == "error_rate":
            fig.update(p_value=signal.get("p_value"), increase=signal.get("increase"),
                       baseline_rate=(signal.get("baseline") or {}).get("rate") if isinstance(signal.get("baseline"), dict) else None,
                       current_rate=(signal.get("current") or {}).get("rate") if isinstance(signal.get("current"), dict) else None)
            text = (f"error rate {_num(fig['baseline_rate'])} -> {_num(fig['current_rate'])}, "
                    f"increase {_num(fig['increase'])}, p={_num(fig['p_value'])}")
        elif name == "latency":
            sources = [s for s in signal.get("sources") or [] if isinstance(s, dict)]
            keys = ("source", "verdict", "p99_ratio", "p99_ratio_ci", "median_ratio", "mann_whitney_p",
                    "baseline_p99", "current_p99")
            fig["sources"] = [{k: s.get(k) for k in keys} for s in sources]
            text = "; ".join(f"{s.get('source')}: P99 x{_num(s.get('p99_ratio'))} "
                             f"({_num(s.get('baseline_p99'))} -> {_num(s.get('current_p99'))} ms), "
                             f"Mann-Whitney p={_num(s.get('mann_whitney_p'))}" for s in sources) or "no source"
        elif name == "cache_hit_ratio":
            fig.update(baseline=signal.get("baseline_ratio"), current=signal.get("current_ratio"),
                       relative=signal.get("relative"), drop=signal.get("drop"))
            text = (f"cache hit ratio {_num(fig['baseline'])} -> {_num(fig['current'])} "
                    f"(drop {_num(fig['drop'])})")
        elif name == "new_templates":
            new = signal.get("new") if isinstance(signal.get("new"), list) else []
            fig["count"] = len(new)
            fig["templates"] = [t.get("template") for t in new[:5] if isinstance(t, dict)]
            text = f"{len(new)} new warning template(s)" + (": " + "; ".join(map(str, fig["templates"])) if new else "")
        else:
            text = str(signal.get("reason") or "")
        figures[name] = {k: v for k, v in fig.items() if v is not None}
        details.append(f"{name} {signal.get('verdict')}: {text}")
    if not details:
        details.extend(str(r) for r in (comparison.get("reasons") or [])[:3])
    return str(verdict), figures, details


def gate_of(step: dict[str, Any]) -> dict[str, Any] | None:
    """The gate a ledger step is (health, evals, metrics, or another step with a verdict), or ``None``.

    The kind is read from the shape of the step's evidence (the result of
    engine_health, engine_eval or engine_metrics), else from its name.
    """
    evidence = step.get("evidence") if isinstance(step.get("evidence"), dict) else {}
    name = str(step.get("step", ""))
    lowered = name.lower()
    comparison = evidence.get("comparison") if isinstance(evidence.get("comparison"), dict) else None
    if "ready" in evidence:
        kind, extract = "health", _health_gate
    elif (comparison is not None and "signals" in comparison) or (
            not comparison and "metric" in lowered and "verdict" in evidence):
        kind, extract = "metrics", _metrics_gate
    elif comparison is not None or ("eval" in lowered and "verdict" in evidence):
        kind, extract = "evals", _evals_gate
    elif "verdict" in evidence:
        kind, extract = name, None
    else:
        return None
    if extract is None:
        verdict, figures, details = str(evidence.get("verdict")), {}, [str(r) for r in evidence.get("reasons") or []][:3]
    else:
        verdict, figures, details = extract(evidence)
    if verdict in ("n/a", "None"):
        verdict = _verdict_from_outcome(step.get("outcome"))
    # A gate passed while rolling back judges the rolled-back Engine, not the upgrade.
    if kind in GATES and (lowered.startswith("rollback") or step.get("status_before") in ("rolling_back", "rolled_back")):
        kind = f"rollback_{kind}"
    return {"gate": kind, "step": name, "seq": step.get("seq"), "time": step.get("time"), "verdict": verdict,
            "planned": bool(step.get("planned")), "figures": figures, "details": details,
            "seconds": _gate_seconds(evidence)}


def _gate_seconds(evidence: dict[str, Any]) -> float | None:
    """How long a gate took: engine_health's ``waited_seconds``, engine_metrics' ``elapsed_seconds``, engine_eval's
    ``run.elapsed_seconds``."""
    run = evidence.get("run") if isinstance(evidence.get("run"), dict) else {}
    for value in (evidence.get("waited_seconds"), evidence.get("elapsed_seconds"), run.get("elapsed_seconds")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def gate_times_of(gates: list[dict[str, Any]], facts: dict[str, Any]) -> dict[str, float] | None:
    """Seconds per gate of the upgrade (the last run of each), and the observation window in ``observed``."""
    times = {g["gate"]: g["seconds"] for g in gates if g.get("seconds") is not None and not g["gate"].startswith("rollback_")}
    try:
        observed = float(facts.get("observed_seconds") or 0)
    except (TypeError, ValueError):
        observed = 0.0
    if observed > 0:
        times["observed"] = observed
    return times or None


def _gate_times_text(times: dict[str, float]) -> str:
    return ", ".join(f"{'observation' if gate == 'observed' else gate} {times[gate]:.1f} s" for gate in times)


def rollback_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The rollback of the Engine, if any: mode, lost-write account, quarantine, from the facts and steps."""
    facts = record.get("facts") or {}
    mode = facts.get("rollback_mode")
    lost = None
    lost_error = None
    quarantine = None
    seen = False
    for step in record.get("steps") or []:
        evidence = step.get("evidence") if isinstance(step.get("evidence"), dict) else {}
        inputs = step.get("inputs") if isinstance(step.get("inputs"), dict) else {}
        if str(step.get("step", "")).startswith("rollback") or step.get("status") in ("rolling_back", "rolled_back"):
            seen = True
            mode = mode or inputs.get("mode") or evidence.get("mode") or inputs.get("rollback_mode")
        if "lost_writes" in evidence or "lost_writes_error" in evidence:
            seen = True
            lost = evidence.get("lost_writes")
            lost_error = evidence.get("lost_writes_error")
            if isinstance(evidence.get("quarantine"), dict):
                quarantine = evidence["quarantine"].get("path") or evidence["quarantine"].get("name")
    if not seen and not mode:
        return None
    return {"mode": mode, "lost_writes": lost, "lost_writes_error": lost_error, "quarantine": quarantine}


def drain_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """What the last drain saw: turns in flight, finished, cut; ``None`` without a drain's evidence."""
    found = None
    for step in record.get("steps") or []:
        evidence = step.get("evidence") if isinstance(step.get("evidence"), dict) else {}
        drain = evidence.get("drain")
        if isinstance(drain, dict):
            found = {k: drain.get(k) for k in ("in_flight", "finished", "not_finished", "elapsed", "grace_expired",
                                               "killed", "exit_code")}
    return found


def outage_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The last swap's timings (engine_container's ``timings``): outage, stop and boot-to-healthy, in seconds."""
    found = None
    for step in record.get("steps") or []:
        evidence = step.get("evidence") if isinstance(step.get("evidence"), dict) else {}
        timings = evidence.get("timings")
        if isinstance(timings, dict) and timings.get("outage_seconds") is not None:
            found = {k: timings.get(k) for k in ("outage_seconds", "stop_seconds", "boot_to_healthy_seconds")}
    return found


def _outage_text(outage: dict[str, Any]) -> str:
    return (f"{_num(outage.get('outage_seconds'), 3)} s from the drain to healthy (stop {_num(outage.get('stop_seconds'), 3)} s, "
            f"boot to healthy {_num(outage.get('boot_to_healthy_seconds'), 3)} s)")


def _version_text(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        return str(coerce_version(value))
    except VersionError:
        return str(value)


def snapshot_of(facts: dict[str, Any]) -> dict[str, Any] | None:
    """The pre-upgrade snapshot of a record's facts: its name and its age in seconds when the Engine drained."""
    if not facts.get("snapshot"):
        return None
    age = facts.get("snapshot_age_at_drain")
    try:
        age = None if age in (None, "") else int(float(age))
    except (TypeError, ValueError):
        age = None
    return {"name": str(facts["snapshot"]), "age_at_drain": age}


def _snapshot_text(snapshot: dict[str, Any]) -> str:
    age = snapshot.get("age_at_drain")
    return snapshot["name"] + ("" if age is None else f", {age} s old when the Engine drained")


def _batch_text(batch: Any) -> str:
    """A batch as the ledger has it (the play batch's hosts, a list) in words: its Engines, comma-separated."""
    return ", ".join(str(host) for host in batch) if isinstance(batch, (list, tuple)) else str(batch)


def engine_entry(record: dict[str, Any], host: str | None = None, stats: dict[str, int] | None = None,
                 batch: str | None = None, batch_order: int | None = None) -> dict[str, Any]:
    """One Engine of the report, from its ledger record (and the play recap of its host)."""
    facts = record.get("facts") or {}
    steps = [s for s in record.get("steps") or [] if isinstance(s, dict)]
    from_version = _version_text(facts.get("from_version") or facts.get("from_image"))
    to_version = _version_text(facts.get("target_version") or facts.get("target_image"))
    kind = facts.get("upgrade_kind")
    if not kind and from_version and to_version:
        try:
            kind = version_upgrade_kind(from_version, to_version)
        except VersionError:
            kind = None
    gates = [g for g in (gate_of(s) for s in steps) if g is not None]
    latest: dict[str, str] = {}
    for gate in gates:
        latest[gate["gate"]] = gate["verdict"]
    times = [s.get("started") or s.get("time") for s in steps] + [s.get("time") for s in steps]
    times = sorted(t for t in times if isinstance(t, str))
    failed = bool(stats and (stats.get("failures") or stats.get("unreachable")))
    return {
        "engine": record.get("engine"),
        "host": host,
        "status": record.get("status"),
        "play_failed": failed,
        "from_version": from_version,
        "to_version": to_version,
        "upgrade_kind": kind,
        "cohort": facts.get("cohort"),
        "snapshot": snapshot_of(facts),
        "batch": batch or (_batch_text(facts["batch"]) if facts.get("batch") not in (None, "", []) else None),
        "batch_order": batch_order,
        "first_time": times[0] if times else None,
        "last_time": times[-1] if times else None,
        "gates": gates,
        "gate_verdicts": latest,
        "rollback": rollback_of(record),
        "drain": drain_of(record),
        "outage": outage_of(record),
        "gate_times": gate_times_of(gates, facts),
        "facts": facts,
        "steps": steps,
        "stats": stats,
        "created": record.get("created"),
        "updated": record.get("updated"),
    }


def build_report(rollout_id: str | None, records: list[dict[str, Any]], stats: dict[str, dict[str, int]],
                 run: dict[str, Any] | None = None, hosts: dict[str, str] | None = None,
                 batches: dict[str, tuple[str, int]] | None = None, ledger_dir: str | None = None,
                 skipped: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The report of a rollout as plain data (redacted).

    ``hosts`` maps Engine names to inventory hosts, ``batches`` Engine names
    to ``(label, order)``; ``stats`` is the play recap by host.
    """
    hosts = hosts or {}
    batches = batches or {}
    engines = []
    for record in records:
        name = record.get("engine")
        host = hosts.get(name) or (name if name in stats else None)
        label, order = batches.get(name, (None, None))
        engines.append(engine_entry(record, host, stats.get(host) if host else None, label, order))
    # By batch, then by name within a batch; Engines of no batch seen by this run first, by when they started.
    engines.sort(key=lambda e: (-1, e["first_time"] or "", str(e["engine"])) if e["batch_order"] is None
                 else (e["batch_order"], "", str(e["engine"])))
    by_status: dict[str, int] = {}
    for entry in engines:
        by_status[entry["status"]] = by_status.get(entry["status"], 0) + 1
    report = {
        "format": REPORT_FORMAT,
        "rollout_id": rollout_id,
        "generated": format_utc(utc_now()),
        "run": run or {},
        "ledger_dir": ledger_dir,
        "summary": {
            "engines": len(engines),
            "by_status": by_status,
            "hosts_failed": sorted(h for h, s in stats.items() if s.get("failures")),
            "hosts_unreachable": sorted(h for h, s in stats.items() if s.get("unreachable")),
        },
        "engines": engines,
        "stats": stats,
        "unreadable_records": [{"file": f, "reason": r} for f, r in (skipped or [])],
    }
    return redact(report)


# -- rendering ------------------------------------------------------------------

def _gate_text(entry: dict[str, Any]) -> str:
    verdicts = entry.get("gate_verdicts") or {}
    parts = [f"{g}:{verdicts[g]}" for g in GATES if g in verdicts]
    parts += [f"{g}:{v}" for g, v in verdicts.items() if g not in GATES]
    return " ".join(parts) or "-"


def _from_to(entry: dict[str, Any]) -> str:
    return f"{entry.get('from_version') or '?'} -> {entry.get('to_version') or '?'}"


def _outcome(entry: dict[str, Any]) -> str:
    text = str(entry.get("status"))
    if entry.get("play_failed"):
        text += " (play failed)"
    return text


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows of the summary table: Engine, from -> to, outcome, gate verdicts."""
    return [[str(e["engine"]), _from_to(e), _outcome(e), _gate_text(e)] for e in report["engines"]]


def console_lines(report: dict[str, Any], files: dict[str, str] | None = None) -> list[str]:
    """The summary table and the report's files, as lines for the console."""
    header = ["ENGINE", "FROM -> TO", "OUTCOME", "GATES"]
    rows = summary_rows(report)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header] + rows]
    if not rows:
        lines = ["no Engine recorded a step in the ledger"]
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["summary"]["by_status"].items()))
    if counts:
        lines.append(f"{report['summary']['engines']} Engine(s): {counts}")
    for kind, path in (files or {}).items():
        lines.append(f"report ({kind}): {path}")
    return lines


def _md(text: Any) -> str:
    return str(text if text is not None else "-").replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    run = report.get("run") or {}
    out = [f"# Rollout {report.get('rollout_id') or '(none)'}", ""]
    out.append(f"- Generated: {report['generated']}")
    if run.get("playbooks"):
        out.append(f"- Playbooks: {', '.join(run['playbooks'])}")
    if run.get("started"):
        out.append(f"- Run: {run.get('started')} to {run.get('finished')}")
    if run.get("check_mode"):
        out.append("- Check mode: nothing was changed; planned steps are marked *planned*.")
    if report.get("ledger_dir"):
        out.append(f"- Ledger: `{report['ledger_dir']}`")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(report["summary"]["by_status"].items())) or "none"
    out += [f"- Engines: {report['summary']['engines']} ({counts})", "", "## Summary", ""]
    out += ["| Engine | Batch | From -> to | Kind | Outcome | Gates |", "|---|---|---|---|---|---|"]
    for e in report["engines"]:
        out.append(f"| {_md(e['engine'])} | {_md(e.get('batch'))} | {_md(_from_to(e))} | {_md(e.get('upgrade_kind'))} "
                   f"| {_md(_outcome(e))} | {_md(_gate_text(e))} |")
    for e in report["engines"]:
        out += ["", f"## {e['engine']}: {e['status']}", ""]
        out.append(f"- Versions: {_from_to(e)}" + (f" ({e['upgrade_kind']})" if e.get("upgrade_kind") else ""))
        if e.get("host") and e["host"] != e["engine"]:
            out.append(f"- Host: {e['host']}")
        if e.get("batch"):
            out.append(f"- Batch: {e['batch']}")
        if e.get("cohort"):
            out.append(f"- Cohort: {e['cohort']}")
        if e.get("snapshot"):
            out.append(f"- Snapshot: {_md(_snapshot_text(e['snapshot']))}")
        if e.get("drain"):
            d = e["drain"]
            out.append(f"- Drain: {_num(d.get('in_flight'))} turn(s) in flight, {_num(d.get('not_finished'))} cut, "
                       f"{_num(d.get('elapsed'), 3)} s")
        if e.get("outage"):
            out.append(f"- Outage: {_outage_text(e['outage'])}")
        if e.get("gate_times"):
            out.append(f"- Gate times: {_gate_times_text(e['gate_times'])}")
        rb = e.get("rollback")
        if rb:
            out.append(f"- Rollback: mode {rb.get('mode') or 'unknown'}")
            if rb.get("lost_writes") is not None or rb.get("lost_writes_error"):
                out.append(f"- Lost writes: {_lost_text(rb)}")
            if rb.get("quarantine"):
                out.append(f"- Replaced brain kept at `{rb['quarantine']}`")
        if e["gates"]:
            out += ["", "| Gate | Step | Verdict | Evidence |", "|---|---|---|---|"]
            for g in e["gates"]:
                out.append(f"| {_md(g['gate'])} | {_md(g['step'])} | {_md(g['verdict'])}{' (planned)' if g['planned'] else ''} "
                           f"| {_md('; '.join(g['details']))} |")
        out += ["", "| # | Step | Time | Duration (s) | Outcome | Status | Note |", "|---|---|---|---|---|---|---|"]
        for s in e["steps"]:
            outcome = s.get("outcome", "") + (" *planned*" if s.get("planned") else "")
            out.append(f"| {_md(s.get('seq'))} | {_md(s.get('step'))} | {_md(s.get('time'))} | "
                       f"{_md(s.get('duration_seconds'))} | {_md(outcome)} | {_md(s.get('status'))} | {_md(s.get('note'))} |")
    if report.get("stats"):
        out += ["", "## Play recap", "", "| Host | " + " | ".join(STAT_KEYS) + " |", "|---" * (len(STAT_KEYS) + 1) + "|"]
        for host, counts_ in sorted(report["stats"].items()):
            out.append(f"| {_md(host)} | " + " | ".join(str(counts_.get(k, 0)) for k in STAT_KEYS) + " |")
    if report.get("unreadable_records"):
        out += ["", "## Unreadable ledger records", ""]
        out += [f"- `{r['file']}`: {r['reason']}" for r in report["unreadable_records"]]
    return "\n".join(out) + "\n"


def _lost_text(rollback: dict[str, Any]) -> str:
    lost = rollback.get("lost_writes")
    if isinstance(lost, dict):
        tables = lost.get("tables") if isinstance(lost.get("tables"), dict) else {}
        parts = [f"{t} {v.get('rows')}" for t, v in sorted(tables.items()) if isinstance(v, dict) and v.get("rows")]
        return f"{_num(lost.get('total'))} row(s)" + (f" ({', '.join(parts)})" if parts else "")
    if rollback.get("lost_writes_error"):
        return f"unknown: {rollback['lost_writes_error']}"
    return "none (the brain was not replaced)"


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_utc(value)
    except ValueError:
        return None


def render_svg(report: dict[str, Any], plot_width: int = 760, label_width: int = 190, row_height: int = 22) -> str:
    """The timeline: one row per Engine (grouped by batch), one bar per step, coloured by its outcome."""
    engines = report["engines"]
    spans = []
    for e in engines:
        for s in e["steps"]:
            end = _time(s.get("time"))
            if end is None:
                continue
            start = _time(s.get("started")) or end
            spans.append((start, end))
    top, axis = 34, 22
    batch_width = 170 if any(e.get("batch") for e in engines) else 20
    width = label_width + plot_width + batch_width
    height = top + row_height * max(len(engines), 1) + axis + 28
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Timeline of the rollout">',
           f"<title>Timeline of rollout {_e(report.get('rollout_id'))}</title>"]
    if not spans:
        out.append(f'<text x="10" y="{top}" class="empty" {_FONT} fill="#263238">No step recorded.</text></svg>')
        return "\n".join(out)
    t0 = min(start for start, _end in spans)
    t1 = max(end for _start, end in spans)
    total = max((t1 - t0).total_seconds(), 1.0)

    def x_of(when: datetime) -> float:
        return label_width + (when - t0).total_seconds() / total * plot_width

    # Batch bands behind the rows.
    previous = object()
    band = 0
    for index, e in enumerate(engines):
        if e.get("batch") != previous:
            previous = e.get("batch")
            band += 1
            size = 1
            while index + size < len(engines) and engines[index + size].get("batch") == previous:
                size += 1
            y = top + index * row_height
            out.append(f'<rect class="band" x="0" y="{y}" width="{width}" height="{size * row_height}" '
                       f'fill="{("#fafafa", "#e8eef3")[band % 2]}">'
                       f"<title>{_e(previous or 'no batch')}</title></rect>")
            if previous:
                out.append(f'<text class="batch" x="{label_width + plot_width + 10}" y="{y + 15}" {_FONT} '
                           f'fill="#78909c" font-style="italic">{_e(previous)}</text>')
    for index, e in enumerate(engines):
        y = top + index * row_height
        out.append(f'<g class="engine-row" data-engine="{_e(e["engine"])}" data-status="{_e(e["status"])}">')
        out.append(f'<text class="label" x="8" y="{y + 15}" {_FONT} fill="#263238">{_e(e["engine"])}</text>')
        out.append(f'<rect class="status-mark" x="{label_width - 12}" y="{y + 5}" width="8" height="12" '
                   f'fill="{STATUS_COLOURS.get(e["status"], "#546e7a")}"><title>{_e(e["status"])}</title></rect>')
        for s in e["steps"]:
            end = _time(s.get("time"))
            if end is None:
                continue
            start = _time(s.get("started")) or end
            x0, x1 = x_of(start), x_of(end)
            bar_width = max(x1 - x0, 4.0)
            x0 = min(x0, label_width + plot_width - bar_width)
            colour = OUTCOME_COLOURS.get(s.get("outcome"), "#546e7a")
            planned = ' stroke-dasharray="3,2" fill-opacity="0.35"' if s.get("planned") else ""
            tip = (f"{s.get('step')}: {s.get('outcome')}{' (planned)' if s.get('planned') else ''}, status "
                   f"{s.get('status')}, {s.get('time')}"
                   + (f", {s.get('duration_seconds')} s" if s.get("duration_seconds") is not None else "")
                   + (f": {s.get('note')}" if s.get("note") else ""))
            out.append(f'<rect class="step outcome-{_e(s.get("outcome"))}" x="{x0:.1f}" y="{y + 4}" '
                       f'width="{bar_width:.1f}" height="{row_height - 8}" fill="{colour}" stroke="{colour}"{planned}>'
                       f"<title>{_e(tip)}</title></rect>")
        out.append("</g>")
    # Time axis.
    y_axis = top + row_height * len(engines) + 4
    out.append(f'<line class="axis" x1="{label_width}" y1="{y_axis}" x2="{label_width + plot_width}" y2="{y_axis}" '
               f'stroke="#90a4ae"/>')
    for tick in range(5):
        when = t0 + (t1 - t0) * (tick / 4)
        x = label_width + plot_width * tick / 4
        anchor = "start" if tick == 0 else ("end" if tick == 4 else "middle")
        out.append(f'<line class="tick" x1="{x:.1f}" y1="{y_axis}" x2="{x:.1f}" y2="{y_axis + 4}" stroke="#90a4ae"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{y_axis + 16}" text-anchor="{anchor}" {_FONT} fill="#263238">'
                   f'{_e(when.strftime("%H:%M:%S"))}</text>')
    out.append(f'<text class="caption" x="8" y="{y_axis + 16}" {_FONT} fill="#546e7a">UTC, {_e(_duration(total))}</text>')
    # Legend.
    x = label_width
    for outcome, colour in OUTCOME_COLOURS.items():
        out.append(f'<rect class="legend" x="{x}" y="10" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text class="legend" x="{x + 14}" y="19" {_FONT} fill="#263238">{_e(outcome)}</text>')
        x += 100
    out.append("</svg>")
    return "\n".join(out)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em; color: #212121; }
h1 code, h2 code { font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #cfd8dc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; font-size: 0.92em; }
th { background: #eceff1; }
.meta { color: #546e7a; }
.badge { display: inline-block; padding: 0.05em 0.5em; border-radius: 0.8em; color: #fff; font-size: 0.85em; }
.verdict-pass { color: #2e7d32; font-weight: 600; }
.verdict-fail { color: #c62828; font-weight: 600; }
.verdict-inconclusive { color: #f57f17; font-weight: 600; }
.planned { color: #1565c0; font-style: italic; }
section.engine { border-top: 1px solid #cfd8dc; margin-top: 1.5em; }
pre { background: #f5f5f5; padding: 0.5em; overflow-x: auto; font-size: 0.85em; max-height: 24em; }
svg.timeline { border: 1px solid #cfd8dc; background: #fff; max-width: 100%; height: auto; }
"""


def _verdict_html(verdict: Any, planned: bool = False) -> str:
    text = f'<span class="verdict-{_e(verdict)}">{_e(verdict)}</span>'
    return text + (' <span class="planned">planned</span>' if planned else "")


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    run = report.get("run") or {}
    rid = report.get("rollout_id") or "(none)"
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>Rollout {_e(rid)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           f"<h1>Rollout <code>{_e(rid)}</code></h1>"]
    meta = [f"generated {_e(report['generated'])}"]
    if run.get("playbooks"):
        meta.append("playbooks " + _e(", ".join(run["playbooks"])))
    if run.get("started"):
        meta.append(f"run {_e(run.get('started'))} to {_e(run.get('finished'))}")
    if report.get("ledger_dir"):
        meta.append(f"ledger <code>{_e(report['ledger_dir'])}</code>")
    out.append(f'<p class="meta">{"; ".join(meta)}</p>')
    if run.get("check_mode"):
        out.append('<p class="planned">Check mode: nothing was changed; the steps that would be recorded are '
                   'shown as planned.</p>')
    counts = ", ".join(f"{n} {_e(s)}" for s, n in sorted(report["summary"]["by_status"].items())) or "none"
    out.append(f"<h2>Summary</h2><p>{report['summary']['engines']} Engine(s): {counts}</p>")
    out.append("<table><thead><tr><th>Engine</th><th>Batch</th><th>From → to</th><th>Kind</th><th>Outcome</th>"
               + "".join(f"<th>{g}</th>" for g in GATES) + "</tr></thead><tbody>")
    for e in report["engines"]:
        colour = STATUS_COLOURS.get(e["status"], "#546e7a")
        verdicts = e.get("gate_verdicts") or {}
        out.append(f'<tr><td><a href="#engine-{_e(e["engine"])}">{_e(e["engine"])}</a></td><td>{_e(e.get("batch") or "-")}</td>'
                   f"<td>{_e(e.get('from_version') or '?')} → {_e(e.get('to_version') or '?')}</td>"
                   f"<td>{_e(e.get('upgrade_kind') or '-')}</td>"
                   f'<td><span class="badge" style="background:{colour}">{_e(e["status"])}</span>'
                   + (" (play failed)" if e.get("play_failed") else "") + "</td>"
                   + "".join(f"<td>{_verdict_html(verdicts[g]) if g in verdicts else '-'}</td>" for g in GATES)
                   + "</tr>")
    out.append("</tbody></table>")
    out.append("<h2>Timeline</h2>")
    out.append(render_svg(report))
    out.append("<h2>Engines</h2>")
    for e in report["engines"]:
        colour = STATUS_COLOURS.get(e["status"], "#546e7a")
        out.append(f'<section class="engine" id="engine-{_e(e["engine"])}">')
        out.append(f'<h3>{_e(e["engine"])} <span class="badge" style="background:{colour}">{_e(e["status"])}</span></h3>')
        facts = [f"{_e(e.get('from_version') or '?')} → {_e(e.get('to_version') or '?')}"
                 + (f" ({_e(e['upgrade_kind'])})" if e.get("upgrade_kind") else "")]
        if e.get("host") and e["host"] != e["engine"]:
            facts.append(f"host {_e(e['host'])}")
        if e.get("batch"):
            facts.append(f"batch {_e(e['batch'])}")
        if e.get("cohort"):
            facts.append(f"cohort {_e(e['cohort'])}")
        if e.get("snapshot"):
            facts.append(f"snapshot {_e(_snapshot_text(e['snapshot']))}")
        out.append(f"<p>{'; '.join(facts)}</p>")
        if e.get("drain"):
            d = e["drain"]
            out.append(f"<p>Drain: {_e(_num(d.get('in_flight')))} turn(s) in flight, "
                       f"{_e(_num(d.get('not_finished')))} cut, {_e(_num(d.get('elapsed'), 3))} s.</p>")
        if e.get("outage"):
            out.append(f"<p>Outage: {_e(_outage_text(e['outage']))}.</p>")
        if e.get("gate_times"):
            out.append(f"<p>Gate times: {_e(_gate_times_text(e['gate_times']))}.</p>")
        rb = e.get("rollback")
        if rb:
            out.append(f"<p>Rollback: mode <strong>{_e(rb.get('mode') or 'unknown')}</strong>")
            if rb.get("lost_writes") is not None or rb.get("lost_writes_error"):
                out.append(f"; lost writes: {_e(_lost_text(rb))}")
            if rb.get("quarantine"):
                out.append(f"; replaced brain kept at <code>{_e(rb['quarantine'])}</code>")
            out.append(".</p>")
        if e["gates"]:
            out.append("<table><thead><tr><th>Gate</th><th>Step</th><th>Verdict</th><th>Evidence</th></tr></thead><tbody>")
            for g in e["gates"]:
                details = "<br>".join(_e(d) for d in g["details"]) or "-"
                out.append(f"<tr><td>{_e(g['gate'])}</td><td>{_e(g['step'])}</td>"
                           f"<td>{_verdict_html(g['verdict'], g['planned'])}</td><td>{details}</td></tr>")
            out.append("</tbody></table>")
        out.append("<table><thead><tr><th>#</th><th>Step</th><th>Time</th><th>Duration (s)</th><th>Outcome</th>"
                   "<th>Status</th><th>Note</th></tr></thead><tbody>")
        for s in e["steps"]:
            planned = ' <span class="planned">planned</span>' if s.get("planned") else ""
            colour = OUTCOME_COLOURS.get(s.get("outcome"), "#546e7a")
            out.append(f"<tr><td>{_e(s.get('seq'))}</td><td>{_e(s.get('step'))}</td><td>{_e(s.get('time'))}</td>"
                       f"<td>{_e(s.get('duration_seconds') if s.get('duration_seconds') is not None else '-')}</td>"
                       f'<td style="color:{colour}">{_e(s.get("outcome"))}{planned}</td><td>{_e(s.get("status"))}</td>'
                       f"<td>{_e(s.get('note') or '')}</td></tr>")
        out.append("</tbody></table>")
        evidence = [s for s in e["steps"] if s.get("inputs") or s.get("evidence")]
        if evidence:
            out.append("<details><summary>Inputs and evidence of each step</summary>")
            for s in evidence:
                body = {k: s[k] for k in ("inputs", "evidence") if s.get(k)}
                out.append(f"<h4>{_e(s.get('seq'))}. {_e(s.get('step'))}</h4>"
                           f"<pre>{_e(json.dumps(body, indent=2, sort_keys=True))}</pre>")
            out.append("</details>")
        out.append("</section>")
    if report.get("stats"):
        out.append("<h2>Play recap</h2><table><thead><tr><th>Host</th>"
                   + "".join(f"<th>{k}</th>" for k in STAT_KEYS) + "</tr></thead><tbody>")
        for host, counts_ in sorted(report["stats"].items()):
            out.append(f"<tr><td>{_e(host)}</td>" + "".join(f"<td>{_e(counts_.get(k, 0))}</td>" for k in STAT_KEYS)
                       + "</tr>")
        out.append("</tbody></table>")
    if report.get("unreadable_records"):
        out.append("<h2>Unreadable ledger records</h2><ul>")
        out += [f"<li><code>{_e(r['file'])}</code>: {_e(r['reason'])}</li>" for r in report["unreadable_records"]]
        out.append("</ul>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _write_text_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def report_folder(directory: str, rollout_id: str | None, when: datetime | None = None) -> str:
    """A new folder ``<directory>/<rollout_id>-<timestamp>`` (``run-<timestamp>`` without a rollout)."""
    stamp = (when or utc_now()).strftime("%Y%m%dT%H%M%SZ")
    base = os.path.join(os.path.abspath(os.path.expanduser(directory)), f"{rollout_id or 'run'}-{stamp}")
    path, counter = base, 1
    while os.path.exists(path):
        counter += 1
        path = f"{base}-{counter}"
    os.makedirs(path)
    return path


def write_report(report: dict[str, Any], folder: str) -> dict[str, str]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``folder``; returns their paths."""
    files = {kind: os.path.join(folder, f"report.{kind}") for kind in ("json", "md", "html")}
    report = dict(report, files=files)
    write_json_atomic(files["json"], report, mode=0o644)
    _write_text_atomic(files["md"], render_markdown(report))
    _write_text_atomic(files["html"], render_html(report))
    return files


# -- the callback -----------------------------------------------------------------

def _ledger_results(result: Any):
    """The engine_ledger results in a task result (its loop items included)."""
    if not isinstance(result, dict):
        return
    record = result.get("record")
    if (isinstance(record, dict) and record.get("format") == LEDGER_FORMAT) or (
            isinstance(result.get("records"), list) and result.get("rollout_id") and result.get("ledger_dir")):
        yield result
    for item in result.get("results") or []:
        yield from _ledger_results(item)


def _action_name(task: Any) -> str:
    action = getattr(task, "_resolved_action", None) or getattr(task, "action", None) or ""
    return str(action).rsplit(".", 1)[-1]


class CallbackModule(CallbackBase):
    """Writes the rollout report at the end of the run and prints the progress of long waits."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "engineops.fleet.rollout_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rollouts: dict[str, dict[str, Any]] = {}
        self._playbooks: list[str] = []
        self._started = format_utc(utc_now())
        self._batch: tuple[str, int] | None = None
        self._batch_seq = 0
        self._play_batches: dict[str, int] = {}
        self._play_names: dict[str, str] = {}
        self._batch_numbers: dict[int, int] = {}
        self._last_play: str | None = None
        self._busy: dict[str, str] = {}
        self._overrides: dict[str, Any] = {}
        self._warned = False

    # -- options ----------------------------------------------------------------

    def _option(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        try:
            return self.get_option(name)
        except KeyError:
            return None

    def _read_extra_vars(self, play: Any) -> None:
        """ansible-core before 2.20 does not give callbacks their documented variables: read them from -e."""
        try:
            extra = play.get_variable_manager().extra_vars
        except Exception:  # pylint: disable=broad-except
            return
        for option, var in (("state_dir", "engine_state_dir"), ("directory", "engine_report_dir"),
                            ("ledger_dir", "engine_ledger_dir"), ("rollout_id", "engine_rollout_id")):
            value = extra.get(var) if hasattr(extra, "get") else None
            if isinstance(value, str) and value and "{{" not in value and "{%" not in value:
                self._overrides[option] = os.path.expanduser(value) if option != "rollout_id" else value

    def _guard(self, what: str, func: Any, *args: Any) -> None:
        try:
            func(*args)
        except Exception as exc:  # pylint: disable=broad-except
            if not self._warned:
                self._warned = True
                self._display.warning(f"engineops.fleet.rollout_report: {what} failed: {exc}")

    # -- progress ----------------------------------------------------------------

    def _activity(self, task: Any) -> str | None:
        name = _action_name(task)
        if name in ("engine_snapshot",):
            state = (getattr(task, "args", None) or {}).get("state")
            if isinstance(state, str) and state in SNAPSHOT_ACTIVITIES:
                return SNAPSHOT_ACTIVITIES[state]
        return ACTIVITIES.get(name)

    def _start(self, host: Any, task: Any) -> None:
        activity = self._activity(task)
        if not activity or not self._option("progress"):
            return
        name = host.get_name()
        self._busy[name] = activity
        same = sum(1 for a in self._busy.values() if a == activity)
        tail = f" ({same} Engines {activity})" if same > 1 else ""
        self._display.display(f"  [rollout] {name}: {activity}{tail}", color=C.COLOR_VERBOSE)

    def _retry(self, result: Any) -> None:
        if not self._option("progress"):
            return
        activity = self._activity(result.task) or "waiting"
        res = result.result
        attempts = res.get("attempts")
        retries = res.get("retries")
        count = f" (attempt {attempts} of {retries})" if attempts and retries else ""
        self._display.display(f"  [rollout] {result.host.get_name()}: still {activity}{count}", color=C.COLOR_VERBOSE)

    # -- collection ------------------------------------------------------------------

    def _collect(self, result: Any) -> None:
        host = result.host.get_name()
        self._busy.pop(host, None)
        for res in _ledger_results(result.result):
            rollout_id = res.get("rollout_id")
            if not isinstance(rollout_id, str):
                continue
            entry = self._rollouts.setdefault(rollout_id, {"ledger_dir": None, "hosts": {}, "batches": {},
                                                           "previews": {}})
            entry["ledger_dir"] = res.get("ledger_dir") or entry["ledger_dir"]
            record = res.get("record")
            if not isinstance(record, dict):
                continue
            engine = record.get("engine")
            entry["hosts"][engine] = host
            step = res.get("recorded") if isinstance(res.get("recorded"), dict) else {}
            # An Engine's batch is the one in which it was drained or swapped, else the first it recorded in.
            mid = step.get("status") in MID_UPGRADE
            known = entry["batches"].get(engine)
            if self._batch is not None and (known is None or (mid and not known[2])):
                entry["batches"][engine] = (self._batch[0], self._batch[1], mid)
            if step.get("planned"):
                # Check mode writes nothing, so each preview holds one planned step: chain them.
                preview = entry["previews"].get(engine)
                if preview is None:
                    entry["previews"][engine] = json.loads(json.dumps(record))
                else:
                    planned = dict(step, seq=len(preview["steps"]) + 1, status_before=preview["status"])
                    preview["steps"].append(planned)
                    preview["status"] = planned.get("status") or preview["status"]
                    preview["facts"].update(record.get("facts") or {})
                    preview["updated"] = record.get("updated", preview.get("updated"))

    def _play_start(self, play: Any) -> None:
        self._read_extra_vars(play)
        key = str(getattr(play, "_uuid", None) or play.get_name())
        if key != self._last_play:
            self._play_batches[key] = 0
        self._last_play = key
        self._play_batches[key] += 1
        self._batch_seq += 1
        self._batch = (key, self._batch_seq)
        self._play_names[key] = play.get_name() or "play"
        self._batch_numbers[self._batch_seq] = self._play_batches[key]

    def _batch_label(self, key: str, seq: int) -> str:
        return (f"{self._play_names.get(key, 'play')}: batch {self._batch_numbers.get(seq, 1)}/"
                f"{self._play_batches.get(key, 1)}")

    # -- the report ---------------------------------------------------------------------

    def _stats(self, stats: Any) -> None:
        recap = {host: {k: int(stats.summarize(host).get(k, 0)) for k in STAT_KEYS}
                 for host in sorted(stats.processed.keys())}
        run = {"started": self._started, "finished": format_utc(utc_now()), "playbooks": list(self._playbooks),
               "check_mode": bool(context.CLIARGS.get("check", False))}
        wanted = self._option("rollout_id")
        rollouts = dict(self._rollouts)
        if wanted:
            validate_name("Rollout id", wanted)
            rollouts = {wanted: rollouts.get(wanted) or {"ledger_dir": None, "hosts": {}, "batches": {},
                                                         "previews": {}}}
        if not rollouts:
            rollouts = {"": {"ledger_dir": None, "hosts": {}, "batches": {}, "previews": {}}}
        state_dir = self._option("state_dir")
        directory = state_path(self._option("directory"), state_dir, REPORTS_SUBDIR)
        for rollout_id, entry in rollouts.items():
            ledger_dir = entry.get("ledger_dir") or state_path(self._option("ledger_dir"), state_dir, LEDGER_SUBDIR)
            records: list[dict[str, Any]] = []
            skipped: list[tuple[str, str]] = []
            if rollout_id and ledger_dir:
                try:
                    records, skipped = list_records(ledger_dir, rollout_id)
                except (LedgerError, OSError) as exc:
                    skipped = [(ledger_dir, str(exc))]
            by_engine = {r["engine"]: r for r in records}
            for engine, preview in entry["previews"].items():
                if len(preview.get("steps") or []) >= len((by_engine.get(engine) or {}).get("steps") or []):
                    by_engine[engine] = preview
            batches = {engine: (self._batch_label(key, seq), seq)
                       for engine, (key, seq, _mid) in entry["batches"].items()}
            report = build_report(rollout_id or None, [by_engine[e] for e in sorted(by_engine)], recap, run,
                                  entry["hosts"], batches, ledger_dir, skipped)
            folder = report_folder(directory, rollout_id or None)
            files = write_report(report, folder)
            self._display.banner(f"ROLLOUT REPORT {rollout_id or '(no rollout recorded)'}")
            for line in console_lines(report, files):
                self._display.display(line)

    # -- Ansible's events ---------------------------------------------------------------------

    def v2_playbook_on_start(self, playbook: Any) -> None:
        name = os.path.basename(getattr(playbook, "_file_name", "") or "")
        if name:
            self._playbooks.append(name)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._guard("play start", self._play_start, play)

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._guard("progress", self._start, host, task)

    def v2_runner_retry(self, result: Any) -> None:
        self._guard("progress", self._retry, result)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._guard("collecting results", self._collect, result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._guard("collecting results", self._collect, result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._guard("collecting results", self._collect, result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._guard("collecting results", self._collect, result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        try:
            self._stats(stats)
        except Exception as exc:  # pylint: disable=broad-except
            self._display.warning(f"engineops.fleet.rollout_report: cannot write the rollout report: {exc}")
        # Several playbooks in one command: each gets its own report.
        self._rollouts = {}
        self._playbooks = []
        self._started = format_utc(utc_now())
