"""Failures, rollbacks and interruptions end to end: real ``ansible-playbook`` runs on real fleets."""
from __future__ import annotations

import json

import pytest

from tests.engine_sim import releases
from tests.integration.rollouts import container_ids, explain, ledger_records, versions, with_traffic, write_inventory


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_sequential_bad_release_is_rolled_back_by_image_and_stops_the_rollout(make_fleet, play, tmp_path):
    fleet = make_fleet(3)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory,
        {"engine_target_version": releases.tag("bad-answers"), "engine_rollout": "sequential"}))
    assert proc.returncode != 0, explain(proc)
    assert "image rollback (schema unchanged)" in proc.stdout, explain(proc)
    after = container_ids(fleet)
    first, *rest = fleet.engines
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    assert after[first.name] != before[first.name]  # upgraded, then rolled back
    assert all(after[e.name] == before[e.name] for e in rest), "the rollout went on after a failed Engine"
    assert report.lost == [], report.summary()
    fleet.wait_healthy(30)


def test_minor_with_a_migration_is_rolled_back_with_a_brain_restore(make_fleet, play, tmp_path):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory,
        {"engine_target_version": releases.tag("bad-minor"), "engine_rollout": "sequential"},
        ANSIBLE_CALLBACKS_ENABLED="engineops.fleet.rollout_report",
        ENGINEOPS_ROLLOUT_REPORT_DIR=str(tmp_path / "reports")))
    assert proc.returncode != 0, explain(proc)
    assert "brain restore from" in proc.stdout, explain(proc)
    assert "the restore lost" in proc.stdout, explain(proc)
    # The rollout report has the rollback mode and the lost-write account.
    [report_json] = (tmp_path / "reports").glob("*/report.json")
    engines = {e["engine"]: e for e in json.loads(report_json.read_text())["engines"]}
    rollback = engines[fleet.engines[0].name]["rollback"]
    assert rollback["mode"] == "brain", rollback
    assert rollback["lost_writes"]["total"] >= 0, rollback
    assert engines[fleet.engines[0].name]["status"] == "rolled_back"
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    assert report.lost == [], report.summary()
    fleet.wait_healthy(30)
    quarantine = list((tmp_path / "snapshots" / fleet.engines[0].name / "quarantine").glob("*"))
    assert quarantine, "the replaced brain was not kept"


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_rollback_playbook_restores_the_brain_of_a_migrated_engine(make_fleet, play, tmp_path):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    minor = releases.tag("minor")
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": minor, "engine_batches": ["100%"]})
    assert proc.returncode == 0, explain(proc)
    assert set(versions(fleet).values()) == {minor}
    first, second = fleet.engines
    # Ad hoc, one Engine: the schema moved (migration 0003), so the brain is restored, then verified.
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.rollback", inventory, None, "--limit", first.name))
    assert proc.returncode == 0, explain(proc)
    assert "brain restore from" in proc.stdout and "schema changed" in proc.stdout, explain(proc)
    assert versions(fleet) == {first.name: releases.tag("baseline"), second.name: minor}
    assert report.lost == [], report.summary()
    # An explicit version on an Engine whose schema did not move back: forced brain restore.
    forced = {"engine_rollback_version": releases.tag("baseline"), "engine_rollback_restore_brain": True}
    proc = play("engineops.fleet.rollback", inventory, forced, "--limit", second.name)
    assert proc.returncode == 0, explain(proc)
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    fleet.wait_healthy(30)


