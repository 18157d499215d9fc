"""Migrations, drains and kills of the reference Engine, against real containers.

Each test runs once per profile: every [GAP] knob of the contract in each
of its settings (``tests/engine_sim/releases.py``).
"""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import requests

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import EngineHTTPError
from tests.engine_sim import releases
from tests.testbed.fleet import wait_for_exit
from tests.testbed.loadgen import LoadGenerator

PROFILES = {p.repository: p for p in releases.PROFILES}


def _query(path: str, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None and value is not False:  # a 503 Response is falsy
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.parametrize("repository", [p.repository for p in releases.PROFILES if "minor" in p.releases])
def test_minor_migrates_and_the_old_release_refuses_the_brain(make_fleet, repository):
    profile = PROFILES[repository]
    table = profile.knobs["ENGINE_SIM_MIGRATIONS_TABLE"]
    fleet = make_fleet(1, repository=repository)
    engine = fleet.engines[0]
    assert engine.client().execute("What is the capital of France?", "pre-migration").ok
    brain = fleet.brain_path(engine)
    episodes_before = _query(brain, "SELECT count(*) FROM episodes")[0][0]
    assert [r[0] for r in _query(brain, f"SELECT id FROM {table} ORDER BY id")] == list(releases.BASE_MIGRATIONS)

    fleet.swap(engine, "minor")
    fleet.wait_healthy(60)
    applied = [r[0] for r in _query(brain, f"SELECT id FROM {table} ORDER BY id")]
    assert applied == list(releases.release("minor").migrations)
    assert _query(brain, "SELECT count(*) FROM sqlite_master WHERE name = 'feedback'") == [(1,)]
    assert _query(brain, "SELECT count(*) FROM episodes")[0][0] >= episodes_before  # nothing lost

    container = fleet.swap(engine, "baseline")
    if profile.knobs["ENGINE_SIM_MIGRATION_REQUIRED"] == "exit":
        # Exits before serving; unless-stopped makes it a restart loop.
        assert wait_for_exit(container) == 3
        _wait_for(lambda: container.reload() or container.attrs["RestartCount"] >= 1 or None, 30, "a restart")
    else:
        resp = _wait_for(lambda: _get(engine.url + "/health"), 30, "the HTTP server")
        assert resp.status_code == 503
        assert resp.json()["subsystems"]["database"] == "error"
        with pytest.raises(EngineHTTPError) as err:
            engine.client().execute("What is the capital of France?", "refused")
        assert err.value.status == 503 and err.value.code == "MIGRATION_REQUIRED"
        assert container.status == "running" or container.reload() is None
    assert "MIGRATION_REQUIRED" in container.logs().decode()
    # The refused brain was not touched by the old release.
    assert [r[0] for r in _query(brain, f"SELECT id FROM {table} ORDER BY id")] == applied


def _get(url: str):
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None


@pytest.mark.parametrize("repository", [p.repository for p in releases.PROFILES])
def test_drain_finishes_the_turn_in_flight_and_refuses_new_ones(make_fleet, repository):
    profile = PROFILES[repository]
    fleet = make_fleet(1, repository=repository)
    engine = fleet.engines[0]
    client = engine.client(timeout=60)
    result = {}
    events = iter(client.stream_execute("Think hard about this [sim:sleep=4000]", "long-1"))
    first = next(events)  # the turn has started
    assert first.event == "thread_lifecycle" and first.data["phase"] == "started"
    reader = threading.Thread(target=lambda: result.update(events=list(events)))
    reader.start()

    container = fleet.container(engine)
    stopper = threading.Thread(target=lambda: container.stop(timeout=30))
    stopper.start()
    time.sleep(1.0)  # SIGTERM delivered, the long turn still in flight

    health = requests.get(engine.url + "/health", timeout=5)
    mode = profile.knobs["ENGINE_SIM_DRAIN_HEALTH"]
    if mode == "503":
        assert health.status_code == 503 and health.json()["status"] == "draining"
    elif mode == "200":
        assert health.status_code == 200 and health.json()["status"] == "draining"
    else:
        assert health.status_code == 200 and health.json()["status"] == "ok"
    with pytest.raises(EngineHTTPError) as err:
        client.execute("What is the capital of France?", "during-drain")
    assert err.value.status == 503

    reader.join(30)
    stopper.join(40)
    kinds = [e.event for e in result["events"]]
    assert kinds[-1] == "thread_lifecycle" and result["events"][-1].data["phase"] == "completed"
    container.reload()
    assert container.attrs["State"]["ExitCode"] == int(profile.knobs["ENGINE_SIM_EXIT_CODE"])
    rows = _query(fleet.brain_path(engine), "SELECT status FROM conversations WHERE task_id = 'long-1'")
    assert rows == [("completed",)]
    logs = container.logs().decode()
    assert "Drain complete" in logs


def test_sigkill_leaves_the_turn_visibly_incomplete(make_fleet):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    events = iter(engine.client(timeout=60).stream_execute("Long one [sim:sleep=6000]", "cut-1"))
    assert next(events).data["phase"] == "started"
    fleet.container(engine).kill()  # SIGKILL
    with pytest.raises(Exception):  # noqa: B017 - the stream is cut, however requests reports it
        for event in events:
            assert not (event.event == "thread_lifecycle" and event.data.get("phase") == "completed")
        raise ConnectionError("stream ended without completion")
    rows = _query(fleet.brain_path(engine), "SELECT status FROM conversations WHERE task_id = 'cut-1'")
    assert rows == [("running",)]


def test_loadgen_sees_no_loss_through_a_drain_and_loss_through_a_kill(make_fleet):
    fleet = make_fleet(2)
    drained, killed = fleet.engines
    report = LoadGenerator(fleet.engines, workers_per_engine=2, seconds=3).run()
    assert report.counts()["completed"] > 10 and report.counts()["completed"] == len(report.turns)
    for engine in fleet.engines:  # the brain saw every completed turn
        done = report.counts(engine.name)["completed"]
        rows = _query(fleet.brain_path(engine), "SELECT count(*) FROM conversations WHERE task_id LIKE 'load-%' AND status = 'completed'")
        assert rows[0][0] == done

    gen = LoadGenerator([drained], workers_per_engine=3, seconds=20).start()
    time.sleep(1)
    fleet.container(drained).stop(timeout=30)
    time.sleep(1)
    report = gen.stop()
    assert report.lost == [] and report.counts()["completed"] > 0
    assert report.counts()["refused"] + report.counts()["unreachable"] > 0

    gen = LoadGenerator([killed], workers_per_engine=2, seconds=20, messages=("Long one [sim:sleep=8000]",)).start()
    time.sleep(1.5)  # both long turns accepted and in flight
    fleet.container(killed).kill()
    report = gen.stop()
    assert len(report.lost) == 2
    rows = _query(fleet.brain_path(killed), "SELECT count(*) FROM conversations WHERE status = 'running'")
    assert rows[0][0] == 2
