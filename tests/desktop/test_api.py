"""Screenshot, take-over and hand-back endpoints, against a real agent where one is needed."""

from __future__ import annotations

import io
import uuid
from typing import TypedDict

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from PIL import Image
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from chats.models import Chat, ChatMessage
from desktop.services import HANDBACK_NO_NOTE
from tests.desktop.conftest import GEOMETRY, DesktopSetup, agent_row
from tests.factories import ChatFactory, WorkspaceAgentFactory
from tests.support.processes import free_port


def client_for(setup: DesktopSetup) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {setup.token}")
    return client


def screenshot_url(chat: Chat) -> str:
    return reverse("desktop-screenshot", kwargs={"pk": chat.pk})


# -- screenshot ---------------------------------------------------------------------------------------


@pytest.mark.desktop
@pytest.mark.django_db(transaction=True)
def test_screenshot_is_a_png_of_the_desktop(desktop: DesktopSetup) -> None:
    response = client_for(desktop).get(screenshot_url(desktop.chat))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "no-store"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == GEOMETRY


@pytest.mark.desktop
@pytest.mark.django_db(transaction=True)
def test_screenshot_thumbnail_keeps_the_aspect_ratio(desktop: DesktopSetup) -> None:
    response = client_for(desktop).get(screenshot_url(desktop.chat), {"width": 256}, HTTP_ACCEPT="image/png")
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (256, 192)


@pytest.mark.django_db
@pytest.mark.parametrize("width", ["15", "4097", "abc", "-1"])
def test_screenshot_width_out_of_range_is_400(api: APIClient, user: User, width: str) -> None:
    agent = WorkspaceAgentFactory.create(owner=user, url="ws://127.0.0.1:9", last_seen=timezone.now())
    chat = ChatFactory.create(owner=user, workspace_agent=agent)
    response = api.get(screenshot_url(chat), {"width": width}, HTTP_ACCEPT="image/png")
    assert response.status_code == 400
    assert "width" in response.json()


@pytest.mark.django_db
def test_screenshot_errors(api: APIClient, other_api: APIClient, user: User) -> None:
    no_agent = ChatFactory.create(owner=user, workspace_agent=None)
    response = api.get(screenshot_url(no_agent), HTTP_ACCEPT="image/png")
    assert (response.status_code, response.json()) == (409, {"detail": "Chat has no workspace agent."})

    stale = WorkspaceAgentFactory.create(owner=user, url="ws://127.0.0.1:9", last_seen=None)
    disconnected = ChatFactory.create(owner=user, workspace_agent=stale)
    response = api.get(screenshot_url(disconnected))
    assert (response.status_code, response.json()) == (409, {"detail": "Workspace agent is not connected."})

    down = WorkspaceAgentFactory.create(
        owner=user, url=f"ws://127.0.0.1:{free_port()}", last_seen=timezone.now()
    )
    unreachable = ChatFactory.create(owner=user, workspace_agent=down)
    response = api.get(screenshot_url(unreachable))
    assert response.status_code == 502
    assert down.name in response.json()["detail"]
    assert down.get_server_credential() not in response.json()["detail"]

    assert other_api.get(screenshot_url(unreachable)).status_code == 404
    missing = api.get(reverse("desktop-screenshot", kwargs={"pk": uuid.uuid4()}))
    assert missing.status_code == 404


@pytest.mark.desktop
@pytest.mark.django_db(transaction=True)
def test_screenshot_with_a_credential_the_agent_refuses_is_502(desktop: DesktopSetup) -> None:
    impostor = agent_row(desktop.user, token="cda_wrong", url=desktop.process.ws_url)
    chat = ChatFactory.create(owner=desktop.user, workspace_agent=impostor)
    response = client_for(desktop).get(screenshot_url(chat))
    assert response.status_code == 502
    assert "refused the server's credential" in response.json()["detail"]


@pytest.mark.django_db
def test_screenshot_is_documented_as_png(api: APIClient) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/experimental/chats/{id}/desktop/screenshot"]["get"]
    assert "image/png" in operation["responses"]["200"]["content"]
    assert {"404", "409", "502"} <= set(operation["responses"])
    for name in ("takeover", "handback"):
        assert f"/api/experimental/chats/{{id}}/desktop/{name}" in schema["paths"]


# -- take-over and hand-back ------------------------------------------------------------------------------


class Workspace(TypedDict):
    agent: WorkspaceAgent
    root: Chat
    running: Chat
    pending: Chat
    waiting: Chat
    paused_before: Chat


@pytest.fixture
def workspace(user: User) -> Workspace:
    """A root chat and computer-use children on one agent, in every interesting state."""
    agent = WorkspaceAgentFactory.create(owner=user, url="ws://127.0.0.1:9", last_seen=timezone.now())
    root = ChatFactory.create(owner=user, workspace_agent=agent, status=Chat.Status.RUNNING)

    def child(status: str) -> Chat:
        return ChatFactory.create(
            owner=user, parent=root, workspace_agent=agent, mode=Chat.Mode.COMPUTER_USE, status=status
        )

    return {
        "agent": agent,
        "root": root,
        "running": child(Chat.Status.RUNNING),
        "pending": child(Chat.Status.PENDING),
        "waiting": child(Chat.Status.WAITING),
        "paused_before": child(Chat.Status.PAUSED),
    }


def takeover_url(chat: Chat) -> str:
    return reverse("desktop-takeover", kwargs={"pk": chat.pk})


def handback_url(chat: Chat) -> str:
    return reverse("desktop-handback", kwargs={"pk": chat.pk})


def user_texts(chat: Chat) -> list[str]:
    return [
        part["text"]
        for m in ChatMessage.objects.filter(chat=chat, role=ChatMessage.Role.USER).order_by("id")
        for part in m.content
        if part.get("type") == "text"
    ]


