"""Approvals at the API (SPEC §8): the inbox, a chat's approvals, deciding, and approval_policy on chats."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from chats.approvals import approval_create
from chats.models import Approval, Chat, ChatFile
from tests.factories import ChatFactory

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse

pytestmark = pytest.mark.django_db

API = "/api/experimental"


def post_json(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.post(path, json.dumps(body), content_type="application/json")


def patch_json(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.patch(path, json.dumps(body), content_type="application/json")


def waiting_approval(owner: User, *, parent: Chat | None = None, tool_use_id: str = "toolu_1") -> Approval:
    chat = ChatFactory.create(
        owner=owner,
        parent=parent,
        status=Chat.Status.PAUSED,
        paused_reason=Chat.PausedReason.AWAITING_APPROVAL,
    )
    shot = ChatFile.objects.create(chat=chat, file=ContentFile(b"\x89PNG", name="s.png"))
    return approval_create(
        chat=chat,
        tool_use_id=tool_use_id,
        action="type",
        tool_input={"action": "type", "text": "hello"},
        screenshot=shot,
    )


def test_the_inbox_lists_the_callers_approvals_with_a_state_filter(
    api: APIClient, user: User, other_user: User
) -> None:
    root = ChatFactory.create(owner=user)
    mine = waiting_approval(user, parent=root)
    decided = waiting_approval(user, tool_use_id="toolu_2")
    waiting_approval(other_user)  # not in alice's inbox
    assert post_json(api, f"{API}/approvals/{decided.pk}", {"decision": "deny"}).status_code == 200

    listed = api.get(f"{API}/approvals").json()
    assert [a["id"] for a in listed] == [str(decided.pk), str(mine.pk)]  # newest first
    pending = api.get(f"{API}/approvals?state=pending").json()
    assert [a["id"] for a in pending] == [str(mine.pk)]
    shown = pending[0]
    assert shown == {
        "id": str(mine.pk),
        "chat_id": str(mine.chat_id),
        "root_chat_id": str(root.pk),
        "action": "type",
        "input": {"action": "type", "text": "hello"},
        "screenshot": f"{API}/chats/{mine.chat_id}/files/{mine.screenshot_id}",
        "state": "pending",
        "decided_by": None,
        "note": "",
        "created_at": mine.created_at.isoformat().replace("+00:00", "Z"),
        "decided_at": None,
    }
    assert api.get(shown["screenshot"]).status_code == 200  # the owner can open the screenshot
    assert [a["id"] for a in api.get(f"{API}/approvals?state=denied").json()] == [str(decided.pk)]


@pytest.mark.parametrize("query", ["state=nonsense", "state=", "limit=0", "limit=x"])
def test_a_bad_inbox_filter_is_a_400(api: APIClient, query: str) -> None:
    response = api.get(f"{API}/approvals?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_a_chats_approvals_a_root_lists_its_trees(api: APIClient, other_api: APIClient, user: User) -> None:
    root = ChatFactory.create(owner=user)
    child = waiting_approval(user, parent=root)
    other_child = waiting_approval(user, parent=root, tool_use_id="toolu_9")
    assert {a["id"] for a in api.get(f"{API}/chats/{root.pk}/approvals").json()} == {
        str(child.pk),
        str(other_child.pk),
    }
    assert [a["id"] for a in api.get(f"{API}/chats/{child.chat_id}/approvals").json()] == [str(child.pk)]
    assert api.get(f"{API}/chats/{root.pk}/approvals?state=approved").json() == []
    assert api.get(f"{API}/chats/{root.pk}/approvals?state=bogus").status_code == 400
    assert other_api.get(f"{API}/chats/{root.pk}/approvals").status_code == 404


def test_deciding_twice_is_a_409_with_the_current_state(api: APIClient, user: User) -> None:
    approval = waiting_approval(user)
    first = post_json(api, f"{API}/approvals/{approval.pk}", {"decision": "approve", "note": "go ahead"})
    assert first.status_code == 200
    body = first.json()
    assert body["state"] == "approved" and body["decided_by"] == "alice" and body["note"] == "go ahead"
    assert body["decided_at"] is not None
    assert Chat.objects.get(pk=approval.chat_id).status == Chat.Status.PENDING  # the chat goes on

    again = post_json(api, f"{API}/approvals/{approval.pk}", {"decision": "deny"})
    assert again.status_code == 409
    assert again.json()["state"] == "approved" and "already approved" in again.json()["detail"]
    assert api.get(f"{API}/approvals/{approval.pk}").json()["state"] == "approved"


def test_another_users_approval_is_a_404(api: APIClient, other_user: User) -> None:
    approval = waiting_approval(other_user)
    assert post_json(api, f"{API}/approvals/{approval.pk}", {"decision": "approve"}).status_code == 404
    assert api.get(f"{API}/approvals/{approval.pk}").status_code == 404
    assert api.get(f"{API}/approvals/00000000-0000-0000-0000-000000000000").status_code == 404
    approval.refresh_from_db()
    assert approval.state == "pending"


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "maybe"},
        {"decision": "APPROVE"},
        {"decision": True},
        {"decision": ["approve"]},
        {},
        {"decision": "approve", "note": 5},
        {"decision": "approve", "note": "x" * 2001},
        {"decision": "approve", "extra": 1},
        ["approve"],
    ],
)
def test_a_bad_decision_is_a_400_and_decides_nothing(api: APIClient, user: User, body: object) -> None:
    approval = waiting_approval(user)
    response = post_json(api, f"{API}/approvals/{approval.pk}", body)
    assert response.status_code == 400
    approval.refresh_from_db()
    assert approval.state == "pending"


def test_approval_policy_on_create_and_patch_of_a_root_and_a_child_follows(
    api: APIClient, user: User
) -> None:
    created = post_json(api, f"{API}/chats", {"approval_policy": "risky"}).json()
    assert created["approval_policy"] == "risky" and created["help_reason"] == ""
    assert post_json(api, f"{API}/chats", {}).json()["approval_policy"] == "off"  # the default setting
    root_id = created["id"]
    patched = patch_json(api, f"{API}/chats/{root_id}", {"approval_policy": "all"})
    assert patched.status_code == 200 and patched.json()["approval_policy"] == "all"

    root = Chat.objects.get(pk=root_id)
    child = ChatFactory.create(owner=user, parent=root, approval_policy="off", help_reason="Log in, please")
    shown = api.get(f"{API}/chats/{child.pk}").json()
    assert shown["approval_policy"] == "all" and shown["help_reason"] == "Log in, please"
    refused = patch_json(api, f"{API}/chats/{child.pk}", {"approval_policy": "off"})
    assert refused.status_code == 400 and "root" in refused.json()["detail"]
    assert api.get(f"{API}/chats/{root_id}/children").json()[0]["approval_policy"] == "all"


@pytest.mark.parametrize("bad", ["sometimes", "", None, 1, ["risky"]])
def test_a_bad_approval_policy_is_a_400(api: APIClient, user: User, bad: object) -> None:
    chat = ChatFactory.create(owner=user, approval_policy="risky")
    assert post_json(api, f"{API}/chats", {"approval_policy": bad}).status_code == 400
    assert patch_json(api, f"{API}/chats/{chat.pk}", {"approval_policy": bad}).status_code == 400
    chat.refresh_from_db()
    assert chat.approval_policy == "risky"


def test_the_schema_documents_the_approval_endpoints(api: APIClient) -> None:
    schema = api.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert "get" in paths[f"{API}/approvals"]
    assert {"get", "post"} <= set(paths[f"{API}/approvals/{{id}}"])
    assert "get" in paths[f"{API}/chats/{{id}}/approvals"]
    decide = paths[f"{API}/approvals/{{id}}"]["post"]
    assert {"200", "400", "404", "409"} <= set(decide["responses"])
    params = {p["name"]: p for p in paths[f"{API}/approvals"]["get"]["parameters"]}
    assert set(params["state"]["schema"]["enum"]) == {"pending", "approved", "denied", "expired"}
    chat = schema["components"]["schemas"]["Chat"]["properties"]
    assert "approval_policy" in chat and "help_reason" in chat
