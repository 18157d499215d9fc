# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Server-Sent Events: an incremental parser and the aggregation of an Engine turn.

:class:`SSEParser` follows the WHATWG event-stream rules: lines end in
CRLF, LF or CR (a chunk may end between CR and LF), ``:`` starts a comment,
``data`` lines accumulate, a blank line dispatches. Input may be cut
anywhere, even inside a UTF-8 sequence.

:class:`TurnResult` sums up the events of one ``POST /execute`` turn.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SSEEvent:
    """One dispatched event. ``data`` is the JSON value when ``raw`` parses as JSON, else ``raw``."""

    event: str = "message"
    data: Any = None
    raw: str = ""
    id: str | None = None
    retry: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "data": self.data, "id": self.id}


def parse_data(raw: str) -> Any:
    """``raw`` parsed as JSON, or ``raw`` itself when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class SSEParser:
    """Incremental event-stream parser.

    ``feed(chunk)`` takes bytes or text cut anywhere and returns the events
    completed by it; ``feed_line(line)`` takes one line without its end
    (as ``requests``' ``iter_lines`` gives); ``close()`` ends the stream.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False
        self._at_start = True
        self._closed = False
        self._event_type = ""
        self._data: list[str] = []
        self._has_data = False
        self.last_event_id: str | None = None
        self._event_id_set = False
        self._retry: int | None = None

    def feed(self, chunk: bytes | str) -> list[SSEEvent]:
        """Parse a chunk; return the events it completes."""
        self._check_open()
        text = self._decoder.decode(chunk) if isinstance(chunk, (bytes, bytearray)) else chunk
        return self._feed_text(text)

    def feed_line(self, line: bytes | str) -> list[SSEEvent]:
        """Parse one complete line (its line end optional); return the events it completes."""
        self._check_open()
        text = line.decode("utf-8", errors="replace") if isinstance(line, (bytes, bytearray)) else line
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith(("\n", "\r")):
            text = text[:-1]
        # Text fed before by feed() without a line end belongs to this line.
        self._skip_lf = False
        text = self._strip_bom(self._buffer + text)
        self._buffer = ""
        event = self._process_line(text)
        return [] if event is None else [event]

    def close(self) -> list[SSEEvent]:
        """End the stream; return a last event the stream did not end with a blank line.

        The browser rule drops such an event; a truncated final event is
        kept here on purpose, so an ``error`` sent just before the
        connection closed is not lost.
        """
        if self._closed:
            return []
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._buffer:
            event = self._process_line(self._strip_bom(self._buffer))
            self._buffer = ""
            if event is not None:
                events.append(event)
        if self._has_data:
            events.append(self._dispatch())
        self._closed = True
        return events

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("SSEParser is closed; create a new parser for a new stream")

    def _strip_bom(self, text: str) -> str:
        if self._at_start and text:
            self._at_start = False
            if text.startswith("\ufeff"):
                return text[1:]
        return text

    def _feed_text(self, text: str) -> list[SSEEvent]:
        if self._skip_lf and text:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buffer = self._buffer + text
        events: list[SSEEvent] = []
        start = 0
        length = len(buffer)
        while True:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 < length:
                end, nxt = cr, cr + 2 if buffer[cr + 1] == "\n" else cr + 1
            else:
                # CR at the very end: a LF may open the next chunk.
                end, nxt = cr, cr + 1
                self._skip_lf = True
            line = self._strip_bom(buffer[start:end])
            event = self._process_line(line)
            if event is not None:
                events.append(event)
            start = nxt
        self._buffer = buffer[start:]
        return events

    def _process_line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._has_data:
                self._event_type = ""
                return None
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent:
        raw = "\n".join(self._data)
        event = SSEEvent(
            event=self._event_type or "message",
            data=parse_data(raw),
            raw=raw,
            id=self.last_event_id,
            retry=self._retry,
        )
        self._event_type = ""
        self._data = []
        self._has_data = False
        return event


def parse_stream(chunks: Iterable[bytes | str]) -> list[SSEEvent]:
    """All events of a whole stream given as chunks."""
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return 0
    return 0


@dataclass
class Usage:
    """Token totals summed over a turn's ``usage`` events (one per model call)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_hit_tokens: int = 0
    calls: int = 0

    def add(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        self.input_tokens += _as_int(data.get("input_tokens"))
        self.output_tokens += _as_int(data.get("output_tokens"))
        self.cache_hit_tokens += _as_int(data.get("cache_hit_tokens"))
        self.calls += 1

    @property
    def cache_hit_ratio(self) -> float | None:
        """``cache_hit_tokens / input_tokens``; ``None`` when no input tokens were reported."""
        if self.input_tokens <= 0:
            return None
        return self.cache_hit_tokens / self.input_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_hit_tokens": self.cache_hit_tokens,
            "calls": self.calls,
        }


@dataclass
class TurnResult:
    """What one Engine turn said, built event by event with :meth:`add`."""

    task_id: str | None = None
    text: str = ""
    tool_calls: list[Any] = field(default_factory=list)
    tool_results: list[Any] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    error: dict[str, Any] | None = None
    started: bool = False
    completed: bool = False
    events: int = 0
    event_counts: dict[str, int] = field(default_factory=dict)
    elapsed_ms: float | None = None
    first_event_ms: float | None = None

    @property
    def ok(self) -> bool:
        """The turn completed without an ``error`` event."""
        return self.completed and self.error is None

    def add(self, event: SSEEvent) -> None:
        """Fold one event into the result."""
        self.events += 1
        self.event_counts[event.event] = self.event_counts.get(event.event, 0) + 1
        data = event.data
        kind = event.event
        if kind == "text_delta":
            if isinstance(data, dict):
                text = data.get("text")
                if isinstance(text, str):
                    self.text += text
            elif isinstance(data, str):
                self.text += data
        elif kind == "tool_call":
            self.tool_calls.append(data)
        elif kind == "tool_result":
            self.tool_results.append(data)
        elif kind == "usage":
            self.usage.add(data)
        elif kind == "error":
            if self.error is None:
                self.error = _error_payload(data)
        elif kind == "thread_lifecycle" and isinstance(data, dict):
            phase = data.get("phase")
            if phase == "started":
                self.started = True
            elif phase == "completed":
                self.completed = True
            if self.task_id is None and isinstance(data.get("task_id"), str):
                self.task_id = data["task_id"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "ok": self.ok,
            "text": self.text,
            "tool_calls": list(self.tool_calls),
            "tool_results": list(self.tool_results),
            "usage": self.usage.to_dict(),
            "cache_hit_ratio": self.usage.cache_hit_ratio,
            "error": self.error,
            "started": self.started,
            "completed": self.completed,
            "events": self.events,
            "event_counts": dict(self.event_counts),
            "elapsed_ms": self.elapsed_ms,
            "first_event_ms": self.first_event_ms,
        }


def _error_payload(data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        code = data.get("error")
        message = data.get("message")
        return {
            "error": code if isinstance(code, str) and code else "UNKNOWN",
            "message": message if isinstance(message, str) else ("" if message is None else str(message)),
        }
    return {"error": "UNKNOWN", "message": "" if data is None else str(data)}


def aggregate_events(events: Iterable[SSEEvent], task_id: str | None = None) -> TurnResult:
    """A :class:`TurnResult` from a whole sequence of events."""
    result = TurnResult(task_id=task_id)
    for event in events:
        result.add(event)
    return result
