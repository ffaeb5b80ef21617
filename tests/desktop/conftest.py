"""Fixtures for the desktop tests: a real chatdesk-agent with Xvnc, rows that point at it, and a
minimal RFB client that speaks to the proxy through either the ASGI app or a real daphne."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.utils import timezone
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agents.daemon.credentials import server_credential
from agents.models import WorkspaceAgent
from chatdesk.crypto import encrypt_secret, hash_token
from chatdesk.services import api_token_create
from chats.models import Chat
from tests.factories import ChatFactory, UserFactory
from tests.support.agent_process import AgentProcess, running_agent
from tests.support.asgi import bearer

GEOMETRY = (1024, 768)
NEEDS_DESKTOP = shutil.which("Xvnc") is None or shutil.which("xdotool") is None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("desktop") and NEEDS_DESKTOP:
            item.add_marker(pytest.mark.skip(reason="needs Xvnc and xdotool"))


@pytest.fixture(autouse=True)
async def close_thread_connections() -> AsyncIterator[None]:
    """Close the database connections that async tests opened in asgiref's worker thread.

    Otherwise they outlive the test and PostgreSQL refuses to drop the test database at the end.
    """
    yield
    await sync_to_async(connections.close_all)()


# -- rows ------------------------------------------------------------------------------------------------


def agent_row(
    owner: Any, *, token: str, url: str, connected: bool = True, name: str | None = None
) -> WorkspaceAgent:
    """Create a WorkspaceAgent for ``token`` (as workspace_agent_create would), reachable at ``url``."""
    agent = WorkspaceAgent(
        owner=owner,
        name=name or f"desk-{secrets.token_hex(3)}",
        token_hash=hash_token(token),
        token_prefix=token[:10],
        server_credential_encrypted=encrypt_secret(server_credential(token)),
        url=url,
        display_width=GEOMETRY[0],
        display_height=GEOMETRY[1],
        last_seen=timezone.now() if connected else None,
    )
    agent.save()
    return agent


@dataclass
class DesktopSetup:
    user: Any
    token: str  # the user's API token
    chat: Chat
    agent: WorkspaceAgent
    process: AgentProcess

    @property
    def path(self) -> str:
        return f"/api/experimental/chats/{self.chat.pk}/desktop"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return bearer(self.token)


@pytest.fixture(scope="session")
def agent_token() -> str:
    return f"cda_{secrets.token_urlsafe(24)}"


@pytest.fixture(scope="session")
def shared_agent(agent_token: str) -> Iterator[AgentProcess]:
    """One real agent + Xvnc for the tests that do not kill it (started once: Xvnc takes a moment)."""
    if NEEDS_DESKTOP:
        pytest.skip("needs Xvnc and xdotool")
    with running_agent(token=agent_token, geometry=f"{GEOMETRY[0]}x{GEOMETRY[1]}") as process:
        process.info()  # start the desktop now, not inside the first test's deadline
        yield process


@pytest.fixture
def desktop(transactional_db: None, shared_agent: AgentProcess, agent_token: str) -> DesktopSetup:
    user = UserFactory.create(username="alice")
    _, raw = api_token_create(user=user, name="desktop-tests")
    agent = agent_row(user, token=agent_token, url=shared_agent.ws_url)
    chat = ChatFactory.create(owner=user, workspace_agent=agent)
    return DesktopSetup(user=user, token=raw, chat=chat, agent=agent, process=shared_agent)


# -- an RFB client ------------------------------------------------------------------------------------


class ViewerClosed(Exception):
    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


@dataclass
class ServerInit:
    width: int
    height: int
    bits_per_pixel: int
    name: str


class RfbClient:
    """Just enough of an RFB 3.8 viewer to check what the proxy carries (RFC 6143)."""

    def __init__(
        self, recv: Callable[[float], Awaitable[bytes]], send: Callable[[bytes], Awaitable[None]]
    ) -> None:
        self._recv = recv
        self.send = send
        self.buffer = bytearray()
        self.init: ServerInit | None = None

    async def read(self, n: int, timeout: float = 15) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.buffer) < n:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"wanted {n} bytes, have {len(self.buffer)}")
            self.buffer += await self._recv(left)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def handshake(self, *, shared: bool = True) -> ServerInit:
        version = await self.read(12)
        assert version == b"RFB 003.008\n", version
        await self.send(b"RFB 003.008\n")
        (count,) = await self.read(1)
        assert count > 0, "the server refused the connection"
        types = await self.read(count)
        assert 1 in types, f"security None not offered: {list(types)}"
        await self.send(b"\x01")
        assert await self.read(4) == b"\x00\x00\x00\x00", "SecurityResult failed"
        await self.send(b"\x01" if shared else b"\x00")
        width, height = struct.unpack(">HH", await self.read(4))
        pixel_format = await self.read(16)
        (name_length,) = struct.unpack(">I", await self.read(4))
        name = (await self.read(name_length)).decode(errors="replace")
        self.init = ServerInit(width, height, pixel_format[0], name)
        await self.send(struct.pack(">BBHi", 2, 0, 1, 0))  # SetEncodings: raw only
        return self.init

    async def request_update(self, *, incremental: bool = False, timeout: float = 15) -> int:
        """Send a FramebufferUpdateRequest for the whole screen; return the pixel bytes received."""
        assert self.init is not None
        await self.send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.init.width, self.init.height))
        return await self.read_update(timeout=timeout)

    async def read_update(self, *, timeout: float = 15) -> int:
        """Read server messages until a FramebufferUpdate; return its pixel bytes."""
        assert self.init is not None
        while True:
            (kind,) = await self.read(1, timeout)
            if kind == 0:
                _, rects = struct.unpack(">BH", await self.read(3, timeout))
                total = 0
                for _ in range(rects):
                    _x, _y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12, timeout))
                    assert encoding == 0, f"unexpected encoding {encoding}"
                    size = w * h * self.init.bits_per_pixel // 8
                    await self.read(size, timeout)
                    total += size
                return total
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                _, length = struct.unpack(">3sI", await self.read(7, timeout))
                await self.read(length, timeout)
                continue
            raise AssertionError(f"unexpected server message {kind}")

    async def pointer(self, x: int, y: int, mask: int = 0) -> None:
        await self.send(struct.pack(">BBHH", 5, mask, x, y))

    async def key(self, keysym: int, *, down: bool) -> None:
        await self.send(struct.pack(">BBHI", 4, int(down), 0, keysym))

    async def sync(self) -> None:
        """Return once the server has processed everything sent so far (it answers in order)."""
        await self.request_update(incremental=False)


def communicator_client(communicator: WebsocketCommunicator) -> RfbClient:
    async def recv(timeout: float) -> bytes:
        message = await communicator.receive_output(timeout)
        if message["type"] == "websocket.close":
            raise ViewerClosed(message.get("code"), message.get("reason", ""))
        assert message["type"] == "websocket.send", message
        return message["bytes"]

    async def send(data: bytes) -> None:
        await communicator.send_to(bytes_data=data)

    return RfbClient(recv, send)


def websocket_client(ws: ClientConnection) -> RfbClient:
    async def recv(timeout: float) -> bytes:
        try:
            data = await asyncio.wait_for(ws.recv(), timeout)
        except ConnectionClosed as exc:
            raise ViewerClosed(
                exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
            ) from None
        assert isinstance(data, bytes)
        return data

    async def send(data: bytes) -> None:
        await ws.send(data)

    return RfbClient(recv, send)


async def expect_close(communicator: WebsocketCommunicator, timeout: float = 15) -> tuple[int, str]:
    """Return (code, reason) of the close the consumer sends (skipping data frames)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        message = await communicator.receive_output(max(0.01, deadline - loop.time()))
        if message["type"] == "websocket.close":
            return message.get("code"), message.get("reason", "")


# -- desktop state ------------------------------------------------------------------------------------


def move_mouse(process: AgentProcess, x: int, y: int) -> None:
    subprocess.run(
        ["xdotool", "mousemove", "--sync", str(x), str(y)], env=process.x_env(), check=True, timeout=10
    )


def caps_lock_on(process: AgentProcess) -> bool:
    out = subprocess.run(
        ["xset", "q"], env=process.x_env(), capture_output=True, text=True, timeout=10
    ).stdout
    return "Caps Lock:   on" in out
