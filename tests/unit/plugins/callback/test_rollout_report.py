# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
import yaml

from ansible_collections.engineops.fleet.plugins.callback import rollout_report as rr
from ansible_collections.engineops.fleet.plugins.module_utils._ledger import (
    LEDGER_FORMAT,
    new_record,
    record_step,
)

ROLLOUT = "upgrade-2.4.0"
SECRETS = ("sk-live-123", "k3y-value", "hunter2", "tok-999")


# -- evidence as the modules return it ------------------------------------------------

def health(ready=True):
    if ready:
        return {"ready": True, "reason": "", "status_code": 200, "status": "ok", "waited_seconds": 7.25,
                "subsystems": {"database": "ok"}, "failing_subsystems": [], "probes": 4,
                "invocation": {"module_args": {"engine_key": "k3y-value"}}}
    return {"ready": False, "reason": "HTTP 503, status 'error'", "status_code": 503, "status": "error",
            "failing_subsystems": ["database"], "waited_seconds": 120.0,
            "container_event": {"reason": "restarted", "exit_code": 3, "restart_count": 4,
                                "error": "MIGRATION_REQUIRED: brain has migrations unknown to this release"}}


def evals(verdict="pass"):
    regressions = [] if verdict == "pass" else [{"id": "capital-italy", "cause": "answer", "p_value": 0.03},
                                                {"id": "json-3", "cause": "error", "p_value": 0.03}]
    mcnemar = {"regressions": len(regressions), "fixes": 0, "discordant": len(regressions),
               "p_value": 0.25 if regressions else 1.0}
    pass_rate = {"baseline": 1.0, "current": 0.9444 if regressions else 1.0, "delta": -0.0556 if regressions else 0.0}
    comparison = {"verdict": verdict, "reasons": [f"{len(regressions)} regressions"], "cases_compared": 36,
                  "regressions": regressions, "mcnemar": mcnemar, "pass_rate": pass_rate}
    return {"verdict": verdict, "comparison": comparison, "run": {"pass_rate": 1.0, "cases": 36},
            "cases": [{"id": f"c{i}"} for i in range(36)]}


def metrics(verdict="pass"):
    error_rate = {"verdict": verdict, "p_value": 0.0004 if verdict == "fail" else 0.61, "increase": 0.12,
                  "baseline": {"turns": 200, "failed": 1, "rate": 0.005},
                  "current": {"turns": 180, "failed": 23, "rate": 0.1278}, "reason": "error rate up"}
    return {"verdict": verdict, "comparison": {
        "verdict": verdict, "failing": ["error_rate"] if verdict == "fail" else [], "inconclusive": [],
        "reasons": ["error_rate: error rate up"],
        "signals": {
            "error_rate": error_rate,
            "latency": {"verdict": "pass", "reason": "fine", "sources": [
                {"source": "log durations", "verdict": "pass", "p99_ratio": 1.02, "p99_ratio_ci": [0.95, 1.1],
                 "median_ratio": 1.0, "mann_whitney_p": 0.44, "baseline_p99": 812.0, "current_p99": 828.0}]},
            "cache_hit_ratio": {"verdict": "pass", "baseline_ratio": 0.8, "current_ratio": 0.79, "relative": 0.9875,
                                "drop": 0.0125},
            "new_templates": {"verdict": "pass", "new": []},
        }},
        "window": {"probes": {"usage": [[100, 80]]}, "headers": {"X-Engine-Key": "k3y-value"}}}


def restore():
    return {"changed": True, "lost_writes": {"total": 12, "tables": {
        "episodes": {"rows": 8, "method": "primary_key", "replaced_rows": 208, "snapshot_rows": 200},
        "feedback": {"rows": 4, "method": "new_table", "replaced_rows": 4, "snapshot_rows": None}},
        "snapshot_only_tables": []},
        "quarantine": {"name": "engine-002_quarantine", "path": "/var/lib/engineops/q/engine-002.db"}}


def at(minute, second=0):
    return f"2026-05-01T10:{minute:02d}:{second:02d}Z"


