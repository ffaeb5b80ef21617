"""Who controls a desktop: the one module that changes ``WorkspaceAgent.desktop_holder`` (SPEC §8).

A desktop (a workspace agent's display) has at most one holder at a time:

- ``model``: the computer-use chats on it. Set when one of them is about to act and nobody holds it
  (:func:`control_model_acquire`, called by the computer tool right before an action goes to the agent),
  or when a hand-back resumes at least one chat; cleared when a computer-use turn ends and no other
  computer-use chat on the desktop has a turn queued or running (:func:`control_model_release`).
- ``person``: a user who took control (:func:`control_take`), named by ``desktop_held_by`` (set exactly
  while the holder is a person: a check constraint). Taking control is always allowed to the owner of a
  chat on the desktop, from the model or from another person; only the holder can hand it back
  (:func:`control_handback`, else Conflict, 409).
- nobody (null).

::

    null ──model acquires (an action)──▶ model ──its last turn ends──▶ null
      │  ▲                                 │
      │  └──hand-back (no chat resumed)──┐ │ take-over
      └──take-over──▶ person ◀───────────┼─┘
                        │ ▲──take-over by another user
                        └──hand-back (a chat resumed)──▶ model

What follows from the holder: a model action while a person holds the desktop is refused before it
reaches the agent (the chat pauses, ``taken_over``); the desktop proxy (desktop/consumers.py) forwards
input only from viewers whose user is the person holding it.

Every change is one conditional update of the agent row under ``select_for_update`` (so two changes
never interleave), sets ``desktop_held_at`` (the state's ``since``), is audited on the chat it came
through (``kind=control``, ``data``: ``holder``, ``change`` (``takeover``, ``handback``, ``acquire``,
``release``), ``note``; also sent to the root's stream for a child), and is announced, once the
transaction commits, to every proxy viewer of that desktop through the channel-layer group
:func:`group_name` (a :class:`ControlMessage`). Viewers read the holder back from the database when the
message arrives, so a late or reordered message cannot leave one with a stale right to type.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.signals import pre_delete
from django.utils import timezone

from agents.models import DesktopHolder, WorkspaceAgent
from chatdesk.exceptions import AgentNotConnected, Conflict
from chats.audit import audit_record
from chats.events import sender, uses_channel_layer
from chats.models import AuditEvent, Chat
from chats.transitions import ACTIVE, RESUMED_BY_HANDBACK
from desktop.client import NO_AGENT

logger = logging.getLogger(__name__)

NOT_HELD = "The desktop is not held; there is nothing to hand back."
HELD_BY_MODEL = "The agent holds the desktop, not you; there is nothing to hand back."
HELD_BY_OTHER = "Another person holds the desktop; only they can hand it back."

#: The channel-layer message type (handled by ``DesktopProxyConsumer.desktop_control``).
MESSAGE_TYPE: Literal["desktop.control"] = "desktop.control"


class ControlState(TypedDict):
    """``GET /chats/{id}/desktop/control``: who holds the desktop, and since when."""

    holder: str | None  # "model", "person" or null
    user: str | None  # the person's username when holder is "person"
    since: datetime | None  # when the holder last changed


class ControlMessage(TypedDict):
    """Sent to :func:`group_name` when the holder changes."""

    type: Literal["desktop.control"]
    agent_id: str
    holder: str | None
    user_id: int | None


def group_name(agent_id: object) -> str:
    """Return the channel-layer group of the desktop proxy viewers of agent ``agent_id``."""
    return f"desktop-control.{agent_id}"


def control_state(agent: WorkspaceAgent) -> ControlState:
    """Return who holds ``agent``'s desktop (as read into ``agent``) and since when."""
    person = agent.desktop_held_by if agent.desktop_holder == DesktopHolder.PERSON else None
    return ControlState(
        holder=agent.desktop_holder,
        user=person.get_username() if person is not None else None,
        since=agent.desktop_held_at,
    )


