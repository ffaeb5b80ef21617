from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from chats.models import Chat
from tests.factories import ChatFactory, WorkspaceAgentFactory, agent_token

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse

pytestmark = pytest.mark.django_db

API = "/api/experimental"
HEARTBEAT = f"{API}/workspace-agents/heartbeat"
GOOD_BEAT = {"url": "ws://10.0.0.5:7420", "display": {"width": 1280, "height": 800}}


def post_json(
    client: APIClient, path: str, body: object, headers: Mapping[str, str] | None = None
) -> _MonkeyPatchedResponse:
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers)


def as_agent(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_register_an_agent_shows_its_token_once(api, user) -> None:
    response = post_json(api, f"{API}/workspace-agents", {"name": "laptop"})
    assert response.status_code == 201
    body = response.json()
    token = body["token"]
    assert token.startswith("cda_")
    assert body["name"] == "laptop"
    assert body["status"] == "disconnected"
    assert body["display"] is None
    agent = WorkspaceAgent.objects.get(pk=body["id"])
    assert agent.owner == user

    listed = api.get(f"{API}/workspace-agents")
    one = api.get(f"{API}/workspace-agents/{agent.id}")
    for later in (listed, one):
        assert later.status_code == 200
        assert token not in later.content.decode()
        assert "token" not in json.dumps(later.json())
    assert [a["id"] for a in listed.json()] == [str(agent.id)]
    # The token works as the agent's credential.
    assert post_json(as_agent(token), HEARTBEAT, GOOD_BEAT).status_code == 200


def test_duplicate_agent_name_is_a_409(api, user) -> None:
    WorkspaceAgentFactory.create(owner=user, name="laptop")
    response = post_json(api, f"{API}/workspace-agents", {"name": "laptop"})
    assert response.status_code == 409
    assert "laptop" in response.json()["detail"]
    assert WorkspaceAgent.objects.filter(owner=user).count() == 1


def test_another_user_may_reuse_an_agent_name(api, other_user) -> None:
    WorkspaceAgentFactory.create(owner=other_user, name="laptop")
    assert post_json(api, f"{API}/workspace-agents", {"name": "laptop"}).status_code == 201


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": 5}, {"name": "x" * 101}, {"name": "a", "url": "ws://x"}]
)
def test_register_with_bad_fields_is_a_400(api, body: dict) -> None:
    response = post_json(api, f"{API}/workspace-agents", body)
    assert response.status_code == 400
    assert set(response.json()) & {"name", "url"}
    assert not WorkspaceAgent.objects.exists()


def test_list_and_get_show_only_the_callers_agents(api, user, other_user) -> None:
    mine = WorkspaceAgentFactory.create(owner=user)
    theirs = WorkspaceAgentFactory.create(owner=other_user)
    assert [a["id"] for a in api.get(f"{API}/workspace-agents").json()] == [str(mine.id)]
    assert api.get(f"{API}/workspace-agents/{mine.id}").json()["name"] == mine.name
    assert api.get(f"{API}/workspace-agents/{theirs.id}").status_code == 404
    assert api.delete(f"{API}/workspace-agents/{theirs.id}").status_code == 404
    assert WorkspaceAgent.objects.filter(pk=theirs.pk).exists()
    assert api.get(f"{API}/workspace-agents/not-a-uuid").status_code == 404
    assert api.get(f"{API}/workspace-agents/{uuid.uuid4()}").status_code == 404


def test_delete_an_agent_revokes_its_token_and_keeps_its_chats(api, user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    chat = ChatFactory.create(owner=user, workspace_agent=agent)
    assert api.delete(f"{API}/workspace-agents/{agent.id}").status_code == 204
    assert not WorkspaceAgent.objects.filter(pk=agent.pk).exists()
    assert post_json(as_agent(agent_token(agent)), HEARTBEAT, GOOD_BEAT).status_code == 401
    chat.refresh_from_db()
    assert chat.workspace_agent is None


def test_heartbeat_marks_the_agent_connected_with_its_url_and_display(api, user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    response = post_json(as_agent(agent_token(agent)), HEARTBEAT, GOOD_BEAT)
    assert response.status_code == 200
    assert response.json() == {"id": str(agent.id), "status": "connected"}

    body = api.get(f"{API}/workspace-agents/{agent.id}").json()
    assert body["status"] == "connected"
    assert body["url"] == "ws://10.0.0.5:7420"
    assert body["display"] == {"width": 1280, "height": 800}
    assert body["last_seen"] is not None


def test_agent_without_recent_heartbeat_shows_disconnected(api, user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now() - timedelta(seconds=31))
    with override_settings(CHATDESK_AGENT_TIMEOUT_SECONDS=30):
        assert api.get(f"{API}/workspace-agents/{agent.id}").json()["status"] == "disconnected"
        post_json(as_agent(agent_token(agent)), HEARTBEAT, GOOD_BEAT)
        assert api.get(f"{API}/workspace-agents/{agent.id}").json()["status"] == "connected"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer cda_wrong", "Bearer ", "Token abc", "Basic dXNlcjpwdw=="]
)
def test_heartbeat_without_a_valid_agent_token_is_a_401(user, authorization: str | None) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = post_json(APIClient(), HEARTBEAT, GOOD_BEAT, headers)
    assert response.status_code == 401
    assert "detail" in response.json()
    agent.refresh_from_db()
    assert agent.last_seen is None


def test_heartbeat_refuses_a_users_api_token(api_token: str, user) -> None:
    WorkspaceAgentFactory.create(owner=user)
    response = post_json(as_agent(api_token), HEARTBEAT, GOOD_BEAT)
    assert response.status_code == 401
    assert not WorkspaceAgent.objects.filter(last_seen__isnull=False).exists()


def test_agent_token_is_not_a_user_credential(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    client = as_agent(agent_token(agent))
    assert client.get(f"{API}/chats").status_code == 401
    assert client.get(f"{API}/workspace-agents").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD_BEAT, "url": "http://10.0.0.5:7420"}, "url"),
        ({**GOOD_BEAT, "url": 5}, "url"),
        ({"display": GOOD_BEAT["display"]}, "url"),
        ({"url": GOOD_BEAT["url"]}, "display"),
        ({**GOOD_BEAT, "display": "1280x800"}, "display"),
        ({**GOOD_BEAT, "display": {"width": "1280", "height": 800}}, "display"),
        ({**GOOD_BEAT, "display": {"width": 1280.5, "height": 800}}, "display"),
        ({**GOOD_BEAT, "display": {"width": True, "height": 800}}, "display"),
        ({**GOOD_BEAT, "display": {"width": 0, "height": 800}}, "display"),
        ({**GOOD_BEAT, "display": {"width": 1280}}, "display"),
        ({**GOOD_BEAT, "display": {"width": 1280, "height": 800, "depth": 24}}, "display"),
        ({**GOOD_BEAT, "name": "x"}, "name"),
    ],
)
def test_heartbeat_with_bad_fields_is_a_400(user, body: dict, field: str) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    response = post_json(as_agent(agent_token(agent)), HEARTBEAT, body)
    assert response.status_code == 400
    assert field in response.json()
    agent.refresh_from_db()
    assert agent.last_seen is None


