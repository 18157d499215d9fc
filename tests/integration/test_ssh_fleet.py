"""Rollouts on Docker hosts reached only over SSH (the test bed of tests/testbed/dockerhosts.py).

Each Docker host is a container with its own dockerd, sshd and Debian 12's own python3-docker: the
Engines, their brains, the snapshots and the baselines live inside it, never on the controller's disk.
Ansible reaches the hosts over SSH with the test bed's key; the modules run there, talk to the host's
Docker socket and reach the Engines at 127.0.0.1 of that host. The load generator reaches them through
the test bed's own tunnels.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.engine_sim import releases
from tests.integration.rollouts import container_ids, explain, ledger_records, versions, with_traffic, write_ssh_inventory

SNAPSHOT_DIR = "/var/lib/engineops/snapshots"  # the roles' default, on each Docker host


def all_versions(fleets) -> dict[str, str]:
    return {name: version for fleet in fleets for name, version in versions(fleet).items()}


def all_ids(fleets) -> dict[str, str]:
    return {name: cid for fleet in fleets for name, cid in container_ids(fleet).items()}


def snapshots_on(host, engine) -> list[str]:
    """The snapshot manifests of ``engine`` in the Docker host's snapshot folder."""
    proc = host.ssh(f"ls {SNAPSHOT_DIR}/{engine.name} 2>/dev/null || true")
    return [name for name in proc.stdout.split() if name.endswith(".json")]


def traffic_for(fleets, action):
    class Everyone:  # the load generator takes one fleet's Engines
        engines = [e for fleet in fleets for e in fleet.engines]
    return with_traffic(Everyone, action)


def assert_nothing_on_the_controller(fleets):
    for fleet in fleets:
        for engine in fleet.engines:
            assert not os.path.exists(os.path.join(SNAPSHOT_DIR, engine.name)), engine.name


@pytest.mark.timeout(2400)  # real Engines behind SSH on a loaded machine
def test_canary_rollout_over_ssh(ssh_bed, make_ssh_fleet, play, tmp_path):
    fleets = make_ssh_fleet(2)
    inventory = write_ssh_inventory(ssh_bed, fleets, tmp_path, engine_canary_observe_seconds=15,
                                    engine_batches=["100%"])
    patch = releases.tag("patch")
    proc, report = traffic_for(fleets, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": patch, "engine_rollout": "canary"}))
    assert proc.returncode == 0, explain(proc)
    assert set(all_versions(fleets).values()) == {patch}
    assert "Compare the canary with the control cohort" in proc.stdout
    assert report.lost == [], report.summary()
    assert report.counts()["completed"] > 0
    records = ledger_records(tmp_path, f"upgrade-{patch}")
    assert sorted(r["status"] for r in records.values()) == ["verified"] * 4
    # Every snapshot was taken and verified on the Engine's own Docker host, none on the controller.
    for host, fleet in zip(ssh_bed.hosts, fleets):
        for engine in fleet.engines:
            assert snapshots_on(host, engine), f"no snapshot of {engine.name} on {host.name}"
    assert_nothing_on_the_controller(fleets)


@pytest.mark.timeout(2400)
def test_canary_catches_a_bad_release_over_ssh(ssh_bed, make_ssh_fleet, play, tmp_path):
    fleets = make_ssh_fleet(2)
    inventory = write_ssh_inventory(ssh_bed, fleets, tmp_path, engine_canary_observe_seconds=15)
    before = all_ids(fleets)
    bad = releases.tag("bad-answers")
    proc, report = traffic_for(fleets, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": bad, "engine_rollout": "canary"}))
    assert proc.returncode != 0, explain(proc)
    after = all_ids(fleets)
    touched = [name for name in before if after[name] != before[name]]
    assert len(touched) == 1, explain(proc)  # the canary, rolled back; nothing else touched
    assert set(all_versions(fleets).values()) == {releases.tag("baseline")}
    record = ledger_records(tmp_path, f"upgrade-{bad}")[touched[0]]
    assert record["status"] == "rolled_back", json.dumps(record, indent=1)
    assert report.lost == [], report.summary()
    for fleet in fleets:
        fleet.wait_healthy(30)


@pytest.mark.timeout(2400)
def test_rollback_playbook_restores_a_brain_over_ssh(ssh_bed, make_ssh_fleet, play, tmp_path):
    fleets = make_ssh_fleet(1)
    inventory = write_ssh_inventory(ssh_bed, fleets, tmp_path)
    minor = releases.tag("minor")
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": minor, "engine_batches": ["100%"]})
    assert proc.returncode == 0, explain(proc)
    assert set(all_versions(fleets).values()) == {minor}
    first = fleets[0].engines[0]
    # The minor migrated the brain (0003): the old binary refuses it, so the brain comes back from the
    # pre-upgrade snapshot on the Engine's host, and the replaced brain is quarantined there.
    proc, report = traffic_for(fleets, lambda: play("engineops.fleet.rollback", inventory, None, "--limit", first.name))
    assert proc.returncode == 0, explain(proc)
    assert "brain restore from" in proc.stdout and "schema changed" in proc.stdout, explain(proc)
    assert all_versions(fleets) == {first.name: releases.tag("baseline"), fleets[1].engines[0].name: minor}
    assert report.lost == [], report.summary()
    quarantine = ssh_bed.hosts[0].ssh(f"find {SNAPSHOT_DIR}/{first.name}/quarantine -type f").stdout
    assert quarantine.strip(), "the replaced brain was not quarantined on the Engine's host"
    assert_nothing_on_the_controller(fleets)
    fleets[0].wait_healthy(30)
