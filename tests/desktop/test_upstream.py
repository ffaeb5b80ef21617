"""desktop.upstream: one viewer's WebSocket to the agent, against a real ``websockets`` server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from desktop.upstream import UpstreamLimits, VncUpstream, connect_upstream
from tests.support.waiting import wait_until_async

Handler = Callable[[ServerConnection], Awaitable[None]]

LIMITS = UpstreamLimits(
    max_frame=1 << 20,
    buffer_limit=256 * 1024,
    write_limit=64 * 1024,
    ping_interval=15.0,
    ping_timeout=15.0,
    close_timeout=2.0,
)


def raw_frame(opcode: int, payload: bytes, *, mask: bool = False, rsv: int = 0) -> bytes:
    """Encode one short final frame by hand (so that broken ones can be made too)."""
    head = struct.pack(">BB", 0x80 | rsv | opcode, len(payload) | (0x80 if mask else 0))
    return head + (b"\0\0\0\0" if mask else b"") + payload  # a zero mask leaves the payload as is


async def open_upstream(port: int, limits: UpstreamLimits = LIMITS) -> VncUpstream:
    return await connect_upstream(
        f"ws://127.0.0.1:{port}/vnc",
        headers={"Authorization": "Bearer t"},
        open_timeout=5,
        limits=limits,
        user_agent="test",
    )


def serving(handler: Handler, **kwargs: object) -> AsyncIterator[int]:
    async def run() -> AsyncIterator[int]:
        async with serve(handler, "127.0.0.1", 0, compression=None, **kwargs) as server:  # type: ignore[arg-type]
            yield server.sockets[0].getsockname()[1]

    return run()


async def read_all(upstream: VncUpstream) -> bytes:
    out = []
    while payloads := await upstream.read():
        out.extend(payloads)
    return b"".join(out)


async def test_upstream_relays_both_ways_and_closes_cleanly() -> None:
    received: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None and ws.request.headers["Authorization"] == "Bearer t"
        assert "Sec-WebSocket-Extensions" not in ws.request.headers
        await ws.send(b"RFB 003.008\n")
        await ws.send(bytes(range(256)) * 1000)
        received.append(await ws.recv())  # type: ignore[arg-type]
        await ws.send([b"frag", b"mented"])  # a fragmented message
        await ws.close()

    async for port in serving(handler):
        upstream = await open_upstream(port)
        upstream.send(b"hello")
        await upstream.wait_writable()
        data = await read_all(upstream)
        assert data == b"RFB 003.008\n" + bytes(range(256)) * 1000 + b"fragmented"
        assert received == [b"hello"]
        assert upstream.failure is None
        await upstream.close()


async def test_closing_the_upstream_closes_with_1000() -> None:
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        codes.append(ws.close_code)

    async for port in serving(handler):
        upstream = await open_upstream(port)
        await upstream.close()
        assert await read_all(upstream) == b""
        await wait_until_async(lambda: codes, timeout=5, what="the server to see the close")
        assert codes == [1000]
        assert upstream.failure is None


@pytest.mark.parametrize(
    ("code", "failure"), [(1000, None), (1001, None), (1011, "closed by the agent with 1011")]
)
async def test_how_the_agent_closed_is_reported(code: int, failure: str | None) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"bye")
        await ws.close(code)

    async for port in serving(handler):
        upstream = await open_upstream(port)
        assert await read_all(upstream) == b"bye"
        assert upstream.failure == failure
        await upstream.close()


async def test_upstream_answers_pings_and_pings_itself() -> None:
    pings_seen: list[bytes] = []

    class ReceivedPings(logging.Handler):
        """The server's frame log (websockets logs each frame it receives at DEBUG level)."""

        def emit(self, record: logging.LogRecord) -> None:
            frame = record.args[0] if isinstance(record.args, tuple) and record.args else None
            if record.msg == "< %s" and isinstance(frame, Frame) and frame.opcode is Opcode.PING:
                pings_seen.append(bytes(frame.data))

    server_log = logging.getLogger(f"test.upstream.{uuid.uuid4().hex}")
    server_log.setLevel(logging.DEBUG)
    server_log.addHandler(ReceivedPings())
    pong_latencies: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        pong_latencies.append(await asyncio.wait_for(await ws.ping(b"are you there"), 5))
        await wait_until_async(lambda: len(pings_seen) >= 2, timeout=5, what="the client's pings")
        await ws.send(b"still here")
        await ws.close()

    async for port in serving(handler, ping_interval=None, logger=server_log):
        upstream = await open_upstream(port, dataclasses.replace(LIMITS, ping_interval=0.1, ping_timeout=1.0))
        assert await read_all(upstream) == b"still here"
        assert len(pong_latencies) == 1  # the server's ping was answered
        assert len(pings_seen) >= 2 and all(len(p) == 4 for p in pings_seen)  # the client pinged, and again
        assert upstream.failure is None  # and the server's pongs satisfied the client
        await upstream.close()


