"""The chat page, live: a real daphne, a real Celery worker and the fake Anthropic server.

Text streams in before the turn ends; tool calls and child chats show up with live status; interrupt
and the message box work; a reconnect after the server restarts resumes the stream with nothing missing.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from chats import services
from chats.models import Chat, ChatMessage
from tests.factories import UserFactory
from tests.pages.conftest import PHONE, ConsoleLog, chat_status, login, result_json, screenshot, start_chat
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, tool_use
from tests.support.processes import free_port, running_daphne, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_TEXT = (
    "Here is the plan. First I look at the desktop, then I open the application you asked for, "
    "and finally I report back what I saw on the screen, step by step."
)


def test_text_streams_before_the_turn_ends_and_messages_queue(
    page: Page, fake: FakeAnthropic, artifacts_dir: Path
) -> None:
    live = threading.Event()

    def first(request: RecordedRequest) -> Reply:
        live.wait(20)  # stream once the page listens: a turn may start before the page has loaded
        return reply(
            LONG_TEXT, chunk_size=6, chunk_delay=0.06, usage={"input_tokens": 1200, "output_tokens": 345}
        )

    fake.script([first, reply("Second answer.", usage={"input_tokens": 1500, "output_tokens": 20})])
    UserFactory.create(username="alice")
    login(page, "alice")
    chat = start_chat(page, "Make a plan")
    expect(page.locator("#stream-state")).to_have_text("Live")
    live.set()

    user_message = page.locator(".msg--user").first
    expect(user_message).to_contain_text("Make a plan")
    streaming = page.locator(".msg--streaming")
    expect(streaming).to_contain_text("Here is the plan", timeout=20_000)
    # Seen while the model is still writing: the turn has not ended, the text is not all there.
    assert chat_status(chat) == Chat.Status.RUNNING
    assert LONG_TEXT not in streaming.inner_text()
    expect(page.locator("#chat-status .badge")).to_have_text("Running")
    expect(streaming).to_have_attribute("aria-busy", "true")
    expect(page.locator("#interrupt-button")).to_be_enabled()

    # A message sent while the turn runs is stored at once and handled after it.
    composer = page.get_by_role("textbox", name="Message")
    composer.fill("And then?")
    composer.press("Enter")
    expect(page.locator(".msg--user")).to_have_count(2)
    expect(page.locator("#composer-hint")).to_contain_text("handled after the current turn")

    final = page.locator(".msg--assistant:not(.msg--streaming)")
    expect(final.first).to_have_text(re.compile(re.escape(LONG_TEXT)), timeout=20_000)
    expect(final.nth(1)).to_contain_text("Second answer.", timeout=20_000)
    expect(page.locator("#chat-status .badge")).to_have_text("Waiting")
    expect(page.locator(".msg--streaming")).to_have_count(0)
    expect(page.locator("#chat-usage")).to_have_text("2,700 in · 365 out")
    expect(page.locator("#interrupt-button")).to_be_disabled()
    assert [m.text for m in ChatMessage.objects.filter(chat=chat, role="user")] == [
        "Make a plan",
        "And then?",
    ]
    assert "And then?" in str(fake.message_requests[1].last_message)


def test_interrupt_keeps_the_partial_answer(page: Page, fake: FakeAnthropic) -> None:
    fake.script([reply(LONG_TEXT * 3, chunk_size=4, chunk_delay=0.08)])
    UserFactory.create(username="alice")
    login(page, "alice")
    chat = start_chat(page, "Talk slowly")
    expect(page.locator(".msg--streaming")).to_contain_text("Here is", timeout=20_000)

    page.get_by_role("button", name="Interrupt").click()
    expect(page.locator("#chat-status .badge")).to_have_text("Paused", timeout=10_000)
    expect(page.locator("#composer-hint")).to_contain_text("Paused")
    partial = page.locator(".msg--assistant:not(.msg--streaming)")
    expect(partial).to_contain_text("Here is", timeout=15_000)
    wait_until(
        lambda: ChatMessage.objects.filter(chat=chat, role="assistant").exists(),
        timeout=15,
        what="the partial answer",
    )
    saved = ChatMessage.objects.get(chat=chat, role="assistant").text
    assert saved and len(saved) < len(LONG_TEXT * 3)
    assert chat_status(chat) == Chat.Status.PAUSED


def test_tool_calls_and_child_chat_cards_with_live_status(
    page: Page, fake: FakeAnthropic, artifacts_dir: Path
) -> None:
    def handler(request: RecordedRequest) -> Reply:
        tools = [tool.get("name") for tool in request.json.get("tools", [])]
        if "spawn_computer_use_agent" not in tools:  # the child
            return reply("The calculator shows 4.", chunk_size=5, chunk_delay=0.05)
        previous = result_json(request)
        if previous is None:
            spawn = {"prompt": "Open the calculator and compute 2+2", "title": "Calculator task"}
            return reply("I will ask a helper.", tool_use("spawn_computer_use_agent", spawn))
        if "report" in previous:
            return reply(f"The helper reports: {previous['report']}")
        return reply(tool_use("wait_agent", {"chat_id": previous["chat_id"]}))

    fake.handle_with(handler)
    UserFactory.create(username="alice")
    login(page, "alice")
    chat = start_chat(page, "What is 2+2? Use the computer.")

    tool = page.locator(".tool").filter(has_text="spawn_computer_use_agent").first
    expect(tool).to_be_visible(timeout=20_000)
    expect(tool.locator(".tool-input")).to_contain_text("prompt: Open the calculator and compute 2+2")
    card = page.locator(".child-card").filter(has_text="Calculator task")
    expect(card).to_be_visible()
    expect(card.locator(".badge")).to_have_text(re.compile("Pending|Running|Completed"))
    expect(card.locator(".badge")).to_have_text("Completed", timeout=30_000)
    expect(page.locator(".msg--assistant").last).to_contain_text(
        "The helper reports: The calculator shows 4.", timeout=20_000
    )
    expect(page.locator("#chat-status .badge")).to_have_text("Waiting")
    screenshot(page, artifacts_dir, "chat-with-child-1280x800")

    card.get_by_role("link", name="Calculator task").click()
    expect(page.get_by_role("heading", name="Calculator task", level=1)).to_be_visible()
    child = Chat.objects.get(parent=chat)
    assert page.url.endswith(f"/chats/{child.pk}/")
    expect(page.locator(".msg--assistant")).to_contain_text("The calculator shows 4.")
    expect(page.locator("#chat-status .badge")).to_have_text("Completed")
    page.get_by_role("link", name=re.compile("What is 2\\+2")).click()
    expect(page.locator(".child-card")).to_have_count(1)


def test_stream_resumes_after_a_server_restart_with_nothing_missing(
    new_page: Callable[..., Page], fake: FakeAnthropic, console_errors: ConsoleLog, tmp_path: Path
) -> None:
    # While daphne is down, the browser's reconnection attempts fail: Chromium logs those.
    console_errors.allow(
        r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/api/experimental/chats/[0-9a-f-]+/stream"
    )
    # A request in flight when daphne stops gets an empty response or a reset instead.
    console_errors.allow(
        r"Failed to load resource: net::ERR_(CONNECTION_REFUSED|EMPTY_RESPONSE|CONNECTION_RESET)"
    )
    nobody = str(uuid.uuid4())  # wait_agent on a chat that is not a child: an error result, the turn goes on
    fake.script(
        [
            reply("Step one.", tool_use("wait_agent", {"chat_id": nobody}), chunk_size=3, chunk_delay=0.05),
            reply("Step two.", tool_use("wait_agent", {"chat_id": nobody}), chunk_size=3, chunk_delay=0.3),
            reply("Step three.", tool_use("wait_agent", {"chat_id": nobody}), chunk_size=3, chunk_delay=0.1),
            reply("All done.", chunk_size=3, chunk_delay=0.1),
        ]
    )
    UserFactory.create(username="alice")
    port = free_port()
    with running_daphne(tmp_path, port=port) as first:
        page = new_page(base_url=first.url)
        login(page, "alice")
        chat = start_chat(page, "Do it in steps")
        expect(page.locator(".msg--assistant:not(.msg--streaming)").first).to_contain_text(
            "Step one.", timeout=20_000
        )
        expect(page.locator("#stream-state")).to_have_text("Live")
    # daphne is gone; the worker goes on producing messages.
    expect(page.locator("#stream-state")).to_contain_text("Reconnecting")
    fake.wait_for_requests(3, timeout=20)
    with running_daphne(tmp_path, port=port):
        expect(page.locator("#stream-state")).to_have_text("Live", timeout=20_000)
        expect(page.locator(".msg--assistant").last).to_contain_text("All done.", timeout=30_000)
        wait_until(lambda: chat_status(chat) == Chat.Status.WAITING, timeout=15, what="the turn to end")

        stored = list(ChatMessage.objects.filter(chat=chat).order_by("id"))
        shown = [
            int(i)
            for i in page.locator("[data-message-id]").evaluate_all(
                "els => els.map(e => e.dataset.messageId)"
            )
        ]
        # Tool messages are shown under their tool calls; every other message is shown once, in order.
        assert shown == [m.id for m in stored if m.role != ChatMessage.Role.TOOL]
        texts = page.locator(".msg--assistant .msg-text").all_inner_texts()
        assert texts == ["Step one.", "Step two.", "Step three.", "All done."]
        results = page.locator(".tool .tool-result-text")
        expect(results).to_have_count(3)


def test_a_message_sent_while_the_stream_is_down_does_not_skip_what_came_before_it(
    page: Page, fake: FakeAnthropic, console_errors: ConsoleLog
) -> None:
    """chat.js used to move its reconnect cursor to the id of the message it had just POSTed, so a reply
    stored before that message, while the socket was down, was never shown."""
    fake.script([reply("First answer."), reply("Second answer.")])
    console_errors.allow(r"WebSocket connection to .*/stream")
    gate = {"open": True}
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        if gate["open"]:
            ws.connect_to_server()
            sockets.append(ws)
        else:
            ws.close(code=1011, reason="down for the test")

    page.route_web_socket(re.compile(r".*/stream\?after_id=\d+$"), route)
    UserFactory.create(username="alice")
    login(page, "alice")
    chat = start_chat(page, "Hello")
    expect(page.locator(".msg--assistant").first).to_contain_text("First answer.", timeout=20_000)
    wait_until(lambda: chat_status(chat) == Chat.Status.WAITING, timeout=15, what="the first turn to end")

    gate["open"] = False
    sockets[-1].close(code=1011, reason="dropped for the test")
    expect(page.locator("#stream-state")).to_contain_text("Reconnecting")
    # While the socket is down, a reply is stored (a worker finishing a turn, say)...
    services.message_append(
        chat=chat, role=ChatMessage.Role.ASSISTANT, content=[services.text_part("Missed?")]
    )
    # ...and the person sends a message, which the page shows from the POST's answer.
    composer = page.get_by_role("textbox", name="Message")
    composer.fill("Anyone there?")
    composer.press("Enter")
    expect(page.locator(".msg--user").last).to_contain_text("Anyone there?")
    gate["open"] = True
    expect(page.locator("#stream-state")).to_have_text("Live", timeout=20_000)
    expect(page.locator(".msg--assistant")).to_contain_text(
        ["First answer.", "Missed?", "Second answer."], timeout=20_000
    )
    stored = list(ChatMessage.objects.filter(chat=chat).order_by("id").values_list("id", flat=True))
    shown = [
        int(i)
        for i in page.locator("[data-message-id]").evaluate_all("els => els.map(e => e.dataset.messageId)")
    ]
    assert shown == stored  # every message, once, in id order


def test_chat_page_on_a_narrow_screen(
    new_page: Callable[..., Page], fake: FakeAnthropic, artifacts_dir: Path
) -> None:
    fake.script(
        [reply("Short answer.", tool_use("wait_agent", {"chat_id": str(uuid.uuid4())})), reply("Done.")]
    )
    UserFactory.create(username="alice")
    page = new_page(viewport=PHONE)
    login(page, "alice")
    start_chat(page, "Answer briefly")
    expect(page.locator(".msg--assistant").last).to_contain_text("Done.", timeout=20_000)
    # Nothing overflows sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, artifacts_dir, "chat-390x844")
