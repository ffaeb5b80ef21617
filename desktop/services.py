"""Take-over and hand-back of a chat's desktop.

Who holds the desktop is desktop/control.py's business (its docstring has the rules); this module adds
what follows for the chats. Taking the desktop makes the caller its holder and pauses the computer-use
chats working on it for ``taken_over`` (a running turn stops at its next safe point, after its current
action, so the model never races the person's mouse). While a person holds it, the computer tool
(desktop/tools.py) refuses actions and pauses computer-use turns on that agent for the same reason.
Handing back (only by the person holding it) makes the model the holder when a chat resumes, else
nobody, and, for each computer-use chat on that desktop paused for a person
(``chats.transitions.RESUMED_BY_HANDBACK``: taken over, or asking for help), tells the model that a
person used the desktop (with the person's note) and queues its turn: what is on screen may have
changed. Which chats resume is decided by why they paused, never by timestamps: a chat interrupted
before or during the hold stays paused. While a person holds the desktop it is recorded (a ``person``
recording of the chat the take-over came from, desktop/recordings.py).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from agents.models import WorkspaceAgent
from chats.models import Chat, Recording
from chats.services import chat_pause, chat_send_message
from chats.transitions import ACTIVE
from desktop import control, recordings

HANDBACK_MESSAGE = "A person took control of the desktop and has handed it back"
HANDBACK_NO_NOTE = f"{HANDBACK_MESSAGE}; take a screenshot before continuing."


def handback_message(note: str | None) -> str:
    """Return the user message a paused computer-use chat receives when the desktop is handed back."""
    note = (note or "").strip()
    if not note:
        return HANDBACK_NO_NOTE
    return f"{HANDBACK_MESSAGE}. Their note: {note}\n\nTake a screenshot before continuing."


@transaction.atomic
def desktop_takeover(*, chat: Chat, user: AbstractBaseUser) -> WorkspaceAgent:
    """Make ``user`` the holder of the chat's desktop and pause the computer-use chats working on it.

    Taking a desktop one already holds is harmless (the original time is kept). Return the agent.
    Raise AgentNotConnected (409) when the chat has no workspace agent.
    """
    agent = control.control_take(chat=chat, user=user)
    busy = Chat.objects.filter(workspace_agent=agent, mode=Chat.Mode.COMPUTER_USE, status__in=ACTIVE)
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
    """Give the chat's desktop back and resume its computer-use chats paused for a person.

    Each chat paused for a reason in RESUMED_BY_HANDBACK gets a user message saying a person used the
    desktop (with ``note``), which queues its turn; the model then holds the desktop (nobody, when no
    chat resumes). Chats paused for another reason (interrupted) stay paused. Return the agent. Raise
    Conflict (409) when ``user`` does not hold the desktop, AgentNotConnected when there is no agent.
    """
    agent = control.control_handback(chat=chat, user=user, note=note)
    paused_for_a_person = control.chats_paused_for_a_person(agent)
    content = handback_message(note)
    for child in paused_for_a_person.order_by("created_at"):
        chat_send_message(chat=child, content=content)
    transaction.on_commit(lambda: recordings.recordings_stop_person(agent=agent))
    return agent
