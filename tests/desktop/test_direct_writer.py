"""The proxy's own writer for a browser's socket under daphne (``desktop.consumers._DirectWriter``).

Driven on a real Twisted TCP connection, accepted by a reactor that runs on the test's event loop as
daphne's asyncio reactor does; the other end is read like a browser would.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from twisted.internet import tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.protocol import Factory, Protocol

from desktop.consumers import BROWSER_BUFFER, _DirectWriter

BIG = bytes(range(256)) * (8 * 1024)  # 2 MiB: far more than a socket pair holds


@pytest.fixture
async def pair() -> AsyncIterator[tuple[tcp.Server, socket.socket]]:
    """A Twisted server transport for an accepted loopback TCP connection, and the browser's socket."""
    loop = asyncio.get_running_loop()
    reactor = AsyncioSelectorReactor(loop)
    accepted: asyncio.Future[tcp.Server] = loop.create_future()

    class Accepting(Protocol):
        def connectionMade(self) -> None:
            assert self.transport is not None
            accepted.set_result(self.transport)

    port = reactor.listenTCP(0, Factory.forProtocol(Accepting), interface="127.0.0.1")
    browser = socket.socket()
    browser.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # the kernel holds little
    browser.setblocking(False)
    await loop.sock_connect(browser, ("127.0.0.1", port.getHost().port))
    transport = await asyncio.wait_for(accepted, 10)
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    try:
        yield transport, browser
    finally:
        transport.abortConnection()
        await port.stopListening().asFuture(loop)
        browser.close()


async def read_exactly(sock: socket.socket, size: int, *, chunk: int = 4096) -> bytes:
    """Read ``size`` bytes in small pieces, as a slow browser would."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(20):
        while len(data) < size:
            piece = await loop.sock_recv(sock, min(chunk, size - len(data)))
            assert piece, "closed early"
            data += piece
    return bytes(data)


async def test_twisted_writes_queue_behind_a_partly_sent_frame(
    pair: tuple[tcp.Server, socket.socket],
) -> None:
    transport, browser = pair
    writable = asyncio.Event()
    writer = _DirectWriter.attach(transport, writable)
    assert writer is not None
    writer.send([memoryview(BIG)[:1000], memoryview(BIG)[1000:]])
    assert not writable.is_set()  # most of it waits: more than BROWSER_BUFFER
    transport.write(b"<ping>")  # what autobahn does for a ping or a close frame
    transport.writeSequence([b"<close", b">"])
    # Twisted holds none of it (its buffer would be written whenever its own reactor callback runs,
    # possibly in the middle of a frame): it waits in the writer's one queue.
    assert transport._tempDataLen == 0 and transport.dataBuffer == b""
    received = await read_exactly(browser, len(BIG) + 13)
    assert received == BIG + b"<ping><close>"
    assert writable.is_set()  # all sent
    writer.detach()


async def test_writable_follows_what_waits_for_the_browser(pair: tuple[tcp.Server, socket.socket]) -> None:
    transport, browser = pair
    writable = asyncio.Event()
    writer = _DirectWriter.attach(transport, writable)
    assert writer is not None
    writer.send([b"x" * 1000])
    assert writable.is_set()  # taken by the socket at once
    writer.send([b"y" * (BROWSER_BUFFER + 1024 * 1024)])
    assert not writable.is_set()
    await read_exactly(browser, 1000 + 1024 * 1024, chunk=64 * 1024)
    # At most BROWSER_BUFFER bytes are left, in the kernel and the queue together.
    await asyncio.wait_for(writable.wait(), 10)
    await read_exactly(browser, BROWSER_BUFFER, chunk=64 * 1024)
    writer.detach()


async def test_detach_hands_what_is_left_to_twisted_in_order(pair: tuple[tcp.Server, socket.socket]) -> None:
    transport, browser = pair
    writer = _DirectWriter.attach(transport, asyncio.Event())
    assert writer is not None
    writer.send([BIG])
    writer.detach()
    assert "write" not in vars(transport)  # Twisted's own methods again
    transport.write(b"<after>")
    assert await read_exactly(browser, len(BIG) + 7) == BIG + b"<after>"


async def test_not_attached_while_twisted_still_holds_bytes(pair: tuple[tcp.Server, socket.socket]) -> None:
    transport, browser = pair
    transport.write(BIG)  # waits in Twisted's buffer until the reactor writes it
    assert _DirectWriter.attach(transport, asyncio.Event()) is None
    assert await read_exactly(browser, len(BIG)) == BIG


async def test_a_broken_connection_drops_what_waits(pair: tuple[tcp.Server, socket.socket]) -> None:
    transport, browser = pair
    writable = asyncio.Event()
    writer = _DirectWriter.attach(transport, writable)
    assert writer is not None
    writer.send([BIG])
    browser.close()
    await asyncio.wait_for(writable.wait(), 10)  # the pump is not left waiting
    assert writer.failed
    writer.send([b"more"])  # ignored, no error
    writer.detach()