def may_send_input(agent: WorkspaceAgent, user_id: object) -> bool:
    """Return whether a viewer of user ``user_id`` may send input to ``agent``'s desktop now."""
    return agent.desktop_holder == DesktopHolder.PERSON and agent.desktop_held_by_id == user_id


def chats_paused_for_a_person(agent: WorkspaceAgent) -> QuerySet[Chat]:
    """Return the computer-use chats on ``agent``'s desktop that a hand-back resumes."""
    return _computer_use_chats(agent).filter(status=Chat.Status.PAUSED, paused_reason__in=RESUMED_BY_HANDBACK)


@transaction.atomic
def control_take(*, chat: Chat, user: AbstractBaseUser) -> WorkspaceAgent:
    """Make ``user`` the holder of ``chat``'s desktop (from nobody, the model or another person).

    Taking what one already holds changes nothing (``since`` is kept). Return the agent, locked for the
    rest of the transaction. Raise AgentNotConnected (409) when the chat has no workspace agent.
    """
    agent = _locked_agent(chat.workspace_agent_id)
    if not may_send_input(agent, user.pk):
        _change(agent, chat=chat, holder=DesktopHolder.PERSON, user=user, change="takeover")
    return agent


@transaction.atomic
def control_handback(*, chat: Chat, user: AbstractBaseUser, note: str | None = None) -> WorkspaceAgent:
    """Give ``chat``'s desktop back: the model holds it when a chat will resume, else nobody.

    "A chat will resume": a computer-use chat on the desktop is paused for a person
    (:func:`chats_paused_for_a_person`); the caller (``desktop.services.desktop_handback``) resumes them
    in the same transaction, the agent row staying locked meanwhile. Return the agent. Raise Conflict
    (409) when ``user`` does not hold the desktop, AgentNotConnected when the chat has no agent.
    """
    agent = _locked_agent(chat.workspace_agent_id)
    if agent.desktop_holder is None:
        raise Conflict(NOT_HELD)
    if agent.desktop_holder == DesktopHolder.MODEL:
        raise Conflict(HELD_BY_MODEL)
    if agent.desktop_held_by_id != user.pk:
        raise Conflict(HELD_BY_OTHER)
    holder = DesktopHolder.MODEL if chats_paused_for_a_person(agent).exists() else None
    _change(agent, chat=chat, holder=holder, user=user, change="handback", note=(note or "").strip())
    return agent


@transaction.atomic
def control_model_acquire(*, agent: WorkspaceAgent, chat: Chat) -> bool:
    """Let ``chat``'s model act on ``agent``'s desktop: called right before an action goes to the agent.

    Return False when a person holds the desktop (the action must not run: the chat pauses,
    ``taken_over``). Else make the model the holder when nobody was (audited on ``chat``) and return True.
    """
    locked = _locked_agent(agent.pk)
    if locked.desktop_holder == DesktopHolder.PERSON:
        return False
    if locked.desktop_holder is None:
        _change(locked, chat=chat, holder=DesktopHolder.MODEL, user=None, change="acquire")
    return True


@transaction.atomic
def control_model_release(*, agent: WorkspaceAgent, chat: Chat) -> bool:
    """A computer-use turn of ``chat`` ended: nobody holds the desktop unless another computer-use chat
    on it has a turn queued or running (or a person holds it). Return True when the holder changed."""
    locked = _locked_agent(agent.pk)
    if locked.desktop_holder != DesktopHolder.MODEL:
        return False
    if _computer_use_chats(locked).filter(status__in=ACTIVE).exclude(pk=chat.pk).exists():
        return False
    _change(locked, chat=chat, holder=None, user=None, change="release")
    return True