@pytest.mark.timeout(1800)
def test_killed_rollout_resumes_where_it_stopped(make_fleet, play, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.integration.conftest import BIN, ansible_env

    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    patch = releases.tag("patch")
    extra = {"engine_target_version": patch, "engine_rollout": "sequential"}
    first, second = fleet.engines
    env = ansible_env(tmp_path)
    del env["ANSIBLE_CALLBACKS_ENABLED"]
    cmd = [str(BIN / "ansible-playbook"), "engineops.fleet.upgrade", "-i", str(inventory), "-e", json.dumps(extra)]
    with open(tmp_path / "killed-run.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 900
        statuses: dict[str, str] = {}
        try:
            # Kill the controller once the first Engine is verified and the second is swapped, before its verification.
            while time.monotonic() < deadline and proc.poll() is None:
                statuses = {k: r["status"] for k, r in ledger_records(tmp_path, f"upgrade-{patch}").items()}
                if statuses.get(first.name) == "verified" and statuses.get(second.name) == "healthy":
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert statuses.get(second.name) == "healthy", (statuses, (tmp_path / "killed-run.log").read_text()[-5000:])
    killed = container_ids(fleet)
    assert versions(fleet) == {first.name: patch, second.name: patch}

    # The same command again: the verified Engine is left alone, the caught one finished and verified.
    proc, report = with_traffic(fleet, lambda: play("engineops.fleet.upgrade", inventory, extra))
    assert proc.returncode == 0, explain(proc)
    assert report.lost == [], report.summary()
    assert set(versions(fleet).values()) == {patch}
    after = container_ids(fleet)
    assert after[first.name] == killed[first.name] and after[second.name] == killed[second.name]
    records = ledger_records(tmp_path, f"upgrade-{patch}")
    assert {k: r["status"] for k, r in records.items()} == {e.name: "verified" for e in fleet.engines}
    resumed = {k: [s["evidence"]["action"] for s in r["steps"] if s["step"] == "resume"] for k, r in records.items()}
    assert resumed == {first.name: ["skip"], second.name: ["finish_upgrade"]}, resumed


@pytest.mark.timeout(1800)
def test_quarantine_policy_goes_on_up_to_the_cap(make_fleet, play, tmp_path):
    fleet = make_fleet(3)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    bad = releases.tag("bad-errors")
    proc = play("engineops.fleet.upgrade", inventory, {
        "engine_target_version": bad, "engine_rollout": "sequential",
        "engine_failure_policy": "quarantine", "engine_quarantine_cap": 1})
    assert proc.returncode != 0, explain(proc)
    first, second, third = fleet.engines
    records = ledger_records(tmp_path, f"upgrade-{bad}")
    statuses = {k: r["status"] for k, r in records.items()}
    # The first failure is quarantined and the rollout goes on; the second is one more than the cap: stop.
    assert statuses[first.name] == "quarantined", statuses
    assert statuses[second.name] == "rolled_back", statuses
    # The rollout stopped before the third Engine's turn: it was checked, never snapshotted.
    assert statuses[third.name] == "preflight_done", statuses
    assert "snapshot" not in [s["step"] for s in records[third.name]["steps"]]
    assert "more than engine_quarantine_cap=1" in proc.stdout, explain(proc)
    after = container_ids(fleet)
    assert after[third.name] == before[third.name]
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    fleet.wait_healthy(30)


def test_a_release_that_fails_on_staging_touches_no_engine(make_fleet, play, tmp_path, docker_client):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    bad = releases.tag("bad-answers")
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": bad, "engine_staging": "always"})
    assert proc.returncode != 0, explain(proc)
    assert "so no Engine was touched" in proc.stdout, explain(proc)
    assert container_ids(fleet) == before
    assert not docker_client.containers.list(all=True, filters={"name": "staging"}), "a staging Engine was left"
    steps = [s for r in ledger_records(tmp_path, f"upgrade-{bad}").values() for s in r["steps"] if s["step"] == "staging"]
    assert [s["outcome"] for s in steps] == ["failed"], steps


def test_missing_image_stops_before_any_engine_is_touched(make_fleet, play, tmp_path):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": "2.9.9"})
    assert proc.returncode != 0, explain(proc)
    assert "2.9.9" in proc.stdout and "pull the target image, before any engine is touched" in proc.stdout.lower(), explain(proc)
    assert container_ids(fleet) == before
    assert not list((tmp_path / "snapshots").glob("*/*.db")), "a snapshot was taken before the image was checked"
