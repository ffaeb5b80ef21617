"""The chat page shows cost live (the chat, its tree against the budget, each child) and a chat paused for
its budget says so with the amounts and continues once the budget is raised: real daphne, Celery worker,
fake Anthropic server, Chromium."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chats.models import Chat, ChatMessage, ChatModelConfig
from tests.factories import UserFactory
from tests.pages.conftest import chat_status, login, result_json, screenshot, start_chat
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, tool_use

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PRICES = {"input_price": 1000, "output_price": 0, "cache_write_price": 0, "cache_read_price": 0}


def dollars(amount: int) -> dict[str, int]:
    """A call's usage worth ``amount`` dollars at PRICES."""
    return {"input_tokens": 1000 * amount, "output_tokens": 0, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}  # fmt: skip


@pytest.fixture(autouse=True)
def prices() -> None:
    for model in ("claude-sonnet-5-5", "claude-opus-5-5"):
        ChatModelConfig.objects.update_or_create(model=model, defaults=PRICES)


def test_cost_is_shown_live_for_the_chat_its_tree_and_each_child(
    page: Page, fake: FakeAnthropic, artifacts_dir: Path
) -> None:
    def handler(request: RecordedRequest) -> Reply:
        tools = [tool.get("name") for tool in request.json.get("tools", [])]
        if "spawn_computer_use_agent" not in tools:  # the child
            return reply("Looked at the screen.", usage=dollars(2))
        previous = result_json(request)
        if previous is None:
            spawn = {"prompt": "Look at the screen", "title": "Looker"}
            return reply(tool_use("spawn_computer_use_agent", spawn), usage=dollars(1))
        if "report" in previous:
            return reply(f"Report: {previous['report']}", usage=dollars(1))
        return reply(tool_use("wait_agent", {"chat_id": previous["chat_id"]}), usage=dollars(1))

    fake.handle_with(handler)
    UserFactory.create(username="alice")
    login(page, "alice")
    chat = start_chat(page, "Look at the screen for me")

    expect(page.locator(".msg--assistant").last).to_contain_text(
        "Report: Looked at the screen.", timeout=30_000
    )
    # Root: $3 of its own, $5 with the child's $2, against the default $10 budget.
    expect(page.locator("#chat-cost")).to_have_text("$3.00 · with its agents $5.00 of $10.00 budget")
    expect(page.locator(".child-card").filter(has_text="Looker").locator(".child-cost")).to_have_text("$2.00")
    screenshot(page, artifacts_dir, "chat-cost-1280x800")
    page.reload()  # the server renders the same figures
    expect(page.locator("#chat-cost")).to_have_text("$3.00 · with its agents $5.00 of $10.00 budget")
    expect(page.locator(".child-card .child-cost")).to_have_text("$2.00")
    assert Chat.objects.get(pk=chat.pk).tree_cost_usd == 5


def test_a_chat_paused_for_its_budget_says_so_and_continues_once_raised(
    page: Page, fake: FakeAnthropic, artifacts_dir: Path
) -> None:
    nobody = str(uuid.uuid4())
    fake.script(
        [
            reply("Working on it.", tool_use("wait_agent", {"chat_id": nobody}), usage=dollars(12)),
            reply("Finished within the new budget.", usage=dollars(1)),
        ]
    )
    UserFactory.create(username="alice")
    login(page, "alice")
    chat = start_chat(page, "An expensive task")

    notice = page.locator("#budget-notice")
    expect(notice).to_be_visible(timeout=30_000)
    expect(notice).to_contain_text("Paused: this chat reached its budget of $10.00 ($12.00 spent)")
    expect(page.locator("#chat-status .badge")).to_have_text("Paused")
    expect(page.locator("#chat-cost")).to_have_text("$12.00 of $10.00 budget")
    assert len(fake.message_requests) == 1  # the second call was not made
    screenshot(page, artifacts_dir, "chat-budget-paused-1280x800")

    page.get_by_label("Budget in USD").fill("20")
    page.get_by_role("button", name="Raise budget and resume").click()
    expect(page.locator(".msg--assistant").last).to_contain_text(
        "Finished within the new budget.", timeout=30_000
    )
    expect(notice).to_be_hidden()
    expect(page.locator("#chat-status .badge")).to_have_text("Waiting")
    expect(page.locator("#chat-cost")).to_have_text(re.compile(r"^\$13\.00 of \$20\.00 budget$"))
    assert chat_status(chat) == Chat.Status.WAITING
    assert list(ChatMessage.objects.filter(chat=chat).values_list("role", flat=True)) == [
        "user", "assistant", "tool", "assistant",
    ]  # fmt: skip
