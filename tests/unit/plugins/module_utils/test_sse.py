# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._sse import (
    SSEEvent,
    SSEParser,
    TurnResult,
    aggregate_events,
    parse_data,
    parse_stream,
)


def summary(events):
    return [(e.event, e.data, e.id) for e in events]


TURN = (
    'event: thread_lifecycle\ndata: {"phase": "started", "task_id": "t-1"}\n\n'
    ": keep-alive comment\n\n"
    'event: text_delta\ndata: {"text": "The answer "}\n\n'
    "event: heartbeat\ndata: {}\n\n"
    'event: tool_call\ndata: {"tool": "calculator", "input": {"expr": "6*7"}}\n\n'
    'event: tool_result\ndata: {"output": "42"}\n\n'
    'event: usage\ndata: {"input_tokens": 100, "output_tokens": 10, "cache_hit_tokens": 80}\n\n'
    'event: text_delta\ndata: {"text": "is 42 \u2713"}\n\n'
    'event: usage\ndata: {"input_tokens": 50, "output_tokens": 5, "cache_hit_tokens": 20}\n\n'
    'event: thread_lifecycle\ndata: {"phase": "completed", "task_id": "t-1"}\n\n'
)
TURN_EVENTS = [
    ("thread_lifecycle", {"phase": "started", "task_id": "t-1"}, None),
    ("text_delta", {"text": "The answer "}, None),
    ("heartbeat", {}, None),
    ("tool_call", {"tool": "calculator", "input": {"expr": "6*7"}}, None),
    ("tool_result", {"output": "42"}, None),
    ("usage", {"input_tokens": 100, "output_tokens": 10, "cache_hit_tokens": 80}, None),
    ("text_delta", {"text": "is 42 \u2713"}, None),
    ("usage", {"input_tokens": 50, "output_tokens": 5, "cache_hit_tokens": 20}, None),
    ("thread_lifecycle", {"phase": "completed", "task_id": "t-1"}, None),
]


@pytest.mark.parametrize(
    "stream, expected",
    [
        ("data: hello\n\n", [("message", "hello", None)]),
        ('data: {"a": 1}\n\n', [("message", {"a": 1}, None)]),
        ("data: 42\n\n", [("message", 42, None)]),
        ("data:no-space\n\n", [("message", "no-space", None)]),
        ("data:  two spaces\n\n", [("message", " two spaces", None)]),
        ("event: usage\ndata: {}\r\n\r\n", [("usage", {}, None)]),
        ("event: a\rdata: x\r\r", [("a", "x", None)]),
        ("data: line1\ndata: line2\n\n", [("message", "line1\nline2", None)]),
        ('data: {"a":\ndata:  [1, 2]}\n\n', [("message", {"a": [1, 2]}, None)]),
        (": comment only\n\n", []),
        (":\n: another\ndata: x\n\n", [("message", "x", None)]),
        ("event: lonely\n\ndata: x\n\n", [("message", "x", None)]),
        ("data\n\n", [("message", "", None)]),
        ("data:\n\n", [("message", "", None)]),
        ("id: 7\ndata: a\n\ndata: b\n\n", [("message", "a", "7"), ("message", "b", "7")]),
        ("id: 7\ndata: a\n\nid\ndata: b\n\n", [("message", "a", "7"), ("message", "b", "")]),
        ("id: bad\x00id\ndata: a\n\n", [("message", "a", None)]),
        ("\ufeffdata: bom\n\n", [("message", "bom", None)]),
        ("unknown: field\ndata: x\n\n", [("message", "x", None)]),
        ("data: not {json\n\n", [("message", "not {json", None)]),
        ("data: one\n\ndata: two\n\n\n\n", [("message", "one", None), ("message", "two", None)]),
        (TURN, TURN_EVENTS),
    ],
)
def test_parse_whole_stream(stream, expected):
    assert summary(parse_stream([stream])) == expected
    assert summary(parse_stream([stream.encode("utf-8")])) == expected


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_chunk_boundary(newline):
    """Cut the byte stream at every position (inside CRLF and inside UTF-8 sequences too)."""
    payload = TURN.replace("\n", newline).encode("utf-8")
    for cut in range(len(payload) + 1):
        events = parse_stream([payload[:cut], payload[cut:]])
        assert summary(events) == TURN_EVENTS, f"cut at byte {cut}"


def test_byte_by_byte_crlf():
    payload = TURN.replace("\n", "\r\n").encode("utf-8")
    events = parse_stream(payload[i:i + 1] for i in range(len(payload)))
    assert summary(events) == TURN_EVENTS


def test_feed_returns_events_as_soon_as_complete():
    parser = SSEParser()
    assert parser.feed(b"event: text_delta\ndata: {\"text\"") == []
    assert parser.feed(b": \"hi\"}\n") == []
    events = parser.feed(b"\nevent: heartbeat\n")
    assert summary(events) == [("text_delta", {"text": "hi"}, None)]
    assert summary(parser.feed(b"data: {}\n\n")) == [("heartbeat", {}, None)]
    assert parser.close() == []


def test_cr_at_chunk_end_then_lf():
    parser = SSEParser()
    assert parser.feed("data: a\r") == []
    # The LF completes the CRLF; it is not a second (blank) line.
    assert parser.feed("\ndata: b\r") == []
    assert summary(parser.feed("\n\r\n")) == [("message", "a\nb", None)]


def test_feed_line_as_from_iter_lines():
    parser = SSEParser()
    events = []
    for line in [b"event: usage", b'data: {"input_tokens": 3}', b"", b": c", "data: x\r\n", "\n"]:
        events.extend(parser.feed_line(line))
    assert summary(events) == [("usage", {"input_tokens": 3}, None), ("message", "x", None)]