def record(ledger_dir, engine, steps, facts=None):
    """Record ``steps`` (step, status, outcome, evidence, minute) for ``engine``; returns the last module-like result."""
    out = None
    for index, (step, status, outcome, evidence, minute) in enumerate(steps):
        result = record_step(
            ledger_dir, ROLLOUT, engine, step, target_version="2.4.0", status=status, outcome=outcome,
            evidence=evidence, now=at(minute, 30), started=at(minute), note=f"{step} of {engine}",
            inputs={"engine_key": "k3y-value", "image": "september-engine:2.4.0"},
            facts=(facts or {}) if index == 0 else None,
        )
        out = {"changed": True, "rollout_id": ROLLOUT, "ledger_dir": ledger_dir, "path": result.path,
               "record": result.record, "recorded": result.step}
    return out


@pytest.fixture
def ledger(tmp_path):
    """A rollout of three Engines: one verified, one rolled back with a brain restore, one failed at boot."""
    ledger_dir = str(tmp_path / "ledger")
    facts = {"from_version": "2.3.0", "from_image": "september-engine:2.3.0", "fingerprint_before": "fp-old",
             "env": ["LLM_API_KEY=sk-live-123"], "db_password": "hunter2"}
    results = {
        "engine-001": record(ledger_dir, "engine-001", [
            ("preflight", "preflight_done", "ok", {"free_bytes": 10**9}, 0),
            ("snapshot", "snapshotted", "ok", {"snapshot": {"name": "s1", "size": 4096}}, 1),
            ("drain", "drained", "ok", {"drain": {"in_flight": 2, "finished": 2, "not_finished": 0, "elapsed": 3.5}}, 2),
            ("swap", "swapped", "ok", None, 3),
            ("health", "healthy", "ok", health(), 4),
            ("evals", None, "ok", evals(), 5),
            ("metrics", "verified", "ok", metrics(), 6),
        ], facts),
        "engine-002": record(ledger_dir, "engine-002", [
            ("preflight", "preflight_done", "ok", None, 0),
            ("drain", "drained", "ok", None, 8),
            ("swap", "swapped", "ok", None, 9),
            ("health", "healthy", "ok", health(), 10),
            ("evals", None, "failed", evals("fail"), 11),
            ("metrics", "failed", "failed", metrics("fail"), 12),
            ("rollback", "rolling_back", "ok", None, 13),
            ("restore", None, "ok", restore(), 14),
            ("rollback_verify", "rolled_back", "ok", health(), 15),
        ], dict(facts, rollback_mode="restore")),
        "engine-003": record(ledger_dir, "engine-003", [
            ("preflight", "preflight_done", "ok", None, 0),
            ("drain", "drained", "ok", None, 8),
            ("swap", "swapped", "ok", None, 9),
            ("health", "failed", "failed", health(False), 11),
        ], facts),
    }
    return ledger_dir, results


# -- fakes of Ansible's objects ---------------------------------------------------------

class Host:
    def __init__(self, name):
        self.name = name

    def get_name(self):
        return self.name


class Stats:
    def __init__(self, recap):
        self.recap = recap
        self.processed = {h: 1 for h in recap}

    def summarize(self, host):
        return dict(self.recap[host])


class Play:
    def __init__(self, name, uuid, extra=None):
        self.name = name
        self._uuid = uuid
        self.extra = extra or {}

    def get_name(self):
        return self.name

    def get_variable_manager(self):
        return SimpleNamespace(extra_vars=self.extra)


def task(action, **args):
    return SimpleNamespace(action=action, _resolved_action=None, args=args)


def task_result(host, result, action="engineops.fleet.engine_ledger"):
    return SimpleNamespace(host=Host(host), task=task(action), result=result)


def callback(tmp_path, **options):
    cb = rr.CallbackModule()
    cb._plugin_options = {"directory": str(tmp_path / "reports"), "ledger_dir": str(tmp_path / "ledger"),
                          "rollout_id": None, "progress": True}
    cb._plugin_options.update(options)
    return cb


def recap(ok=5, failures=0, unreachable=0):
    return {"ok": ok, "changed": 2, "failures": failures, "unreachable": unreachable, "skipped": 0, "rescued": 0,
            "ignored": 0}


