"""desktop.wsframes: splitting a server's WebSocket stream into whole frames, and the upstream
connection that splices them (against a real ``websockets`` server)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from desktop.wsframes import (
    ControlFrame,
    FrameError,
    FrameSplitter,
    UpstreamLimits,
    VncUpstream,
    connect_upstream,
    payload_of,
)

MAX_FRAME = 1 << 20


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False, rsv: int = 0) -> bytes:
    """Encode one frame by hand (so broken ones can be made too)."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack(">BB", first, size | (0x80 if mask else 0))
    elif size < 1 << 16:
        head = struct.pack(">BBH", first, 126 | (0x80 if mask else 0), size)
    else:
        head = struct.pack(">BBQ", first, 127 | (0x80 if mask else 0), size)
    if mask:
        head += b"\0\0\0\0"  # a zero key: the payload is unchanged
    return head + payload


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(splitter: FrameSplitter, chunks: list[bytes]) -> tuple[bytes, list[ControlFrame], list[bytes]]:
    """Return (forwarded bytes, control frames, the forwarded runs' joined bytes)."""
    forwarded, controls, runs = [], [], []
    for chunk in chunks:
        for event in splitter.feed(chunk):
            if isinstance(event, ControlFrame):
                controls.append(event)
            else:
                assert event and all(isinstance(piece, bytes | memoryview) for piece in event)
                runs.append(b"".join(event))
                forwarded.append(runs[-1])
    return b"".join(forwarded), controls, runs


def whole_frames(data: bytes) -> list[bytes]:
    """Split concatenated valid frames (for checking that each run holds whole frames)."""
    out, pos = [], 0
    while pos < len(data):
        length = data[pos + 1] & 0x7F
        head = 2
        if length == 126:
            (length,) = struct.unpack_from(">H", data, pos + 2)
            head = 4
        elif length == 127:
            (length,) = struct.unpack_from(">Q", data, pos + 2)
            head = 10
        out.append(data[pos : pos + head + length])
        pos += head + length
    assert pos == len(data), "a run ended inside a frame"
    return out


# A stream item: a binary message (maybe fragmented into several frames) or a control frame.
payloads = st.binary(max_size=300) | st.binary(min_size=65530, max_size=70000)
messages = st.lists(payloads, min_size=1, max_size=3).map(lambda parts: ("data", parts))
controls = st.tuples(st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125)).map(
    lambda c: ("control", c)
)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(messages | controls, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=12),
    interleave=st.booleans(),
)
def test_whole_frames_come_out_byte_for_byte_whatever_the_chunking(
    items: list[tuple[str, Any]], cuts: list[int], interleave: bool
) -> None:
    stream = bytearray()
    expected_data, expected_controls = bytearray(), []
    for kind, value in items:
        if kind == "control":
            opcode, payload = value
            stream += frame(opcode, payload)
            expected_controls.append(ControlFrame(opcode, payload))
            continue
        parts: list[bytes] = value
        for index, part in enumerate(parts):
            encoded = frame(Opcode.BINARY if index == 0 else Opcode.CONT, part, fin=index == len(parts) - 1)
            stream += encoded
            expected_data += encoded
            if interleave and index < len(parts) - 1:  # control frames may come between fragments
                stream += frame(Opcode.PING, b"between")
                expected_controls.append(ControlFrame(Opcode.PING, b"between"))
    splitter = FrameSplitter(MAX_FRAME)
    forwarded, got_controls, runs = feed_all(splitter, split_at(bytes(stream), cuts))
    assert forwarded == bytes(expected_data)  # the data frames, untouched, in order
    assert got_controls == expected_controls
    for run in runs:
        whole_frames(run)  # every run is made of whole frames
    assert payload_of([forwarded]) == b"".join(b"".join(value) for kind, value in items if kind == "data")


def test_a_chunk_of_whole_frames_is_forwarded_as_itself() -> None:
    chunk = frame(Opcode.BINARY, b"a" * 1000) + frame(Opcode.BINARY, b"b" * 70000)
    (event,) = FrameSplitter(MAX_FRAME).feed(chunk)
    assert isinstance(event, list) and len(event) == 1 and event[0] is chunk


def test_a_frame_spanning_chunks_is_held_until_complete() -> None:
    encoded = frame(Opcode.BINARY, bytes(200_000))
    splitter = FrameSplitter(MAX_FRAME)
    assert splitter.feed(encoded[:1]) == []  # half a header
    assert splitter.feed(encoded[1:100_000]) == []
    (event,) = splitter.feed(encoded[100_000:])
    assert isinstance(event, list) and b"".join(event) == encoded


