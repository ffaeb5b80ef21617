"""The live desktop panel in a real browser, on a real desktop: a `chatdesk-agent` (Xvnc, openbox,
xdotool) heartbeating to a real daphne, noVNC in Chromium through the desktop proxy."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.db import connections
from playwright.sync_api import Page, expect

from agents.models import WorkspaceAgent
from chats.models import Chat
from desktop.services import desktop_handback, desktop_takeover
from tests.factories import ChatFactory, UserFactory, WorkspaceAgentFactory, agent_token
from tests.pages.conftest import PHONE, login, result_json, screenshot, start_chat
from tests.support.agent_process import AgentProcess, running_agent
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, tool_use
from tests.support.processes import Daphne, wait_until

if TYPE_CHECKING:
    from django.contrib.auth.models import User

pytestmark = [
    pytest.mark.browser,
    pytest.mark.desktop,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which("Xvnc") or not shutil.which("xterm"), reason="needs Xvnc and xterm"),
]

# Hash and count the colours of a sample of the noVNC canvas's pixels.
CANVAS_STATS = """() => {
  const canvas = document.querySelector('#desktop-screen canvas');
  if (!canvas || !canvas.width) return null;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let hash = 0;
  const colours = new Set();
  for (let i = 0; i < data.length; i += 4 * 31) {
    hash = (Math.imul(hash, 31) + (data[i] << 16 | data[i + 1] << 8 | data[i + 2])) >>> 0;
    colours.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
  }
  return {hash, colours: colours.size, width: canvas.width, height: canvas.height};
}"""


@contextlib.contextmanager
def connected_agent(server: Daphne, row: WorkspaceAgent) -> Iterator[AgentProcess]:
    """Run a real agent with ``row``'s token, heartbeating to ``server``; return once it is connected."""
    with running_agent(token=agent_token(row), server_url=server.url, geometry="1280x800") as agent:
        wait_until(
            lambda: (
                WorkspaceAgent.objects.get(pk=row.pk).url == agent.ws_url
                and WorkspaceAgent.objects.get(pk=row.pk).is_connected
            ),
            timeout=20,
            what="the agent's heartbeat",
        )
        yield agent


@contextlib.contextmanager
def xterm(agent: AgentProcess) -> Iterator[subprocess.Popen[bytes]]:
    """An xterm on the agent's desktop (something to see and type into)."""
    proc = subprocess.Popen(["xterm", "-geometry", "80x20+40+40"], env=agent.x_env())
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cursor(agent: AgentProcess) -> tuple[int, int]:
    output = agent.call("action", {"action": "cursor_position"})["output"]
    match = re.fullmatch(r"X=(\d+),Y=(\d+)", output)
    assert match, output
    return int(match[1]), int(match[2])


def near(position: tuple[int, int], expected: tuple[int, int]) -> bool:
    """Whether two desktop positions match, give or take the rounding of a scaled-down canvas."""
    return abs(position[0] - expected[0]) <= 3 and abs(position[1] - expected[1]) <= 3


def click_desktop(page: Page, x: int, y: int) -> None:
    """Click the canvas where the remote desktop's pixel (x, y) is shown (1280x800, scaled to fit)."""
    box = page.locator("#desktop-screen canvas").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / 1280, box["y"] + (y + 0.5) * box["height"] / 800)


def canvas_stats(page: Page) -> dict[str, Any]:
    """Return the noVNC canvas's size, colour count and a hash of its pixels (zeros before it exists)."""
    stats = page.evaluate(CANVAS_STATS)
    return dict(stats) if stats else {"hash": 0, "colours": 0, "width": 0, "height": 0}


@pytest.fixture
def alice() -> User:
    return UserFactory.create(username="alice")


@pytest.fixture
def agent_row(alice: User) -> WorkspaceAgent:
    return WorkspaceAgentFactory.create(owner=alice, name="workstation")


