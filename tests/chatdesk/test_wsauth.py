"""WebSocket admission: the Origin check for cookie sessions and Bearer authentication."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator

from chatdesk.auth import WebSocketAuthStack
from chatdesk.services import api_token_create
from chatdesk.wsauth import OriginOrBearerValidator
from tests.factories import UserFactory
from tests.support.asgi import bearer


class WhoAmI(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json({"user": user.username if user.is_authenticated else None})


def application() -> Any:
    return OriginOrBearerValidator(WebSocketAuthStack(WhoAmI.as_asgi()))


async def refusal(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    communicator = WebsocketCommunicator(application(), "/ws", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    message = await communicator.receive_output(timeout=5)
    await communicator.disconnect()
    return message


async def test_a_websocket_without_origin_or_bearer_is_closed_with_4403() -> None:
    message = await refusal([])
    assert message == {"type": "websocket.close", "code": 4403, "reason": "Missing Origin header."}


async def test_a_websocket_from_a_foreign_origin_is_closed_with_4403() -> None:
    message = await refusal([(b"origin", b"https://evil.example")])
    assert message["code"] == 4403
    assert message["reason"] == "Origin not allowed."


@pytest.mark.django_db(transaction=True)
async def test_a_websocket_from_our_origin_is_admitted() -> None:
    communicator = WebsocketCommunicator(
        application(), "/ws", headers=[(b"origin", b"http://localhost:8000")]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from(timeout=5) == {"user": None}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_bearer_websocket_needs_no_origin_and_authenticates_its_user() -> None:
    user = await sync_to_async(UserFactory.create)(username="ws-user")
    _, raw = await sync_to_async(api_token_create)(user=user, name="ws")
    communicator = WebsocketCommunicator(application(), "/ws", headers=bearer(raw))
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from(timeout=5) == {"user": "ws-user"}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_bad_bearer_token_leaves_the_websocket_anonymous() -> None:
    communicator = WebsocketCommunicator(
        application(),
        "/ws",
        headers=[(b"authorization", b"Bearer cdk_wrong"), (b"origin", b"http://localhost")],
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from(timeout=5) == {"user": None}
    await communicator.disconnect()
