"""Writes and workflows on chats. The turn engine (chats/engine.py) builds on these."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from agents.models import WorkspaceAgent
from agents.services import workspace_agent_for_user
from chatdesk.exceptions import ValidationError
from chats.models import Chat, ChatMessage, ChatModelConfig

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
    from chats.events import publish_message

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
    if chat.status in (Chat.Status.WAITING, Chat.Status.PAUSED, Chat.Status.COMPLETED, Chat.Status.ERROR):
        chat_queue_turn(chat=chat)
    return message


def chat_queue_turn(*, chat: Chat) -> None:
    """Mark ``chat`` pending and enqueue its turn once the transaction commits."""
    from chats.events import publish_status

    chat.status = Chat.Status.PENDING
    chat.last_error = ""
    chat.awaiting = None
    chat.lease_recoveries = 0  # a fresh turn gets a fresh budget of lease recoveries (chats/engine/lease.py)
    chat.save(update_fields=["status", "last_error", "awaiting", "lease_recoveries", "updated_at"])
    publish_status(chat)
    # Robust: the chat is `pending` in the database whatever the broker says; if this enqueue fails (Redis
    # went away after the request checked it), the sweep queues the turn once the broker is back.
    transaction.on_commit(lambda: turn_enqueue(chat_id=str(chat.pk)), robust=True)


def turn_enqueue(*, chat_id: str) -> None:
    from chats.tasks import run_turn

    run_turn.delay(chat_id)


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


@transaction.atomic
def chat_interrupt(*, chat: Chat) -> Chat:
    """Stop ``chat``'s turn at the next safe point; the chat becomes `paused`.

    A running turn sees the status change at its next check and stops, keeping what it produced; a
    queued turn finds the chat no longer `pending` and does nothing. A parent suspended in wait_agent
    stops waiting (its next turn answers the wait with the child's state then).
    """
    from chats.events import publish_status

    chat = Chat.objects.select_for_update().get(pk=chat.pk)
    if chat.status in (Chat.Status.PENDING, Chat.Status.RUNNING):
        chat.status = Chat.Status.PAUSED
        chat.awaiting = None
        chat.save(update_fields=["status", "awaiting", "updated_at"])
        publish_status(chat)
        chat_notify_parent(chat=chat)
    return chat


@transaction.atomic
def chat_spawn_child(*, parent: Chat, prompt: str, title: str | None = None) -> Chat:
    """Create a computer-use child of ``parent`` for the task ``prompt`` and queue its first turn.

    The child has the parent's owner and workspace agent, the computer-use model whatever the parent
    uses, the computer-use system prompt plus the task, and the task as its first user message.
    """
    from chats.events import publish_child
    from desktop.computer import computer_use_system_prompt

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
        system_prompt=computer_use_system_prompt(prompt),
    )
    message_append(chat=child, role=ChatMessage.Role.USER, content=[text_part(prompt)])
    chat_queue_turn(chat=child)
    publish_child(child)
    return child


@transaction.atomic
def chat_close(*, chat: Chat) -> Chat:
    """Mark a child chat `completed` for good; a running turn stops at its next safe point."""
    from chats.events import publish_status

    chat = Chat.objects.select_for_update().get(pk=chat.pk)
    if chat.status != Chat.Status.COMPLETED:
        chat.status = Chat.Status.COMPLETED
        chat.awaiting = None
        chat.save(update_fields=["status", "awaiting", "updated_at"])
        publish_status(chat)
    return chat


def chat_notify_parent(*, chat: Chat) -> None:
    """Wake ``chat``'s parent when it is suspended in wait_agent on ``chat`` (once this transaction commits).

    Waking is only queuing the parent's turn: the turn's claim decides, atomically, whether the wait is
    over, so a duplicate or early wake-up is harmless.
    """
    if chat.parent_id is None or chat.status in (Chat.Status.PENDING, Chat.Status.RUNNING):
        return
    parent_id = str(chat.parent_id)
    waiting = Chat.objects.filter(pk=parent_id, status=Chat.Status.PENDING, awaiting__chat_id=str(chat.pk))
    if waiting.exists():
        transaction.on_commit(lambda: turn_enqueue(chat_id=parent_id), robust=True)
