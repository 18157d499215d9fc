"""Helpers of the rollout tests (test_playbooks.py, test_recovery.py, test_role_staging.py): inventories of real
fleets, what runs where, traffic while a playbook runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from tests.testbed.loadgen import LoadGenerator


# Small observation windows and probe counts: the tests are about the mechanics.
FAST = {
    "engine_metrics_probes": 20,
    "engine_eval_concurrency": 8,
    "engine_metrics_window": "10m",
    "engine_drain_grace": 30,
    "engine_health_timeout": 60,
}


def write_inventory(fleet, tmp_path: Path, **extra) -> Path:
    hosts = {
        e.name: {"engine_url": e.url, "engine_key": e.key}
        for e in fleet.engines
    }
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "engine_snapshot_dir": str(tmp_path / "snapshots"),
                "engine_baseline_dir": str(tmp_path / "baselines"),
                "engine_ledger_dir": str(tmp_path / "ledger"),
                **FAST,
                **extra,
            },
            "children": {"engines": {"hosts": hosts}},
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def versions(fleet) -> dict[str, str]:
    return {e.name: fleet.container(e).attrs["Config"]["Image"].rsplit(":", 1)[-1] for e in fleet.engines}


def container_ids(fleet) -> dict[str, str]:
    return {e.name: fleet.container(e).id for e in fleet.engines}


def with_traffic(fleet, action):
    load = LoadGenerator(fleet.engines, seconds=900, pause=0.05).start()
    try:
        result = action()
    finally:
        report = load.stop()
    return result, report


def explain(proc) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-20000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def ledger_records(tmp_path: Path, rollout: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "ledger" / rollout).glob("*.json")}


def write_ssh_inventory(bed, fleets, tmp_path: Path, **extra) -> Path:
    """An inventory of Engines on the SSH test bed's Docker hosts, as an operator writes one: a group per
    Docker host with how to reach it over SSH, one inventory host per Engine. Snapshots and baselines stay
    at their defaults on the hosts; only the ledger is on the controller."""
    groups = {}
    for host, fleet in zip(bed.hosts, fleets):
        groups[host.name.replace("-", "_")] = {
            "vars": host.inventory_vars(),
            "hosts": {e.name: {"engine_key": e.key} for e in fleet.engines},
        }
    inventory = {
        "all": {
            "vars": {"engine_ledger_dir": str(tmp_path / "ledger"), **FAST, **extra},
            "children": {"engines": {"children": groups}},
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path
