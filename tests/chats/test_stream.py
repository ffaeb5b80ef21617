"""The chat stream WebSocket: through the real ASGI application, and once through a real daphne."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings
from websockets.sync.client import connect

from chatdesk.asgi import application
from chatdesk.services import api_token_create
from chats import services
from chats.events import MessagePartEvent, publish, publish_message
from chats.models import Chat, ChatEvent, ChatMessage
from tests.chats.conftest import worker_env
from tests.factories import ChatFactory
from tests.support.asgi import bearer, same_origin
from tests.support.processes import running_daphne

pytestmark = pytest.mark.django_db(transaction=True)


async def open_stream(chat_id: object, token: str | None, query: str = "") -> WebsocketCommunicator:
    headers = bearer(token) if token else same_origin()
    communicator = WebsocketCommunicator(
        application, f"/api/experimental/chats/{chat_id}/stream{query}", headers
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return await communicator.receive_json_from(timeout=5)


@database_sync_to_async
def say(chat: Chat, role: str, words: str) -> ChatMessage:
    return services.message_append(chat=chat, role=role, content=[services.text_part(words)])


@pytest.mark.parametrize(
    ("who", "query", "code"),
    [
        ("nobody", "", 4401),
        ("other", "", 4404),
        ("owner", "?after_id=abc", 4400),
        ("owner", "?after_id=-1", 4400),
    ],
)
async def test_refused_connections_close_with_a_code_that_says_why(
    user: User, other_user: User, who: str, query: str, code: int
) -> None:
    chat = await database_sync_to_async(ChatFactory.create)(owner=user)
    owner = user if who == "owner" else other_user
    token = (
        None if who == "nobody" else (await database_sync_to_async(api_token_create)(user=owner, name="t"))[1]
    )
    communicator = await open_stream(chat.pk, token, query)
    closed = await communicator.receive_output(timeout=5)
    assert closed["type"] == "websocket.close" and closed["code"] == code
    await communicator.disconnect()


async def test_replay_then_live_events_without_duplicates(user: User, api_token: str) -> None:
    chat = await database_sync_to_async(ChatFactory.create)(owner=user)
    first = await say(chat, "user", "one")
    second = await say(chat, "assistant", "two")

    communicator = await open_stream(chat.pk, api_token, f"?after_id={first.id}")
    replayed = await receive(communicator)
    assert replayed == {"type": "message", "message": replayed["message"]}
    assert replayed["message"]["id"] == second.id and replayed["message"]["content"][0]["text"] == "two"
    assert (await receive(communicator))["type"] == "status"

    third = await say(chat, "user", "three")
    await database_sync_to_async(publish)(
        chat.pk, MessagePartEvent(type="message_part", part={"index": 0, "type": "text", "delta": "fo"})
    )
    live = await receive(communicator)
    assert live["type"] == "message" and live["message"]["id"] == third.id
    assert (await receive(communicator))["part"]["delta"] == "fo"
    # An event for a message the client already has is not sent again.
    await database_sync_to_async(publish_message)(second)
    await database_sync_to_async(publish)(
        chat.pk, MessagePartEvent(type="message_part", part={"index": 0, "type": "text", "delta": "ur"})
    )
    assert (await receive(communicator))["part"]["delta"] == "ur"
    await communicator.disconnect()


async def test_embedded_default_tails_the_event_table(user: User, api_token: str, settings: Settings) -> None:
    """Without Redis, events are ChatEvent rows the consumer polls."""
    settings.REDIS_URL = ""
    chat = await database_sync_to_async(ChatFactory.create)(owner=user)
    communicator = await open_stream(chat.pk, api_token)
    assert (await receive(communicator))["type"] == "status"
    message = await say(chat, "user", "hello")
    assert await database_sync_to_async(ChatEvent.objects.filter(chat_id=chat.pk).count)() == 1
    live = await receive(communicator)
    assert live["type"] == "message" and live["message"]["id"] == message.id
    await communicator.disconnect()


async def test_the_status_event_says_why_a_chat_is_paused(user: User, api_token: str) -> None:
    chat = await database_sync_to_async(ChatFactory.create)(owner=user, status=Chat.Status.RUNNING)
    communicator = await open_stream(chat.pk, api_token)
    running = {"type": "status", "status": "running", "paused_reason": None, "last_error": ""}
    assert await receive(communicator) == running
    await database_sync_to_async(services.chat_interrupt)(chat=chat)
    paused = {"type": "status", "status": "paused", "paused_reason": "interrupted", "last_error": ""}
    assert await receive(communicator) == paused
    await communicator.disconnect()
    # On connect, the current status comes with its reason too.
    again = await open_stream(chat.pk, api_token)
    assert await receive(again) == paused
    await again.disconnect()


def test_reconnecting_through_daphne_misses_nothing(tmp_path: Path, user: User, api_token: str) -> None:
    chat = ChatFactory.create(owner=user)
    first = services.message_append(chat=chat, role="user", content=[services.text_part("one")])
    with running_daphne(tmp_path, env=worker_env()) as daphne:
        url = f"{daphne.ws_url}/api/experimental/chats/{chat.pk}/stream"
        headers = {"Authorization": f"Bearer {api_token}"}
        with connect(f"{url}?after_id=0", additional_headers=headers, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=5))["message"]["id"] == first.id
            assert json.loads(ws.recv(timeout=5))["type"] == "status"
            second = services.message_append(chat=chat, role="assistant", content=[services.text_part("two")])
            live = json.loads(ws.recv(timeout=5))
            assert live["message"]["id"] == second.id
        last_seen = live["message"]["id"]
        # While the client is away, more happens.
        third = services.message_append(chat=chat, role="user", content=[services.text_part("three")])
        with connect(f"{url}?after_id={last_seen}", additional_headers=headers, open_timeout=10) as ws:
            got = json.loads(ws.recv(timeout=5))
            assert got["type"] == "message" and got["message"]["id"] == third.id
            assert json.loads(ws.recv(timeout=5))["type"] == "status"


@pytest.mark.parametrize(
    "query_string", [b"after_id=\xb2", b"after_id=%D9%A3", b"after_id=", b"after_id=1e3"]
)
async def test_a_cursor_that_is_not_ascii_digits_is_refused_with_4400(
    user: User, api_token: str, query_string: bytes
) -> None:
    """ "²" (a latin-1 byte) passed str.isdigit() and then crashed int(): a 1011 instead of a 4400."""
    chat = await database_sync_to_async(ChatFactory.create)(owner=user)
    communicator = WebsocketCommunicator(
        application, f"/api/experimental/chats/{chat.pk}/stream", bearer(api_token)
    )
    communicator.scope["query_string"] = query_string
    connected, _ = await communicator.connect()
    assert connected
    closed = await communicator.receive_output(timeout=5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4400)
    assert "after_id" in closed["reason"]
    await communicator.disconnect()
