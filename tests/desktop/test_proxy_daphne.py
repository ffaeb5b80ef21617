"""The desktop proxy through a real daphne process, a real agent (heartbeating to that daphne) and Xvnc;
and the contract tests for the two private details of daphne and Channels the proxy relies on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agents.models import WorkspaceAgent
from chatdesk.services import api_token_create
from desktop.control import control_take
from tests.desktop.conftest import (
    GEOMETRY,
    DesktopSetup,
    RfbClient,
    move_mouse,
    websocket_client,
)
from tests.desktop.test_consumers import established_connections
from tests.factories import ChatFactory, UserFactory, WorkspaceAgentFactory, agent_token
from tests.support.agent_process import running_agent
from tests.support.processes import ROOT, Daphne, free_port, running_daphne, server_env, stop, wait_until

pytestmark = [pytest.mark.desktop, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def daphne(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Daphne]:
    with running_daphne(tmp_path_factory.mktemp("daphne")) as server:
        yield server


def ws_connect(
    daphne: Daphne,
    path: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: object,
) -> connect:
    headers = ({"Authorization": f"Bearer {token}"} if token else {}) | (headers or {})
    return connect(
        daphne.ws_url + path,
        additional_headers=headers,
        compression=None,
        max_size=None,
        open_timeout=20,
        **kwargs,  # type: ignore[arg-type]
    )


async def close_code(ws: ClientConnection, timeout: float = 20) -> int | None:
    """Read until the server closes; return its close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def test_real_vnc_session_with_an_agent_heartbeating_to_daphne(daphne: Daphne) -> None:
    user = await sync_to_async(UserFactory.create)(username="alice")
    _, api_token = await sync_to_async(api_token_create)(user=user, name="t")
    agent = await sync_to_async(WorkspaceAgentFactory.create)(owner=user)  # no url, never seen: not connected
    chat = await sync_to_async(ChatFactory.create)(owner=user, workspace_agent=agent)
    with running_agent(token=agent_token(agent), server_url=daphne.url, geometry="800x600") as process:

        def heartbeat_arrived() -> bool:
            row = WorkspaceAgent.objects.get(pk=agent.pk)
            return row.is_connected and row.url == process.ws_url

        await sync_to_async(wait_until)(heartbeat_arrived, timeout=30, what="the agent's heartbeat")
        async with ws_connect(daphne, f"/api/experimental/chats/{chat.pk}/desktop", token=api_token) as ws:
            client = websocket_client(ws)
            init = await client.handshake()
            assert (init.width, init.height) == (800, 600)
            assert await client.request_update() == 800 * 600 * init.bits_per_pixel // 8
            # An incremental update is sent once the screen changes (RFC 6143 §7.5.3): open a window.
            xterm = subprocess.Popen(["xterm"], env=process.x_env())
            try:
                assert await client.request_update(incremental=True) > 0
            finally:
                xterm.kill()
                xterm.wait()

        # The agent going away closes the viewer.
        async with ws_connect(daphne, f"/api/experimental/chats/{chat.pk}/desktop", token=api_token) as ws:
            await websocket_client(ws).handshake()
            process.stop()  # the agent closes its connections (1001, going away): a normal end
            assert await close_code(ws) == 1000


async def test_refusals_carry_their_codes_through_daphne(daphne: Daphne, desktop: DesktopSetup) -> None:
    path = desktop.path
    async with ws_connect(daphne, path, headers={"Origin": daphne.url}) as ws:
        assert await close_code(ws) == 4401
    async with ws_connect(daphne, path, token="cdk_bogus") as ws:
        assert await close_code(ws) == 4401

    mallory = await sync_to_async(UserFactory.create)(username="mallory")
    _, mallory_token = await sync_to_async(api_token_create)(user=mallory, name="t")
    async with ws_connect(daphne, path, token=mallory_token) as ws:
        assert await close_code(ws) == 4404
    async with ws_connect(
        daphne, f"/api/experimental/chats/{uuid.uuid4()}/desktop", token=mallory_token
    ) as ws:
        assert await close_code(ws) == 4404

    def login() -> str:
        client = Client()
        client.force_login(desktop.user)
        return client.cookies["sessionid"].value

    cookie = f"sessionid={await sync_to_async(login)()}"
    async with ws_connect(daphne, path, headers={"Cookie": cookie, "Origin": "https://evil.example"}) as ws:
        assert await close_code(ws) == 4403
    async with ws_connect(daphne, path, headers={"Cookie": cookie, "Origin": daphne.url}) as ws:
        assert (await websocket_client(ws).handshake()).width == GEOMETRY[0]

    no_agent = await sync_to_async(ChatFactory.create)(owner=desktop.user, workspace_agent=None)
    async with ws_connect(
        daphne, f"/api/experimental/chats/{no_agent.pk}/desktop", token=desktop.token
    ) as ws:
        assert await close_code(ws) == 4409

    desktop.agent.url = f"ws://127.0.0.1:{free_port()}"
    await sync_to_async(desktop.agent.save)()
    async with ws_connect(daphne, path, token=desktop.token) as ws:
        assert await close_code(ws) == 4502


