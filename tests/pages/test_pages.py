"""The server-rendered pages in a real browser: log in and out, the chat list and "New chat", the
API tokens page and the workspace agents page."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from agents.models import WorkspaceAgent
from chatdesk.models import ApiToken
from chats.models import Chat, ChatMessage
from tests.factories import ChatFactory, UserFactory, WorkspaceAgentFactory
from tests.pages.conftest import PHONE, ConsoleLog, http, login, screenshot
from tests.support.processes import Daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_logout_and_login_required(page: Page) -> None:
    UserFactory.create(username="alice")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("didn't match")

    page.get_by_label("Password").fill("pw-for-tests-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Chats", level=1)).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    page.goto("/tokens/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/tokens/$"))


def test_chat_list_shows_status_and_time_and_filters_archived(page: Page, artifacts_dir: Path) -> None:
    alice = UserFactory.create(username="alice")
    ChatFactory.create(owner=alice, title="Book the flights", status=Chat.Status.RUNNING)
    ChatFactory.create(owner=alice, title="Summarize <b>the</b> report", status=Chat.Status.ERROR)
    ChatFactory.create(owner=alice, title="Old archived chat", archived=True)
    ChatFactory.create(title="Someone else's chat")
    login(page, "alice")

    rows = page.locator(".chat-row")
    expect(rows).to_have_count(2)
    flights = rows.filter(has_text="Book the flights")
    expect(flights.locator(".badge")).to_have_text("Running")
    expect(flights.locator("time")).to_contain_text("ago")
    # Titles are escaped, never markup.
    expect(rows.filter(has_text="Summarize <b>the</b> report")).to_have_count(1)
    expect(page.get_by_text("Someone else's chat")).to_have_count(0)
    expect(page.get_by_text("Old archived chat")).to_have_count(0)
    screenshot(page, artifacts_dir, "chat-list-1280x800")

    page.get_by_role("link", name="Archived").click()
    expect(page.get_by_role("heading", name="Archived chats")).to_be_visible()
    expect(page.locator(".chat-row")).to_have_count(1)
    expect(page.locator(".chat-row")).to_contain_text("Old archived chat")

    page.set_viewport_size(PHONE)
    page.get_by_role("link", name="Active").click()
    expect(page.locator(".chat-row")).to_have_count(2)
    screenshot(page, artifacts_dir, "chat-list-390x844")


def test_new_chat_form_lists_connected_agents_first_and_opens_the_chat(page: Page) -> None:
    alice = UserFactory.create(username="alice")
    WorkspaceAgentFactory.create(
        owner=alice, name="aardvark-offline", last_seen=timezone.now() - timedelta(hours=2)
    )
    online = WorkspaceAgentFactory.create(owner=alice, name="zebra-online", last_seen=timezone.now())
    WorkspaceAgentFactory.create(name="not-mine", last_seen=timezone.now())
    login(page, "alice")

    picker = page.get_by_label("Workspace agent")
    options = picker.locator("option").all_inner_texts()
    assert options[0].startswith("Automatic")
    assert options[1:] == ["zebra-online — connected", "aardvark-offline — disconnected"]

    page.get_by_role("button", name="Start chat").click()  # empty message: refused with a message
    expect(page.get_by_role("alert")).to_contain_text("This field is required")

    page.get_by_label("Message").fill("Please open the calculator and add two numbers")
    picker.select_option(label="zebra-online — connected")
    page.get_by_role("button", name="Start chat").click()

    expect(page).to_have_url(re.compile(r"/chats/[0-9a-f-]{36}/$"))
    chat = Chat.objects.get(owner=alice)
    assert chat.workspace_agent_id == online.pk
    assert chat.status != Chat.Status.WAITING  # a turn was queued (a session worker may have run it since)
    assert ChatMessage.objects.get(chat=chat).text == "Please open the calculator and add two numbers"
    expect(page.get_by_role("heading", name="Please open the calculator and add...")).to_be_visible()


def test_other_users_chat_is_not_found(page: Page, console_errors: ConsoleLog) -> None:
    console_errors.allow(r"status of 404 \(Not Found\) \(http://[^)]+/chats/[0-9a-f-]+/\)$")
    UserFactory.create(username="alice")
    theirs = ChatFactory.create(title="Private")
    login(page, "alice")
    response = page.goto(f"/chats/{theirs.pk}/")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("Private")).to_have_count(0)


def test_api_tokens_page_shows_a_new_token_once_and_revokes(
    page: Page, server: Daphne, artifacts_dir: Path
) -> None:
    alice = UserFactory.create(username="alice")
    login(page, "alice")
    page.get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()

    page.get_by_label("Name").fill("ci-script")
    page.get_by_role("button", name="Create token").click()
    token_field = page.locator("#new-token")
    raw = token_field.input_value()
    assert raw.startswith("cdk")
    assert ApiToken.objects.get(user=alice).token_prefix == raw[:10]
    # The token works against the API, as a Bearer token.
    status, _ = http("GET", f"{server.url}/api/experimental/chats", token=raw)
    assert status == 200
    # It is in no cookie: shown on this response only.
    assert all(raw not in c["value"] for c in page.context.cookies())
    screenshot(page, artifacts_dir, "tokens-1280x800")

    page.goto("/tokens/")
    expect(page.locator("#new-token")).to_have_count(0)
    expect(page.get_by_role("cell", name=f"{raw[:10]}…")).to_be_visible()
    page.set_viewport_size(PHONE)
    screenshot(page, artifacts_dir, "tokens-390x844")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke ci-script").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    assert not ApiToken.objects.filter(user=alice).exists()
    status, _ = http("GET", f"{server.url}/api/experimental/chats", token=raw)
    assert status == 401


def test_agents_page_registers_an_agent_with_its_command_and_deletes_it(
    page: Page, server: Daphne, artifacts_dir: Path
) -> None:
    alice = UserFactory.create(username="alice")
    WorkspaceAgentFactory.create(
        owner=alice, name="laptop", last_seen=timezone.now(), display_width=1280, display_height=800
    )
    login(page, "alice")
    page.get_by_role("link", name="Agents", exact=True).click()

    laptop = page.get_by_role("row").filter(has_text="laptop")
    expect(laptop.locator(".badge")).to_have_text("Connected")
    expect(laptop).to_contain_text("1280\u00d7800")

    page.get_by_label("Name").fill("workstation")
    page.get_by_role("button", name="Register agent").click()
    command = page.locator("#agent-command").input_value()
    token = page.locator("#agent-token").input_value()
    # The token is shown once, by itself; the commands keep it in a private file, off every command line.
    assert page.locator("#agent-save-token").input_value() == "(umask 077; cat > ~/.chatdesk-agent-token)"
    assert command == f"chatdesk-agent --server {server.url} --token-file ~/.chatdesk-agent-token"
    assert token not in page.content().replace(f'value="{token}"', "", 1)
    agent = WorkspaceAgent.objects.get(owner=alice, name="workstation")
    assert WorkspaceAgent.objects.for_raw_token(token) == agent
    expect(page.get_by_role("row").filter(has_text="workstation").locator(".badge")).to_have_text(
        "Disconnected"
    )
    assert all(token not in c["value"] for c in page.context.cookies())
    screenshot(page, artifacts_dir, "agents-1280x800")

    # The agent heartbeats with that token: the page then shows it connected.
    status, body = http(
        "POST",
        f"{server.url}/api/experimental/workspace-agents/heartbeat",
        token=token,
        json={"url": "ws://127.0.0.1:9", "display": {"width": 1024, "height": 768}},
    )
    assert status == 200, body
    page.goto("/agents/")
    expect(page.locator("#agent-token")).to_have_count(0)
    expect(page.get_by_role("row").filter(has_text="workstation").locator(".badge")).to_have_text("Connected")

    # A duplicate name is refused with a message on the field.
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Register agent").click()
    expect(page.get_by_role("alert")).to_contain_text("already have a workspace agent named")

    page.set_viewport_size(PHONE)
    screenshot(page, artifacts_dir, "agents-390x844")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete workstation").click()
    expect(page.get_by_role("status")).to_contain_text("deleted")
    assert not WorkspaceAgent.objects.filter(pk=agent.pk).exists()


def test_pages_are_keyboard_reachable_with_landmarks(new_page: Callable[..., Page]) -> None:
    UserFactory.create(username="alice")
    page = new_page()
    login(page, "alice")
    expect(page.get_by_role("banner")).to_have_count(1)
    expect(page.get_by_role("main")).to_have_count(1)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    # The first control after the skip link in <main> is the new-chat message box.
    expect(page.get_by_label("Message")).to_be_focused()