def run_rollout(cb, results):
    cb.v2_playbook_on_start(SimpleNamespace(_file_name="/x/playbooks/upgrade.yml"))
    cb.v2_playbook_on_play_start(Play("Pre-flight", "p1"))
    for engine in sorted(results):
        first = {"changed": True, "rollout_id": ROLLOUT, "ledger_dir": results[engine]["ledger_dir"],
                 "record": results[engine]["record"], "recorded": dict(results[engine]["record"]["steps"][0])}
        cb.v2_runner_on_ok(task_result(engine, first))
    # Two serial batches of the upgrade play: engine-001 first, then the other two.
    for batch, engines in enumerate((["engine-001"], ["engine-002", "engine-003"])):
        cb.v2_playbook_on_play_start(Play("Upgrade", "p2"))
        for engine in engines:
            step = next(s for s in results[engine]["record"]["steps"] if s["status"] == "drained")
            res = dict(results[engine], recorded=step)
            if engine == "engine-003":
                cb.v2_runner_on_failed(task_result(engine, {"results": [res, {"skipped": True}]}))
            else:
                cb.v2_runner_on_ok(task_result(engine, res))
    cb.v2_playbook_on_stats(Stats({"engine-001": recap(), "engine-002": recap(failures=1),
                                   "engine-003": recap(failures=1), "localhost": recap()}))


