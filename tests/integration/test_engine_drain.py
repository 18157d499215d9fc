# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_drain against real reference Engines, through the ansible CLI.

The completion line is a [GAP] of the contract: each drain scenario runs on
the three profiles (``Execution completed``/``duration_ms``, ``Turn
finished``/``elapsed_s``, no completion line at all), and so does the exit
code of a clean drain (0 or 143).
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.engine_sim import releases
from tests.testbed.loadgen import LoadGenerator

PROFILES = {p.repository: p for p in releases.PROFILES}
LOGS_COMPLETION = {name: p.knobs["ENGINE_SIM_COMPLETION_LOG"] != "none" for name, p in PROFILES.items()}


def _starts(container) -> int:
    return container.logs().decode(errors="replace").count('"Starting execution"')


def _wait_for_starts(container, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _starts(container) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{container.name}: no turn started within {timeout}s")
        time.sleep(0.05)


def _long_turns(engine, ms: int, turns: int = 10_000) -> LoadGenerator:
    """One worker sending ``turns`` turns that each take ``ms``; after a drain it only meets refusals."""
    return LoadGenerator([engine], workers_per_engine=1, seconds=60, pause=0.2, max_turns=turns,
                         messages=(f"Hold this turn open [sim:sleep={ms}]",)).start()


@pytest.mark.parametrize("repository", list(PROFILES))
def test_drain_lets_the_turn_in_flight_finish(make_fleet, run_module, repository):
    fleet = make_fleet(1, repository=repository)
    engine = fleet.engines[0]
    container = fleet.container(engine)
    # One turn, long enough that the SIGTERM (after the ansible CLI starts up, slow on a busy
    # machine) comes while it runs.
    load = _long_turns(engine, 10000, turns=1)
    _wait_for_starts(container, 1)

    result = run_module("engine_drain", {"name": engine.name})
    report = load.stop()

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    drain = result["drain"]
    assert drain["killed"] is False and drain["grace_expired"] is False
    assert drain["exit_code"] == int(PROFILES[repository].knobs["ENGINE_SIM_EXIT_CODE"])
    assert drain["clean_exit"] is True
    assert 0 < drain["elapsed"] < 30
    assert drain["not_finished"] == 0
    if LOGS_COMPLETION[repository]:
        assert drain["account_source"] == "logs"
        assert drain["in_flight"] == 1 and drain["finished"] == 1 and drain["completed"] == 1
        assert [t["outcome"] for t in drain["turns"]] == ["completed"]
        assert drain["turns"][0]["task_id"] == report.turns[0].task_id
    else:
        # No completion line and no key for the replay: how many were in flight is unknown, but
        # the Engine exited by itself, so by the contract nothing was cut.
        assert drain["account_source"] == "exit"
        assert drain["in_flight"] is None and "no completion line" in drain["account_note"]
    # What the clients saw: the turn completed, nothing was lost.
    assert report.lost == [], report.summary()
    assert report.counts()["completed"] == 1
    container.reload()
    assert container.status == "exited" and result["engine"]["state"] == "exited"
    time.sleep(1)
    container.reload()
    assert container.status == "exited", "the restart policy brought the drained Engine back"


@pytest.mark.parametrize("repository", list(PROFILES))
def test_drain_with_a_short_grace_kills_and_reports_the_cut_turn(make_fleet, run_module, repository):
    fleet = make_fleet(1, repository=repository)
    engine = fleet.engines[0]
    container = fleet.container(engine)
    # A turn before: where the Engine logs completion lines, the logs now show their form.
    engine.client().execute("What is the capital of France?", "warm-up")
    load = _long_turns(engine, 8000)  # the kill comes 1 s after the SIGTERM, long before the turn's end
    _wait_for_starts(container, 2)

    # With the key, an Engine that logs no completion line is counted from its replay.
    result = run_module("engine_drain", {"name": engine.name, "grace_period": 1, "engine_key": engine.key})
    report = load.stop()

    assert not result.get("failed"), result.get("msg")
    drain = result["drain"]
    assert drain["grace_expired"] is True and drain["killed"] is True
    assert drain["exit_code"] == 137 and drain["clean_exit"] is False
    assert 1 <= drain["elapsed"] < 10
    assert drain["account_source"] == ("logs" if LOGS_COMPLETION[repository] else "replay")
    assert drain["in_flight"] == 1 and drain["not_finished"] == 1 and drain["finished"] == 0
    assert [t["task_id"] for t in drain["cut_turns"]] == [report.lost[0].task_id]
    # The client saw the same: one turn lost.
    assert len(report.lost) == 1, report.summary()


def _diff_shown(result, before: str, after: str) -> bool:
    """Whether the --diff output shows the state going from ``before`` to ``after``."""
    out = result["_stdout"]
    return f'-    "state": "{before}"' in out and f'+    "state": "{after}"' in out


def test_drain_check_mode_replay_guard_and_idempotence(make_fleet, run_module):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    container = fleet.container(engine)
    started_at = container.attrs["State"]["StartedAt"]

    # turn_accounting=replay without a key fails before anything is stopped.
    refused = run_module("engine_drain", {"name": engine.name, "turn_accounting": "replay"})
    assert refused.get("failed") and "engine_key" in refused["msg"] and "Nothing was stopped" in refused["msg"]

    engine.client().execute("What is the capital of France?", "warm-up")  # logs one completion line
    holder = threading.Thread(
        # Long enough to be still in flight after the check-mode run on a loaded machine; the drain waits for it.
        target=lambda: engine.client(timeout=60).execute("Hold [sim:sleep=20000]", "held"), daemon=True
    )
    holder.start()
    _wait_for_starts(container, 2)

    check = run_module("engine_drain", {"name": engine.name}, check=True, diff=True)
    assert check["changed"] is True
    assert check["drain"]["in_flight"] == 1
    assert [(t["task_id"], t["outcome"]) for t in check["drain"]["turns"]] == [("held", "in_flight")]
    assert _diff_shown(check, "running", "exited")
    container.reload()
    assert container.status == "running" and container.attrs["State"]["StartedAt"] == started_at

    done = run_module("engine_drain", {"name": engine.name, "grace_period": 60}, diff=True)
    assert done["changed"] is True and done["drain"]["in_flight"] == 1 and done["drain"]["not_finished"] == 0
    assert [(t["task_id"], t["outcome"]) for t in done["drain"]["turns"]] == [("held", "completed")]
    assert _diff_shown(done, "running", "exited")
    holder.join(30)

    again = run_module("engine_drain", {"name": engine.name})
    assert again["changed"] is False
    assert again["drain"]["was_running"] is False and again["drain"]["signal"] is None
    assert again["drain"]["exit_code"] == 0


def test_drain_bad_input_fails_with_the_bad_value(docker_client, run_module):
    missing = run_module("engine_drain", {"name": "engine-does-not-exist-42"})
    assert missing.get("failed") and "engine-does-not-exist-42" in missing["msg"] and "docker ps" in missing["msg"]

    negative = run_module("engine_drain", {"name": "engine-x", "grace_period": -1})
    assert negative.get("failed") and "grace_period -1" in negative["msg"] and "0 or more" in negative["msg"]

    unreachable = run_module("engine_drain", {"name": "engine-x", "docker_host": "unix:///nonexistent/docker.sock"})
    assert unreachable.get("failed") and "unix:///nonexistent/docker.sock" in unreachable["msg"]
