"""A person is needed (SPEC §8): the help banner and the approval cards on the chat page, on the asking
chat's page and on its root's, live. Real daphne and Chromium; the chats are set up in the database
(paused through chats.transitions, as the engine pauses them), the live events are the real ones."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from PIL import Image
from playwright.sync_api import Locator, Page, expect

from chats.approvals import approval_create, approval_decide, approval_mark_target
from chats.audit import audit_record
from chats.models import Approval, AuditEvent, Chat, ChatFile
from chats.transitions import chat_transition
from tests.factories import ChatFactory, UserFactory
from tests.pages.conftest import ConsoleLog, login, screenshot
from tests.support.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

S = Chat.Status
R = Chat.PausedReason
# Model text: the page must show it as text, never as HTML.
REASON = 'Solve the CAPTCHA on the login page <img src=x onerror="window.pwned=1">'


def pause(chat: Chat, reason: str, **fields: Any) -> None:
    """Walk ``chat`` to `paused` the way a turn does: queued, claimed, paused for ``reason``."""
    assert chat_transition(chat_id=chat.pk, to=S.PENDING, expect=[S.WAITING])
    assert chat_transition(chat_id=chat.pk, to=S.RUNNING, expect=[S.PENDING], worker_id="w1")
    assert chat_transition(chat_id=chat.pk, to=S.PAUSED, expect=[S.RUNNING], reason=reason, **fields)


def ask_for_help(chat: Chat, reason: str) -> None:
    """What request_human_help does: pause with needs_help, the reason kept, the event to chat and root."""
    pause(chat, R.NEEDS_HELP, help_reason=reason)
    audit_record(
        chat=chat,
        kind=AuditEvent.Kind.HELP_REQUESTED,
        actor=AuditEvent.Actor.MODEL,
        data={"reason": reason},
        also_to=[chat.root_id],
    )


def tree(owner: User, *titles: str) -> tuple[Chat, list[Chat]]:
    root = ChatFactory.create(owner=owner, title="Book a flight")
    children = [
        ChatFactory.create(owner=owner, parent=root, title=title, mode=Chat.Mode.COMPUTER_USE)
        for title in titles
    ]
    return root, children


def banner(page: Page, chat: Chat) -> Locator:
    return page.locator(f'.help-banner[data-chat-id="{chat.pk}"]')


def test_a_child_asking_for_help_shows_a_banner_on_its_page_and_its_roots(
    page: Page, console_errors: ConsoleLog, artifacts_dir: Path
) -> None:
    alice = UserFactory.create(username="alice")
    root, (asking, later) = tree(alice, "Airline site", "Hotel site")
    ask_for_help(asking, REASON)
    login(page, "alice")

    page.goto(f"/chats/{asking.pk}/")
    expect(page.locator("#stream-state")).to_have_text("Live")
    own = banner(page, asking)
    expect(own).to_contain_text("The agent needs your help.")
    expect(own.locator(".help-reason")).to_have_text(REASON)  # as text: the tag shows, nothing runs
    assert page.evaluate("window.pwned") is None
    expect(own.get_by_role("button", name="Take control")).to_be_visible()

    page.goto(f"/chats/{root.pk}/")
    expect(page.locator("#stream-state")).to_have_text("Live")
    on_root = banner(page, asking)
    expect(on_root.locator(".help-reason")).to_have_text(REASON)
    expect(on_root.locator("a.help-chat")).to_have_text("Airline site")
    expect(on_root.locator("a.help-chat")).to_have_attribute("href", f"/chats/{asking.pk}/")

    # Live: another child asks while the page is open; then the first runs again and its banner goes.
    ask_for_help(later, "Enter the 2FA code sent to your phone")
    expect(banner(page, later).locator(".help-reason")).to_have_text("Enter the 2FA code sent to your phone")
    screenshot(page, artifacts_dir, "help-banners-on-root")
    assert chat_transition(chat_id=asking.pk, to=S.PENDING, expect=[S.PAUSED])
    expect(banner(page, asking)).to_have_count(0)
    expect(banner(page, later)).to_have_count(1)

    # Take control goes to the asking chat's desktop (this tree has no workspace agent: the server says so).
    console_errors.allow(r"status of 409")
    with page.expect_request(
        lambda r: (
            r.method == "POST" and r.url.endswith(f"/api/experimental/chats/{later.pk}/desktop/takeover")
        )
    ):
        banner(page, later).get_by_role("button", name="Take control").click()
    expect(banner(page, later).locator(".help-state")).to_contain_text("Could not take control: ")
    expect(banner(page, later).get_by_role("button", name="Take control")).to_be_enabled()


def marked_screenshot(chat: Chat, point: tuple[int, int]) -> ChatFile:
    out = io.BytesIO()
    Image.new("RGB", (640, 400), (230, 230, 230)).save(out, format="PNG")
    data = approval_mark_target(out.getvalue(), point)
    return ChatFile.objects.create(
        chat=chat, file=ContentFile(data, name="shot.png"), size=len(data), width=640, height=400
    )


def waiting(chat: Chat, tool_use_id: str, action: str, tool_input: dict[str, object]) -> Approval:
    """What a gated action does: a marked screenshot, the approval, the chat paused for it."""
    shot = marked_screenshot(chat, (320, 200))
    approval = approval_create(
        chat=chat, tool_use_id=tool_use_id, action=action, tool_input=tool_input, screenshot=shot
    )
    pause(chat, R.AWAITING_APPROVAL)
    return approval


def test_approval_cards_are_live_and_approve_through_the_page(
    new_page: Callable[..., Page], artifacts_dir: Path
) -> None:
    alice = UserFactory.create(username="alice")
    root, (typing_child, clicking_child) = tree(alice, "Form filler", "Clicker")
    typed = waiting(typing_child, "toolu_type", "type", {"action": "type", "text": "<b>hunter2</b>"})
    page = new_page()
    login(page, "alice")
    page.goto(f"/chats/{root.pk}/")
    expect(page.locator("#stream-state")).to_have_text("Live")

    card = page.locator(f'.approval-card[data-approval-id="{typed.pk}"]')
    expect(card.locator(".approval-action")).to_have_text("type")
    expect(card.locator(".approval-input")).to_contain_text('"text": "<b>hunter2</b>"')  # as text
    assert card.locator("b").count() == 0
    image = card.locator(".thumb img")
    expect(image).to_have_attribute(
        "src", re.compile(rf"/chats/{typing_child.pk}/files/{typed.screenshot_id}$")
    )
    wait_until(
        lambda: image.evaluate("img => img.complete && img.naturalWidth") == 640,
        timeout=10,
        what="the screenshot",
    )
    expect(card.get_by_role("link", name="in an agent's chat")).to_have_attribute(
        "href", f"/chats/{typing_child.pk}/"
    )

    # A second action asks while the page is open: its card appears live.
    clicked = waiting(
        clicking_child, "toolu_click", "left_click", {"action": "left_click", "coordinate": [320, 200]}
    )
    second = page.locator(f'.approval-card[data-approval-id="{clicked.pk}"]')
    expect(second.locator(".approval-action")).to_have_text("left_click")
    screenshot(page, artifacts_dir, "approval-cards-on-root")

    # Approve the first from the page, with a note.
    card.get_by_label("Note for the agent (optional)").fill("Only in the password field")
    with page.expect_response(
        lambda r: r.url.endswith(f"/approvals/{typed.pk}") and r.request.method == "POST"
    ) as answer:
        card.get_by_role("button", name="Approve").click()
    assert answer.value.status == 200
    expect(card.locator(".approval-state")).to_have_text("Approved by alice · “Only in the password field”.")
    expect(card.get_by_role("button", name="Approve")).to_have_count(0)
    typed.refresh_from_db()
    assert (typed.state, typed.note, typed.decided_by) == ("approved", "Only in the password field", alice)
    assert Chat.objects.get(pk=typing_child.pk).status != S.PAUSED  # its turn was queued

    # The child's own page shows its pending approval; a decision made elsewhere updates it live.
    child_page = new_page()
    login(child_page, "alice")
    child_page.goto(f"/chats/{clicking_child.pk}/")
    expect(child_page.locator("#stream-state")).to_have_text("Live")
    on_child = child_page.locator(f'.approval-card[data-approval-id="{clicked.pk}"]')
    expect(on_child.locator(".approval-action")).to_have_text("left_click")
    expect(child_page.locator(".approval-card")).to_have_count(
        1
    )  # the decided one of its sibling is not here
    approval_decide(approval_id=clicked.pk, user=alice, decision="deny", note="wrong button")
    for shown in (on_child, second):
        expect(shown.locator(".approval-state")).to_have_text("Denied by alice · “wrong button”.")
    second.get_by_role("button", name="Dismiss").click()
    expect(second).to_have_count(0)
