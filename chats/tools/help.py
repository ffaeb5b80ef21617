"""``request_human_help``: a computer-use chat asks a person to act on its desktop (SPEC §8).

For what only a person can do: a login, a CAPTCHA, a second factor, a decision. The chat pauses
(``needs_help``, the reason kept in ``Chat.help_reason``), a ``help_requested`` event goes to the chat's
and its root's streams, and the pages show a banner with a "Take control" button. The person takes the
desktop, acts and hands it back with a note (desktop/services.py): the chat resumes with that note as a
user message. The parent's wait_agent keeps waiting meanwhile, without holding a worker
(chats.transitions.PARENT_KEEPS_WAITING).
"""

from __future__ import annotations

from typing import Any

from chats.audit import audit_record
from chats.models import AuditEvent, Chat
from chats.tools.base import Tool, ToolContext, ToolResult, error_result, input_object, text_result

HELP_REASON_MAX_CHARS = 1000
ASKED = (
    "A person has been asked for help. This chat is paused until they hand the desktop back; their note "
    "will follow as a message. Take a screenshot then: the screen may have changed."
)


class RequestHumanHelpTool(Tool):
    name = "request_human_help"
    atomic = True  # only database writes: exactly once with its journal entry and the pause
    description = (
        "Ask a person to act on the desktop for you when only a person can: logging in, solving a CAPTCHA, "
        "entering a second factor, or making a decision the task does not settle. Say exactly what you need "
        "in `reason`. The person takes control, acts, and hands the desktop back with a note; you continue "
        "then. Do not use it for what you can do yourself."
    )
    input_schema = {
        "type": "object",
        "properties": {
            "reason": {
                "type": "string",
                "description": f"What you need a person to do, and why (at most {HELP_REASON_MAX_CHARS} characters).",
            }
        },
        "required": ["reason"],
    }

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        reason = input_object(tool_input).get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return error_result("reason is required: say what you need a person to do.")
        reason = reason.strip()
        if len(reason) > HELP_REASON_MAX_CHARS:
            return error_result(
                f"reason is too long ({len(reason)} characters; at most {HELP_REASON_MAX_CHARS})."
            )
        Chat.objects.filter(pk=ctx.chat.pk).update(help_reason=reason)
        audit_record(
            chat=ctx.chat,
            kind=AuditEvent.Kind.HELP_REQUESTED,
            actor=AuditEvent.Actor.MODEL,
            data={"reason": reason, "tool_use_id": ctx.tool_use_id},
            also_to=[ctx.chat.root_id],
        )
        result = text_result(ASKED)
        result.pause_after = Chat.PausedReason.NEEDS_HELP
        return result
