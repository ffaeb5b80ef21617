"""The recording player on a computer-use chat's page, in Chromium: a real agent records the desktop while
the computer tool acts, the worker brings the video home, and the page plays it, with a marker per action;
an action's button in the chat seeks the video to it, and a screenshot opens with its click point drawn."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Page, expect

from agents.models import WorkspaceAgent
from chats.engine.journal import journal_finish, journal_start
from chats.models import Chat, ChatMessage, Recording
from chats.services import message_append
from chats.tools.base import ToolContext
from desktop.tools import ComputerTool
from tests.factories import UserFactory, WorkspaceAgentFactory, agent_token
from tests.pages.conftest import login, screenshot
from tests.support.processes import Process, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.desktop,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not all(shutil.which(b) for b in ("Xvnc", "ffmpeg")), reason="needs Xvnc and ffmpeg"),
]

CLICKS = [[200, 150], [900, 600], [640, 400]]


@pytest.fixture
def recorded_child(worker: Process) -> Iterator[Chat]:
    """A computer-use child whose three clicks ran on a real desktop, recorded and stored."""
    from tests.support.agent_process import running_agent

    alice = UserFactory.create(username="alice")
    row = WorkspaceAgentFactory.create(owner=alice, name="desk")
    with running_agent(token=agent_token(row)) as agent:
        WorkspaceAgent.objects.filter(pk=row.pk).update(
            url=agent.ws_url, display_width=1280, display_height=800, last_seen=timezone.now()
        )
        parent = Chat.objects.create(owner=alice, workspace_agent=row, title="Root")
        child = Chat.objects.create(
            owner=alice, parent=parent, workspace_agent=row, mode=Chat.Mode.COMPUTER_USE,
            model="claude-opus-5-5", title="Clicking around", status=Chat.Status.COMPLETED,
        )  # fmt: skip
        # Playwright's event loop runs in this thread, and the tool calls the agent through async_to_sync.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(act, child).result(timeout=120)
        wait_until(
            lambda: Recording.objects.filter(chat=child, state=Recording.State.STORED).exists(),
            timeout=60,
            what="the recording to be stored",
        )
        yield child


def act(child: Chat) -> None:
    """Run the three clicks through the computer tool and record them, as a turn does, and end the turn."""
    try:
        tool = ComputerTool(child)
        for index, point in enumerate(CLICKS):
            tool_use_id = f"toolu_{index}"
            block = {
                "type": "tool_use", "id": tool_use_id, "name": "left_click", "toolset_name": "computer",
                "input": {"coordinate": point},
            }  # fmt: skip
            message_append(chat=child, role=ChatMessage.Role.ASSISTANT, content=[block])
            assert journal_start(chat_id=child.pk, tool_use_id=tool_use_id, name="computer", worker_id="t")
            result = tool.run(
                ToolContext(chat=child, tool_use_id=tool_use_id, name="left_click"), {"coordinate": point}
            )
            assert not result.is_error, result.content
            # Stored as a turn stores it: the result, its screenshot and its audit entry together.
            assert journal_finish(chat_id=child.pk, tool_use_id=tool_use_id, result=result)
        tool.turn_ended()
    finally:
        connection.close()


def test_the_player_plays_the_recording_and_an_action_seeks_to_its_moment(
    page: Page, recorded_child: Chat, artifacts_dir: Path
) -> None:
    login(page, "alice")
    page.goto(f"/chats/{recorded_child.pk}/")
    video = page.locator("#recording-video")
    expect(video).to_be_visible()
    page.wait_for_function("document.getElementById('recording-video').readyState >= 2", timeout=20_000)
    expect(page.locator(".recording-marker[data-tool-use-id]")).to_have_count(
        len(CLICKS)
    )  # and control changes

    # It plays.
    page.evaluate(
        "() => { const v = document.getElementById('recording-video'); v.muted = true; return v.play(); }"
    )
    page.wait_for_function("document.getElementById('recording-video').currentTime > 0.2", timeout=10_000)
    page.evaluate("() => document.getElementById('recording-video').pause()")

    # Clicking an action in the chat seeks to its offset on the timeline.
    timeline = page.evaluate(
        f"() => fetch('/api/experimental/chats/{recorded_child.pk}/timeline').then(r => r.json())"
    )
    second = next(e for e in timeline if e["tool_use_id"] == "toolu_1")
    page.locator('.tool[data-tool-use-id="toolu_1"] .tool-seek').click()
    page.wait_for_function(
        f"Math.abs(document.getElementById('recording-video').currentTime - {second['t']}) < 0.05",
        timeout=10_000,
    )
    expect(page.locator('.tool[data-tool-use-id="toolu_1"]')).to_have_class("tool is-playing")
    screenshot(page, artifacts_dir, "recording-player")

    # A step's screenshot opens with its click point drawn where the action clicked.
    page.locator('.tool[data-tool-use-id="toolu_1"] .thumb').click()
    point = page.locator("#image-viewer-point")
    expect(point).to_be_visible()
    image = page.locator("#image-viewer-img").bounding_box()
    dot = point.bounding_box()
    assert image is not None and dot is not None
    x = dot["x"] + dot["width"] / 2 - image["x"]
    y = dot["y"] + dot["height"] / 2 - image["y"]
    assert (
        abs(x / image["width"] * 1280 - CLICKS[1][0]) < 12
        and abs(y / image["height"] * 800 - CLICKS[1][1]) < 12
    )
    screenshot(page, artifacts_dir, "screenshot-click-point")


def test_the_root_chats_card_links_to_the_child_with_the_player(page: Page, recorded_child: Chat) -> None:
    login(page, "alice")
    page.goto(f"/chats/{recorded_child.parent_id}/")
    page.locator(".child-card-link", has_text="Clicking around").click()
    page.wait_for_url(f"**/chats/{recorded_child.pk}/")
    expect(page.locator("#recordings-panel")).to_be_visible()
