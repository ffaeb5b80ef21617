"""Splice a WebSocket server's data frames through to another WebSocket, byte for byte.

The desktop proxy (``desktop.consumers``) relays the agent's RFB stream to the browser. Both legs are
WebSockets in which the proxy is the *receiver* of the agent's frames and the *sender* of the
browser's, and the frames travel the same way on both: server → client. So instead of decoding each
frame and encoding it again, the proxy finds frame boundaries (reading only the 2 to 14 byte headers) and
hands whole frames, untouched, to the browser's transport. This module holds:

* :class:`FrameSplitter` — sans-I/O: feed it the bytes read from the agent; it returns runs of whole
  data frames (as the ``bytes`` chunks they arrived in, sliced only at frame boundaries) and the
  control frames, parsed.
* :class:`VncUpstream` — the asyncio protocol of one viewer's connection to the agent: the opening
  handshake is done by ``websockets``' sans-I/O :class:`~websockets.client.ClientProtocol`; after it,
  incoming bytes go through a :class:`FrameSplitter`, pings are answered, the connection is pinged
  (keepalive), and outgoing frames are built with :class:`websockets.frames.Frame`.

RFC 6455 invariants this relies on (each one is checked; a frame breaking one is a protocol error
and ends the connection, the viewer being closed):

* A server never masks its frames (§5.1), and the proxy→browser leg is server → client as well, so
  an agent frame's bytes are exactly a valid frame for the browser. A masked frame is refused.
* No extension is negotiated with the agent: the handshake request carries no
  ``Sec-WebSocket-Extensions`` header, and ``ClientProtocol`` refuses a response that names one. So
  the RSV bits must be 0 (§5.2); a frame with any of them set is refused. (Towards the browser,
  a frame with RSV1 clear is an uncompressed message even if permessage-deflate was negotiated.)
* Frames are forwarded whole, never partly: another writer on the browser's connection (autobahn's
  pings and close frame) writes whole frames too, so frames never interleave. Control frames may come
  between the fragments of a message (§5.4), so forwarding fragmented messages frame by frame, with
  FIN bits as they are, stays valid.
* Control frames have a payload of at most 125 bytes and are never fragmented (§5.5); they are
  handled here, never forwarded. Data frames are binary or continuation frames: the agent sends RFB
  bytes in binary frames only, so a text frame is refused (1003), as are reserved opcodes and a
  continuation frame outside a fragmented message (or a new message inside one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidMessage, ProtocolError
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

logger = logging.getLogger(__name__)

OP_CONTINUATION = Opcode.CONT
OP_TEXT = Opcode.TEXT
OP_BINARY = Opcode.BINARY
OP_CLOSE = Opcode.CLOSE
OP_PING = Opcode.PING
OP_PONG = Opcode.PONG
MAX_CONTROL_PAYLOAD = 125  # RFC 6455 §5.5
# Enough for a data frame's header (2 + 8 bytes; no masking key here) and for a whole control frame,
# the only things the splitter ever keeps back as bytes of its own.
_MAX_STASH = 2 + MAX_CONTROL_PAYLOAD


class FrameError(Exception):
    """The agent broke the WebSocket protocol; ``code`` is the close code to answer with."""

    def __init__(self, reason: str, code: int = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ControlFrame:
    opcode: int  # OP_CLOSE, OP_PING or OP_PONG
    payload: bytes


# One run of consecutive whole data frames, in arrival order, as the chunks they arrived in or
# memoryviews of them (never copies): forward the pieces as they are (e.g. with ``sendmsg``).
DataFrames = list[bytes | memoryview]


def _parse_header(data: bytes, pos: int) -> tuple[int, bool, int, int] | None:
    """Return (opcode, fin, header length, payload length) of the frame at ``data[pos:]``, or None
    when its header is not all there yet. Raise FrameError for what a server may not send."""
    available = len(data) - pos
    if available < 2:
        return None
    first, second = data[pos], data[pos + 1]
    if first & 0x70:
        raise FrameError("RSV bit set without a negotiated extension")
    if second & 0x80:
        raise FrameError("masked frame from a server")
    length = second & 0x7F
    if length == 126:
        if available < 4:
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        return first & 0x0F, bool(first & 0x80), 4, length
    if length == 127:
        if available < 10:
            return None
        (length,) = struct.unpack_from(">Q", data, pos + 2)
        return first & 0x0F, bool(first & 0x80), 10, length
    return first & 0x0F, bool(first & 0x80), 2, length


class FrameSplitter:
    """Split a server's byte stream into runs of whole data frames and parsed control frames.

    ``feed(chunk)`` returns, in stream order, ``DataFrames`` (lists of ``bytes`` and ``memoryview``)
    and ``ControlFrame`` items. Payloads are never copied: a chunk holding only whole data frames
    comes back as itself; otherwise it is sliced at frame boundaries (as memoryviews), and a data
    frame that does not end in a chunk is kept (by reference) until the chunk that ends it arrives. Only an incomplete header or
    control frame (at most 127 bytes) is kept as bytes and prefixed to the next chunk.
    Raise :class:`FrameError` on a protocol violation; the splitter is then unusable.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame  # payload bytes; a bigger frame is refused with 1009
        self._stash = b""  # the start of a frame whose header (or control frame) is incomplete
        self._pieces: DataFrames = []  # the data frame in progress, as received so far
        self._remaining = 0  # bytes of that frame still to come
        self._in_message = False  # between the first and the FIN fragment of a data message

    def feed(self, data: bytes) -> list[DataFrames | ControlFrame]:
        events: list[DataFrames | ControlFrame] = []
        if self._stash:
            data, self._stash = self._stash + data, b""
        size = len(data)
        pos = 0
        run: DataFrames = []  # earlier pieces of the first frame of the current run
        if self._remaining:  # a data frame that began in an earlier chunk
            if size < self._remaining:
                self._pieces.append(data)
                self._remaining -= size
                return events
            run, pos = self._pieces, self._remaining
            self._pieces, self._remaining = [], 0
        view = memoryview(data)  # slices of it share the chunk's memory
        run_start = 0  # data[run_start:pos] holds the whole data frames found since the last flush

        def flush() -> None:
            if pos > run_start:
                run.append(data if run_start == 0 and pos == size else view[run_start:pos])
            if run:
                events.append(run)

        while pos < size:
            header = _parse_header(data, pos)
            if header is None:
                break
            opcode, fin, header_length, length = header
            end = pos + header_length + length
            if opcode >= 0x8:  # control frame: handled here, never forwarded
                if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise FrameError(f"reserved opcode {opcode}")
                if not fin or length > MAX_CONTROL_PAYLOAD:
                    raise FrameError("fragmented or oversized control frame")
                if end > size:
                    break
                flush()
                events.append(ControlFrame(opcode, data[pos + header_length : end]))
                pos = run_start = end
                run = []
                continue
            self._check_data_frame(opcode, fin, length)
            if end > size:  # the frame ends in a later chunk: keep it, forward it whole then
                flush()
                self._pieces, self._remaining = [data if pos == 0 else view[pos:]], end - size
                return events
            pos = end
        flush()
        if pos < size:
            self._stash = data[pos:]
            assert len(self._stash) <= _MAX_STASH
        return events

    def _check_data_frame(self, opcode: int, fin: bool, length: int) -> None:
        if opcode == OP_TEXT:
            raise FrameError("text frame (RFB travels in binary frames)", CloseCode.UNSUPPORTED_DATA)
        if opcode == OP_CONTINUATION:
            if not self._in_message:
                raise FrameError("continuation frame outside a fragmented message")
        elif opcode == OP_BINARY:
            if self._in_message:
                raise FrameError("new message inside a fragmented message")
        else:
            raise FrameError(f"reserved opcode {opcode}")
        if length > self.max_frame:
            raise FrameError(f"frame of {length} bytes is too big", CloseCode.MESSAGE_TOO_BIG)
        self._in_message = not fin


