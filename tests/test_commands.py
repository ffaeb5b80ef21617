from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from chatdesk.models import ApiToken

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_create_api_token_prints_a_token_that_authenticates(user) -> None:
    raw = run("create_api_token", "alice", "--name", "laptop")
    assert raw.startswith("cdk_")
    assert ApiToken.objects.get(user=user).name == "laptop"
    assert bearer(raw).get("/api/experimental/chats").status_code == 200


def test_create_api_token_for_an_unknown_user_fails(db) -> None:
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("create_api_token", "nobody")
    assert not ApiToken.objects.exists()


def test_create_workspace_agent_prints_a_token_whose_heartbeat_works(user) -> None:
    raw = run("create_workspace_agent", "--owner", "alice", "--name", "workstation")
    assert raw.startswith("cda_")
    agent = WorkspaceAgent.objects.get(owner=user, name="workstation")
    beat = {"url": "ws://127.0.0.1:7420", "display": {"width": 1280, "height": 800}}
    response = bearer(raw).post(
        "/api/experimental/workspace-agents/heartbeat", json.dumps(beat), content_type="application/json"
    )
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.is_connected


def test_create_workspace_agent_for_an_unknown_user_fails(db) -> None:
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("create_workspace_agent", "--owner", "nobody", "--name", "x")
    assert not WorkspaceAgent.objects.exists()


def test_create_workspace_agent_with_a_taken_name_fails(user) -> None:
    run("create_workspace_agent", "--owner", "alice", "--name", "workstation")
    with pytest.raises(CommandError, match="already have a workspace agent named 'workstation'"):
        run("create_workspace_agent", "--owner", "alice", "--name", "workstation")
    assert WorkspaceAgent.objects.filter(owner=user).count() == 1
