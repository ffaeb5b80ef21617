"""Writes and workflows on chats. The turn engine (chats/engine/) builds on these.

Status changes go through chats/transitions.py; the services here say when, and what else changes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import WorkspaceAgent
from agents.services import workspace_agent_for_user
from chatdesk.exceptions import Conflict, ValidationError
from chats.events import publish_child, publish_message, publish_usage
from chats.files import chat_file_store
from chats.models import Chat, ChatFile, ChatMessage, ChatModelConfig, default_approval_policy
from chats.pricing import budget_block, usage_cost
from chats.tasks import turn_task
from chats.tools.computer_use import computer_use
from chats.transitions import ACTIVE, IDLE, RESUMABLE, chat_transition

#: "Not given" for optional arguments where None is a value (a budget of None means no budget).
UNSET: Any = object()

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
    budget_usd: Decimal | None = UNSET,
    approval_policy: str | None = None,
) -> Chat:
    """Create a root chat; with ``message``, store it as the first user message and queue a turn.

    ``budget_usd`` caps what the chat's tree may spend (default CHATDESK_CHAT_BUDGET_USD; None: no cap).
    ``approval_policy`` says which computer actions of the tree wait for a person (chats/approvals.py;
    default CHATDESK_APPROVAL_POLICY).
    """
    config, model_name = model_config_resolve(model=model)
    if workspace_agent is None:
        workspace_agent = workspace_agent_for_user(owner=owner)
    chat = Chat.objects.create(
        owner=owner,
        title=title or (title_from_prompt(message) if message else Chat.DEFAULT_TITLE),
        workspace_agent=workspace_agent,
        model_config=config,
        model=model_name,
        budget_usd=settings.CHATDESK_CHAT_BUDGET_USD if budget_usd is UNSET else budget_usd,
        approval_policy=approval_policy or default_approval_policy(),
    )
    if message:
        chat_send_message(chat=chat, content=message)
        chat.refresh_from_db()
    return chat


@transaction.atomic(savepoint=False)  # a caller's transaction holds the lock: no savepoint needed
def message_append(
    *,
    chat: Chat,
    role: str,
    content: list[dict[str, Any]],
    usage: dict[str, int] | None = None,
    model: str = "",
    context_id: int | None = None,
    cost: Decimal | None = None,
    root: Chat | None = None,
) -> ChatMessage:
    """Store one message on ``chat`` and publish it to the chat's live stream.

    The caller holds the chat's row lock (``select_for_update``), so the chat's messages are numbered in
    the order they commit (history and the stream's cursor rely on it) and ``chat``'s sums are fresh.
    With ``usage`` (a model call's), the message gets its ``cost`` (by default at ``model``'s prices now),
    and the chat's and its root's sums grow (usage_record; ``root``: a child's root, locked by the caller
    with chat_lock_tree_rows, else locked there).
    """
    if usage and cost is None:
        cost = usage_cost(usage, model=model or chat.model, config=chat.model_config)
    message = ChatMessage.objects.create(
        chat=chat,
        role=role,
        content=content,
        usage=usage or {},
        cost_usd=cost or Decimal(0),
        model=model,
        context_id=context_id,
    )
    if usage:
        usage_record(chat=chat, usage=usage, cost=cost or Decimal(0), root=root)
    publish_message(message)
    return message


def _add_usage(totals: dict[str, Any] | None, usage: dict[str, Any]) -> dict[str, int]:
    summed = {k: v for k, v in (totals or {}).items() if isinstance(v, int)}
    for key, value in usage.items():
        if isinstance(value, int) and not isinstance(value, bool):
            summed[key] = summed.get(key, 0) + value
    return summed


def chat_lock_tree_rows(*, chat: Chat) -> tuple[Chat | None, Chat | None]:
    """Lock ``chat``'s row and its root's, in primary-key order (as chat_delete locks a tree), so that
    recording a child's usage (which changes both rows) cannot deadlock with another writer of the tree.

    Return both rows as they are now, locked: ``(chat, root)``, root None for a root chat; None for a row
    that is gone. One query: pass them on to message_append. The chat holds its root (``chat.root``)."""
    rows = {
        row.pk: row
        for row in Chat.objects.select_for_update().filter(pk__in=[chat.pk, chat.root_id]).order_by("pk")
    }
    locked = rows.get(chat.pk)
    root = rows.get(chat.root_id) if chat.root_id is not None and chat.root_id != chat.pk else None
    if locked is not None and root is not None:
        locked.root = root  # its readers (chat_approval_policy) use this fresh row
    return locked, root


@transaction.atomic(savepoint=False)
def usage_record(*, chat: Chat, usage: dict[str, Any], cost: Decimal, root: Chat | None = None) -> None:
    """Add one model call's ``usage`` and ``cost`` to ``chat``'s sums and its root's tree sums.

    ``chat`` is locked and fresh (message_append's caller); a child's root is locked here unless the
    caller passes it locked and fresh as ``root``, so the calls of a whole tree add up (callers that lock
    rows of a tree lock them with chat_lock_tree_rows, in primary-key order). ``chat`` is updated in place;
    viewers get ``usage`` events.
    """
    chat.usage = _add_usage(chat.usage, usage)
    chat.cost_usd = Decimal(chat.cost_usd) + cost
    fields: dict[str, Any] = {"usage": chat.usage, "cost_usd": chat.cost_usd}
    if chat.parent_id is None:
        chat.tree_usage = _add_usage(chat.tree_usage, usage)
        chat.tree_cost_usd = Decimal(chat.tree_cost_usd) + cost
        fields.update(tree_usage=chat.tree_usage, tree_cost_usd=chat.tree_cost_usd)
    else:
        root = root or (
            Chat.objects.select_for_update()
            .only("id", "parent_id", "usage", "cost_usd", "tree_usage", "tree_cost_usd", "budget_usd")
            .get(pk=chat.root_id)
        )
        root.tree_usage = _add_usage(root.tree_usage, usage)
        root.tree_cost_usd = Decimal(root.tree_cost_usd) + cost
        Chat.objects.filter(pk=root.pk).update(tree_usage=root.tree_usage, tree_cost_usd=root.tree_cost_usd)
    Chat.objects.filter(pk=chat.pk).update(**fields)
    publish_usage(chat, root)


@transaction.atomic
def chat_send_message(*, chat: Chat, content: str) -> ChatMessage:
    """Store a user message. Start a turn when the chat is idle; a running turn picks it up after."""
    chat = Chat.objects.select_for_update().get(pk=chat.pk)  # message_append's lock
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


def chat_update(
    *,
    chat: Chat,
    title: str | None = None,
    archived: bool | None = None,
    budget_usd: Decimal | None = UNSET,
    approval_policy: str | None = None,
) -> Chat:
    """Rename, archive, re-budget ``chat`` or change its approval policy. Raise ValidationError for a budget
    or an approval policy on a child chat (it follows its root).

    Raising the budget of a chat paused for its budget does not resume it: ``chat_resume`` does. A new
    approval policy applies to the tree's next actions; approvals already asked for stay pending.
    """
    fields = []
    if title is not None:
        chat.title = title
        fields.append("title")
    if archived is not None:
        chat.archived = archived
        fields.append("archived")
    if budget_usd is not UNSET:
        if not chat.is_root:
            raise ValidationError(
                "Only a root chat has a budget: it covers the whole tree. Set it on the root."
            )
        chat.budget_usd = budget_usd
        fields.append("budget_usd")
    if approval_policy is not None:
        if not chat.is_root:
            raise ValidationError(
                "Only a root chat has an approval policy: its child chats follow it. Set it on the root."
            )
        chat.approval_policy = approval_policy
        fields.append("approval_policy")
    if fields:
        chat.save(update_fields=[*fields, "updated_at"])
        if "budget_usd" in fields:
            publish_usage(chat)
    return chat


#: Why resume cannot lift a pause, by paused_reason (RESUMABLE lists the ones it can).
RESUME_REFUSED: dict[str | None, str] = {
    Chat.PausedReason.TAKEN_OVER: "A person holds this chat's desktop: hand it back to resume the chat.",
    Chat.PausedReason.NEEDS_HELP: "The agent asked a person for help: take control of the desktop, then hand "
    "it back with a note to resume the chat.",
    Chat.PausedReason.AWAITING_APPROVAL: "An action of this chat waits for a person's approval: approve or deny "
    "it to resume the chat.",
}


@transaction.atomic
def chat_resume(*, chat: Chat) -> Chat:
    """Resume a chat paused because it was interrupted or reached its budget, where it stopped.

    An interrupted chat gets its turn queued again, with no new message. A budget pause covers the tree:
    every chat of ``chat``'s tree paused for its budget resumes (a parent that was waiting for its child
    waits again, its deadline moved by the time it was paused). Return the chat as it is now.

    Raise Conflict (409) when the chat is not paused, is paused for a reason resume cannot lift (a person
    must act: RESUME_REFUSED says what), or its budget is still reached.
    """
    chat = Chat.objects.select_for_update().get(pk=chat.pk)
    if chat.status != Chat.Status.PAUSED:
        raise Conflict(f"The chat is not paused (it is {chat.status}): there is nothing to resume.")
    if chat.paused_reason not in RESUMABLE:
        raise Conflict(RESUME_REFUSED.get(chat.paused_reason, "This pause cannot be lifted by resume."))
    if chat.paused_reason == Chat.PausedReason.INTERRUPTED:
        return chat_queue_turn(chat=chat)
    blocked = budget_block(chat)
    if blocked is not None:
        raise Conflict(blocked.replace("Paused: ", "Still paused: ", 1))
    paused = Chat.objects.filter(
        root_id=chat.root_id, status=Chat.Status.PAUSED, paused_reason=Chat.PausedReason.BUDGET
    ).order_by("-created_at")  # children first: a waiting parent then finds them working again
    for member in paused:
        if member.awaiting:
            _resume_waiting(member)
        else:
            chat_queue_turn(chat=member)
    return Chat.objects.get(pk=chat.pk)


def _resume_waiting(chat: Chat) -> None:
    """Put a parent paused while it waited for its child back to waiting, its deadline moved on."""
    awaiting = dict(chat.awaiting or {})
    paused_at = awaiting.pop("paused_at", None)
    try:
        deadline = datetime.fromisoformat(awaiting["deadline"])
        if paused_at:
            deadline += timezone.now() - datetime.fromisoformat(paused_at)
    except (KeyError, TypeError, ValueError):
        deadline = timezone.now()
    awaiting["deadline"] = deadline.isoformat()
    resumed = chat_transition(
        chat_id=chat.pk, to=Chat.Status.PENDING, expect=[Chat.Status.PAUSED], awaiting=awaiting, last_error=""
    )
    if resumed is not None:
        countdown = max(0.0, (deadline - timezone.now()).total_seconds()) + 0.5
        transaction.on_commit(lambda: turn_task.apply_async((str(chat.pk),), countdown=countdown))
        transaction.on_commit(lambda: turn_wake(chat_id=str(chat.pk)))


def chat_pause_for_budget(*, chat_id: Any, reason: str) -> None:
    """Pause, for the budget, the parents waiting on ``chat_id`` (up the tree); they resume with it.

    The chat itself is paused by its turn (turn_end). ``reason`` is the sentence with the amounts.
    """
    child_id = str(chat_id)
    while True:
        parent = Chat.objects.filter(
            children__pk=child_id, status=Chat.Status.PENDING, awaiting__chat_id=child_id
        ).first()
        if parent is None:
            return
        awaiting = {**(parent.awaiting or {}), "paused_at": timezone.now().isoformat()}
        paused = chat_transition(
            chat_id=parent.pk,
            to=Chat.Status.PAUSED,
            expect=[Chat.Status.PENDING],
            reason=Chat.PausedReason.BUDGET,
            where=Q(awaiting__chat_id=child_id),
            awaiting=awaiting,
            last_error=reason,
        )
        if paused is None:
            return
        child_id = str(parent.pk)


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


def chat_file_store_png(
    *,
    chat: Chat,
    png: bytes,
    width: int | None,
    height: int | None,
    file_id: UUID | None = None,
    chat_locked: bool = False,
) -> ChatFile | None:
    """Store a screenshot of ``chat`` in Django storage and return its ChatFile row (None: the chat is gone;
    ``file_id`` and ``chat_locked``: see chat_file_store)."""
    return chat_file_store(
        chat_id=chat.pk,
        content=ContentFile(png),
        content_type="image/png",
        size=len(png),
        width=width,
        height=height,
        file_id=file_id,
        chat_locked=chat_locked,
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
