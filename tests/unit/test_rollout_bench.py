# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pure parts of benchmarks/rollout.py: batches, outages from prober samples, gate times, the lower bound."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "rollout.py"
_SPEC = importlib.util.spec_from_file_location("rollout_bench", _PATH)
rollout = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = rollout  # dataclasses look their module up there
_SPEC.loader.exec_module(rollout)


def hosts(n):
    return [f"e{i:02d}" for i in range(1, n + 1)]


@pytest.mark.parametrize("n, sizes", [(10, [1, 5, 4]), (50, [5, 25, 20]), (3, [1, 1, 1]), (1, [1])])
def test_batches_follow_ansible_serial_percentages(n, sizes):
    batches = rollout.serial_batches(hosts(n), ["10%", "50%", "100%"])
    assert [len(b) for b in batches] == sizes
    assert [h for b in batches for h in b] == hosts(n)


def test_sequential_is_one_engine_per_batch_and_the_last_value_repeats():
    assert rollout.serial_batches(hosts(3), 1) == [["e01"], ["e02"], ["e03"]]
    assert [len(b) for b in rollout.serial_batches(hosts(7), [1, 2])] == [1, 2, 2, 2]


def samples(*spans):
    """Health samples every 0.05 s: spans of (start, end, ok)."""
    out = []
    for start, end, ok in spans:
        t = start
        while t < end - 1e-9:
            out.append((round(t, 3), ok))
            t += 0.05
    return out


def test_outage_runs_from_the_first_bad_sample_to_the_new_containers_first_ok():
    health = samples((0, 10, True), (10, 14, False), (14, 20, True))
    out = rollout.outage(health, [], new_start=12.0)
    assert out.start == 10.0 and out.first_ok == 14.0
    assert out.seconds == pytest.approx(4.0)
    assert out.last_ok_before == pytest.approx(9.95)


def test_a_refused_turn_before_health_turns_bad_starts_the_outage():
    health = samples((0, 10, True), (10, 14, False), (14, 20, True))
    turns = [(3.0, False), (9.0, True), (9.97, False)]
    assert rollout.outage(health, turns, new_start=12.0).start == 9.97


def test_an_earlier_glitch_on_the_old_release_is_not_part_of_the_outage():
    health = samples((0, 5, True), (5, 5.1, False), (5.1, 10, True), (10, 14, False), (14, 20, True))
    out = rollout.outage(health, [(5.02, False), (6.0, True)], new_start=12.0)
    assert out.start == 10.0
    assert out.seconds == pytest.approx(4.0)


def test_ok_samples_before_the_new_container_started_do_not_end_the_outage():
    # drain health 'ok until exit' profile: ok answers of the old container right up to its exit
    health = samples((0, 11, True), (11, 14, False), (14, 20, True))
    out = rollout.outage(health, [(9.0, True), (10.5, False), (10.6, False)], new_start=12.0)
    assert out.first_ok == 14.0
    assert out.start == 10.5


def test_no_ok_from_the_new_container_is_no_outage_figure():
    health = samples((0, 10, True), (10, 20, False))
    out = rollout.outage(health, [], new_start=12.0)
    assert out.seconds is None and out.first_ok is None


def test_gate_seconds_are_rounds_of_turns_at_the_configured_concurrency():
    # 39 eval turns 4 at a time: 10 rounds; 60 probes 4 at a time: 15 rounds; 0.3 s a turn
    assert rollout.gate_seconds(0.3, 39, 4, 60, 4) == pytest.approx(7.5)
    assert rollout.gate_seconds(0.3, 0, 4, 0, 4) == 0


def test_lower_bound_sums_each_batchs_slowest_engine():
    batches = [["a"], ["b", "c"], ["d"]]
    stop_to_healthy = {"a": 3.0, "b": 2.0, "c": 4.0, "d": 1.0}
    gates = {"a": 1.0, "b": 5.0, "c": 1.0, "d": 0.5}
    # batch 1: 3+1; batch 2: max(2+5, 4+1) = 7; batch 3: 1+0.5
    assert rollout.lower_bound(batches, stop_to_healthy, gates) == pytest.approx(12.5)
    assert rollout.lower_bound(batches, stop_to_healthy, {}) == pytest.approx(3 + 4 + 1)


def test_docker_times_keep_their_fraction():
    assert rollout.parse_docker_time("1970-01-01T00:00:10.123456789Z") == pytest.approx(10.123456789)
    assert rollout.parse_docker_time("1970-01-01T00:01:00Z") == 60.0


def test_the_fast_profile_is_set_against_the_plain_playbook_of_the_same_shape():
    runs = [{"engines": 10, "mode": "batched", "upgrader": u, "wall_seconds": w}
            for u, w in (("collection", 300.0), ("collection-fast", 60.0), ("playbook", 40.0))]
    assert rollout.fast_against_peer(runs) == {(10, "batched"): (1.5, 7.5)}


def test_the_old_containers_exit_is_found_through_a_rename():
    events = [
        {"id": "old", "name": "engine-a", "old_name": "", "action": "rename", "time": 0.5},
        {"id": "old", "name": "engine-a-previous", "old_name": "engine-a", "action": "rename", "time": 1.0},
        {"id": "new", "name": "engine-a", "old_name": "", "action": "create", "time": 1.5},
        {"id": "old", "name": "engine-a-previous", "old_name": "", "action": "die", "time": 2.0},
        {"id": "new", "name": "engine-a", "old_name": "", "action": "start", "time": 2.5},
        {"id": "new", "name": "engine-a", "old_name": "", "action": "die", "time": 9.0},
        {"id": "other", "name": "engine-b", "old_name": "", "action": "die", "time": 2.2},
    ]
    assert rollout.old_container_exits(events, "engine-a", "new") == [2.0]
