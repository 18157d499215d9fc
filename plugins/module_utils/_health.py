# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Waiting for an Engine to be ready, while watching its container.

:func:`wait_ready` polls a health probe until it reports ready or the time
is up, and asks a watcher after every probe whether the container died or
restarted, so a crash at boot fails at once with its reason instead of a
bare time-out. :func:`container_watcher` is that watcher for a Docker
container; :func:`last_error` finds the reason in the Engine's JSON log
lines.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDockerError
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import HealthReport

EXIT_CODE_WAIT = 5.0  # seconds to wait for a restarting container's exit code


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

    def failure(self, who: str) -> str:
        """Why ``who`` is not ready: the container's exit or restart and its last error, or the last probe's reason."""
        event = self.container_event
        if event is not None:
            cause = f": {event.error}" if event.error else ""
            return (
                f"{who} {event.reason} (exit code {event.exit_code}, restart count {event.restart_count}) while "
                f"waiting for /health to be ready{cause}"
            )
        return f"{who} not ready after {self.waited_seconds:.0f}s: {self.report.reason}"

    def result(self) -> dict[str, Any]:
        """The last probe's fields and the wait's, as the modules return them (no body, no internals)."""
        fields = report_fields(self.report)
        fields.update(self.to_dict())
        if fields["container_event"] is None:
            fields.pop("container_event")
        return fields

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "waited_seconds": round(self.waited_seconds, 3),
            "probes": self.probes,
            "container_event": None if self.container_event is None else vars(self.container_event),
        }


def report_fields(report: HealthReport) -> dict[str, Any]:
    """A health report's fields the modules return."""
    fields = report.to_dict()
    for internal in ("body", "elapsed_ms", "error"):
        fields.pop(internal, None)
    return fields


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


def container_watcher(docker: Any, name: str, log_lines: int):
    """The container's facts now, and a watcher reporting its exit or restart since then.

    ``docker`` is an ``EngineDocker``; ``name`` the container's name or id.
    """
    first = docker.facts(name)

    def watch() -> ContainerEvent | None:
        try:
            facts = docker.facts(name)
        except EngineDockerError as exc:
            return ContainerEvent(reason=f"vanished: {exc}", exit_code=None, restart_count=first.restart_count)
        if facts.restarting or facts.restart_count > first.restart_count:
            reason = "restarted"
        elif not facts.running:
            reason = "exited"
        else:
            return None
        # Caught just after a restart, the container runs again and its last
        # exit code is gone; it shows again when the new run ends.
        deadline = time.monotonic() + EXIT_CODE_WAIT
        while facts.exit_code is None and time.monotonic() < deadline:
            time.sleep(0.1)
            facts = docker.facts(name)
        tail = docker.logs(name, tail=log_lines)
        return ContainerEvent(reason, facts.exit_code, facts.restart_count, tail, last_error(tail))

    return first, watch


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
