"""Writes and workflows on chats. The turn engine (chats/engine/) builds on these.

Status changes go through chats/transitions.py; the services here say when, and what else changes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction

from agents.models import WorkspaceAgent
from agents.services import workspace_agent_for_user
from chatdesk.exceptions import ValidationError
from chats.events import publish_child, publish_message
from chats.files import chat_file_store
from chats.models import Chat, ChatFile, ChatMessage, ChatModelConfig
from chats.tasks import turn_task
from chats.tools.computer_use import computer_use
from chats.transitions import ACTIVE, IDLE, chat_transition

TITLE_WORDS = 6
TITLE_MAX_CHARS = 80


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def title_from_prompt(prompt: str) -> str:
    """Return a title: the prompt's first 6 words (+ "..." when cut), at most 80 characters."""
    words = prompt.split()
    if not words:
        return Chat.DEFAULT_TITLE
    title = " ".join(words[:TITLE_WORDS])
    if len(words) > TITLE_WORDS:
        title += "..."
    if len(title) > TITLE_MAX_CHARS:
        title = title[: TITLE_MAX_CHARS - 3].rstrip() + "..."
    return title


def model_config_resolve(*, model: str | None) -> tuple[ChatModelConfig | None, str]:
    """Return the model config and model name for a new root chat.

    ``model`` names an enabled ChatModelConfig; None means the default config, else CHATDESK_MODEL.
    Raise ValidationError for a model that is not configured.
    """
    configs = ChatModelConfig.objects.filter(enabled=True)
    if model:
        config = configs.filter(model=model).first()
        if config is None:
            if model == settings.CHATDESK_MODEL:
                return None, model
            raise ValidationError(f"Unknown or disabled model {model!r}.")
        return config, config.model
    config = configs.filter(is_default=True).first()
    if config is not None:
        return config, config.model
    return None, settings.CHATDESK_MODEL


@transaction.atomic
def chat_create(
    *,
    owner: User,
    message: str | None = None,
    title: str | None = None,
    workspace_agent: WorkspaceAgent | None = None,
    model: str | None = None,
) -> Chat:
    """Create a root chat; with ``message``, store it as the first user message and queue a turn."""
    config, model_name = model_config_resolve(model=model)
    if workspace_agent is None:
        workspace_agent = workspace_agent_for_user(owner=owner)
    chat = Chat.objects.create(
        owner=owner,
        title=title or (title_from_prompt(message) if message else Chat.DEFAULT_TITLE),
        workspace_agent=workspace_agent,
        model_config=config,
        model=model_name,
    )
    if message:
        chat_send_message(chat=chat, content=message)
        chat.refresh_from_db()
    return chat


def message_append(
    *,
    chat: Chat,
    role: str,
    content: list[dict[str, Any]],
    usage: dict[str, int] | None = None,
    model: str = "",
    context_id: int | None = None,
) -> ChatMessage:
    """Store one message on ``chat`` and publish it to the chat's live stream."""
    message = ChatMessage.objects.create(
        chat=chat, role=role, content=content, usage=usage or {}, model=model, context_id=context_id
    )
    if usage:
        totals = dict(chat.usage or {})
        for key, value in usage.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
        chat.usage = totals
        chat.save(update_fields=["usage", "updated_at"])
    publish_message(message)
    return message


@transaction.atomic
def chat_send_message(*, chat: Chat, content: str) -> ChatMessage:
    """Store a user message. Start a turn when the chat is idle; a running turn picks it up after."""
    chat = Chat.objects.select_for_update().get(pk=chat.pk)
    message = message_append(chat=chat, role=ChatMessage.Role.USER, content=[text_part(content)])
    if chat.status in IDLE:
        chat_queue_turn(chat=chat)
    return message


def chat_queue_turn(*, chat: Chat) -> Chat:
    """Queue a turn of idle ``chat`` (`pending`) and wake a worker once the transaction commits.

    Return the chat as it is now: unchanged when a turn is already queued or running (it will see
    what is new), so queuing twice is harmless.
    """
    queued = chat_transition(
        chat_id=chat.pk,
        to=Chat.Status.PENDING,
        expect=IDLE,
        last_error="",
        lease_recoveries=0,  # a fresh turn gets a fresh budget of lease recoveries (chats/engine/lease.py)
    )
    if queued is None:
        return Chat.objects.get(pk=chat.pk)
    # Robust: the chat is `pending` in the database whatever the broker says; if this wake-up fails (Redis
    # went away after the request checked it), the sweep queues the turn once the broker is back.
    transaction.on_commit(lambda: turn_wake(chat_id=str(chat.pk)), robust=True)
    return queued


def turn_wake(*, chat_id: str) -> None:
    """Ask a worker to run ``chat_id``'s queued turn. Harmless when there is none: the claim decides."""
    turn_task.delay(chat_id)


