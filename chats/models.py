from __future__ import annotations

import contextlib
import logging
import os
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.db.models.signals import post_delete
from django.dispatch import receiver

from chatdesk.crypto import decrypt_secret, encrypt_secret


class ChatProvider(models.Model):
    """Credentials for a model provider. The API key is encrypted at rest and write-only."""

    class Provider(models.TextChoices):
        ANTHROPIC = "anthropic", "Anthropic"

    provider = models.CharField(max_length=32, choices=Provider.choices, unique=True)
    display_name = models.CharField(max_length=100, blank=True)
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_last4 = models.CharField(max_length=4, blank=True, editable=False)
    base_url = models.URLField(blank=True, help_text="Leave empty for the provider's public API.")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider"]

    def __str__(self) -> str:
        return self.display_name or self.get_provider_display()

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)

    def set_api_key(self, raw: str) -> None:
        raw = raw.strip()
        self.api_key_encrypted = encrypt_secret(raw) if raw else ""
        self.api_key_last4 = raw[-4:] if raw else ""

    def get_api_key(self) -> str:
        return decrypt_secret(self.api_key_encrypted) if self.api_key_encrypted else ""


def _price_field(what: str) -> models.DecimalField:
    return models.DecimalField(
        max_digits=10,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text=f"USD per million {what}. Empty: counted at the most expensive known price.",
    )


def cost_field() -> models.DecimalField:
    """A cost in USD: eight decimals, so a single token at the cheapest price still counts."""
    return models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))


