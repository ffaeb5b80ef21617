"""``GET /chats/{id}/desktop/control`` and the control state take-over and hand-back answer with."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from chats.models import Chat
from desktop import control
from tests.factories import ChatFactory, UserFactory, WorkspaceAgentFactory

pytestmark = pytest.mark.django_db


def url(chat: Chat, name: str = "control") -> str:
    return reverse(f"desktop-{name}", kwargs={"pk": chat.pk})


@pytest.fixture
def agent(user: User) -> WorkspaceAgent:
    return WorkspaceAgentFactory.create(owner=user, url="ws://127.0.0.1:9", last_seen=timezone.now())


@pytest.fixture
def chat(user: User, agent: WorkspaceAgent) -> Chat:
    return ChatFactory.create(owner=user, workspace_agent=agent)


def test_control_says_who_holds_the_desktop(
    api: APIClient, user: User, agent: WorkspaceAgent, chat: Chat
) -> None:
    assert api.get(url(chat)).json() == {"holder": None, "user": None, "since": None}

    taken = api.post(url(chat, "takeover"), {}, format="json")
    assert taken.status_code == 200
    state = api.get(url(chat)).json()
    assert state == taken.json()
    assert (state["holder"], state["user"]) == ("person", "alice") and state["since"]

    back = api.post(url(chat, "handback"), {"note": "done"}, format="json")
    assert back.status_code == 200
    assert api.get(url(chat)).json() == back.json()
    assert (back.json()["holder"], back.json()["user"]) == (None, None)


def test_control_while_the_model_holds_it(api: APIClient, agent: WorkspaceAgent, chat: Chat) -> None:
    control.control_model_acquire(agent=agent, chat=chat)
    state = api.get(url(chat)).json()
    assert (state["holder"], state["user"]) == ("model", None)


def test_another_users_chat_is_404(other_api: APIClient, chat: Chat) -> None:
    for name in ("control", "takeover", "handback"):
        method = other_api.get if name == "control" else other_api.post
        response = method(url(chat, name))
        assert response.status_code == 404, name


def test_handback_by_someone_who_does_not_hold_it_is_409(
    api: APIClient, user: User, agent: WorkspaceAgent, chat: Chat
) -> None:
    # Nobody holds it.
    response = api.post(url(chat, "handback"), {}, format="json")
    assert (response.status_code, response.json()) == (409, {"detail": control.NOT_HELD})
    # The model holds it.
    control.control_model_acquire(agent=agent, chat=chat)
    response = api.post(url(chat, "handback"), {}, format="json")
    assert (response.status_code, response.json()) == (409, {"detail": control.HELD_BY_MODEL})
    # Another person holds it (through a chat of theirs on this desktop).
    bob = UserFactory.create(username="bob")
    control.control_take(chat=ChatFactory.create(owner=bob, workspace_agent=agent), user=bob)
    response = api.post(url(chat, "handback"), {}, format="json")
    assert (response.status_code, response.json()) == (409, {"detail": control.HELD_BY_OTHER})
    assert api.get(url(chat)).json()["user"] == "bob"  # nothing changed


def test_a_chat_without_an_agent_has_no_control_state(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user, workspace_agent=None)
    response = api.get(url(chat))
    assert (response.status_code, response.json()) == (409, {"detail": "Chat has no workspace agent."})


def test_the_schema_documents_control(api: APIClient) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    control_path = paths["/api/experimental/chats/{id}/desktop/control"]["get"]
    assert {"200", "404", "409"} <= set(control_path["responses"])
    for name in ("takeover", "handback"):
        operation = paths[f"/api/experimental/chats/{{id}}/desktop/{name}"]["post"]
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/DesktopControl")
    assert "409" in paths["/api/experimental/chats/{id}/desktop/handback"]["post"]["responses"]
    state = schema["components"]["schemas"]["DesktopControl"]
    assert set(state["required"]) == {"holder", "user", "since"}
    assert state["properties"]["since"]["format"] == "date-time"
