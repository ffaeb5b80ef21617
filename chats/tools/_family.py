"""Shared by the sub-agent tools: find a chat the current chat may act on, and describe it."""

from __future__ import annotations

import uuid
from typing import Any

from chats.models import Chat, ChatMessage
from chats.transitions import ACTIVE, PARENT_KEEPS_WAITING

NOT_DESCENDANT = "target chat is not a descendant of current chat"


def still_working(child: Chat) -> bool:
    """Return True while ``child`` has not finished: its turn is queued or running, or it paused until
    a person acts (it took over the desktop, ...) and goes on by itself then, so a waiting parent keeps
    waiting (chats.transitions.PARENT_KEEPS_WAITING)."""
    if child.status in ACTIVE:
        return True
    return child.status == Chat.Status.PAUSED and child.paused_reason in PARENT_KEEPS_WAITING


def descendant(chat: Chat, chat_id: object) -> Chat | None:
    """Return the chat ``chat_id`` when it is a descendant of ``chat``, else None (also for a bad id)."""
    try:
        target_id = uuid.UUID(str(chat_id))
    except ValueError:
        return None
    target = Chat.objects.filter(pk=target_id, root_id=chat.root_id).first()
    node = target
    # Walk up: a sibling under the same root is not a descendant.
    for _ in range(100):
        if node is None or node.parent_id is None:
            return None
        if node.parent_id == chat.pk:
            return target
        node = Chat.objects.filter(pk=node.parent_id).first()
    return None


def last_assistant_text(chat: Chat) -> str:
    """Return the child's latest non-empty assistant text: its report."""
    for message in chat.messages.filter(role=ChatMessage.Role.ASSISTANT).order_by("-id")[:50]:
        if message.text.strip():
            return message.text
    return ""


def child_report(child: Chat) -> dict[str, Any]:
    report: dict[str, Any] = {
        "chat_id": str(child.pk),
        "title": child.title,
        "report": last_assistant_text(child),
        "status": child.status,
    }
    if child.status == Chat.Status.ERROR:
        report["error"] = child.last_error
    return report
