"""``spawn_computer_use_agent``: delegate GUI work to a computer-use child chat."""

from __future__ import annotations

from typing import Any

from chats import services
from chats.tools.base import Tool, ToolContext, ToolResult, error_result, input_object, json_result


class SpawnComputerUseAgentTool(Tool):
    name = "spawn_computer_use_agent"
    atomic = True  # only database writes: exactly once with its journal entry
    description = (
        "Start a computer-use sub-agent that operates the workspace's Linux desktop (screenshots, mouse, "
        "keyboard) to carry out a task, and return its chat id at once. Describe the task completely: the "
        "sub-agent cannot ask you questions. Then call wait_agent with the chat id to get its report."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "The complete task for the sub-agent."},
            "title": {"type": "string", "description": "A short title for the sub-agent's chat (optional)."},
        },
        "required": ["prompt"],
    }

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        data = input_object(tool_input)
        if not ctx.chat.is_root:
            return error_result("delegated chats cannot create child subagents")
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return error_result("prompt is required")
        title = data.get("title")
        if title is not None and not isinstance(title, str):
            return error_result("title must be a string")
        child = services.chat_spawn_child(parent=ctx.chat, prompt=prompt, title=title)
        return json_result({"chat_id": str(child.pk), "title": child.title, "status": child.status})
