"""playbooks/host.yml over SSH on the test bed's Docker hosts (tests/testbed/dockerhosts.py).

The hosts are Debian 12 with Debian's python3-docker 5.0.3 and python3-requests: the role keeps
their system Python, checks their own dockerd answers through it, makes the state folders there
(not on the controller) and changes nothing on a second run. Then the upgrade's first module runs
there on that Python.
"""
from __future__ import annotations

import re

import pytest

from tests.integration.rollouts import explain, write_ssh_inventory
from tests.integration.test_role_host import recap

SNAPSHOT_DIR = "/var/lib/engineops/snapshots"
BASELINE_DIR = "/var/lib/engineops/baselines"


@pytest.mark.timeout(1800)
def test_host_playbook_over_ssh(ssh_bed, make_ssh_fleet, run_playbook, tmp_path):
    fleets = make_ssh_fleet(2)
    inventory = write_ssh_inventory(ssh_bed, fleets, tmp_path)

    planned = run_playbook("engineops.fleet.host", inventory, None, "--check")
    assert planned.returncode == 0, explain(planned)

    ready = run_playbook("engineops.fleet.host", inventory)
    assert ready.returncode == 0, explain(ready)
    said = re.findall(r"Use ansible_python_interpreter=(\S+) for (\S+) \(docker ([^,]+), requests ([^,]+), "
                      r"Docker daemon ([^)]+)\)", ready.stdout)
    # Once per Docker host (one of its two Engines stands for it), the system Python kept.
    assert len(said) == len(ssh_bed.hosts), ready.stdout
    assert {s[1] for s in said} == {fleet.engines[0].name for fleet in fleets}
    assert all(s[0] == "/usr/bin/python3" and s[2] == "5.0.3" for s in said), said
    rows = recap(ready.stdout)
    for fleet in fleets:
        assert rows[fleet.engines[1].name]["changed"] == 0  # the second Engine of the host did not run the role
    for host in ssh_bed.hosts:
        modes = host.ssh(f"stat -c '%a %U' {SNAPSHOT_DIR} {BASELINE_DIR}").stdout.split("\n")
        assert [m for m in modes if m] == ["700 root", "700 root"], modes

    again = run_playbook("engineops.fleet.host", inventory)
    assert again.returncode == 0, explain(again)
    assert all(row["changed"] == 0 for row in recap(again.stdout).values()), again.stdout

    # The Python the role vouched for runs the pre-flight's first module on each host.
    facts = run_playbook("engineops.fleet.health", inventory)
    assert facts.returncode == 0, explain(facts)