class ChatModelConfig(models.Model):
    provider = models.CharField(
        max_length=32, choices=ChatProvider.Provider.choices, default=ChatProvider.Provider.ANTHROPIC
    )
    model = models.CharField(max_length=200, help_text="The provider's model name, e.g. claude-sonnet-5-5.")
    display_name = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    context_limit = models.PositiveIntegerField(default=200_000)
    # Prices in USD per million tokens (chats/pricing.py). Defaults for known models ship as data (a data
    # migration); a model without prices is counted at the most expensive known price, never as free.
    input_price = _price_field("input tokens")
    output_price = _price_field("output tokens")
    cache_write_price = _price_field("tokens written to the prompt cache (5-minute entries)")
    cache_read_price = _price_field("tokens read from the prompt cache")
    options = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"max_output_tokens": 16000, "computer_tool_version": "computer_20251124"}',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_default", "model"]
        verbose_name = "model config"
        constraints = [
            models.UniqueConstraint(fields=["provider", "model"], name="model_config_unique_model"),
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="model_config_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.model


class ChatPausedReason(models.TextChoices):
    """Why a chat is `paused` (``Chat.paused_reason``, SPEC §8). Moves are in chats/transitions.py.

    Adding a reason: one line here, then ``makemigrations chats`` (the check constraint lists the values).
    """

    INTERRUPTED = "interrupted"  # a person interrupted the turn
    TAKEN_OVER = "taken_over"  # a person took control of the chat's desktop
    NEEDS_HELP = "needs_help"  # the model asked a person for help
    AWAITING_APPROVAL = "awaiting_approval"  # a risky action waits for a person's decision
    BUDGET = "budget"  # the chat reached its cost budget


class ApprovalPolicy(models.TextChoices):
    """Which computer actions of a chat's tree wait for a person's approval (SPEC §8; chats/approvals.py)."""

    OFF = "off"  # none
    RISKY = "risky"  # type, key, hold_key: the members the SDK's computer toolset asks a confirmation for
    ALL = "all"  # every action but screenshot, zoom, cursor_position, mouse_move and wait


def default_approval_policy() -> str:
    """The policy of a new root chat that names none: CHATDESK_APPROVAL_POLICY."""
    return str(getattr(settings, "CHATDESK_APPROVAL_POLICY", ApprovalPolicy.OFF))


class Chat(models.Model):
    class Status(models.TextChoices):
        WAITING = "waiting"  # idle, awaiting the user
        PENDING = "pending"  # a turn is queued
        RUNNING = "running"  # a worker is executing it
        PAUSED = "paused"  # stopped until someone acts; paused_reason says why
        COMPLETED = "completed"  # a child chat finished its task
        ERROR = "error"  # see last_error

    PausedReason = ChatPausedReason
    ApprovalPolicy = ApprovalPolicy

    class Mode(models.TextChoices):
        COMPUTER_USE = "computer_use"

    DEFAULT_TITLE = "New Chat"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats")
    title = models.CharField(max_length=200, default=DEFAULT_TITLE)
    # Changed only through chats/transitions.py, which holds the allowed moves.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    # Set exactly while the chat is paused (a check constraint); null otherwise.
    paused_reason = models.CharField(  # noqa: DJ001 (null, not "": the API says "paused_reason": null)
        max_length=32, choices=ChatPausedReason.choices, null=True, blank=True
    )
    # SPEC: null for a normal chat (not ""), so the API says `"mode": null`.
    mode = models.CharField(max_length=16, choices=Mode.choices, null=True, blank=True)  # noqa: DJ001
    # A root chat's root is itself; a child's root is its parent's root (enforced in save()).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    root = models.ForeignKey("self", on_delete=models.CASCADE, related_name="descendants")
    workspace_agent = models.ForeignKey(
        "agents.WorkspaceAgent", null=True, blank=True, on_delete=models.SET_NULL, related_name="chats"
    )
    model_config = models.ForeignKey(
        ChatModelConfig, null=True, blank=True, on_delete=models.SET_NULL, related_name="chats"
    )
    model = models.CharField(max_length=200, blank=True, help_text="The model name in use.")
    system_prompt = models.TextField(blank=True)
    last_error = models.TextField(blank=True)
    # What the model asked a person to do (request_human_help); kept after the chat goes on, for the record.
    help_reason = models.TextField(blank=True)
    # Root chats: which actions wait for a person's approval; children follow their root's.
    approval_policy = models.CharField(
        max_length=8, choices=ApprovalPolicy.choices, default=default_approval_policy
    )
    # Token usage summed over the chat's messages (input, output, cache read/creation), and its cost.
    usage = models.JSONField(default=dict, blank=True)
    cost_usd = cost_field()
    # Root chats: the same summed over the whole tree (the root and its descendants), and the budget the
    # tree's cost may reach before its next model call waits for a person (null: no budget).
    tree_usage = models.JSONField(default=dict, blank=True)
    tree_cost_usd = cost_field()
    budget_usd = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal(0))]
    )
    # Set while a compaction of this chat's history runs (chats/engine/compaction.py), so two never overlap.
    compacting_since = models.DateTimeField(null=True, blank=True)
    archived = models.BooleanField(default=False)
    # Turn engine lease: who runs the current turn and when it last proved it is alive.
    worker_id = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # How many times the sweep re-queued the current turn after its worker died (reset when a turn ends).
    lease_recoveries = models.PositiveSmallIntegerField(default=0)
    # A parent suspended in wait_agent: {"tool_use_id", "chat_id", "deadline" (ISO 8601)}. No worker is
    # held while it waits; the child's end (or the deadline) queues the parent's turn again.
    awaiting = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "archived", "-updated_at"], name="chat_owner_list"),
            models.Index(fields=["status", "heartbeat_at"], name="chat_lease"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(Q(parent__isnull=True) & Q(root=F("id")))
                | (Q(parent__isnull=False) & ~Q(root=F("id"))),
                name="chat_root_is_self_iff_no_parent",
            ),
            models.CheckConstraint(
                condition=Q(mode__isnull=True) | Q(mode="computer_use"), name="chat_mode_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["waiting", "pending", "running", "paused", "completed", "error"]),
                name="chat_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(approval_policy__in=["off", "risky", "all"]), name="chat_approval_policy_valid"
            ),
            models.CheckConstraint(
                # IS NOT NULL spelled out: a CHECK passes when its condition is NULL (NULL IN (...)).
                condition=(
                    Q(status="paused")
                    & Q(paused_reason__isnull=False)
                    & Q(paused_reason__in=ChatPausedReason.values)
                )
                | (~Q(status="paused") & Q(paused_reason__isnull=True)),
                name="chat_paused_reason_iff_paused",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: object, **kwargs: object) -> None:
        if self.parent_id is None:
            self.root_id = self.id
        else:
            parent_root = Chat.objects.filter(pk=self.parent_id).values_list("root_id", flat=True).first()
            if parent_root is None:
                raise Chat.DoesNotExist(f"Parent chat {self.parent_id} does not exist.")
            self.root_id = parent_root
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def is_root(self) -> bool:
        return self.parent_id is None

    @property
    def is_computer_use(self) -> bool:
        return self.mode == self.Mode.COMPUTER_USE


FILE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "video/webm": ".webm", "video/mp4": ".mp4"}


def chat_file_path(instance: ChatFile, filename: str) -> str:
    return f"{chat_storage_dir(instance.chat_id)}/{instance.id}{FILE_SUFFIXES.get(instance.content_type, '')}"


