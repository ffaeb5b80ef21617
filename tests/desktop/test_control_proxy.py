"""Input only from the holder, through a real daphne, a real agent and Xvnc (SPEC §8 "Input only from the
holder"): two people watch one desktop without ``view_only``; only the one holding it moves the pointer,
and when the holder changes while both stay connected, input follows the holder."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect

from chatdesk.services import api_token_create
from tests.desktop.conftest import DesktopSetup, RfbClient, move_mouse, websocket_client
from tests.factories import ChatFactory, UserFactory
from tests.support.processes import Daphne, running_daphne

pytestmark = [pytest.mark.desktop, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def daphne(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Daphne]:
    with running_daphne(tmp_path_factory.mktemp("daphne")) as server:
        yield server


def post(daphne: Daphne, path: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST ``body`` as JSON to daphne's API as the owner of ``token``; return the JSON answer."""
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1)
        daphne.url + path,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 (http://127.0.0.1)
        return dict(json.loads(response.read()))


class Viewer:
    """A person's viewer of the desktop through daphne: an RFB client and the way to check its input."""

    def __init__(self, client: RfbClient, desktop: DesktopSetup, name: str) -> None:
        self.client = client
        self.desktop = desktop
        self.name = name

    async def moves(self, x: int, y: int) -> bool:
        """Point at (x, y) through the proxy; return whether the desktop's pointer went there."""
        await self.client.pointer(x, y)
        await self.client.sync()  # the server handled all the proxy forwarded before this
        return await sync_to_async(self.desktop.process.mouse_location)() == (x, y)


async def holder_is(viewers: list[Viewer], holder: Viewer | None, spot: list[int]) -> bool:
    """Return True when only ``holder`` (or nobody) moves the pointer; each try points somewhere new."""
    for viewer in viewers:
        if viewer is not holder:
            spot[0] += 7
            if await viewer.moves(spot[0], 300):
                return False
    if holder is None:
        return True
    spot[0] += 7
    return await holder.moves(spot[0], 300)


async def until_holder(viewers: list[Viewer], holder: Viewer | None, spot: list[int], what: str) -> None:
    """Wait (through the channel layer, so not instantly) until input follows ``holder``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not await holder_is(viewers, holder, spot):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_only_the_holder_moves_the_pointer_and_input_follows_the_holder(
    daphne: Daphne, desktop: DesktopSetup
) -> None:
    alice_chat, alice_token = desktop.chat, desktop.token
    bob = await sync_to_async(UserFactory.create)(username="bob")
    _, bob_token = await sync_to_async(api_token_create)(user=bob, name="t")
    bob_chat = await sync_to_async(ChatFactory.create)(owner=bob, workspace_agent=desktop.agent)
    await sync_to_async(move_mouse)(desktop.process, 5, 5)

    def socket(chat_id: object, token: str) -> connect:
        return connect(
            f"{daphne.ws_url}/api/experimental/chats/{chat_id}/desktop",
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            max_size=None,
            open_timeout=20,
        )

    async with socket(alice_chat.pk, alice_token) as alice_ws, socket(bob_chat.pk, bob_token) as bob_ws:
        alice = Viewer(websocket_client(alice_ws), desktop, "alice")
        bob_viewer = Viewer(websocket_client(bob_ws), desktop, "bob")
        await alice.client.handshake()
        await bob_viewer.client.handshake()
        viewers, spot = [alice, bob_viewer], [100]

        # Nobody holds the desktop: nobody's input gets through.
        assert await holder_is(viewers, None, spot)
        assert await sync_to_async(desktop.process.mouse_location)() == (5, 5)

        state = await asyncio.to_thread(
            post, daphne, f"/api/experimental/chats/{alice_chat.pk}/desktop/takeover", alice_token
        )
        assert (state["holder"], state["user"]) == ("person", "alice")
        await until_holder(viewers, alice, spot, "alice's input to pass")
        assert await holder_is(viewers, alice, spot)  # and only hers

        # Bob takes it over while both stay connected: his input passes, hers no longer does.
        await asyncio.to_thread(
            post, daphne, f"/api/experimental/chats/{bob_chat.pk}/desktop/takeover", bob_token
        )
        await until_holder(viewers, bob_viewer, spot, "bob's input to pass")
        assert await holder_is(viewers, bob_viewer, spot)

        # He hands it back (no chat to resume): nobody holds it, nobody's input passes.
        state = await asyncio.to_thread(
            post,
            daphne,
            f"/api/experimental/chats/{bob_chat.pk}/desktop/handback",
            bob_token,
            {"note": "done"},
        )
        assert (state["holder"], state["user"]) == (None, None)
        await until_holder(viewers, None, spot, "input to stop passing")
        position = await sync_to_async(desktop.process.mouse_location)()
        assert await holder_is(viewers, None, spot)
        assert await sync_to_async(desktop.process.mouse_location)() == position

        # Both viewers still see the desktop: dropping input never closed them.
        assert await alice.client.request_update() > 0
        assert await bob_viewer.client.request_update() > 0
