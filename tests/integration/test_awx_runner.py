"""The job templates of extensions/awx run the way AWX runs them: through ansible-runner, on a real fleet.

Each job gets its own throwaway private data dir, laid out as AWX lays it
out: ``project/`` (a copy of extensions/awx/project, ansible.cfg included),
``inventory/``, ``env/extravars`` (the job template's extra vars, the survey's
defaults and answers, what a user typed tagged ``!unsafe``), ``env/settings``
and, for the check job, ``env/cmdline``. The Engine key comes from the
credential type's injector as ``ENGINE_KEY`` in the job's environment
(``envvars`` with ``suppress_env_files``, as AWX passes credentials), never
from the inventory. The modules run through an interpreter that drops
``ENGINE_KEY`` from their environment, as on a real Engine host where the
controller's environment is not: whatever key they get, the playbooks read on
the controller. The ledger and the reports go to one state dir shared by the
jobs, as an AWX admin exposes a host path to them. A job is cancelled with
ansible-runner's ``cancel_callback``, as AWX cancels one.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml

import tests
from tests.awx_rules import extravars_file
from tests.engine_sim import releases
from tests.integration.conftest import BIN, ROOT
from tests.integration.rollouts import FAST, container_ids, versions, with_traffic

AWX = ROOT / "extensions" / "awx"
ASSETS = json.loads((AWX / "engineops-fleet.json").read_text())


def template(playbook: str, job_type: str) -> dict:
    [found] = [t for t in ASSETS["job_templates"] if t["playbook"] == playbook and t["job_type"] == job_type]
    return found


def credential_env(key: str) -> dict[str, str]:
    """What the credential type's injectors put in a job's environment for a credential holding ``key``."""
    [ctype] = ASSETS["credential_types"]
    env = ctype["injectors"]["env"]
    assert env == {"ENGINE_KEY": "{{ engine_key }}"}
    return {name: key for name in env}


def interpreter_without_the_key(tmp_path: Path) -> Path:
    """A Python for the modules that cannot see the controller's ENGINE_KEY, as on an Engine's own host."""
    path = tmp_path / "bin" / "python-on-the-engine-host"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nunset ENGINE_KEY\nexec {sys.executable} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    probe = subprocess.run([str(path), "-c", "import os; print('ENGINE_KEY' in os.environ)"], capture_output=True,
                           text=True, env=dict(os.environ, ENGINE_KEY="k"), check=True)
    assert probe.stdout.strip() == "False"
    return path


def inventory(fleet, tmp_path: Path) -> dict:
    """The fleet as an AWX inventory: URLs and the test bed's paths, no key."""
    return {"all": {
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(interpreter_without_the_key(tmp_path)),
            "engine_snapshot_dir": str(tmp_path / "snapshots"),
            "engine_baseline_dir": str(tmp_path / "baselines"),
            **FAST,
            # The test is about how AWX runs the jobs; latency verdicts on a loaded machine are the rollout tests'
            # business (README, "How often the verdicts are right"). The evals gate, which needs the key, stays.
            "engine_metrics_enabled": False,
        },
        "children": {"engines": {"hosts": {e.name: {"engine_url": e.url} for e in fleet.engines}}},
    }}


