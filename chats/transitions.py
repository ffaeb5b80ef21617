"""Chat status transitions: the one module that changes ``Chat.status`` (STYLE.md "State machines").

Every status change is a call of :func:`chat_transition`: one conditional UPDATE from one of the
statuses the caller expects to the new one, checked against :data:`MOVES`. Whoever moves a chat first
wins; everyone else gets None and must not act as if they had moved it (a redelivered task, an
interrupt racing the end of a turn, two sweeps). A move that succeeds publishes the ``status`` event
and wakes a parent suspended in ``wait_agent`` on this chat, once the transaction commits.

::

    idle ──queue a turn──▶ pending ──claim──▶ running ──end of turn──▶ waiting | completed | error
    (waiting, completed,     │                  │ ├──suspend (wait_agent), sweep re-queue──▶ pending
     error, paused)          │                  │ └──sweep: its worker died twice──────────▶ error
                             └──pause(reason)───┴──▶ paused  (interrupt, take-over, a tool that
                                                              waits for a person, the budget)

    queue a turn:  waiting | paused | completed | error ──▶ pending      (a message, hand-back, resume)
    claim:         pending ──▶ running                                   (a worker)
    end of turn:   running ──▶ waiting | completed | error | pending (suspended) | paused (reason)
    pause(reason): pending | running ──▶ paused   (interrupt, take-over; a tool that waits for a person;
                                                  the budget: the turn before a model call, and the
                                                  parent waiting for it)
    sweep:         running ──▶ pending (re-queued once) | error (its worker died twice)
    close:         waiting | pending | running | paused | error ──▶ completed

Why a chat is paused is ``Chat.paused_reason`` (set exactly while paused; a check constraint), never
a guess from timestamps. Hand-back resumes the chats paused for :data:`RESUMED_BY_HANDBACK`;
``POST /chats/{id}/resume`` those paused for :data:`RESUMABLE`; a parent in ``wait_agent`` keeps waiting
for a child paused for :data:`PARENT_KEEPS_WAITING`.

What a move also sets is the caller's business (``fields``), except what the states themselves
require: ``paused_reason`` is the given ``reason`` when moving to `paused` and null otherwise;
``awaiting`` is cleared unless given (only a suspended `pending` chat has one); ``updated_at`` is now.

Extending:
- a move: one line in :data:`MOVES` (the pair and who makes it); ``tests/chats/test_transitions.py``
  walks the table, so the new move is tested with the others;
- a reason: one line in ``chats.models.ChatPausedReason`` (then ``makemigrations chats``: the check
  constraint lists the values), and in :data:`RESUMED_BY_HANDBACK` / :data:`PARENT_KEEPS_WAITING`
  when hand-back resumes it or a waiting parent should keep waiting for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chats.events import publish_status
from chats.models import Chat
from chats.tasks import turn_task

__all__ = [
    "ACTIVE",
    "IDLE",
    "MOVES",
    "PARENT_KEEPS_WAITING",
    "RESUMABLE",
    "RESUMED_BY_HANDBACK",
    "IllegalTransition",
    "chat_transition",
]

S = Chat.Status  # short names keep the table one line a move
R = Chat.PausedReason

#: Every allowed move ``(from, to)`` and who makes it. A move not listed here raises IllegalTransition.
MOVES: dict[tuple[str, str], str] = {
    (S.WAITING, S.PENDING): "chat_queue_turn: a message to an idle chat",
    (S.PAUSED, S.PENDING): "chat_queue_turn: a message, hand-back (paused for a person), chat_resume",
    (S.COMPLETED, S.PENDING): "chat_queue_turn: message_agent to a finished child, or unseen messages",
    (S.ERROR, S.PENDING): "chat_queue_turn: a message after an error",
    (S.PENDING, S.RUNNING): "turn_claim: a worker claims the queued turn",
    (S.PENDING, S.PAUSED): "chat_pause: interrupt, take-over; a parent waiting on a child paused for budget",
    (S.RUNNING, S.PAUSED): "chat_pause: interrupt, take-over; turn_end: a tool waits for a person, budget",
    (S.RUNNING, S.PENDING): "turn_end: suspended in wait_agent; turns_sweep: re-queued, its worker died",
    (S.RUNNING, S.WAITING): "turn_end: a root chat's model ended its turn",
    (S.RUNNING, S.COMPLETED): "turn_end: a computer-use child's model ended its turn; chat_close",
    (S.RUNNING, S.ERROR): "turn_end: the turn failed; turns_sweep: its worker died twice",
    (S.WAITING, S.COMPLETED): "chat_close",
    (S.PENDING, S.COMPLETED): "chat_close",
    (S.PAUSED, S.COMPLETED): "chat_close",
    (S.ERROR, S.COMPLETED): "chat_close",
}

#: A turn is queued or running.
ACTIVE = frozenset({S.PENDING, S.RUNNING})
#: No turn is queued or running: a message queues one.
IDLE = frozenset({S.WAITING, S.PAUSED, S.COMPLETED, S.ERROR})
#: Paused because a person is acting on the chat's desktop: hand-back resumes these (SPEC §8).
RESUMED_BY_HANDBACK = frozenset({R.TAKEN_OVER, R.NEEDS_HELP})
#: Paused until a person acts, then the child goes on by itself: its parent's wait_agent keeps waiting.
PARENT_KEEPS_WAITING = frozenset({R.TAKEN_OVER, R.NEEDS_HELP, R.AWAITING_APPROVAL, R.BUDGET})
#: Paused until someone resumes it (``POST /chats/{id}/resume``, after raising the budget for ``budget``).
RESUMABLE = frozenset({R.INTERRUPTED, R.BUDGET})


class IllegalTransition(ValueError):
    """A move the table does not allow, or a reason that does not fit the move: a bug in the caller."""


def chat_transition(
    *,
    chat_id: UUID | str,
    to: str,
    expect: Iterable[str],
    reason: str | None = None,
    where: Q | None = None,
    **fields: Any,
) -> Chat | None:
    """Move chat ``chat_id`` from one of the ``expect`` statuses to ``to`` and set ``fields``.

    ``reason`` (a ``Chat.PausedReason``) is required when ``to`` is `paused` and refused otherwise.
    ``where`` narrows the conditional update further (the turn's own ``worker_id``, the same wait).
    Once the transaction commits, the ``status`` event goes out and a parent suspended in
    ``wait_agent`` on this chat is woken (its claim decides whether the wait is over).

    Return the chat as it is now, or None when it was not in an expected state (or ``where`` did not
    match): another actor moved it first. Raise IllegalTransition for a move :data:`MOVES` does not
    allow, or a missing, unknown or unexpected reason.
    """
    expect = frozenset(expect)
    illegal = sorted(f"{status} -> {to}" for status in expect if (status, to) not in MOVES)
    if not expect or illegal:
        raise IllegalTransition(f"Illegal chat status move: {', '.join(illegal) or f'nothing -> {to}'}.")
    if (to == S.PAUSED) != (reason is not None) or (reason is not None and reason not in R.values):
        raise IllegalTransition(
            f"A move to {to} with paused_reason {reason!r}: a reason is required exactly for paused."
        )
    if "status" in fields or "paused_reason" in fields:
        raise IllegalTransition("status and paused_reason are set by chat_transition's own arguments.")
    fields.setdefault("awaiting", None)
    rows = Chat.objects.filter(pk=chat_id, status__in=expect)
    if where is not None:
        rows = rows.filter(where)
    with transaction.atomic():
        if rows.update(status=to, paused_reason=reason, updated_at=timezone.now(), **fields) != 1:
            return None
        chat = Chat.objects.get(pk=chat_id)
        publish_status(chat)
        _wake_waiting_parent(chat)
    return chat


def _wake_waiting_parent(chat: Chat) -> None:
    """Queue the parent's turn when it is suspended in wait_agent on ``chat`` (once this transaction commits).

    Waking is only queuing the parent's turn: the turn's claim decides, atomically, whether the wait is
    over, so a duplicate or early wake-up is harmless.
    """
    if chat.parent_id is None or chat.status in ACTIVE:
        return
    parent_id = str(chat.parent_id)
    waiting = Chat.objects.filter(pk=parent_id, status=S.PENDING, awaiting__chat_id=str(chat.pk))
    if waiting.exists():
        transaction.on_commit(lambda: turn_task.delay(parent_id), robust=True)  # the sweep wakes it else
