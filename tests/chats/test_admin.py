from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from PIL import Image

from chats.models import Chat, ChatFile, ChatMessage, ChatModelConfig, ChatProvider
from tests.factories import ChatFactory, ChatMessageFactory

pytestmark = pytest.mark.django_db

KEY = "sk-ant-api03-very-secret-admin-key-7Q9z"
PROVIDERS = "/admin/chats/chatprovider/"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def provider_form(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "provider": "anthropic",
        "display_name": "Anthropic",
        "api_key": "",
        "base_url": "",
        "enabled": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def add_provider(admin_client, key: str = KEY) -> ChatProvider:
    response = admin_client.post(f"{PROVIDERS}add/", provider_form(api_key=key))
    assert response.status_code == 302, response.content.decode()
    return ChatProvider.objects.get()


def test_provider_add_form_has_a_password_input_for_the_key(admin_client) -> None:
    html = admin_client.get(f"{PROVIDERS}add/").content.decode()
    assert re.search(r'<input type="password" name="api_key"[^>]*autocomplete="new-password"', html)


def test_provider_key_is_never_shown_back(admin_client, admin_user) -> None:
    provider = add_provider(admin_client)
    assert provider.get_api_key() == KEY
    assert provider.created_by == admin_user

    change = admin_client.get(f"{PROVIDERS}{provider.pk}/change/")
    listing = admin_client.get(PROVIDERS)
    for response in (change, listing):
        assert response.status_code == 200
        html = response.content.decode()
        assert KEY not in html
        assert "very-secret" not in html
        assert provider.api_key_encrypted not in html
    assert re.search(r'<input type="password" name="api_key"(?![^>]*value=)', change.content.decode())
    assert "set (…7Q9z)" in listing.content.decode()


def test_provider_key_left_empty_on_edit_is_kept(admin_client) -> None:
    provider = add_provider(admin_client)
    response = admin_client.post(
        f"{PROVIDERS}{provider.pk}/change/",
        provider_form(display_name="Renamed", base_url="https://llm.example"),
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.display_name == "Renamed"
    assert provider.base_url == "https://llm.example"
    assert provider.get_api_key() == KEY


def test_provider_key_can_be_replaced(admin_client) -> None:
    provider = add_provider(admin_client)
    admin_client.post(f"{PROVIDERS}{provider.pk}/change/", provider_form(api_key="sk-ant-new-key-ABCD"))
    provider.refresh_from_db()
    assert provider.get_api_key() == "sk-ant-new-key-ABCD"
    assert "set (…ABCD)" in admin_client.get(PROVIDERS).content.decode()


def test_provider_key_can_be_cleared(admin_client) -> None:
    provider = add_provider(admin_client)
    response = admin_client.post(f"{PROVIDERS}{provider.pk}/change/", provider_form(clear_api_key="on"))
    assert response.status_code == 302
    provider.refresh_from_db()
    assert not provider.has_api_key
    assert provider.get_api_key() == ""
    assert "not set" in admin_client.get(PROVIDERS).content.decode()


def test_provider_with_a_bad_base_url_is_refused(admin_client) -> None:
    response = admin_client.post(f"{PROVIDERS}add/", provider_form(api_key=KEY, base_url="not a url"))
    assert response.status_code == 200
    assert "Enter a valid URL" in response.content.decode()
    assert KEY not in response.content.decode()
    assert not ChatProvider.objects.exists()


def test_model_config_admin_adds_and_lists_configs(admin_client) -> None:
    response = admin_client.post(
        "/admin/chats/chatmodelconfig/add/",
        {
            "provider": "anthropic",
            "model": "claude-test-1",
            "display_name": "Test",
            "enabled": "on",
            "is_default": "on",
            "context_limit": "200000",
            "options": '{"max_output_tokens": 8000}',
        },
    )
    assert response.status_code == 302, response.content.decode()
    config = ChatModelConfig.objects.get(model="claude-test-1")
    assert (config.is_default, config.options) == (True, {"max_output_tokens": 8000})
    listing = admin_client.get("/admin/chats/chatmodelconfig/")
    assert listing.status_code == 200
    assert "claude-test-1" in listing.content.decode()


def test_model_config_admin_refuses_a_second_default(admin_client) -> None:
    ChatModelConfig.objects.create(model="claude-test-1", is_default=True)
    before = ChatModelConfig.objects.count()
    response = admin_client.post(
        "/admin/chats/chatmodelconfig/add/",
        {"provider": "anthropic", "model": "claude-test-2", "enabled": "on", "is_default": "on",
         "context_limit": "200000", "options": "{}"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "errornote" in response.content.decode()
    assert ChatModelConfig.objects.count() == before


def _chat_with_screenshot(owner: User) -> tuple[Chat, ChatFile, bytes]:
    chat = ChatFactory.create(owner=owner, title="Admin view", mode=None)
    data = png_bytes()
    chat_file = ChatFile.objects.create(chat=chat, file=ContentFile(data, name="s.png"), size=len(data))
    ChatMessageFactory.create(chat=chat, content=[{"type": "text", "text": "take a screenshot"}])
    ChatMessageFactory.create(
        chat=chat,
        role=ChatMessage.Role.ASSISTANT,
        content=[{"type": "tool_use", "id": "tu1", "name": "computer", "input": {"action": "screenshot"}}],
    )
    ChatMessageFactory.create(
        chat=chat,
        role=ChatMessage.Role.TOOL,
        content=[{"type": "tool_result", "tool_use_id": "tu1",
                  "content": [{"type": "image", "file_id": str(chat_file.id)}]}],
    )  # fmt: skip
    return chat, chat_file, data


def test_chat_admin_shows_messages_read_only_with_screenshot_thumbnails(admin_client, user: User) -> None:
    chat, _, data = _chat_with_screenshot(user)

    response = admin_client.get(f"/admin/chats/chat/{chat.id}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "take a screenshot" in html
    assert "[tool computer:" in html
    # Messages are read-only: no editable inline fields, no "add another", no delete box.
    assert 'name="messages-0-role"' not in html
    assert "messages-0-DELETE" not in html
    assert 'name="messages-MAX_NUM_FORMS" value="0"' in html  # no "add another message" row

    thumbnails = re.findall(r'<img src="([^"]+)" alt="screenshot"', html)
    assert len(thumbnails) == 1
    # The admin (who does not own the chat) can open the thumbnail.
    image = admin_client.get(thumbnails[0])
    assert image.status_code == 200
    assert image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content) == data


def test_chat_admin_files_need_staff_allowed_to_view_chats(client, user: User, other_user: User) -> None:
    chat, chat_file, _ = _chat_with_screenshot(user)
    url = f"/admin/chats/chat/{chat.id}/files/{chat_file.id}/"
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]

    other_user.is_staff = True
    other_user.save(update_fields=["is_staff"])
    client.force_login(other_user)
    assert client.get(url).status_code == 403


def test_chat_admin_lets_staff_rename_and_archive_but_not_change_status(admin_client, user: User) -> None:
    chat, _, _ = _chat_with_screenshot(user)
    response = admin_client.post(
        f"/admin/chats/chat/{chat.id}/change/",
        {"title": "Renamed", "archived": "on", "status": "running",
         "messages-TOTAL_FORMS": "3", "messages-INITIAL_FORMS": "3",
         "messages-MIN_NUM_FORMS": "0", "messages-MAX_NUM_FORMS": "1000",
         "audit_events-TOTAL_FORMS": "0", "audit_events-INITIAL_FORMS": "0",
         "audit_events-MIN_NUM_FORMS": "0", "audit_events-MAX_NUM_FORMS": "1000",
         "approvals-TOTAL_FORMS": "0", "approvals-INITIAL_FORMS": "0",
         "approvals-MIN_NUM_FORMS": "0", "approvals-MAX_NUM_FORMS": "1000"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()
    chat.refresh_from_db()
    assert (chat.title, chat.archived, chat.status) == ("Renamed", True, "waiting")
    assert chat.messages.count() == 3


def test_chat_admin_has_no_add_page_and_lists_chats(admin_client, user: User) -> None:
    ChatFactory.create(owner=user, title="Listed chat")
    assert admin_client.get("/admin/chats/chat/add/").status_code == 403
    listing = admin_client.get("/admin/chats/chat/")
    assert listing.status_code == 200
    assert "Listed chat" in listing.content.decode()


def test_approvals_show_in_the_admin_read_only_with_their_marked_screenshot(admin_client, user: User) -> None:
    from chats.approvals import approval_create

    chat, _, data = _chat_with_screenshot(user)
    marked = ChatFile.objects.create(chat=chat, file=ContentFile(data, name="m.png"), size=len(data))
    approval = approval_create(
        chat=chat, tool_use_id="toolu_a", action="type", tool_input={"text": "secret"}, screenshot=marked
    )
    thumb = f"/admin/chats/chat/{chat.id}/files/{marked.id}/"
    page = admin_client.get(f"/admin/chats/approval/{approval.pk}/change/")
    assert page.status_code == 200 and thumb in page.content.decode()
    assert 'name="state"' not in page.content.decode()  # read-only: decisions are the owner's
    listing = admin_client.get("/admin/chats/approval/?state=pending").content.decode()
    assert str(chat) in listing
    assert thumb in admin_client.get(f"/admin/chats/chat/{chat.id}/change/").content.decode()
    assert admin_client.get("/admin/chats/approval/add/").status_code == 403
