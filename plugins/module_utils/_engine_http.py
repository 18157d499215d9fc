# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The Engine's HTTP API, on ``requests``.

:class:`EngineClient` talks to one Engine: ``GET /health`` (no key,
reported as data), ``POST /execute`` (Server-Sent Events, parsed live by
:mod:`._sse`), ``GET /execute/replay``, ``GET /memory/export`` and
``POST /memory/import`` (with the ``X-Engine-Key`` header). The key is
never put in an exception, a repr or a message.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from ansible_collections.engineops.fleet.plugins.module_utils._sse import (
    SSEEvent,
    SSEParser,
    TurnResult,
    parse_data,
)

REQUESTS_IMPORT_ERROR: str | None
REQUESTS_IMPORT_TRACEBACK: str | None
try:
    import requests
    from requests.exceptions import (
        ConnectionError as _RequestsConnectionError,
        ConnectTimeout as _RequestsConnectTimeout,
        ReadTimeout as _RequestsReadTimeout,
        RequestException as _RequestException,
        SSLError as _RequestsSSLError,
        Timeout as _RequestsTimeout,
    )
    from urllib3.exceptions import HTTPError as _Urllib3Error
except ImportError as _exc:  # pragma: no cover - exercised only without requests
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = str(_exc)
    REQUESTS_IMPORT_TRACEBACK = traceback.format_exc()

    # Stand-ins with the same hierarchy, so the except clauses below stay valid.
    class _RequestException(Exception):  # type: ignore[no-redef]
        pass

    class _RequestsConnectionError(_RequestException):  # type: ignore[no-redef]
        pass

    class _RequestsTimeout(_RequestException):  # type: ignore[no-redef]
        pass

    class _RequestsConnectTimeout(_RequestsConnectionError, _RequestsTimeout):  # type: ignore[no-redef]
        pass

    class _RequestsReadTimeout(_RequestsTimeout):  # type: ignore[no-redef]
        pass

    class _RequestsSSLError(_RequestsConnectionError):  # type: ignore[no-redef]
        pass

    class _Urllib3Error(Exception):  # type: ignore[no-redef]
        pass
else:
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
    REQUESTS_IMPORT_TRACEBACK = None


KEY_HEADER = "X-Engine-Key"
DEFAULT_TIMEOUT = 10.0
DEFAULT_TURN_TIMEOUT = 300.0
_SNIPPET = 300
_REDACTED = "********"
_ERRNO_RE = re.compile(r"\[Errno -?\d+\][^'\")\]]*")


class EngineClientError(Exception):
    """Base class of the errors raised by this file."""


class EngineLibraryError(EngineClientError):
    """``requests`` is not installed."""


class EngineURLError(EngineClientError, ValueError):
    """The Engine URL is not an http(s) URL with a host."""


class EngineKeyError(EngineClientError, ValueError):
    """The Engine key cannot be sent as a header value (the message never shows it)."""


class EngineProtocolError(EngineClientError):
    """The Engine answered something the contract does not allow (wrong content type, not JSON)."""


