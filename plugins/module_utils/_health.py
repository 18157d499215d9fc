# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Waiting for an Engine to be ready, while watching its container.

:func:`wait_ready` polls a health probe until it reports ready or the time
is up, and asks a watcher after every probe whether the container died or
restarted, so a crash at boot fails at once with its reason instead of a
bare time-out. :func:`last_error` finds that reason in the Engine's JSON
log lines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import HealthReport


@dataclass
class ContainerEvent:
    """Why the watched container stopped being a candidate for ready."""

    reason: str  # "exited" or "restarted"
    exit_code: int | None
    restart_count: int
    log_tail: list[str] = field(default_factory=list)
    error: str | None = None  # the last ERROR log line's code and message


@dataclass
class WaitOutcome:
    ready: bool
    report: HealthReport
    waited_seconds: float
    probes: int
    container_event: ContainerEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "waited_seconds": round(self.waited_seconds, 3),
            "probes": self.probes,
            "container_event": None if self.container_event is None else vars(self.container_event),
        }


def last_error(lines: list[str]) -> str | None:
    """``CODE: message`` of the last ERROR line among the Engine's JSON log lines.

    Lines that are not JSON are skipped (the contract documents JSON lines;
    anything else is noise from outside the Engine).
    """
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("level") not in ("ERROR", "CRITICAL"):
            continue
        extra = record.get("extra") if isinstance(record.get("extra"), dict) else {}
        code = extra.get("code") or extra.get("error")
        message = str(record.get("message") or "")
        return f"{code}: {message}" if code else message
    return None


def wait_ready(
    probe: Callable[[], HealthReport],
    watch: Callable[[], ContainerEvent | None] | None,
    timeout: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitOutcome:
    """Probe until ready, the watcher reports a dead container, or ``timeout`` seconds pass.

    At least one probe is made, even with ``timeout`` 0.
    """
    start = clock()
    probes = 0
    while True:
        report = probe()
        probes += 1
        if report.ready:
            return WaitOutcome(True, report, clock() - start, probes)
        event = watch() if watch else None
        if event is not None:
            return WaitOutcome(False, report, clock() - start, probes, event)
        remaining = timeout - (clock() - start)
        if remaining <= 0:
            return WaitOutcome(False, report, clock() - start, probes)
        sleep(min(interval, remaining))