def test_feed_then_feed_line_joins_partial_line():
    parser = SSEParser()
    assert parser.feed("data: hel") == []
    assert parser.feed_line("lo") == []
    assert summary(parser.feed_line("")) == [("message", "hello", None)]


@pytest.mark.parametrize(
    "tail, expected",
    [
        ('event: error\ndata: {"error": "LLM_PROVIDER_ERROR", "message": "boom"}',
         [("error", {"error": "LLM_PROVIDER_ERROR", "message": "boom"}, None)]),
        ('event: error\ndata: {"error": "X"}\n', [("error", {"error": "X"}, None)]),
        ("event: only-type\n", []),
        ("data: half\xe2", [("message", "half\ufffd", None)]),
    ],
)
def test_close_dispatches_truncated_last_event(tail, expected):
    parser = SSEParser()
    data = tail.encode("latin-1") if "\xe2" in tail else tail.encode("utf-8")
    assert parser.feed(data) == []
    assert summary(parser.close()) == expected
    assert parser.close() == []
    with pytest.raises(ValueError):
        parser.feed("data: x\n\n")


def test_retry_field():
    events = parse_stream(["retry: 1500\ndata: a\n\nretry: soon\ndata: b\n\n"])
    assert [e.retry for e in events] == [1500, 1500]
    assert events[0].raw == "a"


@pytest.mark.parametrize("raw, value", [("{}", {}), ("[1]", [1]), ("null", None), ("x", "x"), ("", "")])
def test_parse_data(raw, value):
    assert parse_data(raw) == value


def test_turn_result_aggregates():
    result = aggregate_events(parse_stream([TURN]), task_id="t-1")
    assert result.text == "The answer is 42 \u2713"
    assert result.tool_calls == [{"tool": "calculator", "input": {"expr": "6*7"}}]
    assert result.tool_results == [{"output": "42"}]
    assert result.usage.to_dict() == {"input_tokens": 150, "output_tokens": 15, "cache_hit_tokens": 100, "calls": 2}
    assert result.usage.cache_hit_ratio == pytest.approx(100 / 150)
    assert result.started and result.completed and result.ok
    assert result.error is None
    assert result.events == 9
    assert result.event_counts == {"thread_lifecycle": 2, "text_delta": 2, "heartbeat": 1, "tool_call": 1,
                                   "tool_result": 1, "usage": 2}
    as_dict = result.to_dict()
    assert as_dict["ok"] is True and as_dict["cache_hit_ratio"] == pytest.approx(2 / 3)
    json.dumps(as_dict)


def _ev(kind, data):
    return SSEEvent(event=kind, data=data, raw=json.dumps(data))


@pytest.mark.parametrize(
    "events, expected",
    [
        # First error wins; the turn is not ok even if completed.
        ([_ev("thread_lifecycle", {"phase": "started", "task_id": "x"}),
          _ev("error", {"error": "LLM_PROVIDER_ERROR", "message": "upstream 500"}),
          _ev("error", {"error": "OTHER", "message": "second"}),
          _ev("thread_lifecycle", {"phase": "completed", "task_id": "x"})],
         {"error": {"error": "LLM_PROVIDER_ERROR", "message": "upstream 500"}, "started": True,
          "completed": True, "ok": False, "task_id": "x"}),
        # Started only: not completed, not ok.
        ([_ev("thread_lifecycle", {"phase": "started", "task_id": "y"})],
         {"error": None, "started": True, "completed": False, "ok": False, "task_id": "y"}),
        # Malformed error payloads still become an error.
        ([SSEEvent(event="error", data="plain text", raw="plain text")],
         {"error": {"error": "UNKNOWN", "message": "plain text"}, "started": False, "completed": False,
          "ok": False, "task_id": None}),
        ([_ev("error", {"message": 5})],
         {"error": {"error": "UNKNOWN", "message": "5"}, "started": False, "completed": False,
          "ok": False, "task_id": None}),
        ([], {"error": None, "started": False, "completed": False, "ok": False, "task_id": None}),
    ],
)
def test_turn_result_lifecycle_and_errors(events, expected):
    result = aggregate_events(events)
    got = {"error": result.error, "started": result.started, "completed": result.completed,
           "ok": result.ok, "task_id": result.task_id}
    assert got == expected


@pytest.mark.parametrize(
    "usage_events, totals, ratio",
    [
        ([{"input_tokens": 10, "output_tokens": 2, "cache_hit_tokens": 8}], (10, 2, 8, 1), 0.8),
        ([{"input_tokens": "10", "output_tokens": 2.0, "cache_hit_tokens": None}], (10, 2, 0, 1), 0.0),
        ([{"input_tokens": True}, {"input_tokens": "n/a"}], (0, 0, 0, 2), None),
        (["not a dict"], (0, 0, 0, 0), None),
        ([], (0, 0, 0, 0), None),
    ],
)
def test_usage_totals(usage_events, totals, ratio):
    result = TurnResult()
    for data in usage_events:
        result.add(SSEEvent(event="usage", data=data))
    u = result.usage
    assert (u.input_tokens, u.output_tokens, u.cache_hit_tokens, u.calls) == totals
    assert u.cache_hit_ratio == ratio


def test_text_delta_tolerates_raw_and_missing_text():
    result = TurnResult()
    for data in ({"text": "a"}, "b", {"other": 1}, {"text": None}, 3):
        result.add(SSEEvent(event="text_delta", data=data))
    assert result.text == "ab"
