# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""EngineClient against a real HTTP server on 127.0.0.1 (http.server in a thread), no mocks."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import (
    KEY_HEADER,
    EngineClient,
    EngineConnectionError,
    EngineHTTPError,
    EngineKeyError,
    EngineProtocolError,
    EngineTimeoutError,
    EngineURLError,
    validate_base_url,
)

KEY = "s3cret-Engine-Key-7f2a"


def sse(kind, data):
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode("utf-8")


TURN = [
    sse("thread_lifecycle", {"phase": "started", "task_id": "eval-1-a"}),
    b": comment\r\n\r\n",
    sse("text_delta", {"text": "Paris is the capital "}),
    sse("heartbeat", {}),
    sse("tool_call", {"tool": "calculator", "input": {"expression": "2+2"}}),
    sse("tool_result", {"output": "4"}),
    sse("usage", {"input_tokens": 120, "output_tokens": 30, "cache_hit_tokens": 96}),
    sse("text_delta", {"text": "of France."}),
    sse("usage", {"input_tokens": 80, "output_tokens": 10, "cache_hit_tokens": 64}),
    sse("thread_lifecycle", {"phase": "completed", "task_id": "eval-1-a"}),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        self.server.requests.append({
            "method": self.command, "path": parts.path, "query": parse_qs(parts.query),
            "headers": dict(self.headers), "body": json.loads(body) if body else None,
        })
        route = self.server.routes.get((self.command, parts.path))
        if route is None:
            self.reply(404, {"error": "NOT_FOUND", "message": "no such route"})
            return
        route(self)

    do_GET = do_POST = _handle

    # helpers used by routes
    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, status=200, content_type="text/event-stream"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client hanging up on purpose is part of several tests


@pytest.fixture(scope="module")
def _httpd():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(_httpd):
    """The shared server with this test's routes only, and a fresh request log."""
    _httpd.routes = {}
    _httpd.requests = []
    return _httpd


def json_route(status, body, content_type="application/json"):
    return lambda h: h.reply(status, body, content_type)


def sse_route(chunks, status=200, delay=0.0):
    def route(h):
        h.start_chunked(status)
        for piece in chunks:
            h.chunk(piece)
            if delay:
                time.sleep(delay)
        h.end_chunked()
    return route


def split_awkwardly(blobs):
    """Re-cut the stream into 7-byte chunks so boundaries fall inside lines and CRLFs."""
    data = b"".join(blobs)
    return [data[i:i + 7] for i in range(0, len(data), 7)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- URL and key validation ---------------------------------------------------

@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:9001", "http://127.0.0.1:9001"),
        ("http://127.0.0.1:9001/", "http://127.0.0.1:9001"),
        ("https://engine.example.com/prefix/", "https://engine.example.com/prefix"),
        ("  http://[::1]:8000 ", "http://[::1]:8000"),
    ],
)
def test_validate_base_url(url, expected):
    assert validate_base_url(url) == expected


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("", "is empty"),
        (None, "is empty"),
        ("127.0.0.1:9001", "only http and https"),
        ("localhost:9001", "has scheme 'localhost'"),
        ("ftp://engine.example.com", "has scheme 'ftp'"),
        ("http://", "has no host"),
        ("http://:9001", "has no host"),
        ("http://host:99999", "malformed"),
        ("http://host:9001/?x=1", "query or fragment"),
        ("http://host:0", "port 0"),
    ],
)
def test_validate_base_url_rejects(url, fragment):
    with pytest.raises(EngineURLError) as exc:
        validate_base_url(url)
    assert fragment in str(exc.value)
    assert "http://127.0.0.1:9001" in str(exc.value)  # says what would be right


def test_url_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(EngineURLError) as exc:
        EngineClient("http://admin:hunter2@127.0.0.1:9001")
    assert "hunter2" not in str(exc.value)
    assert "credentials" in str(exc.value)


@pytest.mark.parametrize("bad_key", [KEY + "\n", " " + KEY, KEY + "\x00", "", "kéy\u2603" + KEY, 42])
def test_bad_key_is_refused_without_showing_it(bad_key):
    with pytest.raises(EngineKeyError) as exc:
        EngineClient("http://127.0.0.1:9001", key=bad_key)
    assert KEY not in str(exc.value)


def test_repr_hides_key():
    client = EngineClient("http://127.0.0.1:9001/", key=KEY, timeout=3)
    assert KEY not in repr(client)
    assert repr(client) == "EngineClient('http://127.0.0.1:9001', key=set, verify_tls=True, timeout=3.0)"
    assert client.has_key and client.base_url == "http://127.0.0.1:9001"
    assert "key=none" in repr(EngineClient("http://127.0.0.1:9001"))


