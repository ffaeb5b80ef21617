"""``close_agent``: stop a child chat for good; it is marked `completed`."""

from __future__ import annotations

from typing import Any

from chats import services
from chats.tools._family import NOT_DESCENDANT, child_report, descendant
from chats.tools.base import Tool, ToolContext, ToolResult, error_result, input_object, json_result


class CloseAgentTool(Tool):
    name = "close_agent"
    atomic = True  # only database writes: exactly once with its journal entry
    description = (
        "Stop a sub-agent you started: its running turn stops at the next safe point and it is marked "
        "completed. Returns its last report."
    )
    input_schema = {
        "type": "object",
        "properties": {"chat_id": {"type": "string", "description": "The sub-agent's chat id."}},
        "required": ["chat_id"],
    }

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        data = input_object(tool_input)
        child = descendant(ctx.chat, data.get("chat_id"))
        if child is None:
            return error_result(NOT_DESCENDANT)
        child = services.chat_close(chat=child)
        return json_result(child_report(child))
