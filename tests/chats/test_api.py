from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image
from rest_framework.pagination import PageNumberPagination
from rest_framework.test import APIClient

from chats.models import Chat, ChatFile, ChatMessage, ChatModelConfig
from tests.factories import ChatFactory, ChatMessageFactory, WorkspaceAgentFactory

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse

pytestmark = pytest.mark.django_db

API = "/api/experimental"
CHAT_FIELDS = {
    "id", "title", "status", "mode", "parent_chat_id", "root_chat_id", "workspace_agent", "model",
    "last_error", "archived", "created_at", "updated_at",
}  # fmt: skip


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def post_json(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.post(path, json.dumps(body), content_type="application/json")


def patch_json(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.patch(path, json.dumps(body), content_type="application/json")


# --- list ---------------------------------------------------------------------------------------


def test_list_shows_only_the_callers_root_chats_newest_first(api, user, other_user) -> None:
    older = ChatFactory.create(owner=user, title="older")
    newer = ChatFactory.create(owner=user, title="newer")
    ChatFactory.create(owner=user, parent=newer, title="a child")
    ChatFactory.create(owner=other_user, title="not mine")
    Chat.objects.filter(pk=older.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    response = api.get(f"{API}/chats")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [c["title"] for c in body["results"]] == ["newer", "older"]
    assert set(body["results"][0]) >= CHAT_FIELDS
    assert body["results"][0]["root_chat_id"] == str(newer.id)
    assert body["results"][0]["parent_chat_id"] is None


def test_list_is_paginated(api, user, monkeypatch) -> None:
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)
    for i in range(5):
        ChatFactory.create(owner=user, title=f"chat {i}")

    first = api.get(f"{API}/chats").json()
    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert first["previous"] is None
    assert first["next"].endswith("/api/experimental/chats?page=2")

    seen = [c["id"] for c in first["results"]]
    page = first
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [c["id"] for c in page["results"]]
    assert len(seen) == len(set(seen)) == 5
    assert page["previous"] is not None

    assert api.get(f"{API}/chats?page=99").status_code == 404


def test_list_parent_filter_lists_children(api, user, other_user) -> None:
    parent = ChatFactory.create(owner=user)
    child = ChatFactory.create(owner=user, parent=parent, mode=Chat.Mode.COMPUTER_USE)
    ChatFactory.create(owner=user)

    body = api.get(f"{API}/chats?parent={parent.id}").json()
    assert [c["id"] for c in body["results"]] == [str(child.id)]
    assert body["results"][0]["parent_chat_id"] == str(parent.id)
    assert body["results"][0]["root_chat_id"] == str(parent.id)
    assert body["results"][0]["mode"] == "computer_use"

    theirs = ChatFactory.create(owner=other_user)
    ChatFactory.create(owner=other_user, parent=theirs)
    assert api.get(f"{API}/chats?parent={theirs.id}").json()["count"] == 0


def test_list_archived_filter(api, user) -> None:
    ChatFactory.create(owner=user, title="active")
    ChatFactory.create(owner=user, title="archived", archived=True)
    assert [c["title"] for c in api.get(f"{API}/chats").json()["results"]] == ["active"]
    assert [c["title"] for c in api.get(f"{API}/chats?archived=true").json()["results"]] == ["archived"]


@pytest.mark.parametrize("query", ["parent=not-a-uuid", "archived=perhaps"])
def test_list_with_bad_filters_is_a_400(api, query: str) -> None:
    response = api.get(f"{API}/chats?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


# --- create -------------------------------------------------------------------------------------


def test_create_empty_chat(api, user) -> None:
    response = post_json(api, f"{API}/chats", {})
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= CHAT_FIELDS
    assert body["title"] == "New Chat"
    assert body["status"] == "waiting"
    assert body["root_chat_id"] == body["id"]
    assert body["workspace_agent"] is None
    chat = Chat.objects.get(pk=body["id"])
    assert chat.owner == user
    assert not chat.messages.exists()


def test_create_with_message_stores_it_and_queues_a_turn(api) -> None:
    response = post_json(api, f"{API}/chats", {"message": "Open the calculator and add two numbers please"})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["title"] == "Open the calculator and add two..."
    messages = list(ChatMessage.objects.filter(chat_id=body["id"]))
    assert [(m.role, m.text) for m in messages] == [
        ("user", "Open the calculator and add two numbers please")
    ]


def test_create_with_title_keeps_it(api) -> None:
    body = post_json(api, f"{API}/chats", {"message": "hi", "title": "My title"}).json()
    assert body["title"] == "My title"


def test_create_uses_the_default_model_config(api) -> None:
    ChatModelConfig.objects.update_or_create(model="claude-opus-5-5", defaults={"is_default": True})
    assert post_json(api, f"{API}/chats", {}).json()["model"] == "claude-opus-5-5"


def test_create_with_an_unknown_model_is_a_400(api) -> None:
    response = post_json(api, f"{API}/chats", {"model": "gpt-nonsense"})
    assert response.status_code == 400
    assert "gpt-nonsense" in response.json()["detail"]
    assert not Chat.objects.exists()


def test_create_picks_the_callers_most_recently_seen_connected_agent(api, user, other_user) -> None:
    now = timezone.now()
    WorkspaceAgentFactory.create(owner=user, name="older", last_seen=now - timedelta(seconds=10))
    newest = WorkspaceAgentFactory.create(owner=user, name="newest", last_seen=now - timedelta(seconds=2))
    WorkspaceAgentFactory.create(owner=user, name="gone", last_seen=now - timedelta(hours=1))
    WorkspaceAgentFactory.create(owner=other_user, name="theirs", last_seen=now)

    body = post_json(api, f"{API}/chats", {}).json()
    assert body["workspace_agent"] == str(newest.id)


def test_create_without_a_connected_agent_has_none(api, user) -> None:
    WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now() - timedelta(hours=1))
    assert post_json(api, f"{API}/chats", {}).json()["workspace_agent"] is None


def test_create_with_an_explicit_agent(api, user) -> None:
    WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now())
    chosen = WorkspaceAgentFactory.create(owner=user)
    body = post_json(api, f"{API}/chats", {"workspace_agent": str(chosen.id)}).json()
    assert body["workspace_agent"] == str(chosen.id)


def test_create_refuses_another_users_agent(api, other_user) -> None:
    theirs = WorkspaceAgentFactory.create(owner=other_user)
    response = post_json(api, f"{API}/chats", {"workspace_agent": str(theirs.id)})
    assert response.status_code == 400
    assert "workspace_agent" in response.json()
    assert not Chat.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": 5}, "title"),
        ({"message": []}, "message"),
        ({"message": "   "}, "message"),
        ({"message": None}, "message"),
        ({"workspace_agent": "not-a-uuid"}, "workspace_agent"),
        ({"workspace_agent": {"id": 1}}, "workspace_agent"),
        ({"model": 7}, "model"),
        ({"title": "x" * 201}, "title"),
        ({"titel": "typo"}, "titel"),
    ],
)
def test_create_with_bad_fields_is_a_400_naming_the_field(api, body: dict, field: str) -> None:
    response = post_json(api, f"{API}/chats", body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Chat.objects.exists()


@pytest.mark.parametrize("raw", ['{"message": "hi"', "not json", "[1, 2]", '"a string"', "null"])
def test_create_with_malformed_or_non_object_json_is_a_400(api, raw: str) -> None:
    response = api.post(f"{API}/chats", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()
    assert not Chat.objects.exists()


def test_create_with_a_body_over_one_mebibyte_is_a_413(api) -> None:
    response = post_json(api, f"{API}/chats", {"message": "x" * (1024 * 1024 + 10)})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert not Chat.objects.exists()


def test_create_with_a_non_json_content_type_is_a_415(api) -> None:
    response = api.post(f"{API}/chats", "message=hi", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


# --- one chat -----------------------------------------------------------------------------------


def test_get_patch_delete_a_chat(api, user) -> None:
    chat = ChatFactory.create(owner=user, title="before")
    child = ChatFactory.create(owner=user, parent=chat)

    assert api.get(f"{API}/chats/{chat.id}").json()["title"] == "before"

    response = patch_json(api, f"{API}/chats/{chat.id}", {"title": "after"})
    assert response.status_code == 200
    assert response.json()["title"] == "after"
    response = patch_json(api, f"{API}/chats/{chat.id}", {"archived": True})
    assert response.json()["archived"] is True
    chat.refresh_from_db()
    assert (chat.title, chat.archived) == ("after", True)

    assert api.delete(f"{API}/chats/{chat.id}").status_code == 204
    assert not Chat.objects.filter(pk__in=[chat.pk, child.pk]).exists()
    assert api.get(f"{API}/chats/{chat.id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [({"title": 5}, "title"), ({"archived": "yes"}, "archived"), ({"archived": 1}, "archived"),
     ({"status": "running"}, "status"), ({"title": ""}, "title")],
)  # fmt: skip
def test_patch_with_bad_fields_is_a_400_and_changes_nothing(api, user, body: dict, field: str) -> None:
    chat = ChatFactory.create(owner=user, title="kept")
    response = patch_json(api, f"{API}/chats/{chat.id}", body)
    assert response.status_code == 400
    assert field in response.json()
    chat.refresh_from_db()
    assert (chat.title, chat.archived, chat.status) == ("kept", False, "waiting")


def test_another_users_chat_is_a_404_everywhere(api, other_user) -> None:
    chat = ChatFactory.create(owner=other_user, title="theirs")
    ChatMessageFactory.create(chat=chat)
    chat_file = ChatFile.objects.create(chat=chat, file=ContentFile(png_bytes(), name="s.png"))
    base = f"{API}/chats/{chat.id}"
    responses = [
        api.get(base),
        patch_json(api, base, {"title": "mine now"}),
        api.delete(base),
        api.get(f"{base}/messages"),
        post_json(api, f"{base}/messages", {"content": "hello"}),
        api.get(f"{base}/children"),
        api.post(f"{base}/interrupt"),
        api.get(f"{base}/files/{chat_file.id}"),
    ]
    for response in responses:
        assert response.status_code == 404, response.request
        assert "detail" in response.json()
    chat.refresh_from_db()
    assert chat.title == "theirs"
    assert chat.messages.count() == 1


@pytest.mark.parametrize(
    "path",
    ["chats/not-a-uuid", "chats/not-a-uuid/messages", "chats/123/children", "chats/x/interrupt",
     f"chats/{uuid.uuid4()}/files/nope", f"chats/{uuid.uuid4()}"],
)  # fmt: skip
def test_bad_or_unknown_ids_in_paths_are_a_json_404(api, path: str) -> None:
    response = api.get(f"{API}/{path}")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()


# --- messages -----------------------------------------------------------------------------------


def test_messages_are_listed_in_id_order_after_a_cursor(api, user) -> None:
    chat = ChatFactory.create(owner=user)
    messages = [
        ChatMessageFactory.create(chat=chat, content=[{"type": "text", "text": f"m{i}"}]) for i in range(4)
    ]
    ChatMessageFactory.create(chat=ChatFactory.create(owner=user))

    everything = api.get(f"{API}/chats/{chat.id}/messages").json()
    assert [m["id"] for m in everything] == [m.id for m in messages]
    assert everything[0]["content"] == [{"type": "text", "text": "m0"}]
    assert everything[0]["role"] == "user"
    assert everything[0]["chat_id"] == str(chat.id)

    after = api.get(f"{API}/chats/{chat.id}/messages?after_id={messages[1].id}").json()
    assert [m["content"][0]["text"] for m in after] == ["m2", "m3"]
    assert api.get(f"{API}/chats/{chat.id}/messages?after_id={messages[-1].id}").json() == []


@pytest.mark.parametrize("after_id", ["abc", "-1", "1.5"])
def test_messages_with_a_bad_cursor_is_a_400(api, user, after_id: str) -> None:
    chat = ChatFactory.create(owner=user)
    response = api.get(f"{API}/chats/{chat.id}/messages?after_id={after_id}")
    assert response.status_code == 400
    assert "after_id" in response.json()


def test_message_images_are_given_as_urls(api, user) -> None:
    chat = ChatFactory.create(owner=user)
    chat_file = ChatFile.objects.create(chat=chat, file=ContentFile(png_bytes(), name="s.png"))
    ChatMessageFactory.create(
        chat=chat,
        role=ChatMessage.Role.TOOL,
        content=[
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": [{"type": "image", "file_id": str(chat_file.id)}],
            }
        ],
    )
    [message] = api.get(f"{API}/chats/{chat.id}/messages").json()
    image = message["content"][0]["content"][0]
    assert image["url"] == f"{API}/chats/{chat.id}/files/{chat_file.id}"
    assert api.get(image["url"]).status_code == 200


def test_send_a_message_to_an_idle_chat_queues_a_turn(api, user) -> None:
    chat = ChatFactory.create(owner=user, status=Chat.Status.ERROR, last_error="boom")
    response = post_json(api, f"{API}/chats/{chat.id}/messages", {"content": "try again"})
    assert response.status_code == 202
    body = response.json()
    assert body["role"] == "user"
    assert body["content"] == [{"type": "text", "text": "try again"}]
    chat.refresh_from_db()
    assert chat.status == Chat.Status.PENDING
    assert chat.last_error == ""
    assert [m.text for m in chat.messages.all()] == ["try again"]


def test_send_a_message_while_running_queues_it_behind_the_turn(api, user) -> None:
    chat = ChatFactory.create(owner=user, status=Chat.Status.RUNNING)
    assert post_json(api, f"{API}/chats/{chat.id}/messages", {"content": "also this"}).status_code == 202
    chat.refresh_from_db()
    assert chat.status == Chat.Status.RUNNING
    assert chat.messages.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": "  \n"},
        {"content": 3},
        {"content": ["a"]},
        {"content": "x", "role": "system"},
    ],
)
def test_send_a_bad_message_is_a_400(api, user, body: dict) -> None:
    chat = ChatFactory.create(owner=user)
    response = post_json(api, f"{API}/chats/{chat.id}/messages", body)
    assert response.status_code == 400
    assert set(response.json()) & {"content", "role"}
    chat.refresh_from_db()
    assert chat.status == Chat.Status.WAITING
    assert not chat.messages.exists()