# -- /health --------------------------------------------------------------------

OK_BODY = {"status": "ok", "uptime_seconds": 12.5,
           "subsystems": {"database": "ok", "llm_provider": "ok", "asset_directory": "ok"}}


@pytest.mark.parametrize(
    "status, body, content_type, ready, reason, failing",
    [
        (200, OK_BODY, "application/json", True, None, []),
        (503, {"status": "migrating", "subsystems": {"database": "error", "llm_provider": "ok"}},
         "application/json", False, "HTTP 503, status 'migrating', subsystems not ok: database=error", ["database"]),
        (200, {"status": "draining", "subsystems": {}}, "application/json", False,
         "HTTP 200 but status 'draining'", []),
        (503, {"status": "ok", "subsystems": {"llm_provider": "error"}}, "application/json", False,
         "status 'ok' but HTTP 503, subsystems not ok: llm_provider=error", ["llm_provider"]),
        (503, {"detail": "starting"}, "application/json", False, "HTTP 503, no status in the body", []),
        (200, b"<html>OK</html>", "text/html", False, "HTTP 200 with a body that is not JSON: '<html>OK</html>'", []),
        (200, [1, 2], "application/json", False, "HTTP 200 with a JSON body that is not an object: '[1, 2]'", []),
        (200, {"status": "ok", "subsystems": {"database": "ok", "llm_provider": "error"}}, "application/json",
         True, None, ["llm_provider"]),
    ],
)
def test_health(server, status, body, content_type, ready, reason, failing):
    server.routes[("GET", "/health")] = json_route(status, body, content_type)
    report = EngineClient(server.url, key=KEY, timeout=2).health()
    assert (report.ready, report.reason, report.status_code, report.failing_subsystems) == (
        ready, reason, status, failing)
    assert report.url == server.url + "/health"
    assert report.error is None
    assert KEY_HEADER not in server.requests[-1]["headers"]  # /health takes no key
    json.dumps(report.to_dict())


def test_health_ok_details(server):
    server.routes[("GET", "/health")] = json_route(200, OK_BODY)
    report = EngineClient(server.url).health()
    assert report.uptime_seconds == 12.5
    assert report.status == "ok"
    assert report.subsystems == OK_BODY["subsystems"]
    assert report.body == OK_BODY
    assert report.elapsed_ms is not None and report.elapsed_ms >= 0


def test_health_connection_refused_is_data():
    port = free_port()
    report = EngineClient(f"http://127.0.0.1:{port}", key=KEY, timeout=1).health()
    assert report.ready is False
    assert report.status_code is None
    assert report.reason == report.error
    assert f"http://127.0.0.1:{port}/health" in report.reason
    assert "Connection refused" in report.reason
    assert KEY not in report.reason


def test_health_timeout_is_data(server):
    release = threading.Event()
    server.routes[("GET", "/health")] = lambda h: (release.wait(2), h.reply(200, OK_BODY))
    started = time.monotonic()
    report = EngineClient(server.url, timeout=0.3).health()
    release.set()
    assert time.monotonic() - started < 1.5
    assert report.ready is False
    assert "no answer within 0.3s" in report.reason


# -- /execute -------------------------------------------------------------------

@pytest.mark.parametrize("awkward", [False, True])
def test_execute_aggregates_stream(server, awkward):
    chunks = split_awkwardly(TURN) if awkward else TURN
    server.routes[("POST", "/execute")] = sse_route(chunks)
    result = EngineClient(server.url, key=KEY).execute("What is the capital of France?", "eval-1-a")
    assert result.text == "Paris is the capital of France."
    assert result.tool_calls == [{"tool": "calculator", "input": {"expression": "2+2"}}]
    assert result.tool_results == [{"output": "4"}]
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cache_hit_tokens) == (200, 40, 160)
    assert result.usage.cache_hit_ratio == pytest.approx(0.8)
    assert result.started and result.completed and result.ok and result.error is None
    assert result.task_id == "eval-1-a"
    assert result.events == 9
    assert result.elapsed_ms is not None and result.elapsed_ms >= result.first_event_ms >= 0
    request = server.requests[-1]
    assert request["headers"][KEY_HEADER] == KEY
    assert request["body"] == {"message": "What is the capital of France?", "task_id": "eval-1-a",
                               "media": [], "direct": False}


def test_execute_with_renamed_field_media_and_direct(server):
    server.routes[("POST", "/execute")] = sse_route(TURN)
    client = EngineClient(server.url, key=KEY)
    client.execute("hi", "t-2", field="prompt", media=["a.png"], direct=True, extra_body={"mode": "x"})
    assert server.requests[-1]["body"] == {"prompt": "hi", "task_id": "t-2", "media": ["a.png"],
                                           "direct": True, "mode": "x"}