def test_heartbeat_with_malformed_json_is_a_400(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    response = as_agent(agent_token(agent)).post(HEARTBEAT, '{"url": ', content_type="application/json")
    assert response.status_code == 400


def test_chat_created_after_a_heartbeat_uses_that_agent(api, user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    post_json(as_agent(agent_token(agent)), HEARTBEAT, GOOD_BEAT)
    body = post_json(api, f"{API}/chats", {}).json()
    assert body["workspace_agent"] == str(agent.id)
    assert Chat.objects.get(pk=body["id"]).workspace_agent == agent


@pytest.mark.parametrize(
    "url",
    [
        "ws://8.8.8.8:7420",  # the internet
        "ws://169.254.169.254:80",  # link-local: cloud metadata services
        "ws://0.0.0.0:7420",
        "wss://[2001:4860:4860::8888]:443",
        "ws://[::ffff:8.8.8.8]:7420",  # IPv4-mapped IPv6 counts as the IPv4 address
        "ws://no-such-host.invalid:7420",
    ],
)
def test_heartbeat_with_a_url_outside_the_allowlist_is_a_400(user, url: str) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    response = post_json(as_agent(agent_token(agent)), HEARTBEAT, {**GOOD_BEAT, "url": url})
    assert response.status_code == 400
    [message] = response.json()["url"]
    assert "outside CHATDESK_AGENT_URL_ALLOW" in message and "--advertise-url" in message
    agent.refresh_from_db()
    assert (agent.url, agent.last_seen) == ("", None)


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:7420",
        "ws://localhost:7420",
        "ws://[::1]:7420",
        "ws://10.1.2.3",
        "wss://192.168.0.9/agent",
    ],
)
def test_heartbeat_with_a_loopback_or_private_url_is_accepted_by_default(user, url: str) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    assert post_json(as_agent(agent_token(agent)), HEARTBEAT, {**GOOD_BEAT, "url": url}).status_code == 200


@override_settings(CHATDESK_AGENT_URL_ALLOW=["203.0.113.0/24", "agents.example.com", ".desks.example.com"])
@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("ws://203.0.113.7:7420", 200),
        ("wss://agents.example.com", 200),  # a host-name entry trusts the name, whatever it resolves to
        ("wss://d1.desks.example.com", 200),
        ("wss://evil-agents.example.com", 400),
        ("ws://127.0.0.1:7420", 400),  # the list replaces the default
    ],
)
def test_the_allowlist_takes_networks_and_host_names(user, url: str, status: int) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    assert post_json(as_agent(agent_token(agent)), HEARTBEAT, {**GOOD_BEAT, "url": url}).status_code == status


def test_a_stopping_agent_shows_disconnected_at_once(api, user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    client = as_agent(agent_token(agent))
    post_json(client, HEARTBEAT, GOOD_BEAT)
    assert api.get(f"{API}/workspace-agents/{agent.id}").json()["status"] == "connected"
    response = post_json(client, HEARTBEAT, {**GOOD_BEAT, "stopping": True})
    assert response.json() == {"id": str(agent.id), "status": "disconnected"}
    assert api.get(f"{API}/workspace-agents/{agent.id}").json()["status"] == "disconnected"
    # It keeps the last URL it had (a stopping heartbeat does not change it).
    assert api.get(f"{API}/workspace-agents/{agent.id}").json()["url"] == GOOD_BEAT["url"]


def test_an_agent_is_disconnected_within_ten_seconds_of_its_last_heartbeat_by_default(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now() - timedelta(seconds=9))
    assert agent.status == "disconnected"
