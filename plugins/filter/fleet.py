# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters for rollouts: the upgrade kind, the canary and control cohorts, and serial batches.

The documentation of each filter is in the ``<filter>.yml`` file beside this one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError
from ansible_collections.engineops.fleet.plugins.module_utils._version import upgrade_kind as _upgrade_kind


def _host_names(hosts: Any, what: str) -> list[str]:
    """Host names from a list (of names, or of dicts with ``name`` or ``inventory_hostname``), duplicates dropped."""
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, Iterable):
        raise AnsibleFilterError(f"{what} expects a list of host names, got {type(hosts).__name__} {hosts!r}")
    names: list[str] = []
    seen: set[str] = set()
    for item in hosts:
        if isinstance(item, Mapping):
            item = item.get("inventory_hostname", item.get("name"))
        if not isinstance(item, str) or item == "":
            raise AnsibleFilterError(f"{what} expects host names (non-empty strings), got {item!r}")
        if item not in seen:
            seen.add(item)
            names.append(item)
    return names


def upgrade_kind(current: Any, target: Any) -> str:
    """``same``, ``patch``, ``minor``, ``major`` or ``downgrade`` for moving from ``current`` to ``target``."""
    try:
        return _upgrade_kind(current, target)
    except VersionError as exc:
        raise AnsibleFilterError(f"upgrade_kind: {exc}") from None


def _percent(value: Any) -> float:
    text = value
    if isinstance(text, str):
        text = text.strip()
        if text.endswith("%"):
            text = text[:-1]
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"canary_cohort: percent {value!r} is not a number such as 5 or '5%'") from None
    if isinstance(value, bool) or not 0 < number <= 100 or math.isnan(number):
        raise AnsibleFilterError(f"canary_cohort: percent {value!r} must be above 0 and at most 100")
    return number


def host_rank(name: str, seed: str = "") -> str:
    """The sort key of a host in the canary draw: sha256 of the seed and the name, in hex."""
    return hashlib.sha256((seed + name).encode("utf-8")).hexdigest()


def canary_cohort(hosts: Any, percent: Any = 5, minimum: Any = 1, seed: Any = "") -> list[str]:
    """A stable canary cohort: the ``percent`` of ``hosts`` (rounded down, at least ``minimum``) that rank first.

    Hosts rank by the sha256 of ``seed`` + name, so the cohort does not depend
    on the order of ``hosts`` and changes when the seed does. It never holds
    every host unless there is only one. Returned in name order.
    """
    names = _host_names(hosts, "canary_cohort")
    share = _percent(percent)
    if isinstance(minimum, bool):
        raise AnsibleFilterError(f"canary_cohort: minimum {minimum!r} must be a whole number >= 0")
    try:
        floor = int(minimum)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"canary_cohort: minimum {minimum!r} must be a whole number >= 0") from None
    if floor < 0 or floor != float(minimum):
        raise AnsibleFilterError(f"canary_cohort: minimum {minimum!r} must be a whole number >= 0")
    if not isinstance(seed, str):
        seed = str(seed)
    if not names:
        return []
    # A tiny epsilon so that 5% of 100 hosts is 5, whatever the float rounding.
    count = max(floor, int(math.floor(share * len(names) / 100.0 + 1e-9)))
    count = min(count, len(names) - 1) if len(names) > 1 else len(names)
    ranked = sorted(names, key=lambda n: (host_rank(n, seed), n))
    return sorted(ranked[:count])


def control_cohort(hosts: Any, canary: Any) -> list[str]:
    """The hosts not in ``canary``, in the order of ``hosts``."""
    names = _host_names(hosts, "control_cohort")
    excluded = set(_host_names(canary, "control_cohort"))
    return [n for n in names if n not in excluded]


def pct_to_int(value: Any, num_items: int, min_value: int = 1) -> int:
    """ansible-core's ``ansible.utils.helpers.pct_to_int``, restated: ``'x%'`` of ``num_items``, rounded down,
    ``min_value`` when that is 0; anything else through ``int()``."""
    if isinstance(value, str) and value.endswith("%"):
        value_pct = int(value.replace("%", ""))
        return int((value_pct / 100.0) * num_items) or min_value
    return int(value)


def rollout_batches(hosts: Any, serial: Any = None) -> list[list[str]]:
    """The batches Ansible forms for a play over ``hosts`` with ``serial``.

    The arithmetic of ansible-core's ``PlaybookExecutor._get_serialized_batches``:
    ``serial`` is a scalar or a list (the last value repeats); each value is a
    count or a percentage of *all* the play's hosts, rounded down and at least
    1; a value of 0 or less (or no ``serial``) puts every remaining host in one
    batch. Hosts keep their order; duplicates are dropped.
    """
    names = _host_names(hosts, "rollout_batches")
    if serial is None or serial == "":
        serial_list: list[Any] = []
    elif isinstance(serial, (list, tuple)):
        serial_list = list(serial)
    else:
        serial_list = [serial]
    if not serial_list:
        serial_list = [-1]
    total = len(names)
    remaining = list(names)
    batches: list[list[str]] = []
    item = 0
    while remaining:
        try:
            size = pct_to_int(serial_list[item], total)
        except (TypeError, ValueError):
            raise AnsibleFilterError(
                f"rollout_batches: serial value {serial_list[item]!r} is not a count or a percentage such as 10 or '10%'"
            ) from None
        if size <= 0:
            batches.append(remaining)
            break
        batches.append(remaining[:size])
        remaining = remaining[size:]
        item = min(item + 1, len(serial_list) - 1)
    return batches


class FilterModule:
    """Rollout filters."""

    def filters(self) -> dict[str, Any]:
        return {
            "upgrade_kind": upgrade_kind,
            "canary_cohort": canary_cohort,
            "control_cohort": control_cohort,
            "rollout_batches": rollout_batches,
        }