def test_desktop_view_only_then_take_control_and_hand_back(
    page: Page, server: Daphne, agent_row: WorkspaceAgent, artifacts_dir: Path
) -> None:
    chat = ChatFactory.create(owner=agent_row.owner, title="Desktop chat", workspace_agent=agent_row)
    with connected_agent(server, agent_row) as agent, xterm(agent):
        agent.call("action", {"action": "mouse_move", "coordinate": [20, 700]})
        login(page, "alice")
        page.goto(f"/chats/{chat.pk}/")
        state = page.locator("#desktop-state")
        expect(state).to_have_text("Live · view only", timeout=20_000)
        expect(page.locator("#desktop-holder")).to_have_text("Nobody controls the desktop.")

        # The canvas shows the desktop (not one flat colour), and changes when the desktop does.
        wait_until(lambda: canvas_stats(page)["colours"] > 3, timeout=15, what="the desktop's pixels")
        stats = canvas_stats(page)
        assert (stats["width"], stats["height"]) == (1280, 800)
        agent.call("action", {"action": "type", "text": "echo chatdesk-was-here"})
        wait_until(
            lambda: canvas_stats(page)["hash"] != stats["hash"], timeout=15, what="the canvas to change"
        )
        screenshot(page, artifacts_dir, "chat-desktop-1280x800")

        # View-only: clicking the canvas does not move the remote cursor.
        click_desktop(page, 900, 500)
        # Proving that nothing happened needs a moment: give a (wrongly) forwarded click time to arrive.
        page.wait_for_timeout(700)
        assert cursor(agent) == (20, 700)

        page.get_by_role("button", name="Take control").click()
        expect(state).to_contain_text("You have control", timeout=15_000)
        expect(page.locator("#desktop-holder")).to_contain_text("You control the desktop")
        assert WorkspaceAgent.objects.get(pk=agent_row.pk).desktop_held_by_id == agent_row.owner_id
        expect(page.locator("#desktop-screen")).to_have_class(re.compile("is-controlled"))
        click_desktop(page, 640, 400)
        wait_until(lambda: near(cursor(agent), (640, 400)), timeout=10, what="the remote cursor to move")
        screenshot(page, artifacts_dir, "chat-desktop-control-1280x800")

        page.get_by_label("Note for the agent").fill("I moved the mouse")
        page.get_by_role("button", name="Hand back").click()
        expect(state).to_have_text("Live · view only", timeout=15_000)
        expect(page.get_by_role("button", name="Take control")).to_be_visible()
        assert WorkspaceAgent.objects.get(pk=agent_row.pk).desktop_held_by_id is None
        click_desktop(page, 100, 100)
        page.wait_for_timeout(700)
        assert near(cursor(agent), (640, 400))

        page.set_viewport_size(PHONE)
        # Stacked under the chat on a narrow screen.
        expect(page.locator("#desktop-panel")).to_be_visible()
        chat_box = page.locator(".chat-main").bounding_box()
        desktop_box = page.locator("#desktop-panel").bounding_box()
        assert chat_box and desktop_box and desktop_box["y"] >= chat_box["y"] + chat_box["height"] - 1
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.locator("#desktop-panel").scroll_into_view_if_needed()
        screenshot(page, artifacts_dir, "chat-desktop-390x844")


def off_the_page_loop(function: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``function`` in a thread of its own: Playwright's event loop runs in this one, and the
    services reach the agent through async_to_sync."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: _closing_connections(function, kwargs)).result(timeout=60)


def _closing_connections(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    try:
        return function(**kwargs)
    finally:
        connections.close_all()


def test_the_panel_follows_the_holder_live_without_reconnecting(
    page: Page, server: Daphne, agent_row: WorkspaceAgent
) -> None:
    """The holder changes elsewhere (another tab, the API): the page shows it from the chat's stream and
    the same desktop connection starts (then stops) carrying this person's input."""
    chat = ChatFactory.create(owner=agent_row.owner, title="Who holds it", workspace_agent=agent_row)
    with connected_agent(server, agent_row) as agent, xterm(agent):
        agent.call("action", {"action": "mouse_move", "coordinate": [20, 700]})
        login(page, "alice")
        page.goto(f"/chats/{chat.pk}/")
        holder = page.locator("#desktop-holder")
        expect(page.locator("#desktop-state")).to_have_text("Live · view only", timeout=20_000)
        expect(holder).to_have_text("Nobody controls the desktop.")
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))

        off_the_page_loop(desktop_takeover, chat=chat, user=agent_row.owner)  # as from another tab
        expect(holder).to_contain_text("You control the desktop", timeout=8_000)  # the stream, not the poll
        expect(page.get_by_role("button", name="Hand back")).to_be_visible()
        click_desktop(page, 640, 400)
        wait_until(lambda: near(cursor(agent), (640, 400)), timeout=10, what="the remote cursor to move")

        off_the_page_loop(desktop_handback, chat=chat, user=agent_row.owner, note="")
        expect(holder).to_have_text("Nobody controls the desktop.", timeout=15_000)
        expect(page.get_by_role("button", name="Take control")).to_be_visible()
        expect(page.locator("#desktop-state")).to_have_text("Live · view only")
        assert sockets == []  # the same desktop connection all along


