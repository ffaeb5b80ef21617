"""A real local HTTP server that speaks the Anthropic Messages API, for tests.

The Anthropic API is the one thing outside this machine that the test suite replaces, and it is replaced
at the protocol level: the project's code talks to this server through the real ``anthropic`` SDK, so the
SDK's request building, SSE parsing, stream accumulation and error classes are all exercised for real.

Usage::

    with FakeAnthropic() as fake:
        fake.script([reply(text("Hello")), error(status=529, type="overloaded_error")])
        client = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
        ...
        assert fake.requests[0].json["model"] == "claude-sonnet-5-5"

Scripted responses are consumed in order, one per ``POST /v1/messages``. A response is a :class:`Reply`
(see :func:`reply`, :func:`text`, :func:`tool_use`), an :class:`ErrorReply` (see :func:`error`), or a
callable ``handler(request) -> Reply | ErrorReply`` for scripts that react to what was sent. A persistent
handler (:meth:`FakeAnthropic.handle_with`) answers whatever the queue does not. When nothing is left to
answer with, the server answers 500 with a message that says so, so the test fails loudly.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ErrorReply",
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "error",
    "reply",
    "text",
    "tool_use",
]

DEFAULT_MODEL = "claude-sonnet-5-5"

_ERROR_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class RecordedRequest:
    """One request the server received, as the test sees it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any

    @property
    def betas(self) -> list[str]:
        """Return the beta features named in the ``anthropic-beta`` header (comma separated)."""
        raw = self.headers.get("anthropic-beta", "")
        return [part.strip() for part in raw.split(",") if part.strip()]

    @property
    def streaming(self) -> bool:
        return bool(isinstance(self.json, dict) and self.json.get("stream"))

    @property
    def last_message(self) -> dict[str, Any] | None:
        messages = self.json.get("messages") if isinstance(self.json, dict) else None
        return messages[-1] if messages else None

    def tool_results(self) -> list[dict[str, Any]]:
        """Return the ``tool_result`` blocks of the last message (what a computer-use loop reacts to)."""
        message = self.last_message
        if not message or not isinstance(message.get("content"), list):
            return []
        return [block for block in message["content"] if block.get("type") == "tool_result"]


@dataclass
class ErrorReply:
    """An API error: an HTTP error status, or (``in_stream=True``) an SSE ``error`` event after a 200."""

    status: int = 500
    type: str = "api_error"
    message: str = "Internal server error"
    headers: dict[str, str] = field(default_factory=dict)
    in_stream: bool = False

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