def test_control_frames_split_the_runs_in_order() -> None:
    data1, ping, data2 = frame(Opcode.BINARY, b"one"), frame(Opcode.PING, b"p"), frame(Opcode.BINARY, b"two")
    events = FrameSplitter(MAX_FRAME).feed(data1 + ping + data2)
    assert events == [[data1], ControlFrame(Opcode.PING, b"p"), [data2]]


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        pytest.param(frame(Opcode.BINARY, b"x", mask=True), 1002, id="masked"),
        pytest.param(frame(Opcode.BINARY, b"x", rsv=0x40), 1002, id="rsv1"),
        pytest.param(frame(Opcode.BINARY, b"x", rsv=0x10), 1002, id="rsv3"),
        pytest.param(frame(Opcode.PING, b"x", rsv=0x20), 1002, id="rsv2-control"),
        pytest.param(frame(0x3, b"x"), 1002, id="reserved-data-opcode"),
        pytest.param(frame(0xB, b"x"), 1002, id="reserved-control-opcode"),
        pytest.param(frame(Opcode.TEXT, b"x"), 1003, id="text"),
        pytest.param(frame(Opcode.CONT, b"x"), 1002, id="continuation-first"),
        pytest.param(
            frame(Opcode.BINARY, b"x", fin=False) + frame(Opcode.BINARY, b"y"), 1002, id="no-continuation"
        ),
        pytest.param(frame(Opcode.PING, b"x", fin=False), 1002, id="fragmented-control"),
        pytest.param(frame(Opcode.PING, b"x" * 126), 1002, id="long-control"),
        pytest.param(frame(Opcode.BINARY, bytes(MAX_FRAME + 1)), 1009, id="too-big"),
    ],
)
def test_what_a_server_may_not_send_is_refused(stream: bytes, code: int) -> None:
    with pytest.raises(FrameError) as error:
        FrameSplitter(MAX_FRAME).feed(stream)
    assert error.value.code == code


def test_a_masked_frame_is_refused_even_when_its_header_is_cut() -> None:
    splitter = FrameSplitter(MAX_FRAME)
    good = frame(Opcode.BINARY, b"ok")
    assert splitter.feed(good + frame(Opcode.BINARY, b"x", mask=True)[:1]) == [[good]]
    with pytest.raises(FrameError):
        splitter.feed(b"\x81")


# -- VncUpstream against a real websockets server --------------------------------------------------------


Handler = Callable[[ServerConnection], Awaitable[None]]


LIMITS = UpstreamLimits(
    max_frame=MAX_FRAME,
    buffer_limit=256 * 1024,
    write_limit=64 * 1024,
    ping_interval=15.0,
    ping_timeout=15.0,
    close_timeout=2.0,
)


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
    while frames := await upstream.read():
        out.append(payload_of(frames))
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
        await upstream.drain()
        data = await read_all(upstream)
        assert data == b"RFB 003.008\n" + bytes(range(256)) * 1000 + b"fragmented"
        assert received == [b"hello"]
        assert upstream.failure is None and upstream.close_code == 1000
        await upstream.close()


async def test_upstream_answers_pings_and_pings_itself() -> None:
    pongs: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        pongs.append(await (await ws.ping(b"are you there")))
        await ws.send(b"still here")
        await asyncio.sleep(0.5)  # the client's own pings (every 0.1 s) are answered by websockets
        await ws.close()

    async for port in serving(handler, ping_interval=None):
        upstream = await open_upstream(port, dataclasses.replace(LIMITS, ping_interval=0.1, ping_timeout=1.0))
        assert await read_all(upstream) == b"still here"
        assert pongs and upstream.failure is None
        await upstream.close()


async def test_upstream_without_pongs_fails() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async for port in serving(handler):
        upstream = await open_upstream(port, dataclasses.replace(LIMITS, ping_interval=0.1, ping_timeout=0.2))
        # Hide the pongs: the server's transport stops reading, so its pong never comes.
        upstream._transport.pause_reading()  # type: ignore[union-attr]
        await asyncio.wait_for(upstream.ended.wait(), 3)
        assert upstream.failure == "keepalive ping timeout"
        await upstream.close()


async def test_a_masked_or_rsv_frame_from_upstream_is_a_protocol_error() -> None:
    for bad in (frame(Opcode.BINARY, b"x", mask=True), frame(Opcode.BINARY, b"x", rsv=0x40)):

        async def handler(ws: ServerConnection, bad: bytes = bad) -> None:
            await ws.send(b"fine")
            await asyncio.sleep(0.05)
            ws.transport.write(bad)  # bypass websockets: send a frame a server may not send
            await ws.wait_closed()

        async for port in serving(handler):
            upstream = await open_upstream(port)
            assert await read_all(upstream) in (b"fine", b"")
            assert upstream.failure is not None and upstream.failure.startswith("protocol error")
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

    async def handler(ws: ServerConnection) -> None:
        nonlocal sent
        for _ in range(200):  # 12.5 MiB, far more than the client buffers
            await ws.send(chunk)
            sent += 1
        await ws.close()

    async for port in serving(handler, write_limit=64 * 1024):
        upstream = await open_upstream(port)
        await asyncio.sleep(0.5)
        assert upstream._buffered <= 256 * 1024 + 256 * 1024  # the limit, plus the chunk that crossed it
        assert sent < 200  # the server is held back by TCP
        total = len(await read_all(upstream))
        assert total == 200 * len(chunk)
        await upstream.close()
