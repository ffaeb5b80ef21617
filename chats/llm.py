"""The one place chatdesk calls the Anthropic Messages API.

Everything the turn engine needs from the provider goes through :func:`stream_reply`: it streams one
assistant message through the official SDK, reports text and tool-input deltas as they arrive, can be
interrupted between stream events, and returns the message as API-shaped content blocks. SDK errors
never leave this module: they become :class:`ProviderTransientError` (worth retrying, with the
provider's ``retry-after`` hint) or :class:`ProviderPermanentError`, with messages written for a person
and free of the API key or the SDK's raw text.

The SDK's own retries are disabled (``max_retries=0``); :func:`call_with_retries` retries instead, so
each retry is visible to the caller (logged, shown in the chat) and honours ``retry-after``.

One SDK client per process and account (:func:`provider_client`): its HTTP connection pool survives
from one step of a turn to the next (and across turns), so a step does not pay a new TCP and TLS
handshake. A forked worker process builds its own clients (sockets are not shared across a fork). A
stream the watchdog cuts loses only its own connection: the pool drops it.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import random
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anthropic
import httpx2

from chatdesk.exceptions import (
    ProviderError,
    ProviderNotConfigured,
    ProviderPermanentError,
    ProviderTransientError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``stop_reason`` of a reply cut short by ``should_stop``.
STOP_INTERRUPTED = "interrupted"
#: How often a stream that receives nothing asks ``should_stop`` (see StreamWatchdog).
STOP_POLL_SECONDS = 0.25

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

# Error ``type`` values (HTTP body or in-stream ``error`` event) that are worth retrying.
_TRANSIENT_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
_TRANSIENT_STATUSES = frozenset({408, 409, 429})
_SAFE_REASON_LIMIT = 200
# Anything that looks like an Anthropic key, wherever it appears in provider text.
_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


#: Clients kept per process (one per account in use; a rotated key's old client is closed).
MAX_CLIENTS = 4
_clients: OrderedDict[tuple[str, str | None, float], anthropic.Anthropic] = OrderedDict()
_clients_lock = threading.Lock()
_clients_pid = 0


@dataclass(frozen=True)
class ProviderConfig:
    """Where and as whom to call the provider. The key is kept out of ``repr`` (logs, tracebacks)."""

    api_key: str = field(repr=False)
    base_url: str | None = None


@dataclass
class ModelReply:
    """One assistant message.

    ``content`` holds API-shaped blocks (``{"type": "text", "text": ...}``,
    ``{"type": "tool_use", "id", "name", "input"[, "toolset_name"]}``, …) ready to be sent back in the
    next request. ``stop_reason`` is the API's, or ``"interrupted"``. ``usage`` always has the four
    :data:`USAGE_KEYS`.
    """

    content: list[dict[str, Any]]
    stop_reason: str
    usage: dict[str, int]

    @property
    def text(self) -> str:
        """Return the text blocks joined: what a person reads as the reply."""
        return "".join(block["text"] for block in self.content if block.get("type") == "text")


def stream_reply(
    *,
    provider: ProviderConfig,
    model: str,
    system: list[dict[str, Any]] | str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    betas: list[str],
    max_tokens: int,
    on_text_delta: Callable[[int, str], None] | None = None,
    on_tool_input_delta: Callable[[int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float = 600,
    stop_poll_interval: float = STOP_POLL_SECONDS,
) -> ModelReply:
    """Stream one assistant message and return it.

    ``on_text_delta(index, text)`` / ``on_tool_input_delta(index, partial_json)`` are called for each
    delta, ``index`` being the content block's position. ``should_stop()`` is checked after every stream
    event, and every ``stop_poll_interval`` seconds while no event arrives (a provider that hangs must not
    hold the worker until ``timeout``: see :class:`StreamWatchdog`); when it returns true the stream is
    closed and the reply holds what was produced so far (text only: an unfinished tool_use could not be
    answered) with ``stop_reason="interrupted"``.

    Raise ProviderNotConfigured without a key, ProviderTransientError (retry it, see ``retry_after``) or
    ProviderPermanentError. When a transient error happens mid-stream, the deltas already reported are
    not part of any reply: a caller that retries must discard them.
    """
    if not provider.api_key:
        raise ProviderNotConfigured()
    client = provider_client(provider, timeout=timeout)
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        params["system"] = system
    if tools:
        params["tools"] = tools
    stream: Any = None
    watchdog: StreamWatchdog | None = None
    try:
        if betas:
            manager: Any = client.beta.messages.stream(**params, betas=list(betas))
        else:
            manager = client.messages.stream(**params)
        with manager as stream:
            if should_stop is not None:
                watchdog = StreamWatchdog(stream.response, should_stop, interval=stop_poll_interval)
            for event in stream:
                with watchdog.handling() if watchdog is not None else contextlib.nullcontext():
                    if event.type == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta" and on_text_delta is not None:
                            on_text_delta(event.index, delta.text)
                        elif delta.type == "input_json_delta" and on_tool_input_delta is not None:
                            on_tool_input_delta(event.index, delta.partial_json)
                    if should_stop is not None and should_stop():
                        return _interrupted_reply(stream)
            final = stream.get_final_message()
    except ProviderError:
        raise
    except Exception as exc:
        if watchdog is not None and watchdog.fired and stream is not None:
            return _interrupted_reply(stream)  # the watchdog cut the connection: not a provider error
        mapped = map_provider_error(exc, model=model, api_key=provider.api_key)
        if mapped is None:
            raise
        raise mapped from None  # the SDK's exception text must not travel further
    finally:
        if watchdog is not None:
            watchdog.stop()
    return ModelReply(
        content=[_block_to_dict(block) for block in final.content],
        stop_reason=final.stop_reason or "end_turn",
        usage=_usage_to_dict(final.usage),
    )


class StreamWatchdog:
    """Ask ``should_stop()`` while a stream waits for its next event; when it says stop, cut the connection.

    Without it an interrupt is seen only after the provider's next event, so a provider that hangs holds
    the worker until the SDK's read timeout (600 s). The watchdog thread and the streaming thread never
    run ``should_stop`` (or the event callbacks) at the same time: the streaming thread holds :attr:`lock`
    while it handles an event, and the watchdog asks only while it may take the lock. Cutting is a
    ``shutdown()`` of the response's socket (httpx's ``network_stream`` extension): closing a socket from
    another thread does not wake a blocked ``recv`` on Linux, a shutdown does, and the SDK then raises a
    connection error that :func:`stream_reply` recognises as this interrupt.

    ``should_stop`` may use the database (the engine's does): the thread closes its own connections when
    it ends.
    """

    def __init__(self, response: Any, should_stop: Callable[[], bool], *, interval: float) -> None:
        self.response = response
        self.should_stop = should_stop
        self.interval = interval
        self.lock = threading.Lock()
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Hold the watchdog off while the streaming thread handles an event."""
        with self.lock:
            yield

    def stop(self) -> None:
        self._done.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._done.wait(self.interval):
                with self.lock:
                    if self._done.is_set():
                        return
                    if self.should_stop():
                        self.fired = True
                        _cut(self.response)
                        return
        except Exception:
            logger.exception("The stream watchdog failed; interrupts are seen at the next stream event.")
        finally:
            from django.db import connections

            connections.close_all()  # this thread's own connections only


def _cut(response: Any) -> None:
    """Shut the socket under an httpx response down, so a read blocked on it returns at once."""
    network_stream = getattr(response, "extensions", {}).get("network_stream")
    sock = network_stream.get_extra_info("socket") if network_stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(Exception):  # no socket to reach: closing is the next best thing
        response.close()


def provider_client(provider: ProviderConfig, *, timeout: float = 600) -> anthropic.Anthropic:
    """Return this process's SDK client for ``provider`` (created on first use, then reused).

    The SDK client (an httpx client underneath) is safe to share between threads.
    """
    global _clients_pid
    fingerprint = hashlib.sha256(provider.api_key.encode()).hexdigest()  # the key itself stays out of keys
    key = (fingerprint, provider.base_url or None, float(timeout))
    evicted: list[anthropic.Anthropic] = []
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()  # inherited from the parent process: its sockets are not ours to use
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None:
            client = anthropic.Anthropic(
                api_key=provider.api_key, base_url=provider.base_url or None, max_retries=0, timeout=timeout
            )
            _clients[key] = client
            while len(_clients) > MAX_CLIENTS:
                evicted.append(_clients.popitem(last=False)[1])
        else:
            _clients.move_to_end(key)
    for old in evicted:
        old.close()
    return client


def close_clients() -> None:
    """Close this process's clients (tests, shutdown)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    base_delay: float,
    max_delay: float,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, float, ProviderTransientError], None] | None = None,
) -> T:
    """Return ``fn()``, calling it up to ``attempts`` times while it raises ProviderTransientError.

    The wait before retry ``n`` (1-based) is the provider's ``retry_after`` when given, else
    ``base_delay * 2**(n-1)`` with jitter (50-100 %, so many workers do not retry in step); either way
    at most ``max_delay``. ``on_retry(attempt, delay, error)`` is called before each wait, so the caller
    can tell the user. Raise the last ProviderTransientError when attempts run out; other errors at once.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ProviderTransientError as exc:
            if attempt >= attempts:
                raise
            delay = retry_delay(attempt, exc.retry_after, base_delay=base_delay, max_delay=max_delay)
            logger.warning(
                "Model provider call failed (%s); retry %d of %d in %.1fs.",
                exc.message,
                attempt,
                attempts - 1,
                delay,
            )
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def retry_delay(attempt: int, retry_after: float | None, *, base_delay: float, max_delay: float) -> float:
    """Return the seconds to wait before retry ``attempt`` (1-based), see :func:`call_with_retries`."""
    if retry_after is not None:
        return max(0.0, min(retry_after, max_delay))
    backoff = min(max_delay, base_delay * (2 ** (attempt - 1)))
    return backoff * (0.5 + random.random() / 2)


def parse_retry_after(headers: Any) -> float | None:
    """Return the ``retry-after-ms`` / ``retry-after`` hint (seconds or HTTP date) in seconds, or None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def map_provider_error(exc: BaseException, *, model: str = "", api_key: str = "") -> ProviderError | None:
    """Return the chatdesk error for an SDK or transport exception, or None when it is not one.

    Messages are fixed sentences; the only provider text kept is the API's own short ``error.message``
    for a rejected request, truncated and with anything key-like removed.
    """
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderTransientError("The model provider did not answer in time.")
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderTransientError("Could not connect to the model provider.")
    if isinstance(exc, anthropic.APIStatusError):
        return _map_status_error(exc, model=model, api_key=api_key)
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderTransientError("The model provider did not answer in time.")
    if isinstance(exc, httpx2.TransportError):
        # Raised while reading a stream body, after the SDK's own error wrapping.
        return ProviderTransientError("The connection to the model provider was lost.")
    if isinstance(exc, anthropic.AnthropicError):
        return ProviderTransientError("The model provider sent a response chatdesk could not read.")
    return None


def _map_status_error(exc: anthropic.APIStatusError, *, model: str, api_key: str) -> ProviderError:
    status = exc.status_code
    error_type = exc.type or ""
    retry_after = parse_retry_after(getattr(exc.response, "headers", None))
    if status == 429 or error_type == "rate_limit_error":
        return ProviderTransientError(
            "The model provider is rate limiting requests.", retry_after=retry_after
        )
    if status == 529 or error_type == "overloaded_error":
        return ProviderTransientError("The model provider is overloaded.", retry_after=retry_after)
    if status >= 500 or status in _TRANSIENT_STATUSES or error_type in _TRANSIENT_ERROR_TYPES:
        # An in-stream ``error`` event arrives with the 200 of the stream: its type decides.
        return ProviderTransientError("The model provider had a temporary error.", retry_after=retry_after)
    if status == 401 or error_type == "authentication_error":
        return ProviderPermanentError("The model provider rejected the API key.")
    if status == 402 or error_type == "billing_error":
        return ProviderPermanentError("The model provider refused the request because of a billing problem.")
    if status == 403 or error_type == "permission_error":
        return ProviderPermanentError("The API key is not allowed to use this model or feature.")
    if status == 404 or error_type == "not_found_error":
        return ProviderPermanentError(f'The model provider does not know the model "{_short(model, 100)}".')
    if status == 413 or error_type == "request_too_large":
        return ProviderPermanentError("The request is too large for the model provider.")
    reason = _safe_reason(exc.api_message, api_key)
    if reason:
        return ProviderPermanentError(f"The model provider rejected the request: {reason}")
    return ProviderPermanentError("The model provider rejected the request.")


def _safe_reason(text: str | None, api_key: str) -> str:
    if not text or not isinstance(text, str):
        return ""
    if api_key:
        text = text.replace(api_key, "[redacted]")
    text = _KEY_PATTERN.sub("[redacted]", text)
    return _short(" ".join(text.split()), _SAFE_REASON_LIMIT)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _interrupted_reply(stream: Any) -> ModelReply:
    try:
        snapshot = stream.current_message_snapshot
    except AssertionError:  # interrupted before message_start
        snapshot = None
    content: list[dict[str, Any]] = []
    usage = {key: 0 for key in USAGE_KEYS}
    if snapshot is not None:
        for block in snapshot.content:
            if block.type == "text" and block.text:
                content.append({"type": "text", "text": block.text})
        usage = _usage_to_dict(snapshot.usage)
    return ModelReply(content=content, stop_reason=STOP_INTERRUPTED, usage=usage)


def _block_to_dict(block: Any) -> dict[str, Any]:
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        result: dict[str, Any] = {
            "type": "tool_use",
            "id": block.id,
            "name": block.name,
            "input": dict(block.input or {}),
        }
        toolset_name = getattr(block, "toolset_name", None)
        if toolset_name:
            # Toolset members (computer_toolset_20260801) must be echoed back with their family.
            result["toolset_name"] = toolset_name
        return result
    data: dict[str, Any] = block.to_dict(exclude_none=True)
    data.pop("parsed_output", None)
    return data


def _usage_to_dict(usage: Any) -> dict[str, int]:
    return {key: int(getattr(usage, key, None) or 0) for key in USAGE_KEYS}
