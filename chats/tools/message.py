"""``message_agent``: send a follow-up message to a child chat (it is queued like a user's message)."""

from __future__ import annotations

from typing import Any

from chats import services
from chats.tools._family import NOT_DESCENDANT, descendant
from chats.tools.base import Tool, ToolContext, ToolResult, error_result, input_object, json_result


class MessageAgentTool(Tool):
    name = "message_agent"
    atomic = True  # only database writes: exactly once with its journal entry
    description = (
        "Send a message to a sub-agent you started (new instructions, or an answer). It is handled after "
        "the sub-agent's current turn; call wait_agent to get its next report."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "chat_id": {"type": "string", "description": "The sub-agent's chat id."},
            "message": {"type": "string", "description": "What to tell the sub-agent."},
        },
        "required": ["chat_id", "message"],
    }

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        data = input_object(tool_input)
        child = descendant(ctx.chat, data.get("chat_id"))
        if child is None:
            return error_result(NOT_DESCENDANT)
        message = data.get("message")
        if not isinstance(message, str) or not message.strip():
            return error_result("message is required")
        stored = services.chat_send_message(chat=child, content=message)
        child.refresh_from_db(fields=["status"])
        return json_result({"chat_id": str(child.pk), "message_id": stored.pk, "status": child.status})
