"""The computer tool (desktop/tools.py), which the desktop app registers with chats (in-process)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from chats import services
from chats.models import Chat, ChatModelConfig
from chats.tools.base import ToolContext
from chats.tools.catalog import tools_for_chat
from chats.tools.computer_use import computer_use
from desktop.computer import computer_use_system_prompt
from desktop.services import desktop_handback, desktop_takeover
from desktop.tools import ComputerTool
from tests.factories import ChatFactory, WorkspaceAgentFactory

pytestmark = pytest.mark.django_db


def test_the_desktop_app_registers_computer_use_with_chats(user: User) -> None:
    assert computer_use().system_prompt("Do it") == computer_use_system_prompt("Do it")
    root = ChatFactory.create(owner=user, workspace_agent=WorkspaceAgentFactory.create(owner=user))
    child = services.chat_spawn_child(parent=root, prompt="Do it")
    assert child.system_prompt == computer_use_system_prompt("Do it")
    tool, help_tool = tools_for_chat(child, provider_configured=True)
    assert isinstance(tool, ComputerTool) and tool.chat == child
    assert help_tool.name == "request_human_help"


def test_computer_tool_declares_the_agents_display_and_rejects_bad_input(user: User) -> None:
    agent = WorkspaceAgentFactory.create(owner=user, display_width=1920, display_height=1080)
    root = ChatFactory.create(owner=user, workspace_agent=agent)
    child = services.chat_spawn_child(parent=root, prompt="x")
    tool = ComputerTool(child)
    assert tool.display == (1429, 804) and tool.version == "computer_toolset_20260801" and tool.betas() == []
    bad = tool.run(ToolContext(chat=child, tool_use_id="t", name="left_click"), {"coordinate": [5000, 1]})
    assert bad.is_error and bad.content[0]["text"].startswith("invalid computer use input:")
    # The model config may pin an older tool version.
    ChatModelConfig.objects.update_or_create(
        model=child.model, defaults={"options": {"computer_tool_version": "computer_20250124"}}
    )
    child.refresh_from_db()
    pinned = ComputerTool(child)
    assert pinned.version == "computer_20250124" and pinned.betas() == ["computer-use-2025-01-24"]
    assert pinned.definitions()[0]["display_width_px"] == 1429
    # No agent reachable: an error result, the chat goes on.
    unreachable = tool.run(ToolContext(chat=child, tool_use_id="t", name="screenshot"), {})
    assert unreachable.is_error and "not connected" in unreachable.content[0]["text"]


def test_computer_tool_pauses_for_taken_over_while_a_person_holds_the_desktop(user: User) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    root = ChatFactory.create(owner=user, workspace_agent=agent)
    child = services.chat_spawn_child(parent=root, prompt="x")
    tool = ComputerTool(child)
    assert tool.pause_reason() is None

    desktop_takeover(chat=root, user=user)
    assert tool.pause_reason() == Chat.PausedReason.TAKEN_OVER
    held = tool.run(ToolContext(chat=child, tool_use_id="t", name="screenshot"), {})
    assert held.pause == Chat.PausedReason.TAKEN_OVER and held.content == [] and not held.is_error

    desktop_handback(chat=root, user=user)
    assert tool.pause_reason() is None