class WellFormed(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack = []
        self.errors = []
        self.rows = []
        self.external = []
        self.in_svg = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "g" and "engine-row" in (attrs.get("class") or ""):
            self.rows.append(attrs.get("data-engine"))
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("#"):
                self.external.append(attrs[key])
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def check_html(text):
    parser = WellFormed()
    parser.feed(text)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert parser.stack == [], parser.stack
    assert parser.external == [], parser.external
    return parser


def report_dir(tmp_path):
    folders = sorted((tmp_path / "reports").iterdir())
    assert len(folders) == 1, folders
    return folders[0]


# -- the whole callback -----------------------------------------------------------------

def test_report_files_say_what_happened(tmp_path, ledger, capsys):
    ledger_dir, results = ledger
    cb = callback(tmp_path)
    run_rollout(cb, results)
    out = capsys.readouterr().out
    folder = report_dir(tmp_path)
    assert re.fullmatch(rf"{ROLLOUT}-\d{{8}}T\d{{6}}Z", folder.name)
    files = {p.name for p in folder.iterdir()}
    assert files == {"report.json", "report.md", "report.html"}

    report = json.loads((folder / "report.json").read_text())
    assert report["format"] == rr.REPORT_FORMAT and report["rollout_id"] == ROLLOUT
    assert report["run"]["playbooks"] == ["upgrade.yml"] and report["run"]["check_mode"] is False
    assert report["summary"]["by_status"] == {"verified": 1, "rolled_back": 1, "failed": 1}
    engines = {e["engine"]: e for e in report["engines"]}
    assert [e["engine"] for e in report["engines"]] == ["engine-001", "engine-002", "engine-003"]
    one, two, three = engines["engine-001"], engines["engine-002"], engines["engine-003"]
    assert (one["from_version"], one["to_version"], one["upgrade_kind"]) == ("2.3.0", "2.4.0", "minor")
    assert one["gate_verdicts"] == {"health": "pass", "evals": "pass", "metrics": "pass"}
    assert one["batch"] == "Upgrade: batch 1/2" and two["batch"] == three["batch"] == "Upgrade: batch 2/2"
    assert one["drain"]["not_finished"] == 0 and one["rollback"] is None
    # The health check of the rolled-back Engine is a gate of its own.
    assert two["gate_verdicts"] == {"health": "pass", "evals": "fail", "metrics": "fail", "rollback_health": "pass"}
    metrics_gate = [g for g in two["gates"] if g["gate"] == "metrics"][0]
    assert metrics_gate["figures"]["error_rate"]["p_value"] == 0.0004
    assert any("p=0.0004" in d for d in metrics_gate["details"])
    evals_gate = [g for g in two["gates"] if g["gate"] == "evals"][0]
    assert evals_gate["figures"]["regression_ids"] == ["capital-italy", "json-3"]
    assert evals_gate["figures"]["pass_rate_delta"] == -0.0556
    assert two["rollback"]["mode"] == "restore" and two["rollback"]["lost_writes"]["total"] == 12
    assert two["rollback"]["quarantine"] == "/var/lib/engineops/q/engine-002.db"
    assert three["gate_verdicts"] == {"health": "fail"} and three["play_failed"] is True
    assert three["status"] == "failed"
    assert report["stats"]["localhost"]["ok"] == 5
    assert report["summary"]["hosts_failed"] == ["engine-002", "engine-003"]

    md = (folder / "report.md").read_text()
    assert f"# Rollout {ROLLOUT}" in md
    assert "| engine-002 | Upgrade: batch 2/2 | 2.3.0 -> 2.4.0 | minor | rolled_back (play failed) |" in md
    assert "- Rollback: mode restore" in md and "- Lost writes: 12 row(s) (episodes 8, feedback 4)" in md
    assert "MIGRATION_REQUIRED" in md and "McNemar p=0.25" in md

    html_text = (folder / "report.html").read_text()
    parser = check_html(html_text)
    assert parser.rows == ["engine-001", "engine-002", "engine-003"]
    assert html_text.count('class="engine-row"') == 3
    assert "<style>" in html_text and "lost writes: 12 row(s)" in html_text
    svg = html_text[html_text.index("<svg"):html_text.index("</svg>")]
    assert svg.count('class="step outcome-') == 7 + 9 + 4
    assert svg.count("outcome-failed") == 3

    # The console: the table, the counts and where the files are.
    assert f"ROLLOUT REPORT {ROLLOUT}" in out
    assert re.search(r"engine-001\s+2\.3\.0 -> 2\.4\.0\s+verified\s+health:pass evals:pass metrics:pass", out)
    assert re.search(r"engine-002\s+2\.3\.0 -> 2\.4\.0\s+rolled_back \(play failed\)\s+health:pass evals:fail "
                     r"metrics:fail rollback_health:pass", out)
    assert f"report (html): {folder / 'report.html'}" in out

    for text in (out, md, html_text, (folder / "report.json").read_text()):
        for secret in SECRETS:
            assert secret not in text


def test_secrets_a_record_was_given_by_hand_are_redacted(tmp_path, capsys):
    ledger_dir = tmp_path / "ledger"
    (ledger_dir / ROLLOUT).mkdir(parents=True)
    hand = new_record(ROLLOUT, "engine-009", now=at(0))
    hand["facts"] = {"engine_key": "k3y-value", "target_version": "2.4.0"}
    hand["steps"] = [{"seq": 1, "step": "note", "time": at(1), "outcome": "ok", "status": "pending",
                      "note": "by hand", "inputs": {"OPENAI_API_KEY": "sk-live-123", "env": ["DB_PASSWORD=hunter2"]},
                      "evidence": {"verdict": "pass", "auth": {"access_token": "tok-999"}}}]
    (ledger_dir / ROLLOUT / "engine-009.json").write_text(json.dumps(hand))
    cb = callback(tmp_path, rollout_id=ROLLOUT)
    cb.v2_playbook_on_stats(Stats({"engine-009": recap()}))
    folder = report_dir(tmp_path)
    for name in ("report.json", "report.md", "report.html"):
        text = (folder / name).read_text()
        assert "engine-009" in text
        for secret in SECRETS:
            assert secret not in text, (name, secret)
    report = json.loads((folder / "report.json").read_text())
    assert report["engines"][0]["facts"]["engine_key"] == "********"
    assert report["engines"][0]["gate_verdicts"] == {"note": "pass"}
    for secret in SECRETS:
        assert secret not in capsys.readouterr().out


def test_check_mode_shows_planned_steps_without_a_ledger_on_disk(tmp_path, capsys, monkeypatch):
    from ansible import context

    monkeypatch.setattr(context, "CLIARGS", {"check": True})
    preview = record_step(str(tmp_path / "ledger"), ROLLOUT, "engine-001", "plan", dry_run=True, target_version="2.4.0",
                          facts={"from_version": "2.3.0", "upgrade_kind": "minor", "rollback_mode": "image"},
                          note="would upgrade")
    assert not (tmp_path / "ledger").exists()
    cb = callback(tmp_path)
    cb.v2_playbook_on_play_start(Play("Plan", "p1"))
    planned = {"changed": True, "rollout_id": ROLLOUT, "ledger_dir": str(tmp_path / "ledger"),
               "record": preview.record, "recorded": preview.step}
    cb.v2_runner_on_ok(task_result("engine-001", planned))
    cb.v2_playbook_on_stats(Stats({"engine-001": recap()}))
    report = json.loads((report_dir(tmp_path) / "report.json").read_text())
    assert report["run"]["check_mode"] is True
    entry = report["engines"][0]
    assert entry["steps"][0]["planned"] is True and entry["upgrade_kind"] == "minor"
    assert entry["rollback"]["mode"] == "image"
    html_text = (report_dir(tmp_path) / "report.html").read_text()
    check_html(html_text)
    assert "Check mode" in html_text and 'stroke-dasharray' in html_text


def test_a_run_without_a_rollout_reports_the_play_recap(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ENGINEOPS_ROLLOUT_ID", raising=False)
    cb = callback(tmp_path)
    cb.v2_playbook_on_play_start(Play("Health", "p1"))
    cb.v2_runner_on_ok(task_result("engine-001", {"ready": True}, action="engineops.fleet.engine_health"))
    cb.v2_playbook_on_stats(Stats({"engine-001": recap(), "engine-002": recap(unreachable=1)}))
    folder = report_dir(tmp_path)
    assert folder.name.startswith("run-")
    report = json.loads((folder / "report.json").read_text())
    assert report["rollout_id"] is None and report["engines"] == []
    assert report["summary"]["hosts_unreachable"] == ["engine-002"]
    check_html((folder / "report.html").read_text())
    out = capsys.readouterr().out
    assert "no Engine recorded a step in the ledger" in out and "report (md):" in out


def test_the_rollout_id_option_selects_one_rollout(tmp_path, ledger, capsys):
    ledger_dir, results = ledger
    record_step(ledger_dir, "other-1", "engine-001", "note")
    cb = callback(tmp_path, rollout_id="other-1")
    run_rollout(cb, results)
    folder = report_dir(tmp_path)
    assert folder.name.startswith("other-1-")
    assert [e["engine"] for e in json.loads((folder / "report.json").read_text())["engines"]] == ["engine-001"]


def test_extra_vars_set_the_options_on_older_cores(tmp_path, capsys):
    cb = callback(tmp_path)
    target = tmp_path / "from-extra-vars"
    extra = {"engine_report_dir": str(target), "engine_rollout_id": "{{ templated }}"}
    cb.v2_playbook_on_play_start(Play("P", "p1", extra=extra))
    cb.v2_playbook_on_stats(Stats({}))
    assert len(list(target.iterdir())) == 1
    assert cb._option("rollout_id") is None


def test_the_state_dir_holds_the_reports_and_the_ledger_unless_told_otherwise(tmp_path, ledger, capsys):
    ledger_dir, results = ledger  # the fixture's ledger is <tmp_path>/ledger
    cb = callback(tmp_path, directory=None, ledger_dir=None, state_dir=str(tmp_path), rollout_id=ROLLOUT)
    cb.v2_playbook_on_stats(Stats({"engine-001": recap()}))  # nothing recorded in this run: read the ledger
    folder = report_dir(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    assert report["ledger_dir"] == ledger_dir
    assert [e["engine"] for e in report["engines"]] == sorted(results)
    elsewhere = tmp_path / "elsewhere"
    cb = callback(tmp_path, directory=str(elsewhere), ledger_dir=None, state_dir=str(tmp_path / "unused"))
    cb.v2_playbook_on_stats(Stats({"engine-001": recap()}))
    assert len(list(elsewhere.iterdir())) == 1 and not (tmp_path / "unused").exists()


def test_extra_vars_set_the_state_dir_on_older_cores(tmp_path, capsys):
    cb = callback(tmp_path, directory=None, ledger_dir=None, state_dir=None)
    cb.v2_playbook_on_play_start(Play("P", "p1", extra={"engine_state_dir": str(tmp_path / "state")}))
    cb.v2_playbook_on_stats(Stats({}))
    assert len(list((tmp_path / "state" / "reports").iterdir())) == 1


def test_a_report_failure_is_a_warning_not_a_crash(tmp_path, capsys):
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the folder should be")
    cb = callback(tmp_path)
    cb.v2_playbook_on_stats(Stats({"engine-001": recap()}))
    assert "cannot write the rollout report" in capsys.readouterr().err


# -- progress -------------------------------------------------------------------------------

def test_progress_lines_for_long_waits(tmp_path, capsys):
    cb = callback(tmp_path)
    cb.v2_runner_on_start(Host("engine-001"), task("engineops.fleet.engine_drain"))
    cb.v2_runner_on_start(Host("engine-002"), task("engine_drain"))
    cb.v2_runner_on_start(Host("engine-003"), task("engineops.fleet.engine_snapshot", state="restored"))
    cb.v2_runner_on_start(Host("engine-003"), task("ansible.builtin.debug"))
    cb.v2_runner_on_ok(task_result("engine-001", {"changed": True}, action="engineops.fleet.engine_drain"))
    cb.v2_runner_on_start(Host("engine-004"), task("engineops.fleet.engine_metrics"))
    cb.v2_runner_retry(SimpleNamespace(host=Host("engine-005"), task=task("engineops.fleet.engine_health"),
                                       result={"attempts": 3, "retries": 30}))
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if "[rollout]" in line]
    assert lines == [
        "[rollout] engine-001: draining",
        "[rollout] engine-002: draining (2 Engines draining)",
        "[rollout] engine-003: restoring its brain",
        "[rollout] engine-004: being observed",
        "[rollout] engine-005: still booting (waiting for /health) (attempt 3 of 30)",
    ]


def test_progress_can_be_turned_off(tmp_path, capsys):
    cb = callback(tmp_path, progress=False)
    cb.v2_runner_on_start(Host("engine-001"), task("engineops.fleet.engine_drain"))
    cb.v2_runner_retry(SimpleNamespace(host=Host("engine-001"), task=task("engineops.fleet.engine_health"),
                                       result={"attempts": 1, "retries": 3}))
    assert "[rollout]" not in capsys.readouterr().out


# -- pieces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("step, gate, verdict", [
    ({"step": "health", "outcome": "ok", "evidence": health()}, "health", "pass"),
    ({"step": "wait", "outcome": "failed", "evidence": health(False)}, "health", "fail"),
    ({"step": "evals", "outcome": "ok", "evidence": evals()}, "evals", "pass"),
    ({"step": "canary_evals", "outcome": "failed", "evidence": evals("fail")}, "evals", "fail"),
    ({"step": "observe", "outcome": "ok", "evidence": metrics("inconclusive")}, "metrics", "inconclusive"),
    ({"step": "metrics", "outcome": "failed", "evidence": {"verdict": "fail"}}, "metrics", "fail"),
    ({"step": "spot_check", "outcome": "ok", "evidence": {"verdict": "pass", "reasons": ["ok"]}}, "spot_check", "pass"),
    ({"step": "rollback_verify", "outcome": "ok", "evidence": health()}, "rollback_health", "pass"),
    ({"step": "evals", "outcome": "ok", "status_before": "rolling_back", "evidence": evals()}, "rollback_evals", "pass"),
])
def test_gate_of(step, gate, verdict):
    found = rr.gate_of(step)
    assert (found["gate"], found["verdict"]) == (gate, verdict)