class EngineConnectionError(EngineClientError):
    """The Engine could not be reached, or the connection broke.

    ``partial`` holds what a turn said before the connection broke, if any.
    """

    def __init__(self, message: str, partial: TurnResult | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class EngineTimeoutError(EngineConnectionError):
    """The Engine did not answer, or did not finish a turn, in time."""


class EngineHTTPError(EngineClientError):
    """The Engine answered with a non-2xx status; ``code`` is its ``error`` field when it sent one."""

    def __init__(self, method: str, url: str, status: int, code: str | None, message: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.message = message
        label = f"HTTP {status}" + (f" {code}" if code else "")
        super().__init__(f"{method} {url} failed: {label}: {message}" if message else f"{method} {url} failed: {label}")

    @property
    def retryable(self) -> bool:
        """503: the Engine is starting, migrating, draining or unavailable."""
        return self.status == 503


def validate_base_url(url: str) -> str:
    """``url`` normalised (no trailing ``/``); raises :class:`EngineURLError` unless it is http(s) with a host."""
    example = "expected e.g. 'http://127.0.0.1:9001'"
    if not isinstance(url, str) or not url.strip():
        raise EngineURLError(f"Engine URL {url!r} is empty; {example}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise EngineURLError(f"Engine URL {text!r} is malformed ({exc}); {example}") from None
    if parts.scheme not in ("http", "https"):
        scheme = parts.scheme or "none"
        raise EngineURLError(f"Engine URL {text!r} has scheme {scheme!r}; only http and https are supported, {example}")
    if parts.username is not None or parts.password is not None:
        # Do not echo the URL: it holds credentials.
        raise EngineURLError(
            "Engine URL must not carry credentials (user:password@); pass the Engine key as the key instead"
        )
    if not parts.hostname:
        raise EngineURLError(f"Engine URL {text!r} has no host; {example}")
    if parts.query or parts.fragment:
        raise EngineURLError(f"Engine URL {text!r} must not have a query or fragment; {example}")
    if port is not None and port == 0:
        raise EngineURLError(f"Engine URL {text!r} has port 0; {example}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _snippet(text: str, limit: int = _SNIPPET) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class HealthReport:
    """``GET /health`` as data: ``ready`` is HTTP 200 and body ``status == "ok"``; ``reason`` says why not."""

    url: str
    ready: bool
    reason: str | None = None
    status_code: int | None = None
    status: str | None = None
    body: Any = None
    subsystems: dict[str, Any] = field(default_factory=dict)
    failing_subsystems: list[str] = field(default_factory=list)
    uptime_seconds: float | None = None
    elapsed_ms: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ready": self.ready,
            "reason": self.reason,
            "status_code": self.status_code,
            "status": self.status,
            "body": self.body,
            "subsystems": dict(self.subsystems),
            "failing_subsystems": list(self.failing_subsystems),
            "uptime_seconds": self.uptime_seconds,
            "elapsed_ms": self.elapsed_ms,
            "error": self.error,
        }


def _health_from_answer(url: str, status_code: int, text: str, elapsed_ms: float) -> HealthReport:
    report = HealthReport(url=url, ready=False, status_code=status_code, elapsed_ms=elapsed_ms)
    try:
        body = json.loads(text)
    except ValueError:
        report.body = _snippet(text, 2000)
        report.reason = f"HTTP {status_code} with a body that is not JSON: {_snippet(text, 120)!r}"
        return report
    report.body = body
    if not isinstance(body, dict):
        report.reason = f"HTTP {status_code} with a JSON body that is not an object: {_snippet(text, 120)!r}"
        return report
    status = body.get("status")
    report.status = status if isinstance(status, str) else None
    subsystems = body.get("subsystems")
    if isinstance(subsystems, dict):
        report.subsystems = dict(subsystems)
        report.failing_subsystems = sorted(str(k) for k, v in subsystems.items() if v != "ok")
    uptime = body.get("uptime_seconds")
    if isinstance(uptime, (int, float)) and not isinstance(uptime, bool):
        report.uptime_seconds = float(uptime)
    report.ready = status_code == 200 and status == "ok"
    if not report.ready:
        problems = [f"HTTP {status_code}"]
        problems.append(f"status {status!r}" if "status" in body else "no status in the body")
        if report.failing_subsystems:
            failing = ", ".join(f"{k}={report.subsystems[k]}" for k in report.failing_subsystems)
            problems.append(f"subsystems not ok: {failing}")
        if status_code == 200 and status != "ok":
            report.reason = "HTTP 200 but " + ", ".join(problems[1:])
        elif status_code != 200 and status == "ok":
            report.reason = f"status 'ok' but HTTP {status_code}" + (
                ", " + ", ".join(problems[2:]) if len(problems) > 2 else ""
            )
        else:
            report.reason = ", ".join(problems)
    return report


def _describe_request_error(exc: BaseException, timeout: float | None) -> str:
    if isinstance(exc, _RequestsConnectTimeout):
        return f"connection timed out after {timeout}s"
    if isinstance(exc, (_RequestsReadTimeout, _RequestsTimeout)):
        return f"no answer within {timeout}s"
    if isinstance(exc, _RequestsSSLError):
        return (f"TLS error: {exc} (engine_ca_path names a CA bundle to trust, engine_validate_certs=false "
                "skips the check)")
    text = str(exc)
    match = _ERRNO_RE.search(text)
    if match:
        return match.group(0).strip()
    return text or type(exc).__name__


def _is_timeout(exc: BaseException) -> bool:
    """Whether a stream error is a timeout (requests wraps urllib3's read timeout in a ConnectionError)."""
    for candidate in (exc, *getattr(exc, "args", ())):
        if isinstance(candidate, (_RequestsTimeout, TimeoutError)) or "Timeout" in type(candidate).__name__:
            return True
    return False


class TurnStream:
    """The live events of one ``POST /execute`` turn.

    Iterate it to get each :class:`SSEEvent` as it arrives; ``result`` is
    the :class:`TurnResult` folded so far (complete once iteration ends).
    Leaving the ``with`` block or breaking out closes the connection; the
    Engine goes on with the turn server-side.
    """

    def __init__(self, client: EngineClient, response: Any, result: TurnResult, started_ms: float,
                 timeout: float, url: str) -> None:
        self._client = client
        self._response = response
        self.result = result
        self._started_ms = started_ms
        self._timeout = timeout
        self._url = url
        self._iterated = False
        self.finished = False

    def __enter__(self) -> TurnStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.result.elapsed_ms is None:
            self.result.elapsed_ms = _now_ms() - self._started_ms
        self._response.close()

    def __iter__(self) -> Iterator[SSEEvent]:
        if self._iterated:
            raise EngineClientError(f"The event stream of {self._url} can be iterated only once")
        self._iterated = True
        try:
            for event in self._client._iter_events(self._response, self._started_ms, self._timeout,
                                                   self._url, self.result):
                self.result.add(event)
                if self.result.first_event_ms is None:
                    self.result.first_event_ms = _now_ms() - self._started_ms
                yield event
            self.finished = True
        finally:
            self.result.elapsed_ms = _now_ms() - self._started_ms
            self._response.close()

    def consume(self, on_event: Callable[[SSEEvent], None] | None = None) -> TurnResult:
        """Read the stream to its end and return the result."""
        with self:
            for event in self:
                if on_event is not None:
                    on_event(event)
        return self.result


class EngineClient:
    """One Engine's HTTP API.

    ``timeout`` bounds connecting and each answer of the short calls;
    turns have their own ``timeout`` (the whole turn). ``verify_tls`` may
    also be the path of a CA bundle.
    """

    def __init__(self, base_url: str, key: str | None = None, verify_tls: bool | str = True,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if not HAS_REQUESTS:
            raise EngineLibraryError(
                f"The Python library requests is required to talk to an Engine: {REQUESTS_IMPORT_ERROR}"
            )
        self._base = validate_base_url(base_url)
        if key is not None:
            if not isinstance(key, str) or key == "":
                raise EngineKeyError("Engine key must be a non-empty string (or None for no key)")
            if key != key.strip() or any(ord(c) < 32 or ord(c) == 127 for c in key):
                raise EngineKeyError(
                    "Engine key contains whitespace at its ends or control characters; it cannot be sent "
                    f"as the {KEY_HEADER} header (the key is not shown)"
                )
            try:
                key.encode("latin-1")
            except UnicodeEncodeError:
                raise EngineKeyError(
                    f"Engine key contains characters an HTTP header cannot carry; it cannot be sent as the "
                    f"{KEY_HEADER} header (the key is not shown)"
                ) from None
        self._key = key
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise EngineClientError(f"Timeout {timeout!r} for {self._base} must be a positive number of seconds")
        self.timeout = float(timeout)
        self.verify_tls = verify_tls
        self._session = requests.Session()
        self._session.verify = verify_tls

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def __repr__(self) -> str:
        key = "set" if self._key is not None else "none"
        return f"EngineClient({self._base!r}, key={key}, verify_tls={self.verify_tls!r}, timeout={self.timeout})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._key and self._key in text:
            return text.replace(self._key, _REDACTED)
        return text

    def url(self, path: str) -> str:
        return self._base + path

    def _headers(self, auth: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if extra:
            headers.update(extra)
        if auth and self._key is not None:
            headers[KEY_HEADER] = self._key
        return headers

    def _send(self, method: str, path: str, *, auth: bool = True, timeout: float | None = None,
              read_timeout: float | None = None, stream: bool = False, json_body: Any = None,
              params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        url = self.url(path)
        connect = self.timeout if timeout is None else timeout
        read = connect if read_timeout is None else read_timeout
        try:
            return self._session.request(
                method, url, headers=self._headers(auth, headers), json=json_body, params=params,
                timeout=(connect, read), stream=stream, allow_redirects=False,
                verify=self.verify_tls,  # per request: REQUESTS_CA_BUNDLE in the environment beats Session.verify
            )
        except _RequestsConnectTimeout as exc:
            raise EngineTimeoutError(self._redact(
                f"Cannot {method} {url}: {_describe_request_error(exc, connect)}")) from None
        except _RequestsTimeout as exc:
            raise EngineTimeoutError(self._redact(
                f"Cannot {method} {url}: {_describe_request_error(exc, read)}")) from None
        except _RequestException as exc:
            raise EngineConnectionError(self._redact(
                f"Cannot {method} {url}: {_describe_request_error(exc, connect)}")) from None

    def _raise_for_status(self, method: str, response: Any) -> None:
        if 200 <= response.status_code < 300:
            return
        url = response.url or ""
        try:
            text = response.text
        except _RequestException:
            text = ""
        code = None
        message = ""
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code = body["error"]
            message = str(body.get("message") or "")
        else:
            message = _snippet(text) or (response.reason or "")
        response.close()
        raise EngineHTTPError(method, url, response.status_code, code, self._redact(message))

    def _json(self, method: str, response: Any) -> Any:
        text = response.text
        if text.strip() == "":
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise EngineProtocolError(
                f"{method} {response.url} answered HTTP {response.status_code} with a body that is not JSON: "
                f"{self._redact(_snippet(text, 120))!r}"
            ) from None

    def _iter_chunks(self, response: Any) -> Iterator[bytes]:
        raw = response.raw
        read1 = getattr(raw, "read1", None)
        if read1 is not None:
            # urllib3 2: what has arrived, without waiting for a full buffer.
            while True:
                data = read1(65536)
                if not data:
                    return
                yield data
        elif getattr(raw, "chunked", False):
            yield from response.iter_content(chunk_size=None)
        else:
            yield from response.iter_content(chunk_size=1)

    def _iter_events(self, response: Any, started_ms: float, timeout: float, url: str,
                     partial: TurnResult | None) -> Iterator[SSEEvent]:
        parser = SSEParser()
        deadline = started_ms + timeout * 1000.0
        try:
            for chunk in self._iter_chunks(response):
                yield from parser.feed(chunk)
                if _now_ms() > deadline:
                    raise EngineTimeoutError(
                        f"The event stream of {url} did not end within {timeout}s", partial=partial)
        except EngineClientError:
            raise
        except (_RequestException, _Urllib3Error, OSError) as exc:  # requests wraps only some of urllib3's errors
            if _is_timeout(exc):
                raise EngineTimeoutError(self._redact(
                    f"The event stream of {url} stalled: no data within {timeout}s"), partial=partial) from None
            raise EngineConnectionError(self._redact(
                f"The event stream of {url} broke: {_describe_request_error(exc, timeout)}"),
                partial=partial) from None
        yield from parser.close()

    # -- API --------------------------------------------------------------

    def health(self, timeout: float | None = None) -> HealthReport:
        """``GET /health`` (no key). Never raises for the Engine's state or an unreachable Engine."""
        url = self.url("/health")
        wait = self.timeout if timeout is None else timeout
        started = _now_ms()
        try:
            response = self._send("GET", "/health", auth=False, timeout=wait)
        except EngineConnectionError as exc:
            reason = str(exc)
            return HealthReport(url=url, ready=False, reason=reason, error=reason, elapsed_ms=_now_ms() - started)
        try:
            text = response.text
        finally:
            response.close()
        return _health_from_answer(url, response.status_code, text, _now_ms() - started)

    def stream_execute(self, message: str, task_id: str, field: str = "message",
                       media: Sequence[Any] | None = None, direct: bool = False,
                       timeout: float = DEFAULT_TURN_TIMEOUT,
                       extra_body: Mapping[str, Any] | None = None) -> TurnStream:
        """Start a turn; return a :class:`TurnStream` to iterate its events live.

        ``field`` names the body field carrying ``message`` (a major
        release may rename it). Raises :class:`EngineHTTPError` when the
        Engine refuses the turn (401, 503 ``MIGRATION_REQUIRED``...).
        """
        if not isinstance(message, str):
            raise EngineClientError(f"Turn message must be a string, got {type(message).__name__}")
        if not isinstance(task_id, str) or not task_id:
            raise EngineClientError(f"Turn task_id {task_id!r} must be a non-empty string")
        if not isinstance(field, str) or not field or field in ("task_id", "media", "direct"):
            raise EngineClientError(
                f"Request field {field!r} cannot carry the message; expected a name such as 'message' or 'prompt'")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise EngineClientError(f"Turn timeout {timeout!r} must be a positive number of seconds")
        body: dict[str, Any] = {}
        if extra_body:
            body.update(extra_body)
        body.update({field: message, "task_id": task_id, "media": list(media or []), "direct": bool(direct)})
        started = _now_ms()
        response = self._send(
            "POST", "/execute", timeout=min(self.timeout, float(timeout)), read_timeout=float(timeout),
            stream=True, json_body=body,
            headers={"Accept": "text/event-stream", "Accept-Encoding": "identity", "Cache-Control": "no-cache"},
        )
        self._raise_for_status("POST", response)
        content_type = response.headers.get("Content-Type", "")
        media_type = content_type.split(";")[0].strip().lower()
        if media_type and media_type != "text/event-stream":
            try:
                text = response.text
            finally:
                response.close()
            raise EngineProtocolError(
                f"POST {response.url} answered HTTP {response.status_code} with {content_type!r} instead of "
                f"text/event-stream: {self._redact(_snippet(text, 120))!r}"
            )
        result = TurnResult(task_id=task_id)
        return TurnStream(self, response, result, started, float(timeout), response.url)

    def execute(self, message: str, task_id: str, field: str = "message", media: Sequence[Any] | None = None,
                direct: bool = False, timeout: float = DEFAULT_TURN_TIMEOUT,
                extra_body: Mapping[str, Any] | None = None,
                on_event: Callable[[SSEEvent], None] | None = None) -> TurnResult:
        """Run one turn to its end and return its :class:`TurnResult` (with ``elapsed_ms``).

        An ``error`` event is data (``result.error``); a broken or stalled
        stream raises :class:`EngineConnectionError` / :class:`EngineTimeoutError`
        with the partial result in ``partial``.
        """
        stream = self.stream_execute(message, task_id, field=field, media=media, direct=direct,
                                     timeout=timeout, extra_body=extra_body)
        return stream.consume(on_event)

    def replay(self, after_ms: int = 0, timeout: float | None = None) -> list[SSEEvent]:
        """``GET /execute/replay?after=<ms>``: the buffered events (SSE, or a JSON list of events)."""
        if isinstance(after_ms, bool) or not isinstance(after_ms, (int, float)) or after_ms < 0:
            raise EngineClientError(f"Replay position after_ms={after_ms!r} must be a non-negative number of ms")
        wait = self.timeout if timeout is None else float(timeout)
        started = _now_ms()
        response = self._send("GET", "/execute/replay", params={"after": int(after_ms)}, timeout=wait,
                              stream=True, headers={"Accept": "text/event-stream, application/json",
                                                    "Accept-Encoding": "identity"})
        try:
            self._raise_for_status("GET", response)
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media_type == "application/json":
                return _events_from_json(self._json("GET", response), response.url)
            return list(self._iter_events(response, started, wait, response.url, None))
        finally:
            response.close()

    def export_memory(self, timeout: float | None = None) -> Any:
        """``GET /memory/export``: the memory bundle (parsed JSON)."""
        response = self._send("GET", "/memory/export", timeout=timeout)
        try:
            self._raise_for_status("GET", response)
            bundle = self._json("GET", response)
        finally:
            response.close()
        if bundle is None:
            raise EngineProtocolError(f"GET {response.url} answered HTTP {response.status_code} with an empty body")
        return bundle

    def import_memory(self, bundle: Any, timeout: float | None = None) -> Any:
        """``POST /memory/import`` with ``bundle``; returns the Engine's JSON answer (``None`` when empty)."""
        response = self._send("POST", "/memory/import", json_body=bundle, timeout=timeout)
        try:
            self._raise_for_status("POST", response)
            return self._json("POST", response)
        finally:
            response.close()


def _events_from_json(body: Any, url: str) -> list[SSEEvent]:
    items = body.get("events") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise EngineProtocolError(f"GET {url} answered JSON that is not a list of events")
    events = []
    for item in items:
        if not isinstance(item, dict):
            raise EngineProtocolError(f"GET {url} answered an event that is not an object: {_snippet(repr(item), 120)}")
        data = item.get("data")
        if isinstance(data, str):
            raw = data
            data = parse_data(data)
        else:
            raw = json.dumps(data)
        kind = item.get("event") or item.get("type") or "message"
        event_id = item.get("id")
        events.append(SSEEvent(event=str(kind), data=data, raw=raw, id=None if event_id is None else str(event_id)))
    return events