def test_execute_close_delimited_stream(server):
    """An HTTP/1.0-style answer: no length, no chunking, the end is the connection closing."""
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Connection", "close")
        h.end_headers()
        for piece in split_awkwardly(TURN):
            h.wfile.write(piece)
            h.wfile.flush()
        h.close_connection = True
    server.routes[("POST", "/execute")] = route
    result = EngineClient(server.url, key=KEY).execute("q", "t-3")
    assert result.ok and result.text == "Paris is the capital of France."


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_execute_yields_events_live(server, chunked):
    """The first event reaches the caller while the server still holds the rest of the turn."""
    release = threading.Event()

    def route(h):
        if chunked:
            h.start_chunked()
            h.chunk(TURN[0])
        else:
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(TURN[0])
            h.wfile.flush()
        # True only if the client saw the first event and let the turn go on.
        h.server.released_by_client = release.wait(1.5)
        for piece in TURN[1:]:
            h.chunk(piece) if chunked else h.wfile.write(piece)
        if chunked:
            h.end_chunked()
        else:
            h.close_connection = True
    server.routes[("POST", "/execute")] = route
    client = EngineClient(server.url, key=KEY)
    seen_before_release = []
    with client.stream_execute("q", "eval-1-a") as turn:
        for event in turn:
            if not release.is_set():
                seen_before_release.append(event.event)
                assert turn.result.started is True
                release.set()
    assert seen_before_release == ["thread_lifecycle"]
    assert server.released_by_client is True
    assert turn.finished and turn.result.completed


def test_stream_execute_consume_with_callback(server):
    server.routes[("POST", "/execute")] = sse_route(TURN)
    kinds = []
    result = EngineClient(server.url).execute("q", "t", on_event=lambda e: kinds.append(e.event))
    assert kinds == ["thread_lifecycle", "text_delta", "heartbeat", "tool_call", "tool_result", "usage",
                     "text_delta", "usage", "thread_lifecycle"]
    assert result.ok


def test_execute_error_event_is_data(server):
    server.routes[("POST", "/execute")] = sse_route([
        TURN[0], sse("error", {"error": "LLM_PROVIDER_ERROR", "message": "provider returned 500"}), TURN[-1]])
    result = EngineClient(server.url, key=KEY).execute("q", "t")
    assert result.error == {"error": "LLM_PROVIDER_ERROR", "message": "provider returned 500"}
    assert result.completed and not result.ok


@pytest.mark.parametrize(
    "status, body, content_type, code, message, retryable",
    [
        (401, {"error": "INVALID_KEY", "message": f"key {KEY} is not valid"}, "application/json",
         "INVALID_KEY", "key ******** is not valid", False),
        (503, {"error": "MIGRATION_REQUIRED", "message": "brain has migration 0003 unknown to 2.3.0"},
         "application/json", "MIGRATION_REQUIRED", "brain has migration 0003 unknown to 2.3.0", True),
        (422, {"error": "CONTEXT_OVERFLOW", "message": ""}, "application/json", "CONTEXT_OVERFLOW", "", False),
        (502, b"Bad gateway from proxy", "text/plain", None, "Bad gateway from proxy", False),
        (500, b"", "text/plain", None, "Internal Server Error", False),
    ],
)
def test_execute_http_errors(server, status, body, content_type, code, message, retryable):
    server.routes[("POST", "/execute")] = json_route(status, body, content_type)
    with pytest.raises(EngineHTTPError) as exc:
        EngineClient(server.url, key=KEY).execute("q", "t")
    err = exc.value
    assert (err.status, err.code, err.message, err.retryable) == (status, code, message, retryable)
    assert err.method == "POST" and err.url == server.url + "/execute"
    assert KEY not in str(err) and KEY not in repr(err)
    assert f"POST {server.url}/execute failed: HTTP {status}" in str(err)


def test_execute_wrong_content_type(server):
    server.routes[("POST", "/execute")] = json_route(200, {"text": "not a stream"})
    with pytest.raises(EngineProtocolError) as exc:
        EngineClient(server.url).execute("q", "t")
    assert "'application/json' instead of text/event-stream" in str(exc.value)


def test_execute_stream_broken_midway_keeps_partial(server):
    def route(h):
        h.start_chunked()
        h.chunk(TURN[0] + TURN[2])
        h.wfile.write(b"40\r\nevent: text_delta\n")  # announces 64 bytes, sends fewer, hangs up
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True
    server.routes[("POST", "/execute")] = route
    with pytest.raises(EngineConnectionError) as exc:
        EngineClient(server.url, key=KEY).execute("q", "t", timeout=2)
    assert not isinstance(exc.value, EngineTimeoutError)
    assert "broke" in str(exc.value)
    partial = exc.value.partial
    assert partial.started and not partial.completed
    assert partial.text == "Paris is the capital "
    assert KEY not in str(exc.value)


