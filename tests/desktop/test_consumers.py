"""The desktop proxy through the real ASGI application (chatdesk.asgi.application) and a real agent."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from websockets.asyncio.server import ServerConnection, serve

from agents.models import WorkspaceAgent
from chatdesk.asgi import application
from chatdesk.services import api_token_create
from desktop import consumers, services
from desktop.control import control_take
from tests.desktop.conftest import (
    GEOMETRY,
    DesktopSetup,
    RfbClient,
    ViewerClosed,
    agent_row,
    caps_lock_on,
    communicator_client,
    expect_close,
    move_mouse,
)
from tests.factories import ChatFactory, UserFactory
from tests.support.agent_process import running_agent
from tests.support.asgi import bearer, same_origin
from tests.support.processes import free_port
from tests.support.waiting import wait_until_async

pytestmark = [pytest.mark.desktop, pytest.mark.django_db(transaction=True)]

CAPS_LOCK = 0xFFE5


def chat_viewer(chat_id: object, headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    """A browser viewer of chat ``chat_id``'s desktop, through the ASGI application."""
    return WebsocketCommunicator(application, f"/api/experimental/chats/{chat_id}/desktop", headers=headers)


def viewer(
    setup: DesktopSetup, *, query: str = "", headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    path = setup.path + (f"?{query}" if query else "")
    return WebsocketCommunicator(application, path, headers=setup.headers if headers is None else headers)


async def refused(communicator: WebsocketCommunicator) -> tuple[int, str]:
    connected, _ = await communicator.connect(timeout=20)
    assert connected, "refusals are sent after accepting, so the browser sees the code"
    try:
        return await expect_close(communicator)
    finally:
        await communicator.disconnect()


async def test_viewer_gets_a_real_vnc_session(desktop: DesktopSetup) -> None:
    communicator = viewer(desktop)
    try:
        assert (await communicator.connect(timeout=20))[0]
        client = communicator_client(communicator)
        init = await client.handshake()
        assert (init.width, init.height) == GEOMETRY
        assert await client.request_update() == GEOMETRY[0] * GEOMETRY[1] * init.bits_per_pixel // 8
    finally:
        await communicator.disconnect()


async def test_anonymous_is_refused(desktop: DesktopSetup) -> None:
    code, reason = await refused(viewer(desktop, headers=same_origin()))
    assert (code, reason) == (4401, "Not authenticated.")


async def test_invalid_api_token_is_refused(desktop: DesktopSetup) -> None:
    code, reason = await refused(viewer(desktop, headers=[(b"authorization", b"Bearer cdk_not-a-token")]))
    assert (code, reason) == (4401, "Not authenticated.")


async def test_other_users_chat_looks_like_a_missing_one(desktop: DesktopSetup) -> None:
    mallory = await sync_to_async(UserFactory.create)(username="mallory")
    _, raw = await sync_to_async(api_token_create)(user=mallory, name="t")
    headers = bearer(raw)
    assert await refused(viewer(desktop, headers=headers)) == (4404, "No such chat.")
    missing = chat_viewer(uuid.uuid4(), headers)
    assert await refused(missing) == (4404, "No such chat.")


async def test_session_cookie_from_a_foreign_origin_is_refused(desktop: DesktopSetup) -> None:
    def login() -> str:
        client = Client()
        client.force_login(desktop.user)
        return client.cookies["sessionid"].value

    cookie = f"sessionid={await sync_to_async(login)()}".encode()
    foreign = [(b"cookie", cookie), (b"host", b"localhost:8000"), (b"origin", b"https://evil.example")]
    assert (await refused(viewer(desktop, headers=foreign)))[0] == 4403
    # The same cookie from our own origin is a working session.
    communicator = viewer(desktop, headers=[(b"cookie", cookie), *same_origin()])
    try:
        assert (await communicator.connect(timeout=20))[0]
        assert (await communicator_client(communicator).handshake()).width == GEOMETRY[0]
    finally:
        await communicator.disconnect()


async def test_chat_without_agent_is_refused(desktop: DesktopSetup) -> None:
    chat = await sync_to_async(ChatFactory.create)(owner=desktop.user, workspace_agent=None)
    communicator = chat_viewer(chat.pk, desktop.headers)
    assert await refused(communicator) == (4409, "Chat has no workspace agent.")


async def test_disconnected_agent_is_refused(desktop: DesktopSetup) -> None:
    desktop.agent.last_seen = None
    await sync_to_async(desktop.agent.save)()
    assert await refused(viewer(desktop)) == (4409, "Workspace agent is not connected.")


async def test_unreachable_agent_is_refused(desktop: DesktopSetup) -> None:
    desktop.agent.url = f"ws://127.0.0.1:{free_port()}"
    await sync_to_async(desktop.agent.save)()
    assert await refused(viewer(desktop)) == (4502, "Workspace agent unreachable.")


async def test_agent_refusing_the_credential_is_unreachable(desktop: DesktopSetup) -> None:
    impostor = await sync_to_async(agent_row)(desktop.user, token="cda_other", url=desktop.process.ws_url)
    chat = await sync_to_async(ChatFactory.create)(owner=desktop.user, workspace_agent=impostor)
    communicator = chat_viewer(chat.pk, desktop.headers)
    assert await refused(communicator) == (4502, "Workspace agent unreachable.")


async def test_view_only_input_never_reaches_the_desktop(desktop: DesktopSetup) -> None:
    await sync_to_async(move_mouse)(desktop.process, 5, 5)
    assert not await sync_to_async(caps_lock_on)(desktop.process)
    # The user holds the desktop: ?view_only=1 keeps that viewer view-only all the same.
    await sync_to_async(control_take)(chat=desktop.chat, user=desktop.user)
    watcher = viewer(desktop, query="view_only=1")
    controller = viewer(desktop)
    try:
        assert (await watcher.connect(timeout=20))[0]
        watch = communicator_client(watcher)
        await watch.handshake()
        await watch.pointer(300, 200, mask=0)
        await watch.key(CAPS_LOCK, down=True)
        await watch.key(CAPS_LOCK, down=False)
        await watch.sync()  # the server has handled everything the proxy forwarded before this
        assert await sync_to_async(desktop.process.mouse_location)() == (5, 5)
        assert not await sync_to_async(caps_lock_on)(desktop.process)

        # The same bytes from a controlling viewer do reach it (so the check above can fail).
        assert (await controller.connect(timeout=20))[0]
        control = communicator_client(controller)
        await control.handshake()
        await control.pointer(300, 200, mask=0)
        await control.key(CAPS_LOCK, down=True)
        await control.key(CAPS_LOCK, down=False)
        await control.sync()
        assert await sync_to_async(desktop.process.mouse_location)() == (300, 200)
        assert await sync_to_async(caps_lock_on)(desktop.process)
        await control.key(CAPS_LOCK, down=True)
        await control.key(CAPS_LOCK, down=False)
        await control.sync()
        assert not await sync_to_async(caps_lock_on)(desktop.process)
        # The view-only viewer still watches.
        assert await watch.request_update() > 0
    finally:
        await watcher.disconnect()
        await controller.disconnect()


async def test_input_follows_the_holder_without_reconnecting(desktop: DesktopSetup) -> None:
    """A viewer without ?view_only sends input only while its user holds the desktop; the holder changes
    while it stays connected, and from then on its input is forwarded, then dropped again."""
    await sync_to_async(move_mouse)(desktop.process, 5, 5)
    communicator = viewer(desktop)
    try:
        assert (await communicator.connect(timeout=20))[0]
        client = communicator_client(communicator)
        await client.handshake()
        # Nobody holds the desktop: dropped, silently (the viewer keeps watching).
        await client.pointer(100, 100)
        await client.sync()
        assert await sync_to_async(desktop.process.mouse_location)() == (5, 5)

        await sync_to_async(services.desktop_takeover)(chat=desktop.chat, user=desktop.user)

        async def moves_to(x: int, y: int) -> bool:
            await client.pointer(x, y)
            await client.sync()
            return await sync_to_async(desktop.process.mouse_location)() == (x, y)

        # The change reaches the consumer through the channel layer: wait for it, not a fixed time.
        await until(lambda: moves_to(200, 150), what="the holder's input to pass")

        await sync_to_async(services.desktop_handback)(chat=desktop.chat, user=desktop.user)
        await until(lambda: _dropped(client, desktop), what="input to be dropped")
        assert await _dropped(client, desktop)  # and it stays so
        assert await client.request_update() > 0  # still watching, never closed
    finally:
        await communicator.disconnect()


async def test_a_lost_control_message_is_caught_up_by_the_recheck(
    desktop: DesktopSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder changes without a message reaching the viewer (a Redis blip, an expired group): the
    viewer's periodic recheck switches it all the same."""
    monkeypatch.setattr(consumers, "CONTROL_RECHECK_SECONDS", 0.2)
    await sync_to_async(move_mouse)(desktop.process, 5, 5)
    communicator = viewer(desktop)
    try:
        assert (await communicator.connect(timeout=20))[0]
        client = communicator_client(communicator)
        await client.handshake()
        # Behind the announcements' back: only the row changes.
        await sync_to_async(WorkspaceAgent.objects.filter(pk=desktop.agent.pk).update)(
            desktop_holder="person", desktop_held_by=desktop.user
        )

        async def moved() -> bool:
            before = await sync_to_async(desktop.process.mouse_location)()
            await client.pointer(before[0] % 500 + 10, 300)
            await client.sync()
            return await sync_to_async(desktop.process.mouse_location)() != before

        await until(moved, what="the recheck to let the holder's input through")
    finally:
        await communicator.disconnect()


async def until(check: Callable[[], Awaitable[bool]], *, what: str, timeout: float = 10) -> None:
    """Await ``check()`` until it is true (the event loop runs meanwhile); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _dropped(client: RfbClient, desktop: DesktopSetup) -> bool:
    """Move the pointer somewhere new through the proxy; return True when it did not move."""
    before = await sync_to_async(desktop.process.mouse_location)()
    await client.pointer(before[0] + 1, before[1] + 1)
    await client.sync()
    return await sync_to_async(desktop.process.mouse_location)() == before


async def test_view_only_malformed_stream_closes_that_viewer_only(desktop: DesktopSetup) -> None:
    bad = viewer(desktop, query="view_only=1")
    good = viewer(desktop, query="view_only=1")
    try:
        assert (await bad.connect(timeout=20))[0]
        assert (await good.connect(timeout=20))[0]
        bad_client, good_client = communicator_client(bad), communicator_client(good)
        await bad_client.handshake()
        await good_client.handshake()
        await bad.send_to(bytes_data=b"\x07garbage")
        code, reason = await expect_close(bad)
        assert code == 4400
        assert reason.startswith("Malformed RFB stream")
        assert await good_client.request_update() > 0
    finally:
        await bad.disconnect()
        await good.disconnect()


async def test_text_frames_are_refused(desktop: DesktopSetup) -> None:
    communicator = viewer(desktop)
    try:
        assert (await communicator.connect(timeout=20))[0]
        await communicator_client(communicator).handshake()
        await communicator.send_to(text_data="hello")
        code, _ = await expect_close(communicator)
        assert code == 4400
    finally:
        await communicator.disconnect()


async def test_several_viewers_at_once(desktop: DesktopSetup) -> None:
    communicators = [viewer(desktop, query="view_only=1" if i % 2 else "") for i in range(6)]
    try:
        clients = [communicator_client(c) for c in communicators]
        inits = []
        for communicator, client in zip(communicators, clients, strict=True):
            # One at a time: see the next test for concurrent handshakes.
            assert (await communicator.connect(timeout=20))[0]
            inits.append(await client.handshake())
        assert {(i.width, i.height) for i in inits} == {GEOMETRY}
        sizes = await asyncio.gather(*(c.request_update() for c in clients))
        assert set(sizes) == {GEOMETRY[0] * GEOMETRY[1] * 4}
    finally:
        for communicator in communicators:
            await communicator.disconnect()


async def test_many_viewers_can_handshake_at_the_same_time(transactional_db: None) -> None:
    # Its own agent: when this fails, Xvnc keeps refusing everyone for a while.
    user = await sync_to_async(UserFactory.create)(username="dave")
    _, raw = await sync_to_async(api_token_create)(user=user, name="t")
    token = f"cda_{uuid.uuid4().hex}"
    with running_agent(token=token, geometry="640x480") as process:
        agent = await sync_to_async(agent_row)(user, token=token, url=process.ws_url)
        chat = await sync_to_async(ChatFactory.create)(owner=user, workspace_agent=agent)
        path = f"/api/experimental/chats/{chat.pk}/desktop?view_only=1"
        headers = bearer(raw)
        communicators = [WebsocketCommunicator(application, path, headers=headers) for _ in range(8)]
        await _connect_all_then_handshake(communicators, (640, 480))


async def _connect_all_then_handshake(
    communicators: list[WebsocketCommunicator], size: tuple[int, int]
) -> None:
    try:
        for communicator in communicators:
            assert (await communicator.connect(timeout=20))[0]
        inits = await asyncio.gather(*(communicator_client(c).handshake() for c in communicators))
        assert {(i.width, i.height) for i in inits} == {size}
    finally:
        for communicator in communicators:
            await communicator.disconnect()


def established_connections(port: int, pid: int | None = None) -> int:
    """Return how many ESTABLISHED TCP connections process ``pid`` (default: us) has to 127.0.0.1:``port``."""
    pid = pid or os.getpid()
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{Path(table).name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def test_closing_the_browser_closes_the_upstream_every_time(desktop: DesktopSetup) -> None:
    port = desktop.process.port
    tasks_before = len(asyncio.all_tasks())
    assert established_connections(port) == 0
    for i in range(100):
        communicator = viewer(desktop, query="view_only=1" if i % 2 else "")
        assert (await communicator.connect(timeout=20))[0]
        # A whole RFB session each time (Xvnc blacklists clients that leave before authenticating).
        client = communicator_client(communicator)
        await client.handshake()
        if i % 10 == 0:
            await client.request_update()
        assert established_connections(port) == 1
        await communicator.disconnect()
    await wait_until_async(
        lambda: established_connections(port) == 0, timeout=10, what="upstream sockets to close"
    )
    await wait_until_async(
        lambda: len(asyncio.all_tasks()) <= tasks_before, timeout=10, what="proxy tasks to end"
    )


async def test_agent_dying_closes_the_browser(transactional_db: None) -> None:
    user = await sync_to_async(UserFactory.create)(username="carol")
    _, raw = await sync_to_async(api_token_create)(user=user, name="t")
    token = f"cda_{uuid.uuid4().hex}"
    with running_agent(token=token, geometry="640x480") as process:
        desktop_dir = Path((await sync_to_async(process.info)())["xauthority"]).parent
        agent = await sync_to_async(agent_row)(user, token=token, url=process.ws_url)
        chat = await sync_to_async(ChatFactory.create)(owner=user, workspace_agent=agent)
        communicator = chat_viewer(chat.pk, bearer(raw))
        try:
            assert (await communicator.connect(timeout=20))[0]
            client = communicator_client(communicator)
            assert (await client.handshake()).width == 640
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            os.kill(process.pid, signal.SIGKILL)  # no goodbye: the TCP connection just ends
            with pytest.raises(ViewerClosed) as closed:
                while True:
                    await client.read(1 << 20, timeout=30)
            assert (closed.value.code, closed.value.reason) == (4502, "Workspace agent connection lost.")
            assert established_connections(process.port) == 0
        finally:
            await communicator.disconnect()
            for child in children:  # the killed agent could not stop its desktop; do it for it
                try:
                    os.killpg(int(child), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            shutil.rmtree(desktop_dir, ignore_errors=True)


@pytest.mark.parametrize("bad_frame", [b"\x82\x81\0\0\0\0x", b"\xc2\x01x"], ids=["masked", "rsv1"])
async def test_agent_breaking_the_websocket_protocol_closes_the_viewer(
    transactional_db: None, bad_frame: bytes
) -> None:
    """A fake agent sends a frame a server may not send (masked, or RSV1 without an extension)."""
    token = f"cda_{uuid.uuid4().hex}"

    async def fake_vnc(ws: ServerConnection) -> None:
        await ws.send(b"RFB 003.008\n")  # may or may not reach the viewer: the connection fails
        ws.transport.write(bad_frame)  # below websockets, which would never send it
        await ws.wait_closed()

    async with serve(fake_vnc, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        user = await sync_to_async(UserFactory.create)(username="erin")
        _, raw = await sync_to_async(api_token_create)(user=user, name="t")
        agent = await sync_to_async(agent_row)(user, token=token, url=f"ws://127.0.0.1:{port}")
        chat = await sync_to_async(ChatFactory.create)(owner=user, workspace_agent=agent)
        communicator = chat_viewer(chat.pk, bearer(raw))
        try:
            assert (await communicator.connect(timeout=20))[0]
            assert await expect_close(communicator) == (4502, "Workspace agent protocol error.")
            await wait_until_async(
                lambda: established_connections(port) == 0, timeout=10, what="the upstream socket to close"
            )
        finally:
            await communicator.disconnect()
