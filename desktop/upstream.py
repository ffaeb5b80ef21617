"""One viewer's WebSocket to the workspace agent's ``/vnc`` route, driven by websockets' sans-I/O client.

The desktop proxy (``desktop.consumers``) opens one of these per browser viewer. websockets'
:class:`~websockets.client.ClientProtocol` does all of the WebSocket protocol (opening handshake,
frame parsing and validation, masking, answering pings, the closing handshake) through its public
sans-I/O API; this module only moves bytes between it and an asyncio transport, adds the keepalive
and bounds the buffers:

* No extension and no subprotocol is offered, so every frame from the agent must have its RSV bits
  clear and be unmasked; ``ClientProtocol`` fails the connection otherwise (1002). The agent sends RFB
  bytes in binary frames only: a text frame fails the connection (1003).
* Reading: :meth:`VncUpstream.read` returns the payloads received so far (RFB is a byte stream: frame
  boundaries mean nothing). At most ``buffer_limit`` bytes wait for it: beyond that, reading from the
  socket pauses (TCP back-pressure towards the agent, and from there to its VNC server).
* Writing: :meth:`VncUpstream.send` writes one binary frame; ``writable`` turns False while more than
  ``write_limit`` bytes wait for the socket, and :meth:`VncUpstream.wait_writable` waits for it.
* Keepalive: a ping every ``ping_interval`` seconds; no pong within ``ping_timeout`` fails the
  connection. The agent's pings are answered by ``ClientProtocol``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidMessage
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import CLOSED, OPEN
from websockets.uri import parse_uri

logger = logging.getLogger(__name__)

# Close codes the agent may end with that are not a failure (RFC 6455 §7.4.1).
NORMAL_CLOSE_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """Bounds and timers of a :class:`VncUpstream` (byte counts and seconds)."""

    max_frame: int  # the biggest frame accepted from the agent (payload bytes)
    buffer_limit: int  # payload bytes buffered before reading from the socket pauses
    write_limit: int  # bytes waiting for the socket before ``writable`` turns False
    ping_interval: float
    ping_timeout: float
    close_timeout: float  # how long close() waits for the agent to close TCP


class VncUpstream(asyncio.Protocol):
    """One viewer's WebSocket to the agent's ``/vnc`` route; open it with :func:`connect_upstream`.

    When the connection ends, :attr:`ended` is set and :attr:`failure` says why, if it was not a
    normal close (1000 or 1001) by the agent or by :meth:`close`.
    """

    def __init__(self, protocol: ClientProtocol, limits: UpstreamLimits) -> None:
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._limits = limits
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = self._loop.create_future()
        # Retrieved even when nobody awaits it any more (the opening timed out): no asyncio warning.
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._was_open = False  # the opening handshake succeeded
        self._payloads: collections.deque[bytes | bytearray] = collections.deque()
        self.buffered = 0  # payload bytes waiting for read()
        self._reading_paused = False
        self._readable = asyncio.Event()  # payloads are buffered, or the connection ended
        self._writable = asyncio.Event()
        self._writable.set()
        self._ping_payload: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.failure: str | None = None
        self.ended = asyncio.Event()
        self._lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self._limits.write_limit)
        self._send_pending()  # the handshake request

    def data_received(self, data: bytes) -> None:
        self._protocol.receive_data(data)
        self._process_events()

    def eof_received(self) -> bool | None:
        self._protocol.receive_eof()
        self._process_events()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.receive_eof()  # idempotent: the protocol's state is now CLOSED
        if not self.opened.done():
            self.opened.set_exception(
                self._protocol.handshake_exc
                or exc
                or InvalidMessage("connection closed during the handshake")
            )
        self._end(self._why_closed())
        self._writable.set()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- the protocol's events -----------------------------------------------------------------------

    def _process_events(self) -> None:
        protocol = self._protocol
        for event in protocol.events_received():
            if isinstance(event, Response):
                self._opening_done()
            elif isinstance(event, Frame):
                self._frame(event)
        if not self.opened.done() and protocol.handshake_exc is not None:
            self.opened.set_exception(protocol.handshake_exc)
        self._send_pending()
        if self._was_open and protocol.state is not OPEN:
            # The agent closed, broke the protocol, or the connection ended.
            failure = self._why_closed()
            if failure is not None and failure.startswith("protocol error"):
                self._fail(CloseCode.PROTOCOL_ERROR, failure)  # the close frame is sent already
            self._end(failure)
        if self.buffered > self._limits.buffer_limit and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def _opening_done(self) -> None:
        # Not the protocol's state: frames after the response may have closed it already.
        if self._protocol.handshake_exc is None and not self.opened.done():
            self._was_open = True
            self.opened.set_result(None)
            self._schedule_ping()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.BINARY or frame.opcode is Opcode.CONT:
            if frame.data and not self.ended.is_set():
                self._payloads.append(frame.data)
                self.buffered += len(frame.data)
                self._readable.set()
        elif frame.opcode is Opcode.TEXT:
            self._fail(
                CloseCode.UNSUPPORTED_DATA, "protocol error: text frame (RFB travels in binary frames)"
            )
        elif frame.opcode is Opcode.PONG:
            if self._ping_payload is not None and frame.data == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
        # PING: answered by the protocol; CLOSE: echoed by it, and seen through its state.

    def _why_closed(self) -> str | None:
        """Return the failure to report once the protocol left the OPEN state, None for a normal close."""
        protocol = self._protocol
        if self.failure is not None:
            return self.failure
        if protocol.parser_exc is not None and not isinstance(protocol.parser_exc, EOFError):
            return f"protocol error: {protocol.parser_exc}"
        close = protocol.close_rcvd
        if close is None:
            # We sent the close (close() or a failure, reported already) or the TCP connection ended.
            return None if protocol.close_sent is not None else "connection lost"
        return None if close.code in NORMAL_CLOSE_CODES else f"closed by the agent with {close.code}"

    # -- keepalive ---------------------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        self._cancel_timer()
        if not self.ended.is_set():
            self._timer = self._loop.call_later(self._limits.ping_interval, self._ping)

    def _ping(self) -> None:
        if self._protocol.state is not OPEN:
            return
        self._ping_payload = os.urandom(4)
        self._protocol.send_ping(self._ping_payload)
        self._send_pending()
        self._timer = self._loop.call_later(self._limits.ping_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self._timer = None
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- writing and ending ------------------------------------------------------------------------------

    def _send_pending(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._protocol.data_to_send():
            if transport.is_closing():
                break
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the protocol's end of stream (a failed handshake)
                transport.write_eof()
            else:
                transport.close()

    def _end(self, failure: str | None) -> None:
        """Mark the connection ended: no more payloads are buffered; read() returns what is left."""
        if self.ended.is_set():
            return
        self.failure = failure
        self.ended.set()
        self._readable.set()
        self._writable.set()
        self._cancel_timer()
        if self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._transport.resume_reading()  # to see the close frame / EOF

    def _discard(self) -> None:
        self._payloads.clear()
        self.buffered = 0

    def _fail(self, code: int, failure: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame, drop the TCP connection."""
        if self.failure is not None:
            return
        logger.info("VNC upstream failed: %s", failure)
        self.failure = failure
        if self._protocol.state is OPEN:
            self._protocol.fail(code)
            self._send_pending()
        self._discard()
        self._end(failure)
        if self._transport is not None:
            self._transport.close()  # after the close frame is written; close() aborts it if stuck

    # -- API ----------------------------------------------------------------------------------------------

    async def read(self) -> list[bytes | bytearray]:
        """Return the payloads received so far, waiting for some; [] once the connection ended."""
        while not self._payloads:
            if self.ended.is_set():
                return []
            self._readable.clear()
            await self._readable.wait()
        payloads = list(self._payloads)
        self._payloads.clear()
        self.buffered = 0
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        return payloads

    def send(self, data: bytes | memoryview) -> None:
        """Write ``data`` as one binary frame (nothing once the connection is closing)."""
        if self._protocol.state is OPEN:
            self._protocol.send_binary(data)
            self._send_pending()

    @property
    def writable(self) -> bool:
        """False while more than ``write_limit`` bytes wait for the socket."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        """Wait until the socket takes what was written (or the connection ends)."""
        await self._writable.wait()

    async def close(self) -> None:
        """Close the connection (1000), wait for the agent to close TCP (bounded), then drop it. Idempotent."""
        if self._transport is None:
            return
        if self._protocol.state is OPEN:
            self._protocol.send_close(CloseCode.NORMAL_CLOSURE)
            self._send_pending()
        self._discard()
        self._end(self.failure)
        if self._protocol.state is not CLOSED:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._limits.close_timeout):
                    await asyncio.shield(self._lost)
        self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once (a no-op once it is closed)."""
        if self._transport is not None:
            self._transport.abort()