async def test_view_only_pointer_never_moves_the_cursor_through_daphne(
    daphne: Daphne, desktop: DesktopSetup
) -> None:
    await sync_to_async(move_mouse)(desktop.process, 7, 9)
    async with ws_connect(daphne, desktop.path + "?view_only=1", token=desktop.token) as ws:
        watch = websocket_client(ws)
        await watch.handshake()
        for x in range(100, 400, 50):
            await watch.pointer(x, x // 2, mask=0)
        await watch.sync()
        assert await sync_to_async(desktop.process.mouse_location)() == (7, 9)
    # The same bytes from a viewer whose user holds the desktop do move it (so the check above can fail).
    await sync_to_async(control_take)(chat=desktop.chat, user=desktop.user)
    async with ws_connect(daphne, desktop.path, token=desktop.token) as ws:
        control = websocket_client(ws)
        await control.handshake()
        await control.pointer(350, 175)
        await control.sync()
        assert await sync_to_async(desktop.process.mouse_location)() == (350, 175)


async def test_no_upstream_connection_outlives_its_viewer(daphne: Daphne, desktop: DesktopSetup) -> None:
    port, pid = desktop.process.port, daphne.proc.pid
    assert established_connections(port, pid) == 0
    for i in range(100):
        if i % 20 == 0:  # the agent here never heartbeats: keep it connected however slow the machine is
            await sync_to_async(WorkspaceAgent.objects.filter(pk=desktop.agent.pk).update)(
                last_seen=timezone.now()
            )
        async with ws_connect(
            daphne, desktop.path + ("?view_only=1" if i % 2 else ""), token=desktop.token
        ) as ws:
            client = websocket_client(ws)
            await client.handshake()
            if i % 10 == 0:
                await client.request_update()
            assert established_connections(port, pid) == 1
    await sync_to_async(wait_until)(
        lambda: established_connections(port, pid) == 0, timeout=10, what="daphne's upstream sockets to close"
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_viewer_that_stops_reading_is_dropped(
    tmp_path: Path, desktop: DesktopSetup, django_db_setup: None
) -> None:
    """A browser that does not read must not make daphne buffer the desktop: it is dropped (4408)."""
    with running_daphne(tmp_path, env={"CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS": "1"}) as server:
        pid, agent_port = server.proc.pid, desktop.process.port
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # no autotuning: a really slow reader
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        async with ws_connect(server, desktop.path, token=desktop.token, sock=sock, max_queue=1) as ws:
            client = websocket_client(ws)
            init = await client.handshake()
            rss_before = rss_kib(pid)
            frame = init.width * init.height * 4
            request = struct.pack(">BBHHHH", 3, 0, 0, 0, init.width, init.height)
            assert established_connections(agent_port, pid) == 1
            # Keep asking for full frames of raw pixels (the server merges requests that wait, so
            # one at a time), and read none of them.
            started = time.monotonic()
            requested = 0
            while established_connections(agent_port, pid) and time.monotonic() - started < 30:
                try:
                    await ws.send(request)
                except ConnectionClosed:
                    break  # daphne gave up on us after closing with 4408: fine
                requested += 1
                await asyncio.sleep(0.05)
            await sync_to_async(wait_until)(
                lambda: established_connections(agent_port, pid) == 0,
                timeout=10,
                what="the slow viewer's drop",
            )
            dropped_after = time.monotonic() - started
            # The grace period (1 s) passed with the browser unwritable, and not much more.
            assert 1.0 <= dropped_after < 10, dropped_after
            assert requested >= 10
            # Daphne held a bounded amount for this viewer, far less than what was asked for.
            assert rss_kib(pid) - rss_before < min(requested * frame, 100 * 1024 * 1024) // 1024 // 2
            # A slow viewer indeed: it reads again only after longer than autobahn's default closing
            # handshake (1 s), and still finds what was sent and then the close frame, whole.
            await asyncio.sleep(2)
            assert await close_code(ws, timeout=30) == 4408


async def test_daphnes_pings_arrive_whole_between_the_desktops_frames(
    tmp_path: Path, desktop: DesktopSetup, django_db_setup: None
) -> None:
    """Daphne's pings (sent to a viewer that has been quiet for the ping interval) arrive whole, in the
    stream of the desktop's frames, which stays in step around them, for a slow reader too."""
    frames_seen: list[str] = []

    class Frames(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            frames_seen.append(record.getMessage())

    frame_log = logging.getLogger(f"test.frames.{uuid.uuid4().hex}")
    frame_log.setLevel(logging.DEBUG)
    frame_log.addHandler(Frames())
    with running_daphne(tmp_path, ping_interval=1) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # the kernel holds little for us
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        async with ws_connect(
            server, desktop.path, token=desktop.token, sock=sock, max_queue=1, logger=frame_log
        ) as ws:

            async def slow_recv(timeout: float) -> bytes:
                await asyncio.sleep(0.25)  # a slow browser: each update (12 frames) takes 3 s to read
                data = await asyncio.wait_for(ws.recv(), timeout)
                assert isinstance(data, bytes)
                return data

            async def send(data: bytes) -> None:
                await ws.send(data)

            client = RfbClient(slow_recv, send)
            init = await client.handshake()
            frame = init.width * init.height * init.bits_per_pixel // 8
            # Daphne checks every 2 s for viewers quiet for 1 s (a request resets that): each update
            # sees at least one ping; all were read whole and in step, so no ping broke a frame.
            for _ in range(3):
                assert await client.request_update(timeout=30) == frame
            kinds = [line.split(" ", 2)[1] for line in frames_seen if line.startswith("< ")]
            pings = [i for i, kind in enumerate(kinds) if kind == "PING"]
            assert any(0 < i < len(kinds) - 1 and kinds[i - 1] == kinds[i + 1] == "BINARY" for i in pings), (
                kinds
            )


# -- contracts: the private details of daphne and Channels that desktop.consumers relies on ------------


@pytest.fixture(scope="module")
def probe_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real daphne serving tests/desktop/daphne_probe.py; yield its port."""
    port = free_port()
    daphne = Path(sys.executable).parent / "daphne"
    argv = [str(daphne), "-b", "127.0.0.1", "-p", str(port), "tests.desktop.daphne_probe:application"]
    log = tmp_path_factory.mktemp("probe") / "daphne.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=server_env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"daphne exited:\n{log.read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
            return False

        wait_until(up, timeout=30, what="daphne to listen")
        yield port
    finally:
        stop(proc)


async def probe(port: int, path: str) -> dict[str, str | None]:
    async with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=20) as ws:
        found = json.loads(await ws.recv())
    assert isinstance(found, dict)
    return found


async def test_contract_daphne_passes_a_partial_of_handle_reply_as_send(probe_port: int) -> None:
    found = await probe(probe_port, "/daphne")
    assert found == {"protocol": "WebSocketProtocol", "transport": "Server"}, (
        f"daphne {version('daphne')} no longer passes functools.partial(server.handle_reply, protocol) as an "
        "application's send (or its protocol has no Twisted TCP transport): the desktop proxy cannot reach "
        f"the browser's connection for flow control and TCP_NODELAY (desktop/consumers.py). Found: {found}"
    )


async def test_contract_channels_session_middleware_keeps_the_servers_send_as_real_send(
    probe_port: int,
) -> None:
    found = await probe(probe_port, "/channels")
    assert found == {"protocol": "WebSocketProtocol", "transport": "Server"}, (
        f"channels {version('channels')}'s session middleware no longer keeps the server's send as "
        "real_send on the object whose bound send it passes on: the desktop proxy cannot reach the "
        f"browser's connection for flow control and TCP_NODELAY (desktop/consumers.py). Found: {found}"
    )