@dataclass
class Reply:
    """A successful model answer.

    ``stop_reason`` defaults to ``tool_use`` when a tool_use block is present, else ``end_turn``.
    ``chunk_size`` splits text and tool-input JSON into deltas of that many characters; ``chunk_delay``
    sleeps between deltas so a test can observe (or interrupt) a stream in progress. ``then_error``
    ends a streamed reply with an in-stream ``error`` event after the content (like an overload
    mid-answer) instead of ``message_delta``/``message_stop``.
    """

    content: list[dict[str, Any]]
    stop_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    chunk_size: int | None = None
    chunk_delay: float = 0.0
    then_error: ErrorReply | None = None

    def resolved_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        if any(block.get("type") == "tool_use" for block in self.content):
            return "tool_use"
        return "end_turn"

    def resolved_usage(self) -> dict[str, int]:
        usage = {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        usage.update(self.usage)
        return usage


Handler = Callable[[RecordedRequest], "Reply | ErrorReply"]
Scripted = Reply | ErrorReply | Handler


def text(value: str) -> dict[str, Any]:
    """Return a text content block."""
    return {"type": "text", "text": value}


def tool_use(
    name: str, input: dict[str, Any], id: str | None = None, *, toolset_name: str | None = None
) -> dict[str, Any]:
    """Return a tool_use content block (``toolset_name`` for members of a toolset such as ``computer``)."""
    block: dict[str, Any] = {
        "type": "tool_use",
        "id": id or f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": input,
    }
    if toolset_name is not None:
        block["toolset_name"] = toolset_name
    return block


def reply(
    *content: dict[str, Any] | str,
    stop_reason: str | None = None,
    usage: dict[str, int] | None = None,
    model: str | None = None,
    chunk_size: int | None = None,
    chunk_delay: float = 0.0,
    then_error: ErrorReply | None = None,
) -> Reply:
    """Return a :class:`Reply`; bare strings become text blocks."""
    blocks = [text(item) if isinstance(item, str) else item for item in content]
    return Reply(
        content=blocks,
        stop_reason=stop_reason,
        usage=dict(usage or {}),
        model=model,
        chunk_size=chunk_size,
        chunk_delay=chunk_delay,
        then_error=then_error,
    )


def error(
    status: int = 500,
    type: str | None = None,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    in_stream: bool = False,
) -> ErrorReply:
    """Return an :class:`ErrorReply`; ``type`` defaults to the API's error type for ``status``."""
    error_type = type or _ERROR_TYPES_BY_STATUS.get(status, "api_error")
    return ErrorReply(
        status=status,
        type=error_type,
        message=message or f"Fake {error_type}",
        headers={k.lower(): v for k, v in (headers or {}).items()},
        in_stream=in_stream,
    )


def _chunks(value: str, size: int | None) -> Iterator[str]:
    if not size or size <= 0 or len(value) <= size:
        yield value
        return
    for start in range(0, len(value), size):
        yield value[start : start + size]


class _ClientGone(Exception):
    """The client closed the connection (an interrupted stream): stop writing, quietly."""


class FakeAnthropic:
    """A scripted Anthropic Messages API on ``127.0.0.1:<free port>``, running in a background thread."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: deque[Scripted] = deque()
        self._fallback: Handler | None = None
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self.unanswered: list[RecordedRequest] = []
        self.handler_errors: list[Exception] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeAnthropic:
        fake = self

        class _Handler(_RequestHandler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-anthropic",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Return the URL to give the SDK as ``base_url``."""
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not running; use it as a context manager.")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- scripting -------------------------------------------------------------------------------
    def add_response(self, response: Scripted | list[dict[str, Any]]) -> None:
        """Queue one response (a list of content blocks is shorthand for ``reply(*blocks)``)."""
        if isinstance(response, list):
            response = reply(*response)
        with self._lock:
            self._queue.append(response)

    def script(self, responses: Iterable[Scripted | list[dict[str, Any]]]) -> None:
        """Queue several responses, answered in order."""
        for response in responses:
            self.add_response(response)

    def handle_with(self, handler: Handler | None) -> None:
        """Answer every request the queue does not with ``handler(request)`` (``None`` removes it)."""
        with self._lock:
            self._fallback = handler

    @property
    def pending(self) -> int:
        """Return how many queued responses have not been used yet."""
        with self._lock:
            return len(self._queue)

    # --- inspection ------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Return a snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.rstrip("/").endswith("/v1/messages")]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Return the requests once at least ``n`` arrived; raise AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"FakeAnthropic: expected {n} request(s) within {timeout}s, "
                        f"got {len(self._requests)}."
                    )
                self._lock.wait(remaining)
            return list(self._requests)

    # --- used by the request handler -------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _next_response(self, request: RecordedRequest) -> Reply | ErrorReply:
        with self._lock:
            scripted: Scripted | None = self._queue.popleft() if self._queue else self._fallback
            number = len(self._requests)
            if scripted is None:
                self.unanswered.append(request)
        if scripted is None:
            return ErrorReply(
                status=500,
                type="api_error",
                message=(
                    f"FakeAnthropic script exhausted: request #{number} ({request.method} {request.path}) "
                    "has no scripted response. The test expected fewer model calls than the code made."
                ),
            )
        if isinstance(scripted, Reply | ErrorReply):
            return scripted
        try:
            return scripted(request)
        except Exception as exc:  # a bug in the test's handler: make it visible, not a dropped connection
            with self._lock:
                self.handler_errors.append(exc)
            return ErrorReply(
                status=500,
                type="api_error",
                message=f"FakeAnthropic handler raised {type(exc).__name__}: {exc}",
            )

    def _message_id(self) -> str:
        return f"msg_fake{next(self._ids):06d}"