async def connect_upstream(
    url: str,
    *,
    headers: Mapping[str, str],
    open_timeout: float,
    limits: UpstreamLimits,
    user_agent: str,
    address: str | None = None,
) -> VncUpstream:
    """Open a WebSocket to ``url`` (ws or wss) and return it as a VncUpstream, open.

    ``address`` is the IP address to connect to (already checked by the caller) instead of resolving
    the URL's host again; the host name still goes in the Host header and TLS's server name.
    No extension and no subprotocol is offered. Raise what websockets raises for a bad URI
    (InvalidURI) or a refused handshake (InvalidStatus, InvalidHandshake), OSError or TimeoutError.
    """
    uri = parse_uri(url)
    # No message limit (RFB is a stream, forwarded frame by frame); each frame is bounded.
    protocol = ClientProtocol(uri, max_size=(None, limits.max_frame))  # extensions=None: none offered
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    request.headers["User-Agent"] = user_agent
    protocol.send_request(request)
    loop = asyncio.get_running_loop()
    ssl_context = ssl.create_default_context() if uri.secure else None
    upstream: VncUpstream | None = None
    try:
        async with asyncio.timeout(open_timeout):
            _, upstream = await loop.create_connection(
                lambda: VncUpstream(protocol, limits),
                address or uri.host,
                uri.port,
                ssl=ssl_context,
                server_hostname=uri.host if ssl_context else None,
            )
            await upstream.opened
    except BaseException:
        if upstream is not None:
            upstream.abort()
        raise
    return upstream


__all__ = ["InvalidHandshake", "UpstreamLimits", "VncUpstream", "connect_upstream"]