def test_desktop_says_when_the_agent_is_down_and_reconnects_when_it_is_back(
    page: Page, server: Daphne, agent_row: WorkspaceAgent
) -> None:
    chat = ChatFactory.create(owner=agent_row.owner, title="Agent comes and goes", workspace_agent=agent_row)
    login(page, "alice")
    page.goto(f"/chats/{chat.pk}/")
    state = page.locator("#desktop-state")
    # Never heartbeated: 4409, said plainly, retried.
    expect(state).to_contain_text("not connected", timeout=15_000)
    expect(state).to_contain_text("Retrying")
    expect(page.get_by_role("button", name="Take control")).to_be_disabled()

    with connected_agent(server, agent_row) as agent:
        expect(state).to_have_text("Live · view only", timeout=30_000)
        agent.stop()
        expect(state).to_contain_text(re.compile("cannot be reached|not connected|lost"), timeout=20_000)
    with connected_agent(server, agent_row):
        expect(state).to_have_text("Live · view only", timeout=30_000)


def test_chat_without_an_agent_has_no_desktop_panel(page: Page, alice: User) -> None:
    chat = ChatFactory.create(owner=alice, title="No agent here")
    login(page, "alice")
    page.goto(f"/chats/{chat.pk}/")
    expect(page.locator("#desktop-panel")).to_have_count(0)
    expect(page.get_by_text("This chat has no workspace agent")).to_be_visible()


def test_hand_back_resumes_the_child_and_screenshots_open_full_size(
    page: Page, server: Daphne, fake: FakeAnthropic, agent_row: WorkspaceAgent, artifacts_dir: Path
) -> None:
    note = "I closed the dialog for you"

    def handler(request: RecordedRequest) -> Reply:
        tools = [tool.get("name") for tool in request.json.get("tools", [])]
        if "spawn_computer_use_agent" in tools:  # the root chat
            previous = result_json(request)
            if previous is None:
                return reply(
                    tool_use(
                        "spawn_computer_use_agent", {"prompt": "Check the screen", "title": "Screen check"}
                    )
                )
            if "report" in previous:
                return reply(f"Report: {previous['report']}")
            return reply(tool_use("wait_agent", {"chat_id": previous["chat_id"]}))
        last = request.last_message or {}
        content = last.get("content")
        text = (
            content
            if isinstance(content, str)
            else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
        )
        if note in text:
            return reply("Thanks, the screen is clear now.")
        if not request.tool_results():
            return reply(tool_use("screenshot", {}, toolset_name="computer"))
        return reply("Looking at the screen carefully. " * 12, chunk_size=4, chunk_delay=0.1)

    fake.handle_with(handler)
    with connected_agent(server, agent_row) as agent, xterm(agent):
        login(page, "alice")
        chat = start_chat(page, "Is the screen clear?")
        assert chat.workspace_agent_id == agent_row.pk
        expect(page.locator("#desktop-state")).to_have_text("Live · view only", timeout=20_000)
        card = page.locator(".child-card").filter(has_text="Screen check")
        expect(card.locator(".badge")).to_have_text("Running", timeout=30_000)
        wait_until(
            lambda: (
                len(fake.message_requests) >= 3
                and Chat.objects.get(parent=chat).status == Chat.Status.RUNNING
            ),
            timeout=30,
            what="the child to be writing",
        )

        page.get_by_role("button", name="Take control").click()
        expect(page.locator("#desktop-state")).to_contain_text("You have control", timeout=15_000)
        expect(card.locator(".badge")).to_have_text("Paused", timeout=15_000)

        page.get_by_label("Note for the agent").fill(note)
        page.get_by_role("button", name="Hand back").click()
        # The child resumes: it is told a person used the desktop (with the note) and finishes its task.
        expect(card.locator(".badge")).to_have_text("Completed", timeout=30_000)
        assert any(note in str(r.last_message) for r in fake.message_requests)

        card.get_by_role("link", name="Screen check").click()
        expect(page.get_by_role("heading", name="Screen check", level=1)).to_be_visible()
        expect(page.locator(".msg--user").last).to_contain_text(note)
        expect(page.locator(".msg--assistant").last).to_contain_text("Thanks, the screen is clear now.")
        tool = page.locator(".tool").filter(has_text="screenshot").first
        thumb = tool.locator(".thumb img")
        expect(thumb).to_be_visible()
        expect(thumb).to_have_attribute("alt", re.compile("Screenshot after screenshot"))
        wait_until(lambda: thumb.evaluate("img => img.naturalWidth") > 0, timeout=10, what="the thumbnail")
        thumb.click()
        viewer = page.locator("#image-viewer")
        expect(viewer).to_be_visible()
        assert page.locator("#image-viewer-img").evaluate("img => img.complete && img.naturalWidth") == 1280
        screenshot(page, artifacts_dir, "child-screenshot-viewer-1280x800")
        page.keyboard.press("Escape")
        expect(viewer).to_be_hidden()
