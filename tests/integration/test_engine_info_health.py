"""engine_info and engine_health against real containers of the reference Engine."""
from __future__ import annotations

import pytest

from tests.engine_sim import releases
from tests.testbed.fleet import wait_for_exit


@pytest.mark.parametrize("repository", ["september-engine", "september-engine-alt"])
def test_info_reads_facts_and_fingerprint(make_fleet, run_module, repository):
    fleet = make_fleet(1, repository=repository)
    engine = fleet.engines[0]
    result = run_module("engine_info", {"name": engine.name})
    assert not result.get("failed") and result["changed"] is False
    facts = result["engine"]
    assert facts["version"] == "2.3.0" and facts["running"] is True
    assert facts["volume"] == engine.volume and facts["brain_path"] == "/data/brain.sqlite"
    assert facts["restart_policy"] == "unless-stopped"
    assert result["engine_url"] == engine.url
    assert "ENGINE_KEY_HASH" in facts["env_names"]
    # Names only: no value of any env var is in the result.
    assert "=" not in "".join(facts["env_names"]) and engine.key not in result["_stdout"]
    brain = result["brain"]
    assert brain["migrations"] == list(releases.BASE_MIGRATIONS)
    assert brain["migrations_table"] == releases.PROFILES[[p.repository for p in releases.PROFILES].index(repository)].knobs[
        "ENGINE_SIM_MIGRATIONS_TABLE"
    ]

    # The same brain gives the same fingerprint; a migration changes it.
    again = run_module("engine_info", {"name": engine.name}, check=True)
    assert again["brain"]["fingerprint"] == brain["fingerprint"]
    fleet.swap(engine, "minor")
    fleet.wait_healthy(60)
    migrated = run_module("engine_info", {"name": engine.name})
    assert migrated["engine"]["version"] == "2.4.0"
    assert migrated["brain"]["fingerprint"] != brain["fingerprint"]
    assert migrated["brain"]["migrations"][-1] == "0003_feedback"


def test_info_on_a_stopped_engine_and_in_a_restart_loop(make_fleet, run_module):
    fleet = make_fleet(2)
    stopped, looping = fleet.engines
    fleet.container(stopped).stop(timeout=30)
    result = run_module("engine_info", {"name": stopped.name})
    assert result["engine"]["running"] is False and result["engine"]["state"] == "exited"
    assert result["engine"]["exit_code"] == 0 and "fingerprint" in result["brain"]

    fleet.swap(looping, "minor")
    fleet.wait_healthy(60, [looping])
    container = fleet.swap(looping, "baseline")  # refuses the migrated brain: exit 3, restart loop
    wait_for_exit(container)
    result = run_module("engine_info", {"name": looping.name})
    assert result["engine"]["restart_count"] >= 1 or result["engine"]["restarting"]
    assert result["brain"]["migrations"][-1] == "0003_feedback"


def test_info_unknown_container_fails_clearly(docker_client, run_module):
    result = run_module("engine_info", {"name": "engine-does-not-exist"})
    assert result["failed"] and "engine-does-not-exist" in result["msg"]


def test_health_ready_and_as_data(make_fleet, run_module):
    engine = make_fleet(1).engines[0]
    result = run_module("engine_health", {"name": engine.name})
    assert result["ready"] is True and result["status_code"] == 200 and result["status"] == "ok"
    assert result["subsystems"] == {"database": "ok", "llm_provider": "ok", "asset_directory": "ok"}
    assert result["changed"] is False

    by_url = run_module("engine_health", {"engine_url": engine.url, "wait": False}, check=True)
    assert by_url["ready"] is True and by_url["probes"] == 1


def test_health_reports_a_broken_engine_as_data_and_fails_when_waiting(make_fleet, run_module):
    fleet = make_fleet(1, release="bad-health", start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    fleet.start(engine)
    probe = run_module("engine_health", {"name": engine.name, "wait": False})
    assert not probe.get("failed") and probe["ready"] is False

    waited = run_module("engine_health", {"name": engine.name, "timeout": 4, "interval": 0.5})
    assert waited["failed"] and waited["ready"] is False
    assert "llm_provider" in waited["failing_subsystems"]
    assert "not ready after" in waited["msg"] and waited["probes"] >= 3


@pytest.mark.parametrize(
    "release, env, expected",
    [
        ("bad-crash", {}, "tool registry"),
        ("major", {}, "LLM_EMBEDDING_MODEL"),
    ],
)
def test_health_fails_at_once_when_the_container_dies(make_fleet, run_module, release, env, expected):
    fleet = make_fleet(1, release=release, start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    fleet.start(engine, **env)
    result = run_module("engine_health", {"name": engine.name, "timeout": 120})
    assert result["failed"] and expected in result["msg"]
    assert result["waited_seconds"] < 60  # not the time-out
    assert result["container_event"]["exit_code"] == 1


def test_health_names_migration_required(make_fleet, run_module):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    fleet.swap(engine, "minor")
    fleet.wait_healthy(60)
    fleet.swap(engine, "baseline")
    result = run_module("engine_health", {"name": engine.name, "timeout": 60})
    assert result["failed"] and "MIGRATION_REQUIRED" in result["msg"]
    assert result["container_event"]["exit_code"] == 3


def test_health_bad_input(run_module, docker_client):
    result = run_module("engine_health", {"engine_url": "ftp://nowhere", "wait": False})
    assert result["failed"] and "ftp://nowhere" in result["msg"]
    result = run_module("engine_health", {"wait": False})
    assert result["failed"] and "name" in result["msg"] and "engine_url" in result["msg"]
