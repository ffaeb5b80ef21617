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

Usage is computed from what was sent, as the API does (a scripted ``usage`` key overrides the computed
value of that key): see :class:`PromptCache` for the token counting and the prompt-caching rules, so tests
and benchmarks measure the real effect of a request's shape on ``cache_read_input_tokens`` and
``cache_creation_input_tokens``. ``FakeAnthropic(cache=False)`` answers as if no breakpoint was set (every
input token uncached), for "the same run with caching off".
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import struct
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "ErrorReply",
    "FakeAnthropic",
    "PromptCache",
    "RecordedRequest",
    "Reply",
    "RequestRejected",
    "error",
    "png_bytes",
    "reply",
    "text",
    "tool_use",
]

DEFAULT_MODEL = "claude-sonnet-5-5"
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

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
    #: The usage the server answered with (set once the answer is known; None for errors).
    usage: dict[str, int] | None = None

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

    def resolved_usage(self, computed: dict[str, int] | None = None) -> dict[str, int]:
        """Return the usage to answer with: ``computed`` (from the request) with scripted keys overriding."""
        usage = dict(computed) if computed is not None else {key: 0 for key in USAGE_KEYS}
        if computed is None or "output_tokens" not in computed:
            usage["output_tokens"] = output_tokens(self.content)
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


# --- token counting and prompt caching ----------------------------------------------------------------

#: Characters per token for text (the API's tokenizer averages about this for English and JSON).
CHARS_PER_TOKEN = 4
#: An image costs about width x height / 750 tokens (Anthropic's vision documentation).
PIXELS_PER_TOKEN = 750
#: Counted for an image the fake cannot measure (a URL or file source): about the largest image.
UNMEASURED_IMAGE_TOKENS = 1600


class RequestRejected(Exception):
    """The request breaks a rule the real API enforces: answered with a 400 ``invalid_request_error``."""


def text_tokens(value: str) -> int:
    return math.ceil(len(value) / CHARS_PER_TOKEN)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(item) for item in value]
    return value


