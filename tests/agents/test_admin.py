from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from tests.factories import WorkspaceAgentFactory, agent_token

pytestmark = pytest.mark.django_db

AGENTS = "/admin/agents/workspaceagent/"
TOKEN = re.compile(r"cda_[A-Za-z0-9_-]{20,}")


def test_creating_an_agent_shows_its_token_exactly_once(admin_client, user) -> None:
    response = admin_client.post(f"{AGENTS}add/", {"owner": user.pk, "name": "office"}, follow=True)
    assert response.status_code == 200
    # One token on the page, in its copy field only; the command lines name a private file instead.
    html = response.content.decode()
    tokens = TOKEN.findall(html)
    assert len(tokens) == 1
    [raw] = tokens
    assert "(umask 077; cat &gt; ~/.chatdesk-agent-token)" in html
    assert "chatdesk-agent --server http://testserver --token-file ~/.chatdesk-agent-token" in html
    assert "--token " not in html
    assert "no-store" in response["Cache-Control"]
    assert not any(raw in morsel.value for morsel in admin_client.cookies.values())
    agent = WorkspaceAgent.objects.get(name="office")
    assert agent.owner == user
    assert WorkspaceAgent.objects.for_raw_token(raw) == agent

    # Gone on the next page load, and nowhere else in the admin.
    for path in (AGENTS, f"{AGENTS}{agent.pk}/change/"):
        html = admin_client.get(path).content.decode()
        assert raw not in html
        assert not TOKEN.search(html)

    # The token shown is the agent's working credential.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    beat = {"url": "ws://127.0.0.1:7420", "display": {"width": 1024, "height": 768}}
    assert (
        client.post(
            "/api/experimental/workspace-agents/heartbeat", json.dumps(beat), content_type="application/json"
        ).status_code
        == 200
    )


def test_editing_an_agent_keeps_its_token(admin_client, user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user, name="before")
    response = admin_client.post(
        f"{AGENTS}{agent.pk}/change/", {"owner": user.pk, "name": "after"}, follow=True
    )
    assert response.status_code == 200
    assert not TOKEN.search(response.content.decode())
    agent.refresh_from_db()
    assert agent.name == "after"
    assert WorkspaceAgent.objects.for_raw_token(agent_token(agent)) == agent


def test_agent_admin_refuses_a_duplicate_name(admin_client, user) -> None:
    WorkspaceAgentFactory.create(owner=user, name="office")
    response = admin_client.post(f"{AGENTS}add/", {"owner": user.pk, "name": "office"})
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert WorkspaceAgent.objects.filter(owner=user).count() == 1


def test_agent_admin_list_shows_status_display_and_prefix(admin_client, user) -> None:
    WorkspaceAgentFactory.create(
        owner=user, name="live", last_seen=timezone.now(), display_width=1280, display_height=800
    )
    WorkspaceAgentFactory.create(owner=user, name="gone", last_seen=timezone.now() - timedelta(hours=2))
    html = admin_client.get(AGENTS).content.decode()
    assert "connected" in html
    assert "disconnected" in html
    assert "1280x800" in html
    assert all(agent.token_prefix in html for agent in WorkspaceAgent.objects.all())