class Job:
    """One AWX job: its private data dir, its ansible-runner run, its artifacts."""

    def __init__(self, tmp_path: Path, name: str, jt: dict, answers: dict, hosts: dict, state_dir: Path, key: str,
                 limit: str | None = None):
        self.key = key
        self.pdd = tmp_path / f"job-{name}"
        shutil.copytree(AWX / "project", self.pdd / "project")
        (self.pdd / "inventory").mkdir()
        (self.pdd / "inventory" / "hosts.yml").write_text(yaml.safe_dump(hosts))
        (self.pdd / "env").mkdir()
        # The state dir AWX exposes to the jobs: the template's engine_state_dir pointed at the test's own.
        jt = dict(jt, extra_vars=yaml.safe_dump(dict(yaml.safe_load(jt["extra_vars"]), engine_state_dir=str(state_dir))))
        (self.pdd / "env" / "extravars").write_text(extravars_file(jt, answers))
        (self.pdd / "env" / "settings").write_text(json.dumps({"job_timeout": 1800, "pexpect_timeout": 1}))
        cmdline = (["--check"] if jt["job_type"] == "check" else []) + (["--limit", limit] if limit else [])
        if cmdline:
            (self.pdd / "env" / "cmdline").write_text(" ".join(cmdline))
        self.playbook = jt["playbook"]
        self.envvars = {
            **credential_env(key),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # The execution environment has the collection installed; here it is this checkout.
            "ANSIBLE_COLLECTIONS_PATH": tests._TREE,
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_FORKS": str(jt["forks"]),
            "ANSIBLE_NOCOLOR": "1",
        }
        self.runner = None

    def run(self, cancel_when=None):
        assert "ENGINE_KEY" not in os.environ
        self.runner = ansible_runner.run(
            private_data_dir=str(self.pdd), ident="1", playbook=self.playbook,
            inventory=str(self.pdd / "inventory" / "hosts.yml"), envvars=self.envvars, suppress_env_files=True,
            quiet=True, cancel_callback=cancel_when)
        return self

    @property
    def artifacts(self) -> Path:
        return self.pdd / "artifacts" / "1"

    def explain(self) -> str:
        stdout = (self.artifacts / "stdout").read_text() if (self.artifacts / "stdout").exists() else ""
        return f"status={self.runner.status} rc={self.runner.rc}\n{stdout[-15000:]}"

    def events(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.artifacts / "job_events").glob("*.json"))]

    def assert_no_key_anywhere(self, *elsewhere: Path) -> None:
        """The key's value in no artifact file, no job event, nothing the job left; ``command`` holds the job's
        environment, where the credential put it (AWX deletes the private data dir when the job ends)."""
        files = [p for p in self.pdd.rglob("*") if p.is_file()]
        for folder in elsewhere:
            files += [p for p in folder.rglob("*") if p.is_file()]
        assert any(p.parent == self.artifacts / "job_events" for p in files), "no job events"
        for path in files:
            text = path.read_text(errors="replace")
            if path == self.artifacts / "command":
                command = json.loads(text)
                assert command["env"].pop("ENGINE_KEY") == self.key
                text = json.dumps(command)
            assert self.key not in text, f"the Engine key is in {path}"


def eval_runs(job: Job) -> list[dict]:
    """The ``run`` summary of every engine_eval result in the job's events."""
    return [e["event_data"]["res"]["run"] for e in job.events()
            if e.get("event") == "runner_on_ok" and e["event_data"].get("task_action") == "engineops.fleet.engine_eval"]


def ledger_statuses(state_dir: Path, rollout: str) -> dict[str, str]:
    statuses = {}
    for path in (state_dir / "ledger" / rollout).glob("*.json"):
        try:
            statuses[path.stem] = json.loads(path.read_text())["status"]
        except (OSError, ValueError, KeyError):
            pass  # written atomically, but read while the job runs: the next poll sees it
    return statuses


