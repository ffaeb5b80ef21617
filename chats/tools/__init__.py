"""The tools a chat's model may call, as a family with one small base class (chats/tools/base.py).

- Root chats (when an Anthropic key is configured): spawn_computer_use_agent, wait_agent, message_agent,
  close_agent — delegate GUI work to computer-use child chats.
- Computer-use chats: the Anthropic computer tool only; they never get the sub-agent tools.
"""

from __future__ import annotations

from typing import Any

from chats.models import Chat
from chats.tools.base import Tool, ToolContext, ToolResult
from chats.tools.close import CloseAgentTool
from chats.tools.message import MessageAgentTool
from chats.tools.spawn import SpawnComputerUseAgentTool
from chats.tools.wait import WaitAgentTool

__all__ = ["Tool", "ToolContext", "ToolResult", "find_tool", "tools_for_chat"]

SUBAGENT_TOOLS: tuple[type[Tool], ...] = (
    SpawnComputerUseAgentTool,
    WaitAgentTool,
    MessageAgentTool,
    CloseAgentTool,
)


def tools_for_chat(chat: Chat, *, provider_configured: bool) -> list[Tool]:
    """Return the tools offered to ``chat``'s model."""
    if chat.is_computer_use:
        from chats.tools.computer import ComputerTool

        return [ComputerTool(chat)]
    if chat.is_root and provider_configured:
        return [tool() for tool in SUBAGENT_TOOLS]
    return []


def find_tool(tools: list[Tool], block: dict[str, Any]) -> Tool | None:
    """Return the tool that answers the tool_use ``block``, or None for a tool we did not offer."""
    return next((tool for tool in tools if tool.handles(block)), None)
