"""No response ever gives back a provider key or a token once it has been created."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from agents.daemon.credentials import server_credential
from agents.models import WorkspaceAgent
from chatdesk.models import ApiToken
from chats.models import ChatProvider

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse

pytestmark = pytest.mark.django_db

API = "/api/experimental"
PROVIDER_KEY = "sk-ant-api03-provider-key-never-shown-Zq81"
ENV_KEY = "sk-ant-api03-environment-key-never-shown-Yp02"


def _post(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.post(path, json.dumps(body), content_type="application/json")


@override_settings(ANTHROPIC_API_KEY=ENV_KEY)
def test_no_response_contains_a_key_or_a_token_after_creation(api, api_token, admin_client, user) -> None:
    provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC)
    provider.set_api_key(PROVIDER_KEY)
    provider.save()

    created_agent = _post(api, f"{API}/workspace-agents", {"name": "laptop"}).json()
    agent_token = created_agent["token"]
    created_token = _post(api, f"{API}/tokens", {"name": "second"}).json()
    second_token = created_token["token"]

    agent = WorkspaceAgent.objects.get(pk=created_agent["id"])
    as_agent = APIClient()
    as_agent.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token}")
    beat = {"url": "ws://127.0.0.1:7420", "display": {"width": 800, "height": 600}}
    chat = _post(api, f"{API}/chats", {"message": "hello"}).json()

    responses = [
        _post(as_agent, f"{API}/workspace-agents/heartbeat", beat),
        _post(as_agent, f"{API}/workspace-agents/heartbeat", {**beat, "url": agent_token}),
        _post(as_agent, f"{API}/workspace-agents/heartbeat", {"token": agent_token}),
        as_agent.get(f"{API}/chats"),
        api.get(f"{API}/workspace-agents"),
        api.get(f"{API}/workspace-agents/{agent.id}"),
        api.get(f"{API}/tokens"),
        api.get(f"{API}/tokens/{created_token['id']}"),
        api.get(f"{API}/chats"),
        api.get(f"{API}/chats/{chat['id']}"),
        api.get(f"{API}/chats/{chat['id']}/messages"),
        _post(api, f"{API}/tokens", {"name": "third"}),
        _post(api, f"{API}/workspace-agents", {"name": "laptop"}),
        api.get("/api/schema/?format=json"),
        admin_client.get("/admin/chats/chatprovider/"),
        admin_client.get(f"/admin/chats/chatprovider/{provider.pk}/change/"),
        admin_client.get("/admin/agents/workspaceagent/"),
        admin_client.get(f"/admin/agents/workspaceagent/{agent.pk}/change/"),
        admin_client.get("/admin/chatdesk/apitoken/"),
    ]
    bad_bearer = APIClient()
    bad_bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}x")
    responses.append(bad_bearer.get(f"{API}/chats"))

    secrets = {
        "provider key": PROVIDER_KEY,
        "environment key": ENV_KEY,
        "encrypted provider key": provider.api_key_encrypted,
        "agent token": agent_token,
        "agent token hash": agent.token_hash,
        "agent server credential": server_credential(agent_token),
        "agent encrypted credential": agent.server_credential_encrypted,
        "api token": api_token,
        "second api token": second_token,
        **{f"api token hash {t.pk}": t.token_hash for t in ApiToken.objects.all()},
    }
    for response in responses:
        body = response.content.decode()
        for what, secret in secrets.items():
            assert secret not in body, f"{what} in {response.request['PATH_INFO']} ({response.status_code})"