@pytest.mark.parametrize("step", [{"step": "drain", "outcome": "ok", "evidence": {"drain": {}}},
                                  {"step": "swap", "outcome": "ok"}, {"step": "evals", "evidence": {"run": {}}}])
def test_steps_that_are_not_gates(step):
    assert rr.gate_of(step) is None


def test_svg_has_one_row_per_engine_and_handles_no_time(tmp_path):
    records = []
    for n in range(5):
        rec = new_record(ROLLOUT, f"e{n}", now=at(0))
        rec["steps"] = [{"seq": 1, "step": "x", "time": at(n), "outcome": "ok", "status": "pending"},
                        {"seq": 2, "step": "y", "time": "not a time", "outcome": "ok", "status": "pending"}]
        records.append(rec)
    report = rr.build_report(ROLLOUT, records, {})
    svg = rr.render_svg(report)
    assert svg.count('class="engine-row"') == 5 and svg.count('class="step ') == 5
    empty = rr.render_svg(rr.build_report(ROLLOUT, [], {}))
    assert "No step recorded." in empty
    check_html(rr.render_html(rr.build_report(ROLLOUT, records, {})))


def test_html_escapes_what_it_shows():
    rec = new_record(ROLLOUT, "e1", now=at(0))
    rec["steps"] = [{"seq": 1, "step": "<script>alert(1)</script>", "time": at(1), "outcome": "ok",
                     "status": "pending", "note": "a & b < c"}]
    text = rr.render_html(rr.build_report(ROLLOUT, [rec], {}))
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &amp; b &lt; c" in text
    check_html(text)


