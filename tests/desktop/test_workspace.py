"""The workspace tools of root chats (desktop/workspace.py): who is offered them, how they are declared,
and the model's bad input or an agent that cannot be reached, answered with results the model reads."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django.fixtures import Settings

from agents.models import WorkspaceAgent
from chats import services
from chats.tools.base import ToolContext
from chats.tools.catalog import tools_for_chat
from chats.tools.workspace import WORKSPACE_PROMPT, workspace_prompt
from desktop.computer import COMPUTER_USE_SYSTEM_PROMPT
from desktop.tools import ComputerTool
from desktop.workspace import BashTool, TextEditorTool
from tests.factories import ChatFactory, WorkspaceAgentFactory
from tests.support.agent_process import free_port
from tests.support.fake_anthropic import FakeAnthropic, reply

pytestmark = pytest.mark.django_db

BASH = {"type": "bash_20250124", "name": "bash"}
EDITOR = {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool", "max_characters": 16000}


def connected_agent(owner: User, *, connected: bool = True) -> WorkspaceAgent:
    """An agent row that heartbeats (or stopped), at a loopback port where nothing listens."""
    return WorkspaceAgentFactory.create(
        owner=owner, url=f"ws://127.0.0.1:{free_port()}", last_seen=timezone.now() if connected else None
    )


def names(tools: list[Any]) -> list[str]:
    return [d["name"] if "name" in d else d["type"] for tool in tools for d in tool.definitions()]


def test_root_chats_with_a_connected_agent_are_offered_bash_and_the_editor(user: User) -> None:
    root = ChatFactory.create(owner=user, workspace_agent=connected_agent(user))
    tools = tools_for_chat(root, provider_configured=True)
    assert names(tools) == [
        "spawn_computer_use_agent",
        "wait_agent",
        "message_agent",
        "close_agent",
        "bash",
        "str_replace_based_edit_tool",
    ]
    assert [d for tool in tools[-2:] for d in tool.definitions()] == [BASH, EDITOR]
    assert workspace_prompt(tools) == WORKSPACE_PROMPT
    # Without a provider key, the workspace tools are still the chat's own.
    assert names(tools_for_chat(root, provider_configured=False)) == ["bash", "str_replace_based_edit_tool"]


def test_without_a_connected_agent_there_are_no_workspace_tools(user: User) -> None:
    for agent in (None, connected_agent(user, connected=False)):
        root = ChatFactory.create(owner=user, workspace_agent=agent)
        tools = tools_for_chat(root, provider_configured=True)
        assert "bash" not in names(tools) and workspace_prompt(tools) == ""


def test_a_computer_use_child_gets_the_computer_not_the_workspace_tools(user: User) -> None:
    root = ChatFactory.create(owner=user, workspace_agent=connected_agent(user))
    child = services.chat_spawn_child(parent=root, prompt="Open the browser")
    tools = tools_for_chat(child, provider_configured=True)
    assert isinstance(tools[0], ComputerTool) and [t.name for t in tools[1:]] == ["request_human_help"]
    assert workspace_prompt(tools) == ""


def test_the_computer_use_prompt_says_what_is_on_the_desktop() -> None:
    for words in ("panel along the bottom edge", "terminal", "Chromium web browser", "file manager"):
        assert words in COMPUTER_USE_SYSTEM_PROMPT


def test_the_settings_shape_the_declarations(user: User, settings: Settings) -> None:
    settings.CHATDESK_EDITOR_MAX_CHARACTERS = 5000
    root = ChatFactory.create(owner=user, workspace_agent=connected_agent(user))
    assert TextEditorTool(root).definitions() == [{**EDITOR, "max_characters": 5000}]


def test_the_declarations_reach_the_api_unchanged_through_the_sdk(user: User) -> None:
    root = ChatFactory.create(owner=user, workspace_agent=connected_agent(user))
    tools: Any = [*BashTool(root).definitions(), *TextEditorTool(root).definitions()]
    with FakeAnthropic() as fake:
        fake.add_response(reply("ok"))
        client = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
        client.messages.create(
            model="claude-sonnet-5-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}], tools=tools
        )
        (request,) = fake.message_requests
    assert request.json["tools"] == [BASH, EDITOR]
    assert "anthropic-beta" not in request.headers  # both are GA tool types


def run_bash(chat: Any, tool_input: Any) -> tuple[str, bool]:
    result = BashTool(chat).run(ToolContext(chat=chat, tool_use_id="toolu_1", name="bash"), tool_input)
    return result.content[0]["text"], result.is_error


def test_bad_input_and_an_unreachable_agent_are_results_the_model_reads(user: User) -> None:
    root = ChatFactory.create(owner=user, workspace_agent=connected_agent(user))
    assert run_bash(root, {}) == ("no command provided.", True)
    assert run_bash(root, {"command": "  "}) == ("no command provided.", True)
    assert run_bash(root, {"command": 5}) == ("no command provided.", True)
    assert run_bash(root, {"restart": "yes"}) == ("`restart` must be true or false.", True)
    assert run_bash(root, "ls") == ("no command provided.", True)
    text, is_error = run_bash(root, {"command": "x" * 100_001})
    assert is_error and "at most 100,000" in text
    text, is_error = run_bash(root, {"command": "ls"})  # nothing listens at the agent's URL
    assert is_error and text == "The command could not run: the workspace agent could not be reached."
    editor = TextEditorTool(root).run(
        ToolContext(chat=root, tool_use_id="t"), {"command": "view", "path": "/"}
    )
    assert editor.is_error and "could not be reached" in editor.content[0]["text"]
    huge = TextEditorTool(root).run(
        ToolContext(chat=root, tool_use_id="t"),
        {"command": "create", "path": "/tmp/x", "file_text": "x" * 10**6},
    )
    assert huge.is_error and "too large for one call" in huge.content[0]["text"]

    WorkspaceAgent.objects.filter(chats=root).update(last_seen=None)
    assert run_bash(root, {"command": "ls"}) == (
        "The workspace agent is not connected, so the command could not run.",
        True,
    )


def test_a_command_or_edit_left_open_by_a_stopped_turn_is_not_run_again(user: User) -> None:
    """A tool_use a turn left unanswered may have run already (its worker died mid-command): running it
    on resume could run it twice, so the model is told to check instead."""
    root = ChatFactory.create(owner=user, workspace_agent=connected_agent(user))
    ctx = ToolContext(chat=root, tool_use_id="toolu_1", name="bash")
    bash = BashTool(root).resume(ctx, {"command": "rm -rf build"}, None)
    edit = TextEditorTool(root).resume(ctx, {"command": "insert", "path": "/x", "insert_line": 0}, None)
    for result, what in ((bash, "command"), (edit, "editor command")):
        assert result.is_error and result.content[0]["text"].startswith(f"This {what} was not run to its end")