def status(chat: Chat) -> str:
    chat.refresh_from_db()
    return chat.status


@pytest.mark.django_db
def test_takeover_holds_the_desktop_and_pauses_computer_use_chats(
    api: APIClient,
    user: User,
    workspace: Workspace,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    response = api.post(takeover_url(workspace["root"]), {}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["holder"], body["user"]) == ("person", user.username)
    agent = WorkspaceAgent.objects.get(pk=workspace["agent"].pk)
    assert agent.desktop_held_by == user
    assert agent.desktop_held_at is not None
    assert body["since"] == agent.desktop_held_at.isoformat().replace("+00:00", "Z")
    assert status(workspace["running"]) == Chat.Status.PAUSED
    assert status(workspace["pending"]) == Chat.Status.PAUSED
    assert status(workspace["waiting"]) == Chat.Status.WAITING
    assert status(workspace["root"]) == Chat.Status.RUNNING  # not a computer-use chat

    # Taking it again keeps the original time.
    again = api.post(takeover_url(workspace["running"]), format="json")
    assert again.status_code == 200
    assert WorkspaceAgent.objects.get(pk=agent.pk).desktop_held_at == agent.desktop_held_at

    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(
            handback_url(workspace["root"]), {"note": "I closed the cookie banner."}, format="json"
        )
    assert response.status_code == 200
    # Two chats resume: the model holds the desktop now.
    assert (response.json()["holder"], response.json()["user"]) == ("model", None)
    agent.refresh_from_db()
    assert agent.desktop_held_by is None and agent.desktop_holder == "model"
    for resumed in (workspace["running"], workspace["pending"]):
        assert status(resumed) == Chat.Status.PENDING  # a turn is queued
        (text,) = user_texts(resumed)
        assert text.startswith("A person took control of the desktop and has handed it back.")
        assert "Their note: I closed the cookie banner." in text
    # One turn enqueued per resumed chat, after commit.
    assert sum("chat_queue_turn" in c.__qualname__ for c in callbacks) == 2
    # A chat that was paused before the take-over stays paused and hears nothing.
    assert status(workspace["paused_before"]) == Chat.Status.PAUSED
    assert user_texts(workspace["paused_before"]) == []
    assert user_texts(workspace["waiting"]) == []


@pytest.mark.django_db
def test_handback_without_note_asks_for_a_screenshot(api: APIClient, workspace: Workspace) -> None:
    api.post(takeover_url(workspace["root"]), format="json")
    response = api.post(handback_url(workspace["root"]), format="json")
    assert response.status_code == 200
    assert user_texts(workspace["running"]) == [HANDBACK_NO_NOTE]
    assert "take a screenshot" in HANDBACK_NO_NOTE


@pytest.mark.django_db
def test_handback_when_not_held_is_409(api: APIClient, workspace: Workspace) -> None:
    response = api.post(handback_url(workspace["root"]), {"note": "x"}, format="json")
    assert response.status_code == 409
    assert "not held" in response.json()["detail"]


@pytest.mark.django_db
def test_takeover_input_is_validated(api: APIClient, workspace: Workspace) -> None:
    root = workspace["root"]
    assert api.post(takeover_url(root), {"force": True}, format="json").status_code == 400
    api.post(takeover_url(root), format="json")
    too_long = api.post(handback_url(root), {"note": "x" * 2001}, format="json")
    assert too_long.status_code == 400 and "note" in too_long.json()
    assert api.post(handback_url(root), {"note": 5}, format="json").status_code == 400
    assert api.post(handback_url(root), {"nope": "x"}, format="json").status_code == 400
    assert api.post(handback_url(root), {"note": "x" * 2000}, format="json").status_code == 200


@pytest.mark.django_db
def test_takeover_of_another_users_chat_is_404(other_api: APIClient, workspace: Workspace) -> None:
    assert other_api.post(takeover_url(workspace["root"]), format="json").status_code == 404
    assert other_api.post(handback_url(workspace["root"]), format="json").status_code == 404
    assert status(workspace["running"]) == Chat.Status.RUNNING


@pytest.mark.django_db
def test_takeover_without_agent_is_409(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user, workspace_agent=None)
    response = api.post(takeover_url(chat), format="json")
    assert (response.status_code, response.json()) == (409, {"detail": "Chat has no workspace agent."})


@pytest.mark.django_db
def test_session_takeover_needs_csrf(user: User, workspace: Workspace) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(takeover_url(workspace["root"]), format="json").status_code == 403
    assert status(workspace["running"]) == Chat.Status.RUNNING


@pytest.mark.django_db
def test_handback_resumes_only_chats_paused_for_the_takeover_not_by_timestamps(
    api: APIClient, workspace: Workspace
) -> None:
    """A chat interrupted before the hold and renamed during it (so updated after the hold began) stays
    paused: hand-back resumes a chat because of why it paused, not because of when it last changed."""
    interrupted = workspace["running"]
    assert api.post(f"/api/experimental/chats/{interrupted.pk}/interrupt").json()["status"] == "paused"
    api.post(takeover_url(workspace["root"]), format="json")
    renamed = api.patch(f"/api/experimental/chats/{interrupted.pk}", {"title": "Renamed"}, format="json")
    assert renamed.status_code == 200

    assert api.post(handback_url(workspace["root"]), format="json").status_code == 200
    assert status(interrupted) == Chat.Status.PAUSED
    assert user_texts(interrupted) == []
    # The chat the take-over paused is resumed and told.
    assert status(workspace["pending"]) == Chat.Status.PENDING
    assert user_texts(workspace["pending"]) == [HANDBACK_NO_NOTE]