def test_report_folders_never_collide(tmp_path):
    when = datetime(2026, 5, 1, 10, 0, 0, tzinfo=timezone.utc)
    first = rr.report_folder(str(tmp_path), ROLLOUT, when)
    second = rr.report_folder(str(tmp_path), ROLLOUT, when)
    assert os.path.basename(first) == f"{ROLLOUT}-20260501T100000Z"
    assert os.path.basename(second) == f"{ROLLOUT}-20260501T100000Z-2"


def test_documented_options_are_the_ones_read():
    doc = yaml.safe_load(rr.DOCUMENTATION)
    source = open(rr.__file__, encoding="utf-8").read()
    read = set(re.findall(r'_option\("([a-z_]+)"\)', source)) | set(
        re.findall(r'\(\("([a-z_]+)", "engine_', source)) | set(re.findall(r'\("([a-z_]+)", "engine_[a-z_]+"\)', source))
    assert set(doc["options"]) == read == {"state_dir", "directory", "ledger_dir", "rollout_id", "progress"}
    assert doc["type"] == "aggregate" and rr.CallbackModule.CALLBACK_NEEDS_ENABLED is True
    for name in ("state_dir", "directory", "ledger_dir", "rollout_id", "progress"):
        assert doc["options"][name]["ini"][0]["section"] == "engineops_rollout_report"
        assert doc["options"][name]["env"][0]["name"].startswith("ENGINEOPS_")


