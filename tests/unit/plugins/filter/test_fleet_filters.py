# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleFilterError
from ansible.executor.playbook_executor import PlaybookExecutor
from ansible.utils.helpers import pct_to_int as core_pct_to_int

from ansible_collections.engineops.fleet.plugins.filter.fleet import (
    FilterModule,
    canary_cohort,
    control_cohort,
    pct_to_int,
    rollout_batches,
    upgrade_kind,
)


def hosts(count: int) -> list[str]:
    return [f"engine-{i:03d}" for i in range(1, count + 1)]


# -- upgrade_kind -----------------------------------------------------------------

@pytest.mark.parametrize(
    "current, target, kind",
    [
        ("2.3.0", "2.3.0", "same"),
        ("2.3.0", "2.3.1", "patch"),
        ("2.3.0", "2.4.0", "minor"),
        ("2.3.0", "3.0.0", "major"),
        ("2.4.0", "2.3.0", "downgrade"),
        ("v2.3.0", "2.4.0-rc.1", "minor"),
        ("registry.example.com/september-engine:2.3.0", "2.3.1", "patch"),
        ("engine:2.3.0", "engine:3.0.0", "major"),
    ],
)
def test_upgrade_kind_wraps_the_version_helper(current, target, kind):
    assert upgrade_kind(current, target) == kind


@pytest.mark.parametrize("current, target", [("latest", "2.4.0"), ("2.3", "2.4.0"), ("engine:latest", "2.4.0"),
                                             ("2.3.0", None)])
def test_upgrade_kind_refuses_what_is_not_an_exact_version(current, target):
    with pytest.raises(AnsibleFilterError, match="upgrade_kind"):
        upgrade_kind(current, target)


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {"upgrade_kind", "canary_cohort", "control_cohort", "rollout_batches"}


# -- canary_cohort / control_cohort ----------------------------------------------------

def expected_cohort(names, count, seed=""):
    ranked = sorted(names, key=lambda n: hashlib.sha256((seed + n).encode()).hexdigest())
    return sorted(ranked[:count])


@pytest.mark.parametrize(
    "count, percent, minimum, size",
    [
        (0, 5, 1, 0),
        (1, 5, 1, 1),       # a lone host is its own canary
        (2, 5, 1, 1),
        (2, 5, 5, 1),       # never every host, whatever the minimum
        (12, 5, 1, 1),      # 0.6 rounds down to 0, the minimum is 1
        (19, 5, 1, 1),
        (20, 5, 1, 1),
        (40, 5, 1, 2),
        (100, 5, 1, 5),     # exact, despite float rounding
        (100, "5%", 1, 5),
        (101, 5, 1, 5),     # rounded down
        (100, 1, 1, 1),
        (100, 2.5, 1, 2),
        (100, 5, 8, 8),     # at least the minimum
        (10, 100, 1, 9),    # all but one
        (10, 5, 0, 0),      # a minimum of 0 allows an empty cohort
    ],
)
def test_canary_cohort_size(count, percent, minimum, size):
    cohort = canary_cohort(hosts(count), percent, minimum)
    assert len(cohort) == size
    assert cohort == expected_cohort(hosts(count), size)


def test_canary_cohort_is_the_same_whatever_the_order():
    names = hosts(200)
    first = canary_cohort(names, 5)
    for seed in range(5):
        shuffled = list(names)
        random.Random(seed).shuffle(shuffled)
        assert canary_cohort(shuffled, 5) == first
    assert canary_cohort(names + names[:10], 5) == first  # duplicates are ignored


def test_canary_cohort_depends_on_the_seed_and_accepts_host_dicts():
    names = hosts(200)
    assert canary_cohort(names, 5, seed="a") != canary_cohort(names, 5, seed="b")
    assert canary_cohort(names, 5, seed="a") == expected_cohort(names, 10, "a")
    assert canary_cohort([{"inventory_hostname": n} for n in names], 5) == canary_cohort(names, 5)


def test_canary_cohort_is_stable_when_the_fleet_grows():
    before = set(canary_cohort(hosts(100), 5))
    after = set(canary_cohort(hosts(101), 5))
    # The draw is by rank: one more host can take at most one seat.
    assert len(before - after) <= 1