class ChatFile(models.Model):
    """A file attached to a chat: screenshots, images, recordings. Bytes live in Django storage, not in JSON.

    Deleting the row deletes the bytes (chats/files.py). A file older than CHATDESK_FILE_RETENTION_DAYS loses
    its bytes but keeps its row, with ``expired_at`` set: the chat still says a file was there.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="files")
    file = models.FileField(upload_to=chat_file_path)
    content_type = models.CharField(max_length=100, default="image/png")
    size = models.PositiveIntegerField(default=0)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.content_type} {self.id}"


class Recording(models.Model):
    """A video of a chat's desktop (SPEC §9): recorded by the workspace agent while a computer-use chat works
    (``model``) or a person holds the desktop (``person``), then stored as a ChatFile with a thumbnail.

    ``started_at`` is the wall-clock time of the video's first frame (second ``t`` of the video is
    ``started_at + t``), so an action's start time gives its offset into the video (``chats.timeline``).
    ``complete`` is False when the recorder stopped early (it crashed, the desktop died, a size cap); ``note``
    then says why. ``state``: ``recording`` (the agent records), ``stored`` (the file is here), ``failed``
    (nothing usable came back).
    """

    class Kind(models.TextChoices):
        MODEL = "model"
        PERSON = "person"

    class State(models.TextChoices):
        RECORDING = "recording"
        STORED = "stored"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="recordings")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RECORDING)
    complete = models.BooleanField(default=True)
    note = models.CharField(max_length=300, blank=True)
    workspace_agent = models.ForeignKey(
        "agents.WorkspaceAgent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    agent_recording_id = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    file = models.ForeignKey(ChatFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    thumbnail = models.ForeignKey(
        ChatFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["started_at"]
        indexes = [models.Index(fields=["chat", "started_at"], name="recording_chat_time")]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["model", "person"]), name="recording_kind_valid"),
            models.CheckConstraint(
                condition=Q(state__in=["recording", "stored", "failed"]), name="recording_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} recording {self.id}"


class ChatMessage(models.Model):
    """One message. ``id`` is monotonic and serves as the stream cursor.

    ``content`` is a list of parts: {"type": "text", "text"}, {"type": "tool_use", "id", "name", "input"},
    {"type": "tool_result", "tool_use_id", "content": [parts], "is_error"}, {"type": "image", "file_id"}.
    Images reference ChatFile rows; no base64 is stored in messages.
    """

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"
        SYSTEM = "system"

    id = models.BigAutoField(primary_key=True)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.JSONField(default=list)
    usage = models.JSONField(default=dict, blank=True)
    # What the model call that wrote this message cost, at the prices when it was made.
    cost_usd = cost_field()
    model = models.CharField(max_length=200, blank=True)
    # Assistant messages: the id of the newest message the model had seen when it wrote this one. A user
    # message stored while the model was answering has a smaller id than the answer but was not part of
    # its context; the request builder orders history by what the model saw (chats/engine/history.py).
    context_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["chat", "id"], name="message_chat_cursor"),
            models.Index(fields=["created_at"], name="message_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(role__in=["user", "assistant", "tool", "system"]), name="message_role_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.id}"

    @property
    def text(self) -> str:
        return "".join(
            p.get("text", "") for p in self.content if isinstance(p, dict) and p.get("type") == "text"
        )


class ToolCall(models.Model):
    """The journal of one tool_use that acts on the world (SPEC §8 "Exactly once"; chats/engine/journal.py).

    A row is written, and committed, before the tool acts (``started``) and gets the result once it is
    known (``done``), whatever happened to the chat meanwhile: a pause, an interrupt or a take-over during
    the action no longer loses its result, and resuming the chat answers the tool_use from here instead
    of running it again. A row still ``started`` when a later turn looks at it means the worker died
    mid-action: it becomes ``unknown`` and the model is told so (and asked for a screenshot).
    """

    class State(models.TextChoices):
        STARTED = "started"
        DONE = "done"
        UNKNOWN = "unknown"

    id = models.BigAutoField(primary_key=True)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="tool_calls")
    tool_use_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTED)
    # The stored-shape tool_result content parts, and whether they are an error.
    content = models.JSONField(default=list, blank=True)
    is_error = models.BooleanField(default=False)
    worker_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["chat", "tool_use_id"], name="tool_call_once"),
            models.CheckConstraint(
                condition=Q(state__in=["started", "done", "unknown"]), name="tool_call_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.tool_use_id} ({self.state})"


class Approval(models.Model):
    """A computer action that waits for a person's decision (SPEC §8 "Approvals"; chats/approvals.py).

    Created when a gated action suspends its chat (``awaiting_approval``), with a screenshot whose target
    point is marked. Decided once: ``pending`` -> ``approved`` | ``denied`` (a person), or ``expired`` (no
    decision within CHATDESK_APPROVAL_TIMEOUT_SECONDS; counts as denied). The chat's turn resumes then:
    approved runs the action exactly once, anything else answers the model with an error and the note.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"

    class Decision(models.TextChoices):
        APPROVE = "approve"
        DENY = "deny"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="approvals")
    root_chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="tree_approvals")
    tool_use_id = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    input = models.JSONField(default=dict, blank=True)
    screenshot = models.ForeignKey(
        ChatFile, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "created_at"], name="approval_state_time")]
        constraints = [
            models.UniqueConstraint(fields=["chat", "tool_use_id"], name="approval_once"),
            models.CheckConstraint(
                condition=Q(state__in=["pending", "approved", "denied", "expired"]),
                name="approval_state_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} ({self.state})"


class UserBudget(models.Model):
    """A person's monthly spending limit on model calls (all their chats; calendar months, UTC)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget")
    monthly_limit_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per calendar month (UTC). Empty: no limit. Once reached, the user's chats pause "
        "before their next model call until the limit is raised or the month ends.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "user budget"

    def __str__(self) -> str:
        return f"{self.user}: {self.monthly_limit_usd if self.monthly_limit_usd is not None else 'no limit'}"


class ChatEvent(models.Model):
    """A live event kept in the database, for the embedded default (no Redis): the stream consumer tails
    this table. With Redis, events go through the channel layer and this table stays empty."""

    id = models.BigAutoField(primary_key=True)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["chat", "id"], name="event_chat_cursor")]

    def __str__(self) -> str:
        return f"{self.payload.get('type')} #{self.id}"


class AuditEvent(models.Model):
    """Who did what on a chat, kept for good (SPEC §8 "Audit"; listed by ``GET /chats/{id}/events``).

    ``kind`` says what happened: a model ``action`` on the desktop, a ``control`` change (a person took or
    handed back the desktop), a ``help_requested`` by the model, an ``approval`` created or decided. ``at``
    is when it happened (an action's start: recordings' timelines are built from it); ``data`` holds the
    kind's details (see ``chats.audit``). Unlike ChatEvent (the embedded live-event tail, pruned after
    minutes), rows stay as long as their chat.
    """

    class Kind(models.TextChoices):
        ACTION = "action"
        CONTROL = "control"
        HELP_REQUESTED = "help_requested"
        APPROVAL = "approval"

    class Actor(models.TextChoices):
        MODEL = "model"
        PERSON = "person"
        SYSTEM = "system"

    id = models.BigAutoField(primary_key=True)
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="audit_events")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    actor = models.CharField(max_length=16, choices=Actor.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["chat", "id"], name="audit_chat_cursor")]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["action", "control", "help_requested", "approval"]),
                name="audit_kind_valid",
            ),
            models.CheckConstraint(
                condition=Q(actor__in=["model", "person", "system"]), name="audit_actor_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor} #{self.id}"


# --- a file's bytes go with its row ----------------------------------------------------------------------

logger = logging.getLogger(__name__)


def chat_storage_dir(chat_id: object) -> str:
    """Return the storage folder of a chat's files (``chats/<id>``)."""
    return f"chats/{chat_id}"


def chat_file_remove(name: str) -> None:
    """Delete one stored file's bytes (a missing file is fine), and its chat's folder once it is empty
    (on local storage; saving a file makes the folder again)."""
    try:
        default_storage.delete(name)
    except OSError:
        logger.warning("Could not delete the stored file %s.", name, exc_info=True)
    with contextlib.suppress(NotImplementedError, OSError):
        os.rmdir(os.path.dirname(default_storage.path(name)))


@receiver(post_delete, sender=ChatFile, dispatch_uid="chats.models.delete_file_bytes")
def _delete_file_bytes(sender: type[ChatFile], instance: ChatFile, **kwargs: Any) -> None:
    """Remove a deleted file's bytes once the deletion commits (a rolled-back deletion keeps them).

    Cascades (a chat deleted with its files) send this too, so a deleted chat leaves nothing on disk.
    """
    name = instance.file.name
    if name:
        transaction.on_commit(lambda: chat_file_remove(name))