def test_ledger_results_are_found_in_loops():
    rec = new_record(ROLLOUT, "e1")
    inner = {"rollout_id": ROLLOUT, "ledger_dir": "/l", "record": rec}
    assert list(rr._ledger_results({"results": [inner, {"record": {"format": "x"}}]})) == [inner]
    listing = {"rollout_id": ROLLOUT, "ledger_dir": "/l", "records": []}
    assert list(rr._ledger_results(listing)) == [listing]
    assert rec["format"] == LEDGER_FORMAT


@pytest.mark.parametrize(("facts", "expected"), [
    ({"snapshot": "pre-upgrade-1", "snapshot_age_at_drain": "42"}, "pre-upgrade-1, 42 s old when the Engine drained"),
    ({"snapshot": "pre-upgrade-1"}, "pre-upgrade-1"),
    ({"snapshot": "pre-upgrade-1", "snapshot_age_at_drain": "soon"}, "pre-upgrade-1"),
])
def test_the_snapshot_and_its_age_at_the_drain_are_shown(facts, expected):
    rec = new_record(ROLLOUT, "e1", now=at(0))
    rec["facts"] = facts
    report = rr.build_report(ROLLOUT, [rec], {})
    assert f"- Snapshot: {expected}" in rr.render_markdown(report)
    html = rr.render_html(report)
    assert f"snapshot {expected}" in html
    check_html(html)


