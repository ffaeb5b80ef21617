"""Async client for a ``chatdesk-agent`` (used by the Django server; imports nothing from Django).

    async with AgentClient("ws://127.0.0.1:7420", token) as agent:
        result = await agent.action({"action": "left_click", "coordinate": [10, 20]})

One RPC WebSocket is opened per client and kept; calls may run concurrently on it (requests
carry ids, the agent answers each), and the agent executes them in the order they were sent.
Errors form a small hierarchy so callers can tell "the agent said no" (``AgentRequestError``,
whose message is safe to show to a model) from "the agent is not there" (``AgentUnreachable``).
Messages never contain the token.

Given ``allow`` (the server's CHATDESK_AGENT_URL_ALLOW), a client connects only to an address of the
URL's host that the allowlist allows, checked when it connects and connected to as checked
(``agents.daemon.addresses``); otherwise it raises ``AgentAddressNotAllowed``. Proxies from the
environment are never used to reach an agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from agents.daemon import actionspec, toolspec
from agents.daemon.addresses import AddressAllowlist, AddressNotAllowed, resolve_allowed

MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # a zoom or screenshot of a large desktop is many MB of base64


class AgentClientError(Exception):
    """Base class of every error raised by this module."""


class AgentUnauthorized(AgentClientError):
    """The agent refused the token (HTTP 401)."""


class AgentUnreachable(AgentClientError):
    """The agent could not be reached: connection refused, timeout, or the connection dropped."""


class AgentAddressNotAllowed(AgentClientError):
    """The agent's URL does not resolve to an address the allowlist allows; nothing was dialled."""


class AgentRequestError(AgentClientError):
    """The agent answered with an error; ``message`` is the agent's text, safe to show to a model."""

    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class ActionResult:
    """Result of a computer action; ``png`` is None for pure queries like cursor_position."""

    output: str | None
    png: bytes | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class Screenshot:
    png: bytes
    width: int
    height: int


