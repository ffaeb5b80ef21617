"""End to end: a real Celery worker, PostgreSQL, Redis, the fake Anthropic API and a real desktop.

The user asks the root chat for GUI work; the (scripted) model delegates it to a computer-use child
that screenshots the desktop, clicks into an xterm, types a command and presses Return; the file the
command writes appears; the child reports, the parent's wait_agent returns the report and the parent
answers. All on one worker with concurrency 1: no worker is held while the parent waits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from agents.models import WorkspaceAgent
from chats import services
from chats.models import Chat, ChatFile, ChatMessage, ChatProvider
from tests.chats.conftest import wait_status, worker_env
from tests.factories import WorkspaceAgentFactory, agent_token
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text, tool_use
from tests.support.processes import running_worker, wait_until

if TYPE_CHECKING:
    from tests.support.agent_process import AgentProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.desktop,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("Xvnc", "openbox", "xdotool", "xterm")),
        reason="needs Xvnc, openbox, xdotool and xterm",
    ),
]

PARENT_MODEL = "claude-sonnet-5-5"
CHILD_MODEL = "claude-opus-5-5"
XTERM_CLICK = [300, 250]  # inside the xterm started at +100+100


@pytest.fixture
def desktop_agent(user: User) -> Iterator[tuple[WorkspaceAgent, AgentProcess]]:
    from tests.support.agent_process import running_agent

    row = WorkspaceAgentFactory.create(owner=user, name="desk")
    with running_agent(token=agent_token(row), geometry="1280x800") as agent:
        # No daphne here, so no heartbeats: record what a heartbeat would (the worker runs with a long
        # CHATDESK_AGENT_TIMEOUT_SECONDS so the agent stays "connected").
        WorkspaceAgent.objects.filter(pk=row.pk).update(
            url=agent.ws_url, display_width=1280, display_height=800, last_seen=timezone.now()
        )
        row.refresh_from_db()
        yield row, agent


def start_xterm(agent: AgentProcess) -> subprocess.Popen[bytes]:
    env = agent.x_env()
    proc = subprocess.Popen(
        ["xterm", "-geometry", "80x24+100+100", "-e", "bash", "--norc", "--noprofile"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def mapped() -> bool:
        out = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--class", "xterm"],
            env=env,
            capture_output=True,
            text=True,
        )
        return bool(out.stdout.strip())

    wait_until(mapped, timeout=20, what="the xterm window")
    return proc


def tool_result_json(request: RecordedRequest) -> dict[str, Any]:
    result = request.tool_results()[0]
    content = result["content"]
    body = content if isinstance(content, str) else content[0]["text"]
    return json.loads(body)


def assistant_turns(request: RecordedRequest) -> int:
    return sum(1 for m in request.json["messages"] if m["role"] == "assistant")


class Script:
    """The model: the parent delegates, the child drives the desktop, each reacting to what it was sent."""

    def __init__(self, done_file: Path) -> None:
        self.done_file = done_file
        self.command = f"echo done > {done_file}"

    def __call__(self, request: RecordedRequest) -> Reply:
        if request.json["model"] == CHILD_MODEL:
            return self.child(request)
        return self.parent(request)

    def parent(self, request: RecordedRequest) -> Reply:
        step = assistant_turns(request)
        if step == 0:
            return reply(
                text("I will ask a computer-use agent to do that."),
                tool_use("spawn_computer_use_agent", {"prompt": f"In the terminal, run: {self.command}"}),
            )
        if step == 1:
            spawned = tool_result_json(request)
            return reply(tool_use("wait_agent", {"chat_id": spawned["chat_id"], "timeout_seconds": 120}))
        waited = tool_result_json(request)
        return reply(text(f"Done. The sub-agent reported: {waited['report']} (status {waited['status']})"))

    def child(self, request: RecordedRequest) -> Reply:
        step = assistant_turns(request)
        actions: list[tuple[str, dict[str, Any]]] = [
            ("screenshot", {}),
            ("left_click", {"coordinate": XTERM_CLICK}),
            ("type", {"text": self.command}),
            ("key", {"text": "Return"}),
        ]
        if step < len(actions):
            name, tool_input = actions[step]
            return reply(tool_use(name, tool_input, toolset_name="computer"))
        wait_until(self.done_file.exists, timeout=10, what="the command's file")
        return reply(text(f"I ran the command; {self.done_file.name} now exists."))


def test_parent_delegates_gui_work_to_a_child_on_one_worker(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],
) -> None:
    agent_row, agent = desktop_agent
    xterm = start_xterm(agent)
    done_file = tmp_path / "done.txt"
    fake.handle_with(Script(done_file))
    try:
        with running_worker(tmp_path, concurrency=1, env=worker_env(CHATDESK_AGENT_TIMEOUT_SECONDS="3600")):
            # A heartbeat, as the agent would send one: starting the worker may have taken longer than this
            # process's CHATDESK_AGENT_TIMEOUT_SECONDS, and chat_create picks a *connected* agent.
            WorkspaceAgent.objects.filter(pk=agent_row.pk).update(last_seen=timezone.now())
            chat = services.chat_create(owner=user, message="Please write done to a file using the desktop.")
            assert chat.workspace_agent_id == agent_row.pk
            wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=120)
    finally:
        xterm.terminate()
        xterm.wait(timeout=10)

    assert chat.status == Chat.Status.WAITING, chat.last_error
    assert done_file.read_text().strip() == "done"
    child = Chat.objects.get(parent=chat)
    assert child.mode == Chat.Mode.COMPUTER_USE
    assert child.status == Chat.Status.COMPLETED
    assert child.root_id == chat.pk and child.model == CHILD_MODEL
    assert child.title == "In the terminal, run: echo done..."
    assert "Your task:" in child.system_prompt and "echo done" in child.system_prompt
    # Every action came back with a screenshot stored as a file, referenced (not inlined) by the result.
    results = [p for m in child.messages.filter(role=ChatMessage.Role.TOOL) for p in m.content]
    assert len(results) == 4 and not any(r["is_error"] for r in results)
    file_ids = [c["file_id"] for r in results for c in r["content"] if c["type"] == "image"]
    assert len(file_ids) == 4 and ChatFile.objects.filter(pk__in=file_ids, chat=child).count() == 4
    # The parent's final answer carries the child's report, which wait_agent returned.
    final = chat.messages.filter(role=ChatMessage.Role.ASSISTANT).last()
    assert final is not None and "done.txt now exists" in final.text and "completed" in final.text
    # The child was offered the computer toolset and request_human_help; the parent the sub-agent tools and, its agent being
    # connected, the workspace tools.
    child_requests = [r for r in fake.message_requests if r.json["model"] == CHILD_MODEL]
    assert all(r.json["tools"][0]["type"] == "computer_toolset_20260801" for r in child_requests)
    assert all([t.get("name") for t in r.json["tools"][1:]] == ["request_human_help"] for r in child_requests)
    parent_requests = [r for r in fake.message_requests if r.json["model"] == PARENT_MODEL]
    assert {t["name"] for t in parent_requests[0].json["tools"]} == {
        "spawn_computer_use_agent",
        "wait_agent",
        "message_agent",
        "close_agent",
        "bash",
        "str_replace_based_edit_tool",
    }

    # Usage was recorded per message (what the API answered) and summed on each chat and on the tree.
    def summed(requests: list[RecordedRequest]) -> dict[str, int]:
        keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        return {key: sum((r.usage or {})[key] for r in requests) for key in keys}

    assert chat.usage == summed(parent_requests) and child.usage == summed(child_requests)
    chat.refresh_from_db()
    assert chat.tree_usage == summed(parent_requests + child_requests)
    assert chat.tree_cost_usd == chat.cost_usd + child.cost_usd > 0


def test_takeover_pauses_the_child_and_handback_resumes_it_with_the_note(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],
) -> None:
    from desktop.services import desktop_handback, desktop_takeover

    agent_row, _agent = desktop_agent
    parent = Chat.objects.create(owner=user, workspace_agent=agent_row, model=PARENT_MODEL)
    taken = {"done": False}

    def child_script(request: RecordedRequest) -> Reply:
        step = assistant_turns(request)
        if step == 0:
            return reply(tool_use("screenshot", {}, toolset_name="computer"))
        if step == 1:
            if not taken["done"]:
                # A person takes the desktop while the model is thinking about its next action.
                desktop_takeover(chat=child, user=user)
                connection.close()  # this runs on the fake server's thread
                taken["done"] = True
            return reply(tool_use("left_click", {"coordinate": [10, 10]}, toolset_name="computer"))
        told = [
            b["text"]
            for m in request.json["messages"]
            if m["role"] == "user"
            for b in m["content"]
            if b.get("type") == "text" and "handed it back" in b["text"]
        ]
        return reply(text(f"Resumed; I was told: {' '.join(told)}"))

    fake.handle_with(child_script)
    with running_worker(tmp_path, concurrency=1, env=worker_env(CHATDESK_AGENT_TIMEOUT_SECONDS="3600")):
        child = services.chat_spawn_child(parent=parent, prompt="Click the corner.")
        wait_status(child, Chat.Status.PAUSED, Chat.Status.ERROR, timeout=60)
        assert child.status == Chat.Status.PAUSED, child.last_error
        # Paused before the click ran: its tool_use is still unanswered.
        assert child.messages.filter(role=ChatMessage.Role.TOOL).count() == 1
        desktop_handback(chat=child, user=user, note="I closed a dialog for you.")
        wait_status(child, Chat.Status.COMPLETED, Chat.Status.ERROR, timeout=60)
    assert child.status == Chat.Status.COMPLETED, child.last_error
    final = child.messages.filter(role=ChatMessage.Role.ASSISTANT).last()
    assert final is not None and "I closed a dialog for you." in final.text
    # After hand-back the click ran (two tool results now).
    assert child.messages.filter(role=ChatMessage.Role.TOOL).count() == 2
