"""Which tools a chat's model is offered, and which tool answers a tool_use.

- Root chats (when an Anthropic key is configured, and an app provides computer use):
  spawn_computer_use_agent, wait_agent, message_agent, close_agent — they delegate GUI work to
  computer-use child chats.
- Root chats with a connected workspace agent, also: the workspace tools ``bash`` and
  ``str_replace_based_edit_tool`` (chats/tools/workspace.py: registered by the desktop app).
- Computer-use chats: the tools registered for computer use (chats/tools/computer_use.py: the desktop
  app's computer tool) and request_human_help; they never get the sub-agent tools nor the workspace tools.
"""

from __future__ import annotations

from typing import Any

from chats.models import Chat
from chats.tools.base import Tool
from chats.tools.close import CloseAgentTool
from chats.tools.computer_use import computer_use, computer_use_registered
from chats.tools.help import RequestHumanHelpTool
from chats.tools.message import MessageAgentTool
from chats.tools.spawn import SpawnComputerUseAgentTool
from chats.tools.wait import WaitAgentTool
from chats.tools.workspace import workspace_tools

__all__ = ["SUBAGENT_TOOLS", "find_tool", "tools_for_chat"]

SUBAGENT_TOOLS: tuple[type[Tool], ...] = (
    SpawnComputerUseAgentTool,
    WaitAgentTool,
    MessageAgentTool,
    CloseAgentTool,
)


def tools_for_chat(chat: Chat, *, provider_configured: bool) -> list[Tool]:
    """Return the tools offered to ``chat``'s model."""
    if chat.is_computer_use:
        if not computer_use_registered():
            return []
        return [*computer_use().tools(chat), RequestHumanHelpTool()]
    if not chat.is_root:
        return []
    tools: list[Tool] = []
    if provider_configured and computer_use_registered():
        tools += [tool() for tool in SUBAGENT_TOOLS]
    return tools + workspace_tools(chat)


def find_tool(tools: list[Tool], block: dict[str, Any]) -> Tool | None:
    """Return the tool that answers the tool_use ``block``, or None for a tool we did not offer."""
    return next((tool for tool in tools if tool.handles(block)), None)
