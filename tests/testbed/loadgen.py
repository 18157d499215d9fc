"""A load generator that keeps turns flowing to a fleet and records every outcome.

Each worker sends one turn at a time to its Engine (a fresh ``task_id`` per
turn) until the run's time or turn budget is spent or ``stop()`` is
called. Every turn ends in exactly one outcome:

- ``completed``: the stream said ``thread_lifecycle`` completed;
- ``error``: the Engine sent an ``error`` event (its code is kept);
- ``refused``: the Engine answered 503 before accepting the turn (draining,
  starting);
- ``http_error``: any other non-2xx answer;
- ``unreachable``: no connection could be made (container stopped);
- ``lost``: the Engine accepted the turn (``started``) and the stream ended
  without completion or error: the turn was cut.

``python -m tests.testbed.loadgen --prefix demo --seconds 30`` runs it
against a CLI fleet.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import EngineHTTPError
from ansible_collections.engineops.fleet.plugins.module_utils._signals import _iso as iso_time
from tests.testbed.fleet import Engine

MESSAGES = (
    "What is the capital of France?",
    "What is 17 + 25?",
    "Return JSON for the user with id 7",
    "Summarise what we discussed so far.",
    "What is the boiling point of water at sea level in Celsius?",
)
OUTCOMES = ("completed", "error", "refused", "http_error", "unreachable", "lost")


@dataclass
class Turn:
    engine: str
    task_id: str
    outcome: str
    code: str | None
    started_at: float
    elapsed_ms: float


@dataclass
class LoadReport:
    turns: list[Turn] = field(default_factory=list)

    def counts(self, engine: str | None = None) -> dict[str, int]:
        counter = Counter(t.outcome for t in self.turns if engine is None or t.engine == engine)
        return {outcome: counter.get(outcome, 0) for outcome in OUTCOMES}

    @property
    def lost(self) -> list[Turn]:
        return [t for t in self.turns if t.outcome == "lost"]

    def summary(self) -> str:
        counts = self.counts()
        text = f"{len(self.turns)} turns: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        lost = "; ".join(f"{t.engine} {t.task_id} started {iso_time(t.started_at)}, cut after {t.elapsed_ms:.0f} ms ({t.code})"
                         for t in self.lost)
        return text + (f"; lost: {lost}" if lost else "")


class LoadGenerator:
    """Turns to ``engines``, ``workers_per_engine`` at a time each, bounded in time and count."""

    def __init__(
        self,
        engines: list[Engine],
        *,
        workers_per_engine: int = 1,
        seconds: float = 60.0,
        max_turns: int = 10_000,
        pause: float = 0.05,
        message_field: str = "message",
        messages: tuple[str, ...] = MESSAGES,
        turn_timeout: float = 60.0,
    ) -> None:
        self.engines = engines
        self.workers_per_engine = workers_per_engine
        self.seconds = seconds
        self.max_turns = max_turns
        self.pause = pause
        self.message_field = message_field
        self.messages = messages
        self.turn_timeout = turn_timeout
        self.report = LoadReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._serial = itertools.count(1)
        self._run_id = f"{int(time.time()):x}"

    def start(self) -> LoadGenerator:
        deadline = time.monotonic() + self.seconds
        for engine in self.engines:
            for _worker in range(self.workers_per_engine):
                thread = threading.Thread(target=self._work, args=(engine, deadline), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> LoadReport:
        """Stop sending new turns, wait for the ones in flight, return the report."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.turn_timeout + 5)
        return self.report

    def run(self) -> LoadReport:
        """Run until the time or turn budget is spent."""
        self.start()
        for thread in self._threads:
            thread.join()
        return self.report

    def _next_serial(self) -> int | None:
        with self._lock:
            serial = next(self._serial)
            return serial if serial <= self.max_turns else None

    def _work(self, engine: Engine, deadline: float) -> None:
        client = engine.client(timeout=self.turn_timeout)
        while not self._stop.is_set() and time.monotonic() < deadline:
            serial = self._next_serial()
            if serial is None:
                return
            turn = self._one_turn(client, engine, serial)
            with self._lock:
                self.report.turns.append(turn)
            self._stop.wait(self.pause)

    def _one_turn(self, client, engine: Engine, serial: int) -> Turn:
        task_id = f"load-{self._run_id}-{serial}"
        message = self.messages[serial % len(self.messages)]
        started_at = time.time()
        t0 = time.monotonic()
        outcome, code = "lost", None
        accepted = False
        try:
            for event in client.stream_execute(message, task_id, field=self.message_field):
                if event.event == "thread_lifecycle" and isinstance(event.data, dict):
                    accepted = accepted or event.data.get("phase") == "started"
                    if event.data.get("phase") == "completed":
                        outcome = "completed"
                elif event.event == "error":
                    outcome, code = "error", (event.data or {}).get("error") if isinstance(event.data, dict) else None
        except EngineHTTPError as exc:
            outcome, code = ("refused" if exc.status == 503 else "http_error"), exc.code
        except Exception as exc:  # noqa: BLE001 - any transport failure is an outcome here
            if outcome == "lost":
                outcome, code = ("lost" if accepted else "unreachable"), type(exc).__name__
        return Turn(engine.name, task_id, outcome, code, started_at, (time.monotonic() - t0) * 1000)


def main(argv: list[str] | None = None) -> int:
    import docker

    from tests.testbed.fleet import LABEL

    parser = argparse.ArgumentParser(description="Keep turns flowing to a CLI fleet.")
    parser.add_argument("--prefix", default="demo")
    parser.add_argument("--key", required=True, help="the fleet's X-Engine-Key")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-turns", type=int, default=10_000)
    args = parser.parse_args(argv)
    client = docker.from_env()
    engines = []
    for container in client.containers.list(filters={"label": f"{LABEL}={args.prefix}"}):
        port = int(container.attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostPort"])
        engines.append(Engine(container.name.removeprefix("engine-"), port, args.key))
    report = LoadGenerator(engines, seconds=args.seconds, max_turns=args.max_turns).run()
    print(report.summary())
    return 1 if report.lost else 0


if __name__ == "__main__":
    sys.exit(main())