# --- children, interrupt, files -----------------------------------------------------------------


def test_children_lists_direct_children(api, user) -> None:
    parent = ChatFactory.create(owner=user)
    first = ChatFactory.create(owner=user, parent=parent, mode=Chat.Mode.COMPUTER_USE)
    second = ChatFactory.create(owner=user, parent=parent, mode=Chat.Mode.COMPUTER_USE)
    ChatFactory.create(owner=user, parent=first)

    body = api.get(f"{API}/chats/{parent.id}/children").json()
    assert [c["id"] for c in body] == [str(first.id), str(second.id)]
    assert api.get(f"{API}/chats/{second.id}/children").json() == []


@pytest.mark.parametrize(
    ("before", "after"),
    [("pending", "paused"), ("running", "paused"), ("waiting", "waiting"), ("completed", "completed"),
     ("error", "error")],
)  # fmt: skip
def test_interrupt_pauses_only_a_queued_or_running_turn(api, user, before: str, after: str) -> None:
    chat = ChatFactory.create(owner=user, status=before)
    response = api.post(f"{API}/chats/{chat.id}/interrupt")
    assert response.status_code == 202
    assert response.json()["status"] == after
    # Why a chat is paused is part of its JSON; null unless paused.
    assert response.json()["paused_reason"] == ("interrupted" if after == "paused" else None)
    chat.refresh_from_db()
    assert chat.status == after
    assert api.get(f"{API}/chats/{chat.id}").json()["paused_reason"] == chat.paused_reason