def payload_of(frames: Sequence[bytes | memoryview]) -> bytes:
    """Return the payload bytes of whole, valid data frames (as returned by FrameSplitter.feed)."""
    data = b"".join(frames)
    parts = []
    pos = 0
    while pos < len(data):
        header = _parse_header(data, pos)
        assert header is not None, "not whole frames"
        _, _, header_length, length = header
        parts.append(data[pos + header_length : pos + header_length + length])
        pos += header_length + length
    return b"".join(parts)


# -- the connection to the agent ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamLimits:
    """Bounds and timers of a :class:`VncUpstream` (byte counts and seconds)."""

    max_frame: int  # the biggest data frame accepted from the agent (payload bytes)
    buffer_limit: int  # whole frames buffered before reading from the socket pauses
    write_limit: int  # bytes waiting for the socket before ``writable`` turns False
    ping_interval: float
    ping_timeout: float
    close_timeout: float  # how long close() waits for the agent to close TCP


class VncUpstream(asyncio.Protocol):
    """One viewer's WebSocket to the agent's ``/vnc`` route; open it with :func:`connect_upstream`.

    Reading: :meth:`read` returns the whole data frames received so far (raw, for splicing). At most
    ``buffer_limit`` bytes are buffered: beyond that, reading from the socket pauses (TCP
    back-pressure towards the agent) until :meth:`read` takes them.
    Writing: :meth:`send` writes one masked binary frame; :meth:`drain` waits while more than
    ``write_limit`` bytes wait for the socket.
    Keepalive: a ping every ``ping_interval`` seconds; no pong within ``ping_timeout`` fails the
    connection. The agent's pings are answered.
    When the connection ends, :attr:`ended` is set and :attr:`failure` says why, if it was not a
    normal close (1000 or 1001) by the agent or by :meth:`close`.
    """

    def __init__(self, handshake: ClientProtocol, limits: UpstreamLimits) -> None:
        self._loop = asyncio.get_running_loop()
        self._handshake: ClientProtocol | None = handshake
        self._response_head = bytearray()  # the handshake response, until its header is complete
        self.opened: asyncio.Future[None] = self._loop.create_future()
        # Retrieved even when nobody awaits it any more (the opening timed out): no asyncio warning.
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._limits = limits
        self._splitter = FrameSplitter(limits.max_frame)
        self._frames: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._writing_paused = False
        self._readable = asyncio.Event()  # frames are buffered, or the connection ended
        self._writable = asyncio.Event()
        self._writable.set()
        self._ping_payload: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._close_sent = False
        self.close_code: int | None = None  # the agent's close code, when it sent a close frame
        self.failure: str | None = None
        self.ended = asyncio.Event()
        self._lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=self._limits.write_limit)
        assert self._handshake is not None
        transport.writelines(self._handshake.data_to_send())  # the handshake request

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._handshake_data(data)
            return
        if self.ended.is_set():
            return  # closing: only the agent's close frame (or EOF) matters; data goes nowhere
        try:
            events = self._splitter.feed(data)
        except FrameError as exc:
            self._fail(exc.code, f"protocol error: {exc.reason}")
            return
        for event in events:
            if isinstance(event, ControlFrame):
                self._control(event)
                if self.ended.is_set():
                    return
                continue
            self._frames.extend(event)
            self._buffered += sum(len(piece) for piece in event)
            self._readable.set()
        if self._buffered > self._limits.buffer_limit and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._handshake is not None:
            self._handshake.receive_eof()
            self._check_handshake()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None and not self.opened.done():
            self.opened.set_exception(exc or InvalidMessage("connection closed during the handshake"))
        if not self.ended.is_set():
            self._end("connection lost")
        self._cancel_timer()
        self._writable.set()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- opening handshake (websockets' ClientProtocol) ------------------------------------------------

    def _handshake_data(self, data: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        if handshake.handshake_exc is not None or self.opened.done():
            handshake.receive_data(data)  # a refusal's body
            self._check_handshake()
            return
        self._response_head += data
        end = self._response_head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._response_head) > 64 * 1024:
                self._transport_abort()
            return
        # Give the handshake parser the response's header block only: a 101 response has no body,
        # so whatever follows is already the agent's first frames, for the splitter.
        head, rest = bytes(self._response_head[: end + 4]), bytes(self._response_head[end + 4 :])
        self._response_head = bytearray()
        handshake.receive_data(head)
        if handshake.state is OPEN:
            self._handshake = None
            self.opened.set_result(None)
            self._schedule_ping()
            if rest:
                self.data_received(rest)
            return
        if rest:
            handshake.receive_data(rest)  # the refusal's body
        self._check_handshake()

    def _check_handshake(self) -> None:
        handshake = self._handshake
        if handshake is None or handshake.handshake_exc is None:
            return
        if not self.opened.done():
            self.opened.set_exception(handshake.handshake_exc)
        self._transport_abort()

    # -- control frames and keepalive ------------------------------------------------------------------

    def _control(self, frame: ControlFrame) -> None:
        if frame.opcode == OP_PING:
            self._write(Frame(OP_PONG, frame.payload))
        elif frame.opcode == OP_PONG:
            if self._ping_payload is not None and frame.payload == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
        else:
            try:
                close = Close.parse(frame.payload)
            except (ProtocolError, UnicodeDecodeError):
                self._fail(CloseCode.PROTOCOL_ERROR, "protocol error: invalid close frame")
                return
            self.close_code = close.code
            if not self._close_sent:  # echo it (§5.5.1); the agent then closes the TCP connection
                echo = Close(close.code, "") if close.code != CloseCode.NO_STATUS_RCVD else None
                self._send_close(echo)
            normal = close.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)
            self._end(None if normal else f"closed by the agent with {close.code}")

    def _schedule_ping(self) -> None:
        self._cancel_timer()
        if not self.ended.is_set():
            self._timer = self._loop.call_later(self._limits.ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_payload = os.urandom(4)
        self._write(Frame(OP_PING, self._ping_payload))
        self._timer = self._loop.call_later(self._limits.ping_timeout, self._ping_timed_out)

    def _ping_timed_out(self) -> None:
        self._timer = None
        self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- writing and ending ------------------------------------------------------------------------------

    def _write(self, frame: Frame) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing() and not self._close_sent:
            transport.write(frame.serialize(mask=True))  # a client masks every frame (§5.3)

    def _send_close(self, close: Close | None) -> None:
        self._write(Frame(OP_CLOSE, close.serialize() if close else b""))
        self._close_sent = True

    def _end(self, failure: str | None, *, discard: bool = False) -> None:
        """Mark the connection ended: no more frames are buffered; read() returns what is left
        (nothing with ``discard``). A frame still incomplete in the splitter is dropped."""
        if discard:
            self._frames.clear()
            self._buffered = 0
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

    def _fail(self, code: int, failure: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame, drop the TCP connection."""
        logger.info("VNC upstream failed: %s", failure)
        self._send_close(Close(code, ""))
        self._end(failure, discard=True)
        if self._transport is not None:
            self._transport.close()  # after the close frame is written; close() aborts it if stuck

    def _transport_abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- API ----------------------------------------------------------------------------------------------

    async def read(self) -> DataFrames:
        """Return the whole data frames received so far, waiting for some; [] once the connection ended."""
        while not self._frames:
            if self.ended.is_set():
                return []
            self._readable.clear()
            await self._readable.wait()
        frames = list(self._frames)
        self._frames.clear()
        self._buffered = 0
        if self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        return frames

    def send(self, data: bytes | memoryview) -> None:
        """Write ``data`` as one binary frame (nothing once the connection is closing)."""
        self._write(Frame(OP_BINARY, data))

    @property
    def writable(self) -> bool:
        return self._writable.is_set()

    async def drain(self) -> None:
        """Wait until the socket takes what was written (or the connection ends)."""
        await self._writable.wait()

    async def close(self) -> None:
        """Close the connection (1000), wait for the agent to close TCP (bounded), then drop it. Idempotent."""
        if self._transport is None:
            return
        if not self._close_sent and not self._transport.is_closing():
            self._send_close(Close(CloseCode.NORMAL_CLOSURE, ""))
        self._end(None, discard=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._limits.close_timeout):
                await asyncio.shield(self._lost)
        self._transport.abort()  # no-op when already closed


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
    handshake = ClientProtocol(uri, max_size=limits.max_frame)  # extensions=None: none offered, none accepted
    request = handshake.connect()
    for name, value in headers.items():
        request.headers[name] = value
    request.headers["User-Agent"] = user_agent
    handshake.send_request(request)
    loop = asyncio.get_running_loop()
    ssl_context = ssl.create_default_context() if uri.secure else None
    upstream: VncUpstream | None = None
    try:
        async with asyncio.timeout(open_timeout):
            _, upstream = await loop.create_connection(
                lambda: VncUpstream(handshake, limits),
                address or uri.host,
                uri.port,
                ssl=ssl_context,
                server_hostname=uri.host if ssl_context else None,
            )
            await upstream.opened
    except BaseException:
        if upstream is not None:
            upstream._transport_abort()
        raise
    return upstream


__all__ = [
    "ControlFrame",
    "DataFrames",
    "FrameError",
    "FrameSplitter",
    "InvalidHandshake",
    "UpstreamLimits",
    "VncUpstream",
    "connect_upstream",
    "payload_of",
]
