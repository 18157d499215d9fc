# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_ledger and the rollout_report callback in real ansible-playbook runs.

Three fake Engines (``ansible_connection: local``, no container) go through
a batched rollout that records its steps in the ledger: two are verified,
the third fails its health gate and is rolled back in a ``rescue``. The
report must say so; a second run of the same command resumes and skips all
three; a check-mode run of another rollout writes no ledger and shows the
planned steps.
"""
from __future__ import annotations

import json
import re
import stat
from html.parser import HTMLParser

import pytest

SECRET = "s3cr3t-k3y-value"

INVENTORY = """
[engines]
engine-001 after_version=2.4.0
engine-002 after_version=2.4.0
engine-003 after_version=2.3.0 bad=true

[engines:vars]
ansible_connection=local
"""

PLAYBOOK = """
- name: Fake upgrade
  hosts: engines
  gather_facts: false
  serial: [1, 2]
  vars:
    engine_rollout_id: upgrade-2.4.0
    engine_target_version: 2.4.0
    __ledger: &ledger
      rollout_id: "{{ engine_rollout_id }}"
      engine: "{{ inventory_hostname }}"
      target_version: "{{ engine_target_version }}"
    __now: "{{ now(utc=true, fmt='%Y-%m-%dT%H:%M:%S.%fZ') }}"
  tasks:
    - name: Decide what this run does with the Engine
      engineops.fleet.engine_ledger:
        <<: *ledger
        state: read
        current_version: "{{ after_version if (second_run | default(false) | bool) else '2.3.0' }}"
        current_fingerprint: fp-old
        engine_running: true
      delegate_to: localhost
      register: __resume

    - name: Say it
      ansible.builtin.debug:
        msg: "resume {{ inventory_hostname }} {{ __resume.resume.action }}"

    - name: Leave the Engines the ledger says are done
      ansible.builtin.meta: end_host
      when: __resume.resume.action == 'skip'

    - name: Upgrade, or roll back
      block:
        - name: Record the preflight
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: preflight
            status: preflight_done
            started: "{{ __now }}"
            inputs:
              engine_key: "{{ secret }}"
              image: september-engine:2.4.0
            facts:
              from_version: 2.3.0
              fingerprint_before: fp-old
              env: ["LLM_API_KEY={{ secret }}"]
          delegate_to: localhost
          changed_when: false

        - name: Record the drain
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: drain
            status: drained
            started: "{{ __now }}"
            evidence:
              drain: {in_flight: 1, finished: 1, not_finished: 0, elapsed: 0.4}
          delegate_to: localhost
          changed_when: false

        - name: Record the swap
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: swap
            status: swapped
            started: "{{ __now }}"
          delegate_to: localhost
          changed_when: false

        - name: Fake the health probe
          ansible.builtin.set_fact:
            __health: "{{ {'ready': false, 'reason': 'HTTP 503, status error', 'status_code': 503,
                           'status': 'error', 'failing_subsystems': ['database']}
                          if (bad | default(false) | bool) else
                          {'ready': true, 'status_code': 200, 'status': 'ok', 'waited_seconds': 1.5} }}"

        - name: Record the health gate
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: health
            status: "{{ 'healthy' if __health.ready else 'failed' }}"
            outcome: "{{ 'ok' if __health.ready else 'failed' }}"
            started: "{{ __now }}"
            evidence: "{{ __health }}"
          delegate_to: localhost
          changed_when: false

        - name: Stop here when the Engine is not healthy
          ansible.builtin.fail:
            msg: "{{ inventory_hostname }} is not healthy: {{ __health.reason }}"
          when: not __health.ready

        - name: Record the verification
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: metrics
            status: verified
            evidence:
              verdict: pass
              comparison:
                verdict: pass
                signals:
                  error_rate: {verdict: pass, p_value: 0.61, increase: 0.0,
                               baseline: {rate: 0.01}, current: {rate: 0.01}}
          delegate_to: localhost
          changed_when: false
      rescue:
        - name: Record the rollback
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: rollback
            status: rolling_back
            inputs:
              mode: restore
          delegate_to: localhost
          changed_when: false

        - name: Record the restore
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: restore
            evidence:
              lost_writes: {total: 3, tables: {episodes: {rows: 3, method: primary_key}}}
              quarantine: {path: /tmp/quarantine/engine-003.db}
          delegate_to: localhost
          changed_when: false

        - name: Record the rolled-back Engine's health
          engineops.fleet.engine_ledger:
            <<: *ledger
            step: rollback_verify
            status: rolled_back
            evidence: {ready: true, status_code: 200, status: ok}
          delegate_to: localhost
          changed_when: false