def image_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) of a PNG, GIF, JPEG or WebP image; raise RequestRejected otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if chunk == b"VP8 ":
            width, height = struct.unpack("<HH", data[26:30])
            return int(width) & 0x3FFF, int(height) & 0x3FFF
        if chunk == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data[:2] == b"\xff\xd8":
        index = 2
        while index + 9 < len(data):
            if data[index] != 0xFF:
                index += 1
                continue
            marker = data[index + 1]
            length = int.from_bytes(data[index + 2 : index + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[index + 5 : index + 9])
                return int(width), int(height)
            index += 2 + length
    raise RequestRejected("Could not process image")


def image_tokens(block: dict[str, Any]) -> int:
    """Return an image block's tokens: width x height / 750, rounded up."""
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return UNMEASURED_IMAGE_TOKENS
    raw = str(source.get("data") or "")
    try:
        head = base64.b64decode(raw[:65536] + "=" * (-len(raw[:65536]) % 4), validate=False)
    except ValueError:
        raise RequestRejected("Could not process image") from None
    width, height = image_size(head)
    return math.ceil(width * height / PIXELS_PER_TOKEN)


def block_tokens(block: Any) -> int:
    """Return the input tokens of one content block (text ~4 characters a token, images by their area)."""
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return text_tokens(_canonical(block))
    kind = block.get("type")
    if kind == "text":
        return text_tokens(str(block.get("text") or ""))
    if kind == "image":
        return image_tokens(block)
    if kind == "tool_use":
        return text_tokens(str(block.get("name") or "") + _canonical(block.get("input") or {}))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return sum(block_tokens(item) for item in content)
        return text_tokens(str(content or ""))
    return text_tokens(_canonical(_without_cache_control(block)))


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """Return a valid PNG of ``width`` x ``height`` (for tests that send screenshots); ``seed`` varies it."""
    row = bytes([0]) + bytes((seed + x) % 256 for x in range(width * 3))
    raw = row * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def output_tokens(content: list[dict[str, Any]]) -> int:
    """Return the output tokens of a reply's content (at least 1, as a real reply has)."""
    return max(1, sum(block_tokens(block) for block in content))


def _breakpoints_in(block: Any) -> int:
    """Return how many ``cache_control`` markers a block carries (a tool_result's items included)."""
    if not isinstance(block, dict):
        return 0
    found = 1 if block.get("cache_control") else 0
    if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        found += sum(_breakpoints_in(item) for item in block["content"])
    return found


@dataclass
class _Block:
    key: str  # the hash of the whole prefix ending with this block
    tokens: int
    breakpoint: bool


class PromptCache:
    """Anthropic's prompt cache, by its documented rules, with the token counts of :func:`block_tokens`.

    - A request is a sequence of blocks in the order tools -> system -> messages (each tool definition,
      each system block, each content block of each message; a string is one block).
    - A block with ``cache_control`` is a breakpoint (a marker on an item inside a ``tool_result`` makes
      that tool_result one); a top-level ``cache_control`` (automatic caching) marks the last block. More
      than ``max_breakpoints`` (4) markers is a 400.
    - The prefix ending at each breakpoint is written to the cache (kept ``ttl`` seconds, refreshed when
      read or written again), unless it is shorter than ``min_tokens``.
    - A lookup checks each breakpoint and up to ``lookback`` (20) blocks before it, nearest first, for a
      cached prefix ending there; the longest hit is read.
    - ``cache_read_input_tokens`` is the hit's prefix; ``cache_creation_input_tokens`` the rest up to the
      last breakpoint (when that prefix is long enough to be cached); ``input_tokens`` the remainder.

    The minimum depends on the model in the real API (512 tokens for the Opus 5 and Fable 5 families,
    1,024 for Sonnet 5 and 5.5, 4,096 for Opus 4.5 and 4.6 and Haiku 4.5); the fake uses one minimum for
    every model, 1,024 by default. Entries are per model (the model name seeds every prefix hash).
    """

    def __init__(
        self,
        *,
        min_tokens: int = 1024,
        lookback: int = 20,
        max_breakpoints: int = 4,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_tokens = min_tokens
        self.lookback = lookback
        self.max_breakpoints = max_breakpoints
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[str, float] = {}
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def blocks(self, body: dict[str, Any]) -> list[_Block]:
        """Return the request's blocks with their prefix hashes. Raise RequestRejected for bad requests."""
        items: list[tuple[str, Any]] = []
        for tool in body.get("tools") or []:
            items.append(("tool", tool))
        system = body.get("system")
        if isinstance(system, str):
            if system:
                items.append(("system", {"type": "text", "text": system}))
        elif isinstance(system, list):
            items.extend(("system", block) for block in system)
        for message in body.get("messages") or []:
            role = str(message.get("role")) if isinstance(message, dict) else "?"
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                items.append((role, {"type": "text", "text": content}))
            elif isinstance(content, list):
                items.extend((role, block) for block in content)
        markers = sum(_breakpoints_in(block) for _, block in items) + (1 if body.get("cache_control") else 0)
        if markers > self.max_breakpoints:
            raise RequestRejected(
                f"A maximum of {self.max_breakpoints} blocks with cache_control may be provided. Found {markers}."
            )
        digest = hashlib.sha256(str(body.get("model") or "").encode())
        blocks = []
        for role, block in items:
            digest.update(
                role.encode() + b"\x00" + _canonical(_without_cache_control(block)).encode() + b"\x00"
            )
            blocks.append(_Block(digest.hexdigest(), block_tokens(block), _breakpoints_in(block) > 0))
        if body.get("cache_control") and blocks:
            blocks[-1].breakpoint = True
        return blocks

    def usage(self, body: dict[str, Any], *, enabled: bool = True) -> dict[str, int]:
        """Return the input side of the usage for ``body`` and update the cache (when ``enabled``)."""
        blocks = self.blocks(body)
        prefix: list[int] = list(itertools.accumulate(block.tokens for block in blocks))
        total = prefix[-1] if prefix else 0
        breakpoints = [index for index, block in enumerate(blocks) if block.breakpoint]
        if not enabled or not breakpoints:
            return {"input_tokens": total, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        now = self.clock()
        with self._lock:
            self._entries = {key: at for key, at in self._entries.items() if now - at < self.ttl}
            hit = -1
            for index in breakpoints:
                for position in range(index, max(-1, index - self.lookback - 1), -1):
                    if blocks[position].key in self._entries and prefix[position] >= self.min_tokens:
                        hit = max(hit, position)
                        break
            read = prefix[hit] if hit >= 0 else 0
            last = breakpoints[-1]
            written = prefix[last] - read if prefix[last] >= self.min_tokens and last > hit else 0
            if hit >= 0:
                self._entries[blocks[hit].key] = now
            for index in breakpoints:
                if prefix[index] >= self.min_tokens:
                    self._entries[blocks[index].key] = now
        return {
            "input_tokens": total - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }

    def count(self, body: dict[str, Any]) -> int:
        """Return the request's input tokens (``count_tokens``), without touching the cache."""
        return sum(block.tokens for block in self.blocks(body))


class _ClientGone(Exception):
    """The client closed the connection (an interrupted stream): stop writing, quietly."""


class FakeAnthropic:
    """A scripted Anthropic Messages API on ``127.0.0.1:<free port>``, running in a background thread.

    ``cache`` turns the prompt cache on (the default) or off; ``prompt_cache`` holds its rules
    (:class:`PromptCache`). ``connections`` counts the TCP connections accepted (a client that reuses its
    connections opens one).
    """

    def __init__(self, *, cache: bool = True, prompt_cache: PromptCache | None = None) -> None:
        self.cache_enabled = cache
        self.prompt_cache = prompt_cache or PromptCache()
        self.connections = 0
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

        class _Server(ThreadingHTTPServer):
            def process_request(self, request: Any, client_address: Any) -> None:
                with fake._lock:
                    fake.connections += 1
                super().process_request(request, client_address)

        self._server = _Server(("127.0.0.1", 0), _Handler)
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
        if not isinstance(request.json, dict):
            self._send_error(ErrorReply(400, "invalid_request_error", "Request body is not a JSON object."))
            return
        try:
            tokens = self.owner.prompt_cache.count(request.json)
        except RequestRejected as exc:
            self._send_error(ErrorReply(400, "invalid_request_error", str(exc)))
            return
        self._send_json(200, {"input_tokens": max(1, tokens)})

    def _messages(self, request: RecordedRequest) -> None:
        if not isinstance(request.json, dict):
            self._send_error(ErrorReply(400, "invalid_request_error", "Request body is not a JSON object."))
            return
        try:  # the API checks the request before the model runs: a 400 costs no scripted response
            self.owner.prompt_cache.blocks(request.json)
        except RequestRejected as exc:
            self._send_error(ErrorReply(400, "invalid_request_error", str(exc)))
            return
        response = self.owner._next_response(request)
        if isinstance(response, ErrorReply):
            if response.in_stream and request.streaming:
                self._stream_error_only(response)
            else:
                self._send_error(response)
            return
        try:
            computed = self.owner.prompt_cache.usage(request.json, enabled=self.owner.cache_enabled)
        except RequestRejected as exc:
            self._send_error(ErrorReply(400, "invalid_request_error", str(exc)))
            return
        usage = response.resolved_usage(computed)
        request.usage = usage
        model = response.model or request.json.get("model") or DEFAULT_MODEL
        if request.streaming:
            self._stream(response, model, usage)
        else:
            self._send_json(
                200, self._message_json(response, model, usage), {"request-id": self._request_id()}
            )

    # --- plain JSON ------------------------------------------------------------------------------
    def _message_json(self, response: Reply, model: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.owner._message_id(),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [dict(block) for block in response.content],
            "stop_reason": response.resolved_stop_reason(),
            "stop_sequence": None,
            "usage": usage,
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

    def _stream(self, response: Reply, model: str, usage: dict[str, int]) -> None:
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