def test_execute_stalled_stream_times_out_with_partial(server):
    release = threading.Event()

    def route(h):
        h.start_chunked()
        h.chunk(TURN[0])
        release.wait(3)
    server.routes[("POST", "/execute")] = route
    started = time.monotonic()
    with pytest.raises(EngineTimeoutError) as exc:
        EngineClient(server.url).execute("q", "t", timeout=0.4)
    release.set()
    assert time.monotonic() - started < 2
    assert exc.value.partial.started is True
    assert exc.value.partial.completed is False


def test_execute_heartbeats_past_deadline_time_out(server):
    def route(h):
        h.start_chunked()
        h.chunk(TURN[0])
        for _beat in range(20):
            time.sleep(0.05)
            h.chunk(sse("heartbeat", {}))
        h.end_chunked()
    server.routes[("POST", "/execute")] = route
    with pytest.raises(EngineTimeoutError) as exc:
        EngineClient(server.url).execute("q", "t", timeout=0.3)
    assert "did not end within 0.3s" in str(exc.value)
    assert exc.value.partial.event_counts.get("heartbeat", 0) >= 1


def test_execute_connection_refused():
    port = free_port()
    with pytest.raises(EngineConnectionError) as exc:
        EngineClient(f"http://127.0.0.1:{port}", key=KEY, timeout=1).execute("q", "t")
    assert f"Cannot POST http://127.0.0.1:{port}/execute" in str(exc.value)
    assert KEY not in str(exc.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"task_id": ""}, "task_id"),
        ({"field": "task_id"}, "cannot carry the message"),
        ({"timeout": 0}, "positive number"),
    ],
)
def test_execute_argument_errors(kwargs, fragment):
    args = {"message": "q", "task_id": "t", **kwargs}
    with pytest.raises(Exception) as exc:
        EngineClient("http://127.0.0.1:9").execute(**args)
    assert fragment in str(exc.value)


# -- replay and memory -------------------------------------------------------------

def test_replay_sse(server):
    server.routes[("GET", "/execute/replay")] = sse_route(TURN[:3])
    events = EngineClient(server.url, key=KEY).replay(after_ms=1500)
    assert [e.event for e in events] == ["thread_lifecycle", "text_delta"]
    assert events[1].data == {"text": "Paris is the capital "}
    request = server.requests[-1]
    assert request["query"] == {"after": ["1500"]}
    assert request["headers"][KEY_HEADER] == KEY


def test_replay_json(server):
    server.routes[("GET", "/execute/replay")] = json_route(200, {"events": [
        {"event": "text_delta", "data": {"text": "a"}, "id": 5},
        {"type": "usage", "data": '{"input_tokens": 3}'},
    ]})
    events = EngineClient(server.url, key=KEY).replay()
    assert [(e.event, e.data, e.id) for e in events] == [
        ("text_delta", {"text": "a"}, "5"), ("usage", {"input_tokens": 3}, None)]
    assert server.requests[-1]["query"] == {"after": ["0"]}


def test_replay_rejects_negative_position():
    with pytest.raises(Exception) as exc:
        EngineClient("http://127.0.0.1:9").replay(after_ms=-1)
    assert "after_ms=-1" in str(exc.value)


def test_export_and_import_memory(server):
    bundle = {"version": 1, "episodes": [{"id": 1, "summary": "x"}], "knowledge": []}
    server.routes[("GET", "/memory/export")] = json_route(200, bundle)
    server.routes[("POST", "/memory/import")] = json_route(200, {"imported": 1})
    client = EngineClient(server.url, key=KEY)
    assert client.export_memory() == bundle
    assert client.import_memory(bundle) == {"imported": 1}
    assert server.requests[-1]["body"] == bundle
    assert all(r["headers"][KEY_HEADER] == KEY for r in server.requests)


@pytest.mark.parametrize(
    "route, error, fragment",
    [
        (json_route(200, b"not json", "text/plain"), EngineProtocolError, "not JSON: 'not json'"),
        (json_route(200, b"", "application/json"), EngineProtocolError, "empty body"),
        (json_route(401, {"error": "INVALID_KEY", "message": "wrong key"}), EngineHTTPError, "HTTP 401 INVALID_KEY"),
    ],
)
def test_export_memory_failures(server, route, error, fragment):
    server.routes[("GET", "/memory/export")] = route
    with pytest.raises(error) as exc:
        EngineClient(server.url, key=KEY).export_memory()
    assert fragment in str(exc.value)