@pytest.mark.parametrize("percent", [0, -1, 101, "abc", "0%", None, True])
def test_canary_cohort_refuses_bad_percentages(percent):
    with pytest.raises(AnsibleFilterError, match="percent"):
        canary_cohort(hosts(10), percent)


@pytest.mark.parametrize("minimum", [-1, 1.5, "x", True])
def test_canary_cohort_refuses_bad_minimums(minimum):
    with pytest.raises(AnsibleFilterError, match="minimum"):
        canary_cohort(hosts(10), 5, minimum)


@pytest.mark.parametrize("value", ["engine-001", None, 5, [""], [None]])
def test_cohort_filters_refuse_what_is_not_a_host_list(value):
    with pytest.raises(AnsibleFilterError):
        canary_cohort(value)
    with pytest.raises(AnsibleFilterError):
        control_cohort(value, [])


def test_control_cohort_is_the_rest_in_input_order():
    names = hosts(30)
    random.Random(1).shuffle(names)
    canary = canary_cohort(names, 10)
    control = control_cohort(names, canary)
    assert control == [n for n in names if n not in canary]
    assert sorted(control + canary) == sorted(names)
    assert control_cohort(names + names[:3], []) == names


# -- rollout_batches against ansible-core itself -----------------------------------------

def core_batches(names: list[str], serial) -> list[list[str]]:
    """ansible-core's own PlaybookExecutor._get_serialized_batches, on a stand-in inventory and play."""
    # Play.serial is a list field: a scalar becomes a one-item list, no value an empty one.
    if serial is None:
        serial_list = []
    elif isinstance(serial, list):
        serial_list = serial
    else:
        serial_list = [serial]
    inventory = SimpleNamespace(get_hosts=lambda pattern, order=None: list(names))
    executor = SimpleNamespace(_inventory=inventory)
    play = SimpleNamespace(hosts="all", order=None, serial=serial_list)
    return PlaybookExecutor._get_serialized_batches(executor, play)


SERIALS = [None, [], 1, 2, 3, 0, -1, "1", "3", "10%", "33%", "50%", "100%", "0%", "1%", "150%",
           ["10%", "50%", "100%"], ["10%", "50%"], [1, 2, 3], [1, "20%"], ["1", 5, "30%"], [2, 0], [1, -1, 2],
           [100], ["25%", "25%", "50%"], [1, "100%"], ["5%"], [0.5, 1], [2.9]]


@pytest.mark.parametrize("serial", SERIALS, ids=repr)
@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 8, 10, 12, 19, 20, 33, 100, 101])
def test_rollout_batches_match_ansible_core(serial, count):
    names = hosts(count)
    assert rollout_batches(names, serial) == core_batches(names, serial)


def test_rollout_batches_examples():
    assert rollout_batches(hosts(10), ["10%", "50%", "100%"]) == [
        ["engine-001"], hosts(6)[1:], hosts(10)[6:]]
    assert rollout_batches(hosts(3), 1) == [["engine-001"], ["engine-002"], ["engine-003"]]
    assert rollout_batches(hosts(3)) == [hosts(3)]
    assert rollout_batches(hosts(3) + ["engine-001"], 2) == [hosts(2), ["engine-003"]]
    # The percentage is of all the play's hosts, not of those left: 50% of 8 is 4, twice.
    assert [len(b) for b in rollout_batches(hosts(8), ["25%", "50%"])] == [2, 4, 2]


@pytest.mark.parametrize("value, total", [("10%", 10), ("10%", 9), ("0%", 50), ("33%", 100), (3, 10), ("7", 2),
                                          (-1, 5), ("150%", 4), (2.7, 3)])
def test_pct_to_int_is_ansible_cores(value, total):
    assert pct_to_int(value, total) == core_pct_to_int(value, total)


@pytest.mark.parametrize("serial", ["abc", "10.5%", ["10%", "x"], [None]])
def test_rollout_batches_refuse_what_ansible_refuses(serial):
    with pytest.raises(AnsibleFilterError, match="serial"):
        rollout_batches(hosts(10), serial)