def test_file_is_served_to_its_owner_with_its_content_type(api, other_api, user) -> None:
    data = png_bytes()
    chat = ChatFactory.create(owner=user)
    chat_file = ChatFile.objects.create(chat=chat, file=ContentFile(data, name="s.png"), size=len(data))

    response = api.get(f"{API}/chats/{chat.id}/files/{chat_file.id}")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == data

    assert other_api.get(f"{API}/chats/{chat.id}/files/{chat_file.id}").status_code == 404
    # The file exists, but not under another chat of the owner's.
    elsewhere = ChatFactory.create(owner=user)
    assert api.get(f"{API}/chats/{elsewhere.id}/files/{chat_file.id}").status_code == 404


def test_a_cursor_beyond_any_id_is_an_empty_page_not_an_error(api, user) -> None:
    chat = ChatFactory.create(owner=user)
    ChatMessageFactory.create(chat=chat)
    response = api.get(f"{API}/chats/{chat.id}/messages?after_id=99999999999999999999999")
    assert response.status_code == 200
    assert response.json() == []


# --- bad input and outages (issue #12) --------------------------------------------------------------


def test_json_nested_too_deeply_is_a_400(api) -> None:
    body = "[" * 50_000 + "]" * 50_000
    response = api.generic("POST", f"{API}/chats", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    assert not Chat.objects.exists()


@pytest.mark.parametrize("query", ["parent=", "archived=", "parent=%20"])
def test_an_empty_filter_is_a_400_not_ignored(api, user, query: str) -> None:
    ChatFactory.create(owner=user)
    response = api.get(f"{API}/chats?{query}")
    assert response.status_code == 400
    assert response.json() == {query.split("=")[0]: ["This parameter may not be empty."]}


@pytest.mark.parametrize("cursor", ["²", "٣", "1e3", "-1", "", "0x10"])
def test_a_message_cursor_is_ascii_digits(api, user, cursor: str) -> None:
    chat = ChatFactory.create(owner=user)
    response = api.get(f"{API}/chats/{chat.id}/messages", {"after_id": cursor})
    assert response.status_code == 400
    assert "after_id" in response.json()


def test_with_redis_down_sending_is_a_503_and_stores_nothing(api, user, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    chat = ChatFactory.create(owner=user)
    response = api.post(f"{API}/chats/{chat.id}/messages", {"content": "hello?"}, format="json")
    assert response.status_code == 503
    assert response["Retry-After"] and "nothing was saved" in response.json()["detail"]
    response = api.post(f"{API}/chats", {"message": "hello?"}, format="json")
    assert response.status_code == 503
    assert Chat.objects.count() == 1 and not ChatMessage.objects.exists()
    chat.refresh_from_db()
    assert chat.status == Chat.Status.WAITING