@pytest.mark.timeout(2400)  # two Engines through four jobs; slow on a loaded machine
def test_awx_jobs_plan_cancel_resume_and_roll_back(make_fleet, tmp_path):
    fleet = make_fleet(2)
    first, second = fleet.engines
    hosts = inventory(fleet, tmp_path)
    state = tmp_path / "state"  # the host path exposed to every job
    patch = releases.tag("patch")
    answers = {"engine_target_version": patch, "engine_rollout": "sequential", "engine_failure_policy": "stop"}
    before = container_ids(fleet)

    # The plan: the check job template changes nothing and writes no ledger.
    plan = Job(tmp_path, "plan", template("upgrade.yml", "check"), answers, hosts, state, first.key).run()
    assert (plan.runner.status, plan.runner.rc) == ("successful", 0), plan.explain()
    assert (plan.artifacts / "status").read_text() == "successful" and (plan.artifacts / "rc").read_text() == "0"
    stdout = (plan.artifacts / "stdout").read_text()
    assert f"sequential rollout of 2 Engine(s) to {patch}" in stdout, plan.explain()
    assert f"batch 2/2: {second.name}" in stdout, plan.explain()
    assert container_ids(fleet) == before
    assert not list((state / "ledger").rglob("*.json")), "the check job wrote to the ledger"
    plan.assert_no_key_anywhere(state)

    # Job 1, cancelled as AWX cancels a job once the first Engine is verified.
    seen: dict[str, str] = {}

    def cancel_once_the_first_is_verified() -> bool:
        seen.update(ledger_statuses(state, f"upgrade-{patch}"))
        return seen.get(first.name) == "verified"

    job1 = Job(tmp_path, "upgrade-1", template("upgrade.yml", "run"), answers, hosts, state, first.key)
    report = with_traffic(fleet, lambda: job1.run(cancel_when=cancel_once_the_first_is_verified))[1]
    assert job1.runner.status == "canceled" and job1.runner.rc == 254, job1.explain()
    assert (job1.artifacts / "status").read_text() == "canceled"
    assert seen[first.name] == "verified" and seen.get(second.name) != "verified", seen
    assert versions(fleet)[first.name] == patch
    assert report.lost == [], report.summary()
    # The evals (every turn needs the key) passed, though the modules' own environment has no ENGINE_KEY:
    # the key reached them as an argument, read on the controller.
    runs = eval_runs(job1)
    assert runs and all(r["cases"] > 0 and r["passed"] == r["cases"] and r["errors"] == 0 for r in runs), runs
    job1.assert_no_key_anywhere(state)
    cancelled = container_ids(fleet)

    # Job 2, the same template in a fresh private data dir: the state dir says where the rollout stopped.
    job2 = Job(tmp_path, "upgrade-2", template("upgrade.yml", "run"), answers, hosts, state, first.key)
    report = with_traffic(fleet, job2.run)[1]
    assert (job2.runner.status, job2.runner.rc) == ("successful", 0), job2.explain()
    assert (job2.artifacts / "rc").read_text() == "0"
    assert report.lost == [], report.summary()
    assert versions(fleet) == {first.name: patch, second.name: patch}
    assert container_ids(fleet)[first.name] == cancelled[first.name], "job 2 touched the Engine job 1 verified"
    records = {p.stem: json.loads(p.read_text()) for p in (state / "ledger" / f"upgrade-{patch}").glob("*.json")}
    assert {k: r["status"] for k, r in records.items()} == {first.name: "verified", second.name: "verified"}
    resumed = {k: [s["evidence"]["action"] for s in r["steps"] if s["step"] == "resume"] for k, r in records.items()}
    assert resumed[first.name] == ["skip"], resumed
    assert resumed[second.name] in ([], ["start"], ["finish_upgrade"]), resumed
    stats = [e for e in job2.events() if e.get("event") == "playbook_on_stats"]
    assert len(stats) == 1 and not stats[0]["event_data"]["failures"], stats
    # The reports, enabled by the project's ansible.cfg, in the state dir: the plan's, and job 2's with both
    # Engines, across both jobs (job 1 was killed before it could write one).
    reports = [json.loads(p.read_text()) for p in sorted((state / "reports").glob(f"upgrade-{patch}-*/report.json"))]
    assert [r["run"]["check_mode"] for r in reports] == [True, False], [r["run"] for r in reports]
    engines = {e["engine"]: e["status"] for e in reports[-1]["engines"]}
    assert engines == {first.name: "verified", second.name: "verified"}
    job2.assert_no_key_anywhere(state)

    # The rollback job template, limited to one Engine, with the survey's defaults.
    rollback = Job(tmp_path, "rollback", template("rollback.yml", "run"), {"engine_rollback_restore_brain": "false"},
                   hosts, state, first.key, limit=first.name)
    report = with_traffic(fleet, rollback.run)[1]
    assert (rollback.runner.status, rollback.runner.rc) == ("successful", 0), rollback.explain()
    assert versions(fleet) == {first.name: releases.tag("baseline"), second.name: patch}
    assert report.lost == [], report.summary()
    rollback.assert_no_key_anywhere(state)
    fleet.wait_healthy(30)
