"""Take-over and hand-back of a chat's desktop.

A person who takes the desktop holds it (``WorkspaceAgent.desktop_held_by/at``); the computer-use
chats working on that desktop are paused through ``chat_interrupt`` (a running turn stops at its next
safe point, after its current action, so the model never races the person's mouse). While the hold
lasts, the turn engine refuses to run computer-use turns on that agent. Handing back clears the hold
and, for each computer-use chat that was paused during the hold, tells the model that a person used
the desktop (with the person's note) and queues its turn: what is on screen may have changed.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import WorkspaceAgent
from chatdesk.exceptions import AgentNotConnected, Conflict
from chats.models import Chat
from chats.services import chat_interrupt, chat_send_message
from desktop.client import NO_AGENT

HANDBACK_MESSAGE = "A person took control of the desktop and has handed it back"
HANDBACK_NO_NOTE = f"{HANDBACK_MESSAGE}; take a screenshot before continuing."
NOT_HELD = "The desktop is not held; there is nothing to hand back."


def handback_message(note: str | None) -> str:
    """Return the user message a paused computer-use chat receives when the desktop is handed back."""
    note = (note or "").strip()
    if not note:
        return HANDBACK_NO_NOTE
    return f"{HANDBACK_MESSAGE}. Their note: {note}\n\nTake a screenshot before continuing."


def _locked_agent(chat: Chat) -> WorkspaceAgent:
    """Return the chat's agent, locked for update. Raise AgentNotConnected when the chat has none."""
    if chat.workspace_agent_id is None:
        raise AgentNotConnected(NO_AGENT)
    return WorkspaceAgent.objects.select_for_update().get(pk=chat.workspace_agent_id)


def _computer_use_chats(agent: WorkspaceAgent) -> QuerySet[Chat]:
    return Chat.objects.filter(workspace_agent=agent, mode=Chat.Mode.COMPUTER_USE)


@transaction.atomic
def desktop_takeover(*, chat: Chat, user: AbstractBaseUser) -> WorkspaceAgent:
    """Mark the chat's desktop as held by ``user`` and pause the computer-use chats working on it.

    Taking a desktop one already holds is harmless (the original time is kept). Return the agent.
    Raise AgentNotConnected (409) when the chat has no workspace agent.
    """
    agent = _locked_agent(chat)
    if agent.desktop_held_by_id is None:
        agent.desktop_held_at = timezone.now()
    agent.desktop_held_by = user  # type: ignore[assignment]
    agent.save(update_fields=["desktop_held_by", "desktop_held_at", "updated_at"])
    busy = _computer_use_chats(agent).filter(status__in=[Chat.Status.PENDING, Chat.Status.RUNNING])
    for child in busy.order_by("created_at"):
        chat_interrupt(chat=child)
    return agent


@transaction.atomic
def desktop_handback(*, chat: Chat, user: AbstractBaseUser, note: str | None = None) -> WorkspaceAgent:
    """Clear the hold on the chat's desktop and resume the computer-use chats paused during it.

    Each such chat gets a user message saying a person used the desktop (with ``note``), which queues
    its turn. Chats paused before the hold began (someone interrupted them) stay paused. Return the
    agent. Raise Conflict (409) when the desktop is not held, AgentNotConnected when there is no agent.
    """
    agent = _locked_agent(chat)
    if agent.desktop_held_by_id is None or agent.desktop_held_at is None:
        raise Conflict(NOT_HELD)
    held_at = agent.desktop_held_at
    agent.desktop_held_by = None
    agent.desktop_held_at = None
    agent.save(update_fields=["desktop_held_by", "desktop_held_at", "updated_at"])
    # Paused since the hold began: by desktop_takeover, or by the engine refusing to run while held.
    paused = _computer_use_chats(agent).filter(status=Chat.Status.PAUSED, updated_at__gte=held_at)
    content = handback_message(note)
    for child in paused.order_by("created_at"):
        chat_send_message(chat=child, content=content)
    return agent
