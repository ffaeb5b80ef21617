"""Take-over and hand-back of a chat's desktop.

A person who takes the desktop holds it (``WorkspaceAgent.desktop_held_by/at``); the computer-use
chats working on that desktop are paused for ``taken_over`` (a running turn stops at its next safe
point, after its current action, so the model never races the person's mouse). While the hold lasts,
the computer tool (desktop/tools.py) pauses computer-use turns on that agent for the same reason.
Handing back clears the hold and, for each computer-use chat on that desktop paused for a person
(``chats.transitions.RESUMED_BY_HANDBACK``: taken over, or asking for help), tells the model that a
person used the desktop (with the person's note) and queues its turn: what is on screen may have
changed. Which chats resume is decided by why they paused, never by timestamps: a chat interrupted
before or during the hold stays paused. While a person holds the desktop it is recorded (a ``person``
recording of the chat the take-over came from, desktop/recordings.py).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import WorkspaceAgent
from chatdesk.exceptions import AgentNotConnected, Conflict
from chats.models import Chat, Recording
from chats.services import chat_pause, chat_send_message
from chats.transitions import ACTIVE, RESUMED_BY_HANDBACK
from desktop import recordings
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
    busy = _computer_use_chats(agent).filter(status__in=ACTIVE)
    for child in busy.order_by("created_at"):
        chat_pause(chat=child, reason=Chat.PausedReason.TAKEN_OVER)
    transaction.on_commit(lambda: _record_person(chat=chat, agent=agent))
    return agent


def _record_person(*, chat: Chat, agent: WorkspaceAgent) -> None:
    """Record the desktop while the person holds it (once: a second take-over adds no recording)."""
    running = Recording.objects.filter(
        workspace_agent=agent, kind=Recording.Kind.PERSON, state=Recording.State.RECORDING
    )
    if not running.exists():
        recordings.recording_start(chat=chat, kind=Recording.Kind.PERSON)


@transaction.atomic
def desktop_handback(*, chat: Chat, user: AbstractBaseUser, note: str | None = None) -> WorkspaceAgent:
    """Clear the hold on the chat's desktop and resume its computer-use chats paused for a person.

    Each chat paused for a reason in RESUMED_BY_HANDBACK gets a user message saying a person used the
    desktop (with ``note``), which queues its turn. Chats paused for another reason (interrupted) stay
    paused. Return the agent. Raise Conflict (409) when the desktop is not held, AgentNotConnected when
    there is no agent.
    """
    agent = _locked_agent(chat)
    if agent.desktop_held_by_id is None or agent.desktop_held_at is None:
        raise Conflict(NOT_HELD)
    agent.desktop_held_by = None
    agent.desktop_held_at = None
    agent.save(update_fields=["desktop_held_by", "desktop_held_at", "updated_at"])
    paused_for_a_person = _computer_use_chats(agent).filter(
        status=Chat.Status.PAUSED, paused_reason__in=RESUMED_BY_HANDBACK
    )
    content = handback_message(note)
    for child in paused_for_a_person.order_by("created_at"):
        chat_send_message(chat=child, content=content)
    transaction.on_commit(lambda: recordings.recordings_stop_person(agent=agent))
    return agent