def test_no_snapshot_no_snapshot_line():
    rec = new_record(ROLLOUT, "e1", now=at(0))
    report = rr.build_report(ROLLOUT, [rec], {})
    assert report["engines"][0]["snapshot"] is None and "Snapshot:" not in rr.render_markdown(report)


def test_the_outage_of_the_last_swap_is_shown():
    rec = new_record(ROLLOUT, "e1", now=at(0))
    timings = {"outage_seconds": 2.4567, "stop_seconds": 0.61, "boot_to_healthy_seconds": 1.52, "drain_started": 1.0}
    rec["steps"] = [{"seq": 1, "step": "swap", "time": at(1), "outcome": "ok", "status": "healthy",
                     "evidence": {"timings": {"outage_seconds": None}}},
                    {"seq": 2, "step": "swap", "time": at(2), "outcome": "ok", "status": "healthy",
                     "evidence": {"timings": timings}}]
    report = rr.build_report(ROLLOUT, [rec], {})
    expected = "2.46 s from the drain to healthy (stop 0.61 s, boot to healthy 1.52 s)"
    assert f"- Outage: {expected}" in rr.render_markdown(report)
    assert f"Outage: {expected}." in rr.render_html(report)
    bare = new_record(ROLLOUT, "e2", now=at(0))
    assert rr.build_report(ROLLOUT, [bare], {})["engines"][0]["outage"] is None


def test_each_engines_gate_times_are_shown_next_to_its_outage():
    rec = new_record(ROLLOUT, "e1", now=at(0))
    rec["facts"] = {"observed_seconds": "10"}
    rec["steps"] = [
        {"seq": 1, "step": "swap", "time": at(1), "outcome": "ok", "status": "healthy",
         "evidence": {"timings": {"outage_seconds": 2.0, "stop_seconds": 0.5, "boot_to_healthy_seconds": 1.4}}},
        {"seq": 2, "step": "health", "time": at(2), "outcome": "ok", "evidence": {"ready": True, "waited_seconds": 0.25}},
        {"seq": 3, "step": "evals", "time": at(3), "outcome": "ok",
         "evidence": {"verdict": "pass", "comparison": {"verdict": "pass"}, "run": {"elapsed_seconds": 8.34}}},
        {"seq": 4, "step": "metrics", "time": at(4), "outcome": "ok",
         "evidence": {"verdict": "pass", "comparison": {"verdict": "pass", "signals": {}}, "elapsed_seconds": 12.06}},
        # A gate of the rollback judges the rolled-back Engine: not a gate time of the upgrade.
        {"seq": 5, "step": "rollback_health", "time": at(5), "outcome": "ok", "evidence": {"ready": True, "waited_seconds": 99}},
    ]
    entry = rr.build_report(ROLLOUT, [rec], {})["engines"][0]
    assert entry["gate_times"] == {"health": 0.25, "evals": 8.34, "metrics": 12.06, "observed": 10.0}
    report = rr.build_report(ROLLOUT, [rec], {})
    expected = "health 0.2 s, evals 8.3 s, metrics 12.1 s, observation 10.0 s"
    markdown = rr.render_markdown(report)
    assert f"- Gate times: {expected}" in markdown
    assert markdown.index("- Outage:") < markdown.index("- Gate times:")
    assert f"Gate times: {expected}." in rr.render_html(report)
    bare = new_record(ROLLOUT, "e2", now=at(0))
    assert rr.build_report(ROLLOUT, [bare], {})["engines"][0]["gate_times"] is None


def test_a_batch_from_the_ledger_names_its_engines():
    rec = new_record(ROLLOUT, "e1", now=at(0))
    rec["facts"] = {"batch": ["e1", "e2"]}
    report = rr.build_report(ROLLOUT, [rec], {})
    assert report["engines"][0]["batch"] == "e1, e2"
    assert "- Batch: e1, e2" in rr.render_markdown(report)
    # The batch the play ran it in, where the callback saw it, says more: which batch of how many.
    labelled = rr.build_report(ROLLOUT, [rec], {}, batches={"e1": ("Upgrade: batch 2/3", 1)})
    assert labelled["engines"][0]["batch"] == "Upgrade: batch 2/3"