class _RequestHandler(BaseHTTPRequestHandler):
    owner: FakeAnthropic
    protocol_version = "HTTP/1.1"  # keep-alive and chunked SSE, like the real API

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client went away between keep-alive requests: normal for an interrupted stream

    # --- entry points ----------------------------------------------------------------------------
    def do_POST(self) -> None:
        request = self._read_request()
        self.owner._record(request)
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path.endswith("/v1/messages/count_tokens"):
                self._count_tokens(request)
            elif path.endswith("/v1/messages"):
                self._messages(request)
            else:
                self._send_error(
                    ErrorReply(404, "not_found_error", f"FakeAnthropic does not serve {self.path}")
                )
        except _ClientGone:
            self.close_connection = True

    def do_GET(self) -> None:
        request = self._read_request()
        self.owner._record(request)
        self._send_error(ErrorReply(404, "not_found_error", f"FakeAnthropic does not serve GET {self.path}"))

    # --- requests --------------------------------------------------------------------------------
    def _read_request(self) -> RecordedRequest:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        return RecordedRequest(method=self.command, path=self.path, headers=headers, body=body, json=parsed)

    def _count_tokens(self, request: RecordedRequest) -> None:
        size = len(request.body)
        self._send_json(200, {"input_tokens": max(1, size // 4)})

    def _messages(self, request: RecordedRequest) -> None:
        if not isinstance(request.json, dict):
            self._send_error(ErrorReply(400, "invalid_request_error", "Request body is not a JSON object."))
            return
        response = self.owner._next_response(request)
        if isinstance(response, ErrorReply):
            if response.in_stream and request.streaming:
                self._stream_error_only(response)
            else:
                self._send_error(response)
            return
        model = response.model or request.json.get("model") or DEFAULT_MODEL
        if request.streaming:
            self._stream(response, model)
        else:
            self._send_json(200, self._message_json(response, model), {"request-id": self._request_id()})

    # --- plain JSON ------------------------------------------------------------------------------
    def _message_json(self, response: Reply, model: str) -> dict[str, Any]:
        return {
            "id": self.owner._message_id(),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [dict(block) for block in response.content],
            "stop_reason": response.resolved_stop_reason(),
            "stop_sequence": None,
            "usage": response.resolved_usage(),
        }

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._write(data)

    def _send_error(self, response: ErrorReply) -> None:
        headers = {"request-id": self._request_id(), **response.headers}
        self._send_json(response.status, response.body(), headers)

    @staticmethod
    def _request_id() -> str:
        return f"req_fake{uuid.uuid4().hex[:16]}"

    # --- SSE -------------------------------------------------------------------------------------
    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", self._request_id())
        self.end_headers()

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        data = f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()
        self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise _ClientGone from exc

    def _stream_error_only(self, response: ErrorReply) -> None:
        self._start_stream()
        self._event("error", response.body())
        self._end_stream()

    def _stream(self, response: Reply, model: str) -> None:
        usage = response.resolved_usage()
        delay = response.chunk_delay
        self._start_stream()
        start_usage = dict(usage, output_tokens=1)
        self._event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.owner._message_id(),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        self._event("ping", {"type": "ping"})
        for index, block in enumerate(response.content):
            self._stream_block(index, block, response.chunk_size, delay)
        if response.then_error is not None:
            self._event("error", response.then_error.body())
            self._end_stream()
            return
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": response.resolved_stop_reason(), "stop_sequence": None},
                "usage": {
                    "input_tokens": usage["input_tokens"],
                    "output_tokens": usage["output_tokens"],
                    "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                    "cache_read_input_tokens": usage["cache_read_input_tokens"],
                },
            },
        )
        self._event("message_stop", {"type": "message_stop"})
        self._end_stream()

    def _stream_block(self, index: int, block: dict[str, Any], chunk_size: int | None, delay: float) -> None:
        kind = block.get("type")
        if kind == "text":
            self._event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            for piece in _chunks(block.get("text", ""), chunk_size):
                self._pause(delay)
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
        elif kind == "tool_use":
            start = {key: value for key, value in block.items() if key != "input"}
            start["input"] = {}
            self._event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
            )
            for piece in _chunks(json.dumps(block.get("input", {})), chunk_size):
                self._pause(delay)
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
        else:
            # Other block kinds (thinking, server tools) are sent whole; enough for the SDK to accumulate.
            self._event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        self._event("content_block_stop", {"type": "content_block_stop", "index": index})

    @staticmethod
    def _pause(delay: float) -> None:
        if delay > 0:
            time.sleep(delay)
