"""WebSocket admission: the Origin check for cookie sessions and Bearer authentication."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from chatdesk.auth import WebSocketAuthStack
from chatdesk.services import api_token_create
from chatdesk.wsauth import OriginOrBearerValidator
from tests.factories import UserFactory
from tests.support.asgi import bearer, same_origin


class WhoAmI(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json({"user": user.username if user.is_authenticated else None})


def application() -> Any:
    return OriginOrBearerValidator(WebSocketAuthStack(WhoAmI.as_asgi()))


def communicator(headers: list[tuple[bytes, bytes]], scheme: str = "ws") -> WebsocketCommunicator:
    result = WebsocketCommunicator(application(), "/ws", headers=headers)
    result.scope["scheme"] = scheme
    return result


async def refusal(headers: list[tuple[bytes, bytes]], scheme: str = "ws") -> dict[str, Any]:
    client = communicator(headers, scheme)
    connected, _ = await client.connect()
    assert connected
    message = await client.receive_output(timeout=5)
    await client.disconnect()
    return message


async def admitted(headers: list[tuple[bytes, bytes]], scheme: str = "ws") -> Any:
    client = communicator(headers, scheme)
    connected, _ = await client.connect()
    assert connected
    try:
        return await client.receive_json_from(timeout=5)
    finally:
        await client.disconnect()


async def test_a_websocket_without_origin_or_bearer_is_closed_with_4403() -> None:
    message = await refusal([(b"host", b"localhost:8000")])
    assert message == {"type": "websocket.close", "code": 4403, "reason": "Missing Origin header."}


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("localhost:8000", "https://evil.example"),
        # Another port of the same host is another origin (a page served there must not use our session).
        ("127.0.0.1:8000", "http://127.0.0.1:9999"),
        ("localhost:8000", "http://localhost:3000"),
        ("localhost:8000", "http://localhost"),
        # Another scheme too: an http page may not use the session of the https site.
        ("localhost:8000", "https://localhost:8000"),
        # A Host outside ALLOWED_HOSTS makes nothing "same origin".
        ("evil.example:8000", "http://evil.example:8000"),
        ("localhost:8000", "null"),
    ],
)
async def test_a_websocket_from_another_origin_is_closed_with_4403(host: str, origin: str) -> None:
    message = await refusal([(b"host", host.encode()), (b"origin", origin.encode())])
    assert message == {"type": "websocket.close", "code": 4403, "reason": "Origin not allowed."}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost"])
async def test_a_websocket_from_our_origin_is_admitted(host: str) -> None:
    assert await admitted(same_origin(host)) == {"user": None}


@pytest.mark.django_db(transaction=True)
async def test_a_secure_connection_needs_an_https_origin() -> None:
    headers = same_origin("localhost:8443", scheme="https")
    assert await admitted(headers, scheme="wss") == {"user": None}
    assert (await refusal(same_origin("localhost:8443"), scheme="wss"))["code"] == 4403


@pytest.mark.django_db(transaction=True)
@override_settings(CSRF_TRUSTED_ORIGINS=["http://localhost:3000", "https://*.example.com"])
async def test_csrf_trusted_origins_are_admitted_as_django_admits_them() -> None:
    assert await admitted([(b"host", b"localhost:8000"), (b"origin", b"http://localhost:3000")]) == {
        "user": None
    }
    assert await admitted([(b"host", b"localhost:8000"), (b"origin", b"https://app.example.com")]) == {
        "user": None
    }
    for origin in (b"http://app.example.com", b"https://example.org", b"http://localhost:3001"):
        assert (await refusal([(b"host", b"localhost:8000"), (b"origin", origin)]))["code"] == 4403


@pytest.mark.django_db(transaction=True)
@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
async def test_behind_a_tls_proxy_the_forwarded_scheme_counts() -> None:
    behind_proxy = [(b"x-forwarded-proto", b"https"), *same_origin("chat.localhost", scheme="https")]
    with override_settings(ALLOWED_HOSTS=["chat.localhost"]):
        assert await admitted(behind_proxy) == {"user": None}
        plain_page = [(b"x-forwarded-proto", b"https"), *same_origin("chat.localhost")]
        assert (await refusal(plain_page))["code"] == 4403


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
