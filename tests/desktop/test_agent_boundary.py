"""The server's side of the agent boundary: it dials an agent only at an allowed address, shows users no
upstream status or error text, and answers a credential it cannot decrypt as a server fault (503)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from chatdesk.asgi import application
from chatdesk.exceptions import AgentUnreachable
from desktop.client import open_vnc_upstream
from tests.desktop.conftest import expect_close
from tests.factories import ChatFactory, WorkspaceAgentFactory
from tests.support.asgi import bearer

NOT_LOOPBACK = ["10.0.0.0/8"]
UPSTREAM_SECRET = "upstream-detail-7d1c"


class Upstream:
    """A TCP listener on 127.0.0.1 that counts connections and answers every request with HTTP 418."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    body = UPSTREAM_SECRET.encode()
                    conn.sendall(
                        b"HTTP/1.1 418 I'm a teapot\r\nX-Internal: " + body + b"\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
                    )  # fmt: skip
                except OSError:
                    pass

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.sock.close()


def connected_agent(user: User, url: str) -> WorkspaceAgent:
    return WorkspaceAgentFactory.create(owner=user, url=url, last_seen=timezone.now())


def screenshot(api: APIClient, agent: WorkspaceAgent) -> tuple[int, str]:
    chat = ChatFactory.create(owner=agent.owner, workspace_agent=agent)
    response = api.get(reverse("desktop-screenshot", kwargs={"pk": chat.pk}))
    return response.status_code, response.json()["detail"]


@pytest.mark.django_db
def test_the_server_never_dials_an_address_outside_the_allowlist(
    api: APIClient, user: User, upstream: Upstream
) -> None:
    agent = connected_agent(user, upstream.url)
    with override_settings(CHATDESK_AGENT_URL_ALLOW=NOT_LOOPBACK):
        status, detail = screenshot(api, agent)
        assert status == 502
        assert detail == (
            f"Workspace agent {agent.name!r} is at an address the server may not connect to "
            "(CHATDESK_AGENT_URL_ALLOW)."
        )
        with pytest.raises(AgentUnreachable, match="CHATDESK_AGENT_URL_ALLOW"):
            async_to_sync(open_vnc_upstream)(agent)
    assert upstream.connections == 0
    # Loopback is in the default list: the same agent is dialled then.
    screenshot(api, agent)
    assert upstream.connections == 1


@pytest.mark.django_db
def test_upstream_statuses_and_errors_reach_the_log_not_the_user(
    api: APIClient, user: User, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    agent = connected_agent(user, upstream.url)
    with caplog.at_level(logging.WARNING):
        status, detail = screenshot(api, agent)
        with pytest.raises(AgentUnreachable) as vnc:
            async_to_sync(open_vnc_upstream)(agent)
    assert status == 502
    assert detail == f"Workspace agent {agent.name!r} could not be reached (connect)."
    assert vnc.value.message == f"Workspace agent {agent.name!r} could not be reached."
    assert "418" in caplog.text  # the admin still learns what happened


def encrypted_under_another_key(agent: WorkspaceAgent) -> WorkspaceAgent:
    with override_settings(CHATDESK_ENCRYPTION_KEY=["a-key-this-server-no-longer-has"]):
        agent.assign_new_token()
    agent.save()
    return agent


@pytest.mark.django_db
def test_a_credential_the_server_cannot_decrypt_is_a_503_server_fault(
    api: APIClient, user: User, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    agent = encrypted_under_another_key(connected_agent(user, upstream.url))
    with caplog.at_level(logging.ERROR):
        status, detail = screenshot(api, agent)
    assert status == 503
    assert "cannot decrypt its credential" in detail and "administrator" in detail
    assert "cannot be decrypted with any configured key" in caplog.text
    assert upstream.connections == 0


@pytest.mark.django_db(transaction=True)
async def test_a_viewer_of_an_agent_whose_credential_cannot_be_decrypted_gets_a_clean_refusal(
    user: User, api_token: str, upstream: Upstream
) -> None:
    agent = await sync_to_async(lambda: encrypted_under_another_key(connected_agent(user, upstream.url)))()
    chat = await sync_to_async(ChatFactory.create)(owner=user, workspace_agent=agent)
    communicator = WebsocketCommunicator(
        application, f"/api/experimental/chats/{chat.pk}/desktop", headers=bearer(api_token)
    )
    connected, _ = await communicator.connect(timeout=20)
    assert connected
    try:
        code, _reason = await expect_close(communicator)
    finally:
        await communicator.disconnect()
    assert 4000 <= code < 5000  # a refusal with a code, not an abnormal close
    assert upstream.connections == 0