"""


class Rows(HTMLParser):
    VOID = {"meta", "br"}

    def __init__(self):
        super().__init__()
        self.rows, self.stack, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "g" and attrs.get("class") == "engine-row":
            self.rows.append(attrs["data-engine"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors.append(tag)


@pytest.fixture
def fake_rollout(tmp_path, run_playbook):
    """``fake_rollout(extra_vars, *args)`` runs the fake rollout with the ledger and the report in ``tmp_path``."""
    (tmp_path / "upgrade.yml").write_text(PLAYBOOK)
    (tmp_path / "inventory").write_text(INVENTORY)
    env = {
        "ANSIBLE_CALLBACKS_ENABLED": "engineops.fleet.rollout_report",
        "ENGINEOPS_LEDGER_DIR": str(tmp_path / "ledger"),
        "ENGINEOPS_ROLLOUT_REPORT_DIR": str(tmp_path / "reports"),
        "ANSIBLE_PIPELINING": "1",
    }

    def run(extra_vars, *args):
        return run_playbook(str(tmp_path / "upgrade.yml"), str(tmp_path / "inventory"), extra_vars, *args, **env)

    return run


def reports(tmp_path, rollout_id):
    return sorted((tmp_path / "reports").glob(f"{rollout_id}-*"))


def test_rollout_is_recorded_reported_and_resumed(tmp_path, fake_rollout):
    first = fake_rollout({"secret": SECRET})
    assert first.returncode == 0, first.stdout + first.stderr
    # Hosts of one batch answer in any order.
    assert sorted(re.findall(r"resume (engine-\d+) (\w+)", first.stdout)) == [
        ("engine-001", "start"), ("engine-002", "start"), ("engine-003", "start")]

    # The ledger: one private record per Engine, with every step and no secret.
    folder = tmp_path / "ledger" / "upgrade-2.4.0"
    records = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert set(records) == {"engine-001", "engine-002", "engine-003"}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.glob("*.json"))
    assert [s["step"] for s in records["engine-001"]["steps"]] == ["preflight", "drain", "swap", "health", "metrics"]
    assert [s["step"] for s in records["engine-003"]["steps"]] == [
        "preflight", "drain", "swap", "health", "rollback", "restore", "rollback_verify"]
    assert {n: r["status"] for n, r in records.items()} == {
        "engine-001": "verified", "engine-002": "verified", "engine-003": "rolled_back"}
    assert records["engine-001"]["facts"]["env"] == ["LLM_API_KEY=********"]
    assert records["engine-001"]["steps"][0]["inputs"]["engine_key"] == "********"
    assert "duration_seconds" in records["engine-001"]["steps"][0]

    # The report: three files that say what happened, and a console summary.
    [report_dir] = reports(tmp_path, "upgrade-2.4.0")
    assert {p.name for p in report_dir.iterdir()} == {"report.json", "report.md", "report.html"}
    report = json.loads((report_dir / "report.json").read_text())
    engines = {e["engine"]: e for e in report["engines"]}
    assert {n: e["status"] for n, e in engines.items()} == {
        "engine-001": "verified", "engine-002": "verified", "engine-003": "rolled_back"}
    assert engines["engine-001"]["batch"] == "Fake upgrade: batch 1/2"
    assert engines["engine-003"]["batch"] == "Fake upgrade: batch 2/2"
    assert engines["engine-003"]["gate_verdicts"] == {"health": "fail", "rollback_health": "pass"}
    assert engines["engine-003"]["rollback"]["mode"] == "restore"
    assert engines["engine-003"]["rollback"]["lost_writes"]["total"] == 3
    assert engines["engine-001"]["gate_verdicts"] == {"health": "pass", "metrics": "pass"}
    assert report["stats"]["engine-003"]["rescued"] == 1
    md = (report_dir / "report.md").read_text()
    assert "| engine-003 | Fake upgrade: batch 2/2 | 2.3.0 -> 2.4.0 | minor | rolled_back |" in md
    assert "Lost writes: 3 row(s) (episodes 3)" in md
    html_text = (report_dir / "report.html").read_text()
    parser = Rows()
    parser.feed(html_text)
    assert parser.rows == ["engine-001", "engine-002", "engine-003"]
    assert parser.errors == [] and parser.stack == []
    assert "ROLLOUT REPORT upgrade-2.4.0" in first.stdout
    assert re.search(r"engine-003\s+2\.3\.0 -> 2\.4\.0\s+rolled_back\s+health:fail rollback_health:pass", first.stdout)
    assert f"report (html): {report_dir / 'report.html'}" in first.stdout
    for text in [first.stdout, md, html_text, (report_dir / "report.json").read_text()] + [
            p.read_text() for p in folder.glob("*.json")]:
        assert SECRET not in text

    # The same command again resumes: nothing left to do.
    second = fake_rollout({"secret": SECRET, "second_run": True})
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(re.findall(r"resume (engine-\d+) (\w+)", second.stdout)) == [
        ("engine-001", "skip"), ("engine-002", "skip"), ("engine-003", "skip")]
    assert len(json.loads((folder / "engine-001.json").read_text())["steps"]) == 5
    assert len(reports(tmp_path, "upgrade-2.4.0")) == 2
    assert "ROLLOUT REPORT upgrade-2.4.0" in second.stdout


def test_check_mode_records_nothing_and_shows_the_plan(tmp_path, fake_rollout):
    result = fake_rollout({"secret": SECRET, "engine_rollout_id": "plan-1"}, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "ledger" / "plan-1").exists()
    [report_dir] = reports(tmp_path, "plan-1")
    report = json.loads((report_dir / "report.json").read_text())
    assert report["run"]["check_mode"] is True
    engines = {e["engine"]: e for e in report["engines"]}
    assert set(engines) == {"engine-001", "engine-002", "engine-003"}
    assert all(s.get("planned") for e in engines.values() for s in e["steps"])
    # Each planned step is chained after the one before, as the run would record them.
    assert [s["step"] for s in engines["engine-001"]["steps"]] == ["preflight", "drain", "swap", "health", "metrics"]
    assert [s["seq"] for s in engines["engine-003"]["steps"]] == list(range(1, 8))
    assert engines["engine-001"]["status"] == "verified"
    assert "Check mode" in (report_dir / "report.html").read_text()
    assert SECRET not in result.stdout