def _base(url: str) -> str:
    """Return ``url`` as a ws(s):// base without a trailing slash (http(s) accepted too)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise AgentClientError(f"Invalid agent URL {url!r}: expected ws://host:port")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


async def checked_address(url: str, allow: AddressAllowlist | None) -> dict[str, Any]:
    """Return the keyword arguments that make websockets connect to an allowed address of ``url``'s
    host ({} without an allowlist). Raise AgentAddressNotAllowed or AgentClientError (bad URL)."""
    if allow is None:
        return {}
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise AgentClientError(f"Invalid agent URL {url!r}.") from exc
    try:
        address = await resolve_allowed(uri.host, uri.port, allow)
    except AddressNotAllowed as exc:
        raise AgentAddressNotAllowed(str(exc)) from None
    # The URI's host name still goes in the Host header and TLS's server name (websockets does both).
    return {"host": address, "port": uri.port}


async def _connect(
    url: str, token: str, open_timeout: float, *, max_size: int | None, allow: AddressAllowlist | None
) -> ClientConnection:
    try:
        async with asyncio.timeout(open_timeout):
            target = await checked_address(url, allow)
        return await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=open_timeout,
            compression=None,
            max_size=max_size,
            ping_interval=20,
            ping_timeout=20,
            proxy=None,
            **target,
        )
    except InvalidStatus as exc:
        if exc.response.status_code == 401:
            raise AgentUnauthorized(f"Agent at {url} refused the token.") from None
        raise AgentUnreachable(f"Agent at {url} answered HTTP {exc.response.status_code}.") from None
    except InvalidURI as exc:
        raise AgentClientError(f"Invalid agent URL {url!r}.") from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise AgentUnreachable(f"Cannot connect to agent at {url}: {_describe(exc)}.") from None


async def open_vnc(
    url: str,
    token: str,
    *,
    timeout: float = 10,  # noqa: ASYNC109 - the handshake deadline, the API the server expects
    allow: AddressAllowlist | None = None,
) -> ClientConnection:
    """Return a WebSocket connected to the agent's VNC route (raw RFB bytes in binary frames).

    Raise AgentUnauthorized, AgentUnreachable or AgentAddressNotAllowed.
    """
    return await _connect(_base(url) + "/vnc", token, timeout, max_size=4 * 1024 * 1024, allow=allow)


class AgentClient:
    """See the module docstring. Use as an async context manager."""

    def __init__(
        self, url: str, token: str, *, timeout: float = 10, allow: AddressAllowlist | None = None
    ) -> None:
        self.url = _base(url)
        self._token = token
        self.timeout = timeout
        self.allow = allow
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._progress: dict[int, Callable[[dict[str, Any]], None]] = {}
        self._ids = itertools.count(1)

    async def __aenter__(self) -> AgentClient:
        self._ws = await _connect(
            self.url + "/rpc", self._token, self.timeout, max_size=MAX_RESPONSE_BYTES, allow=self.allow
        )
        self._reader = asyncio.create_task(self._read_replies())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; pending calls fail with AgentUnreachable."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending(AgentUnreachable(f"Connection to agent at {self.url} closed."))

    def _fail_pending(self, error: AgentClientError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _read_replies(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                reply = json.loads(message)
                if "progress" in reply:
                    listener = self._progress.get(reply.get("id"))
                    if listener is not None and isinstance(reply["progress"], dict):
                        listener(reply["progress"])
                    continue
                future = self._pending.pop(reply.get("id"), None)
                if future is None or future.done():
                    continue
                if "error" in reply:
                    error = reply["error"] or {}
                    future.set_exception(
                        AgentRequestError(
                            str(error.get("message", "Agent error.")), str(error.get("code", ""))
                        )
                    )
                else:
                    future.set_result(reply.get("result"))
        except (ConnectionClosed, ValueError):
            pass
        self._fail_pending(AgentUnreachable(f"Connection to agent at {self.url} was lost."))

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """Send one RPC call and return its result.

        Raise AgentRequestError (agent error) or AgentUnreachable (connection lost / timeout). Past the
        deadline the client gives up on the whole connection and closes it: the agent then cancels
        what it was running for this client, so nothing runs on for a caller that left. A call that
        streams (``bash``) hands each ``progress`` object to ``on_progress`` as it arrives (on the
        event loop: it must not block).
        """
        if self._ws is None:
            raise AgentClientError("AgentClient is not open; use `async with AgentClient(...)`.")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if on_progress is not None:
            self._progress[request_id] = on_progress
        try:
            await self._ws.send(json.dumps({"id": request_id, "method": method, "params": params or {}}))
            return await asyncio.wait_for(future, deadline if deadline is not None else self.timeout)
        except ConnectionClosed:
            raise AgentUnreachable(f"Connection to agent at {self.url} was lost.") from None
        except TimeoutError:
            self._pending.pop(request_id, None)
            await self.close()
            raise AgentUnreachable(f"Agent at {self.url} did not answer {method!r} in time.") from None
        finally:
            self._pending.pop(request_id, None)
            self._progress.pop(request_id, None)

    async def info(self) -> dict[str, Any]:
        """Return the display sizes: {"native": {...}, "declared": {...}, "backend", "x_display", …}."""
        return await self.call("info")

    async def action(self, params: dict[str, Any]) -> ActionResult:
        """Run one computer action (Anthropic input fields + scaled_width/scaled_height).

        The deadline follows the action: the connection's ``timeout`` for the round trip, settling and
        screenshot, plus what the action itself may take (``actionspec.action_seconds``: the characters
        of a ``type``, the seconds of a ``wait``, …).
        """
        deadline = self.timeout + actionspec.action_seconds(params)
        return _action_result(await self.call("action", params, deadline=deadline))

    async def bash(
        self,
        params: dict[str, Any],
        *,
        on_output: Callable[[str], None] | None = None,
        margin: float | None = None,
    ) -> dict[str, Any]:
        """Run one ``bash`` call (``{"session", "command" | "restart", "timeout"?, "output_limit"?}``) and
        return its BashResult (``agents.daemon.shell``); ``on_output`` gets the output as it is printed.

        The deadline follows the command: its ``timeout``, plus the time the agent may take to stop it,
        plus ``margin`` (default: the connection's ``timeout``) for the round trip.
        """
        timeout = params.get("timeout", toolspec.BASH_DEFAULT_TIMEOUT)
        seconds = float(timeout) if isinstance(timeout, int | float) else toolspec.BASH_DEFAULT_TIMEOUT
        deadline = seconds + toolspec.BASH_STOP_TIME + (self.timeout if margin is None else margin)

        def progress(payload: dict[str, Any]) -> None:
            text = payload.get("output")
            if on_output is not None and isinstance(text, str):
                on_output(text)

        return await self.call("bash", params, deadline=deadline, on_progress=progress)

    async def edit(self, tool_input: dict[str, Any], *, max_characters: int | None = None) -> dict[str, Any]:
        """Run one text editor command as the desktop's user; return ``{"output", "is_error"}``."""
        params: dict[str, Any] = {"input": tool_input}
        if max_characters is not None:
            params["max_characters"] = max_characters
        return await self.call("edit", params, deadline=self.timeout + toolspec.EDITOR_TIME_LIMIT)

    async def screenshot(self, width: int | None = None, height: int | None = None) -> Screenshot:
        """Return an immediate screenshot, scaled to width x height when given (else native)."""
        params = {"width": width, "height": height} if width is not None or height is not None else {}
        shot = await self.call("screenshot", params)
        return Screenshot(
            png=base64.b64decode(shot["png_base64"]), width=shot["width"], height=shot["height"]
        )


def _action_result(result: dict[str, Any]) -> ActionResult:
    shot = result.get("screenshot")
    if not shot:
        return ActionResult(output=result.get("output"), png=None, width=None, height=None)
    return ActionResult(
        output=result.get("output"),
        png=base64.b64decode(shot["png_base64"]),
        width=shot["width"],
        height=shot["height"],
    )


__all__ = [
    "ActionResult",
    "AgentAddressNotAllowed",
    "AgentClient",
    "AgentClientError",
    "AgentRequestError",
    "AgentUnauthorized",
    "AgentUnreachable",
    "Screenshot",
    "open_vnc",
]