def control_sweep() -> int:
    """Release the model's holds that no turn will release: no computer-use chat on the desktop has a turn
    queued or running (its worker died and its turn failed for good, or was cut off before its end). Return
    how many desktops were released. Run by the beat task ``desktop.sweep_holds``."""
    released = 0
    held = WorkspaceAgent.objects.filter(desktop_holder=DesktopHolder.MODEL).values_list("pk", flat=True)
    for agent_id in held:
        with transaction.atomic():
            locked = _locked_agent(agent_id)
            chats = _computer_use_chats(locked)
            if locked.desktop_holder != DesktopHolder.MODEL or chats.filter(status__in=ACTIVE).exists():
                continue
            last = chats.order_by("-updated_at").first()
            if last is None:  # its chats are gone: nothing to audit on
                WorkspaceAgent.objects.filter(pk=locked.pk).update(
                    desktop_holder=None, desktop_held_by=None, desktop_held_at=timezone.now()
                )
                _announce(locked.pk, None, None)
            else:
                _change(
                    locked, chat=last, holder=None, user=None, change="release", note="no turn is running"
                )
            released += 1
    return released


# -- internals -----------------------------------------------------------------------------------------


def _locked_agent(agent_id: Any) -> WorkspaceAgent:
    """Return the agent, locked for update. Raise AgentNotConnected when there is none."""
    agent = (
        WorkspaceAgent.objects.select_for_update(of=("self",))
        .select_related("desktop_held_by")
        .filter(pk=agent_id)
        .first()
        if agent_id is not None
        else None
    )
    if agent is None:
        raise AgentNotConnected(NO_AGENT)
    return agent


def _computer_use_chats(agent: WorkspaceAgent) -> QuerySet[Chat]:
    return Chat.objects.filter(workspace_agent=agent, mode=Chat.Mode.COMPUTER_USE)


def _change(
    agent: WorkspaceAgent,
    *,
    chat: Chat,
    holder: str | None,
    user: AbstractBaseUser | None,
    change: str,
    note: str = "",
) -> None:
    """Set the holder of the (locked) ``agent``, audit it on ``chat`` and announce it on commit."""
    person = user if holder == DesktopHolder.PERSON else None
    agent.desktop_holder = holder
    agent.desktop_held_by = person  # type: ignore[assignment]
    agent.desktop_held_at = timezone.now()
    agent.save(update_fields=["desktop_holder", "desktop_held_by", "desktop_held_at", "updated_at"])
    by_person = change in ("takeover", "handback")
    audit_record(
        chat=chat,
        kind=AuditEvent.Kind.CONTROL,
        actor=AuditEvent.Actor.PERSON if by_person else AuditEvent.Actor.MODEL,
        user=user if by_person else None,  # type: ignore[arg-type]
        at=agent.desktop_held_at,
        data={"holder": holder, "change": change, "note": note},
        also_to=[chat.root_id],
    )
    _announce(agent.pk, holder, person.pk if person is not None else None)


def _announce(agent_id: Any, holder: str | None, user_id: int | None) -> None:
    """Tell the desktop's proxy viewers that the holder changed, once the transaction commits."""
    message = ControlMessage(type=MESSAGE_TYPE, agent_id=str(agent_id), holder=holder, user_id=user_id)
    group = group_name(agent_id)

    def send() -> None:
        if uses_channel_layer():
            sender.group_send(group, dict(message))
            return
        # Embedded default: an in-process layer, reachable from this process only (the API's daphne).
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(group, dict(message))

    # Best effort, like chat events: viewers also read the holder when they connect, and a viewer that
    # misses a change keeps the rights it had (none, for anyone but the person who held it).
    transaction.on_commit(send, robust=True)


def _release_holds_of(sender: Any, instance: User, **kwargs: Any) -> None:
    """A user is being deleted: nobody holds the desktops they held (the foreign key alone would break
    the check constraint: held_by cleared while the holder stays "person")."""
    held = list(
        WorkspaceAgent.objects.filter(
            desktop_holder=DesktopHolder.PERSON, desktop_held_by=instance
        ).values_list("pk", flat=True)
    )
    if not held:
        return
    WorkspaceAgent.objects.filter(pk__in=held).update(
        desktop_holder=None, desktop_held_by=None, desktop_held_at=timezone.now()
    )
    for agent_id in held:
        _announce(agent_id, None, None)


pre_delete.connect(_release_holds_of, sender=settings.AUTH_USER_MODEL, dispatch_uid="desktop.control.release")