def chat_update(*, chat: Chat, title: str | None = None, archived: bool | None = None) -> Chat:
    fields = []
    if title is not None:
        chat.title = title
        fields.append("title")
    if archived is not None:
        chat.archived = archived
        fields.append("archived")
    if fields:
        chat.save(update_fields=[*fields, "updated_at"])
    return chat


def chat_interrupt(*, chat: Chat) -> Chat:
    """Stop ``chat``'s turn at the next safe point; the chat becomes `paused` (``interrupted``).

    A running turn sees the status change at its next check and stops, keeping what it produced; a
    queued turn finds the chat no longer `pending` and does nothing. A parent suspended in wait_agent
    stops waiting (its next turn answers the wait with the child's state then).
    """
    return chat_pause(chat=chat, reason=Chat.PausedReason.INTERRUPTED)


def chat_pause(*, chat: Chat, reason: str) -> Chat:
    """Pause ``chat`` for ``reason`` (a ``Chat.PausedReason``) when a turn is queued or running.

    The turn stops at its next safe point (after the current action). Return the chat as it is now:
    unchanged when it had no turn queued or running.
    """
    paused = chat_transition(chat_id=chat.pk, to=Chat.Status.PAUSED, expect=ACTIVE, reason=reason)
    return paused if paused is not None else Chat.objects.get(pk=chat.pk)


@transaction.atomic
def chat_spawn_child(*, parent: Chat, prompt: str, title: str | None = None) -> Chat:
    """Create a computer-use child of ``parent`` for the task ``prompt`` and queue its first turn.

    The child has the parent's owner and workspace agent, the computer-use model whatever the parent
    uses, the computer-use system prompt plus the task, and the task as its first user message.
    """
    model_name = settings.CHATDESK_COMPUTER_USE_MODEL
    config = ChatModelConfig.objects.filter(enabled=True, model=model_name).first()
    title = (title or "").strip()[:TITLE_MAX_CHARS] or title_from_prompt(prompt)
    child = Chat.objects.create(
        owner=parent.owner,
        parent=parent,
        mode=Chat.Mode.COMPUTER_USE,
        title=title,
        workspace_agent=parent.workspace_agent,
        model_config=config,
        model=model_name,
        system_prompt=computer_use().system_prompt(prompt),
    )
    message_append(chat=child, role=ChatMessage.Role.USER, content=[text_part(prompt)])
    child = chat_queue_turn(chat=child)
    publish_child(child)
    return child


def chat_close(*, chat: Chat) -> Chat:
    """Mark a child chat `completed` for good; a running turn stops at its next safe point."""
    unfinished = [status for status in Chat.Status if status != Chat.Status.COMPLETED]
    closed = chat_transition(chat_id=chat.pk, to=Chat.Status.COMPLETED, expect=unfinished)
    return closed if closed is not None else Chat.objects.get(pk=chat.pk)


def chat_file_store_png(*, chat: Chat, png: bytes, width: int | None, height: int | None) -> ChatFile | None:
    """Store a screenshot of ``chat`` in Django storage and return its ChatFile row (None: the chat is gone)."""
    return chat_file_store(
        chat_id=chat.pk,
        content=ContentFile(png),
        content_type="image/png",
        size=len(png),
        width=width,
        height=height,
    )


def _chat_tree_ids(chat_id: object) -> list[object]:
    """Return ``chat_id`` and the ids of all its descendants."""
    ids = [chat_id]
    frontier = [chat_id]
    while frontier:
        frontier = list(Chat.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        ids += frontier
    return ids


@transaction.atomic
def chat_delete(*, chat: Chat) -> None:
    """Delete ``chat``, its descendants, and everything they own: messages, events, files and their bytes,
    recordings (an agent still recording for them is told to stop by the desktop app).

    A turn may be running in the tree: its writes all need the chat's row (a message is appended under the
    row's lock, a file is stored under it, a new row's foreign key locks it), so the rows are locked first,
    in a fixed order. A write that came first is committed and deleted with the chat; one that comes after
    finds the chat gone and is dropped, and the turn stops at its next check (its lease is gone). Without
    the lock, a message committed between collecting the chat's rows and deleting the chat broke the
    deletion (IntegrityError, a 500) and left the chat behind.
    """
    if not _lock_chats(_chat_tree_ids(chat.pk)):
        return
    # A child committed between listing the tree and locking it is in the tree now; none can be added
    # while its parent is locked (the new row's foreign key would wait for the lock).
    _lock_chats(_chat_tree_ids(chat.pk))
    Chat.objects.filter(pk=chat.pk).delete()


def _lock_chats(ids: list[object]) -> list[object]:
    rows = Chat.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    return list(rows.values_list("pk", flat=True))