async def test_upstream_without_pongs_fails() -> None:
    client_gave_up = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # the server does not read the client's pings, so never answers
        await client_gave_up.wait()
        ws.transport.resume_reading()  # to see the client's close
        await ws.wait_closed()

    async for port in serving(handler, ping_interval=None):
        upstream = await open_upstream(port, dataclasses.replace(LIMITS, ping_interval=0.1, ping_timeout=0.2))
        await asyncio.wait_for(upstream.ended.wait(), 5)
        assert upstream.failure == "keepalive ping timeout"
        client_gave_up.set()
        await upstream.close()


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (raw_frame(Opcode.BINARY, b"x", mask=True), 1002),  # a server never masks
        (raw_frame(Opcode.BINARY, b"x", rsv=0x40), 1002),  # no extension was negotiated
        (raw_frame(Opcode.TEXT, b"x"), 1003),  # RFB travels in binary frames
    ],
    ids=["masked", "rsv1", "text"],
)
async def test_a_frame_the_agent_may_not_send_fails_the_connection(bad: bytes, code: int) -> None:
    codes: list[int | None] = []
    fine_read = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"fine")
        await fine_read.wait()
        ws.transport.write(bad)  # below websockets, which would never send it
        await ws.wait_closed()
        codes.append(ws.close_code)

    async for port in serving(handler):
        upstream = await open_upstream(port)
        assert await upstream.read() == [b"fine"]
        fine_read.set()
        assert await upstream.read() == []
        assert upstream.failure is not None and upstream.failure.startswith("protocol error")
        await wait_until_async(lambda: codes, timeout=5, what="the server to see the close")
        assert codes == [code]
        await upstream.close()


async def test_a_refused_handshake_raises_invalid_status() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(401, "no\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("not reached")

    async for port in serving(handler, process_request=refuse):
        with pytest.raises(InvalidStatus) as refused:
            await open_upstream(port)
        assert refused.value.response.status_code == 401


async def test_frames_sent_right_after_the_handshake_are_not_lost() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.write(Frame(Opcode.BINARY, b"early").serialize(mask=False))
        await ws.send(b" and later")
        await ws.close()

    async for port in serving(handler):
        upstream = await open_upstream(port)
        assert await read_all(upstream) == b"early and later"
        await upstream.close()


async def test_a_slow_reader_pauses_the_upstream_socket() -> None:
    chunk = bytes(64 * 1024)
    sent = 0
    server_transports: list[asyncio.Transport] = []

    async def handler(ws: ServerConnection) -> None:
        nonlocal sent
        server_transports.append(ws.transport)
        for _ in range(200):  # 12.5 MiB, far more than the client buffers
            await ws.send(chunk)
            sent += 1
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, compression=None, write_limit=64 * 1024) as server:
        upstream = await open_upstream(server.sockets[0].getsockname()[1])
        # Nobody reads: the client stops reading its socket, the kernel's buffers fill up, and the
        # server's own buffer stays above its limit (its send() waits).
        await wait_until_async(
            lambda: (
                upstream.buffered > LIMITS.buffer_limit
                and server_transports
                and server_transports[0].get_write_buffer_size() >= 64 * 1024
            ),
            timeout=10,
            what="the server to be held back",
        )
        assert sent < 200
        # The limit, plus at most what one read of the socket (256 KiB) carried past it.
        assert upstream.buffered <= LIMITS.buffer_limit + 256 * 1024
        total = len(await read_all(upstream))
        assert total == 200 * len(chunk)
        await upstream.close()
