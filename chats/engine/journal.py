"""Exactly-once tool calls: the journal of every tool_use a turn runs (SPEC §8 "Exactly once").

The failure this prevents: an action runs, the chat is paused (interrupt, take-over) or its worker dies
during it, the result is dropped, and the resumed turn runs the action again — a second click, the text
typed twice. The rules, one ``ToolCall`` row per ``(chat, tool_use_id)`` (a unique constraint):

- **Acting tools** (the computer, bash, the text editor: their effect is outside the database) get a row
  ``started`` committed *before* they act (:func:`journal_start`). When they return, :func:`journal_finish`
  moves it ``started -> done`` and stores the ``tool`` message with the result in the same transaction —
  whatever happened to the chat meanwhile: a paused or interrupted chat still gets the result of the action
  that ran. What the action left (``ToolResult.record``: a screenshot, an audit entry) is stored in that
  transaction too. A tool that decides not to act after all (a person holds the desktop, an approval is
  pending) returns a pause, and the row is removed (:func:`journal_forget`): nothing ran.
- **Database tools** (``Tool.atomic``: spawn_computer_use_agent, message_agent, close_agent, wait_agent,
  request_human_help) run inside one transaction with :func:`journal_record`, which inserts the row ``done``
  and the message: either all of it commits (the child exists and the result says so) or none of it.
- **Resuming** a tool_use left unanswered, :func:`journal_settle` looks first: a ``done`` row means the
  result is stored already; a row still ``started`` means the worker died mid-action (or another turn is
  in it): it becomes ``unknown`` and the model gets :data:`UNKNOWN_OUTCOME` — never a second run. Only a
  tool_use with no row at all (it never started) is run.

Every move is a conditional UPDATE (or the unique insert), so two workers that both think they own a turn
(the sweep re-queued it while the old one was still alive) record one result between them.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from chats import services
from chats.engine.history import strip_nul
from chats.models import Chat, ChatMessage, ToolCall
from chats.tools.base import ToolResult

__all__ = [
    "UNKNOWN_OUTCOME",
    "journal_finish",
    "journal_forget",
    "journal_record",
    "journal_settle",
    "journal_start",
]

UNKNOWN_OUTCOME = (
    "The outcome of this action is unknown: the worker running it stopped before it finished, so it may or "
    "may not have taken effect. It was not run again. Take a screenshot to see the desktop's state before "
    "going on."
)


def _lock_chat(chat_id: UUID | str) -> Chat | None:
    """Lock the chat's row, as for every message (ids in commit order); None when the chat is gone. A
    message without usage needs none of its other fields, which are the costly ones to load."""
    return Chat.objects.select_for_update().only("id", "parent_id", "root_id").filter(pk=chat_id).first()


def _append_result(*, chat: Chat, tool_use_id: str, result: ToolResult) -> None:
    """Store the ``tool`` message answering ``tool_use_id`` on ``chat``, locked by the caller
    (:func:`_lock_chat`), inside the caller's transaction."""
    part = {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": strip_nul(result.content),
        "is_error": result.is_error,
    }
    services.message_append(chat=chat, role=ChatMessage.Role.TOOL, content=[part])


def journal_start(*, chat_id: UUID | str, tool_use_id: str, name: str, worker_id: str) -> bool:
    """Note that ``tool_use_id`` is about to act (committed at once). Return False when it has a row
    already: another turn started it, and this one must not run it."""
    try:
        with transaction.atomic():
            ToolCall.objects.create(chat_id=chat_id, tool_use_id=tool_use_id, name=name, worker_id=worker_id)
    except IntegrityError:
        return False
    return True


def journal_forget(*, chat_id: UUID | str, tool_use_id: str) -> None:
    """The tool did not act after all (it paused first): remove the ``started`` row."""
    ToolCall.objects.filter(chat_id=chat_id, tool_use_id=tool_use_id, state=ToolCall.State.STARTED).delete()


@transaction.atomic
def journal_finish(*, chat_id: UUID | str, tool_use_id: str, result: ToolResult) -> bool:
    """Record the result of an acting tool that ran: ``started -> done``, what the action left
    (``result.record``) and its message, together.

    Return False when the row was no longer ``started`` (a later turn already told the model the outcome
    was unknown: what the action left is still stored, the result not a second time) or the chat is gone
    (nothing is stored).
    """
    chat = _lock_chat(chat_id)
    if chat is None:
        return False
    if result.record is not None:
        result.record()
    moved = ToolCall.objects.filter(
        chat_id=chat_id, tool_use_id=tool_use_id, state=ToolCall.State.STARTED
    ).update(
        state=ToolCall.State.DONE,
        content=strip_nul(result.content),
        is_error=result.is_error,
        finished_at=timezone.now(),
    )
    if moved != 1:
        return False
    _append_result(chat=chat, tool_use_id=tool_use_id, result=result)
    return True


def journal_record(
    *, chat_id: UUID | str, tool_use_id: str, name: str, worker_id: str, result: ToolResult
) -> None:
    """Record the result of a database tool inside the transaction it ran in: the row ``done`` and the
    message. Raise IntegrityError when the tool_use has a row already (the caller's transaction, with the
    tool's own writes, must then roll back: it ran elsewhere)."""
    ToolCall.objects.create(
        chat_id=chat_id,
        tool_use_id=tool_use_id,
        name=name,
        worker_id=worker_id,
        state=ToolCall.State.DONE,
        content=strip_nul(result.content),
        is_error=result.is_error,
        finished_at=timezone.now(),
    )
    chat = _lock_chat(chat_id)
    if chat is not None:
        _append_result(chat=chat, tool_use_id=tool_use_id, result=result)


@transaction.atomic
def journal_settle(*, chat_id: UUID | str, tool_use_id: str) -> bool:
    """Answer an unanswered tool_use from the journal, if it has a row. Return True when it is answered now
    (its result was stored already, or it is now told the outcome is unknown); False when it never started
    and the caller should run it."""
    call: Any = ToolCall.objects.select_for_update().filter(chat_id=chat_id, tool_use_id=tool_use_id).first()
    if call is None:
        return False
    if call.state == ToolCall.State.STARTED:
        call.state = ToolCall.State.UNKNOWN
        call.content = [{"type": "text", "text": UNKNOWN_OUTCOME}]
        call.is_error = True
        call.finished_at = timezone.now()
        call.save(update_fields=["state", "content", "is_error", "finished_at"])
        chat = _lock_chat(chat_id)
        if chat is not None:
            _append_result(
                chat=chat, tool_use_id=tool_use_id, result=ToolResult(content=call.content, is_error=True)
            )
        return True
    return True  # done (its message was stored with it) or unknown (the model was told)
