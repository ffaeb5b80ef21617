from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import WorkspaceAgent
from chatdesk.serializers import StrictBooleanField, StrictCharField, StrictSerializer
from chats.models import Approval, AuditEvent, Chat, ChatMessage, Recording
from chats.selectors import chat_approval_policy

# Message ids are a bigint cursor. ASCII digits only: str.isdigit() also accepts "²" and "٣", which int()
# then rejects or reads differently. A cursor beyond any id is simply past the end (clamped to the bigint
# range the database can compare with).
CURSOR_PATTERN = re.compile(r"[0-9]{1,64}")
CURSOR_MAX = 2**63 - 1


def parse_cursor(raw: str) -> int | None:
    """Return the message-id cursor ``raw`` spells (a non-negative number, clamped), else None."""
    raw = raw.strip()
    if not CURSOR_PATTERN.fullmatch(raw):
        return None
    return min(int(raw), CURSOR_MAX)


def file_url(chat_id: object, file_id: object) -> str:
    return reverse("chat-file", kwargs={"pk": chat_id, "file_id": file_id})


def _part_to_json(chat_id: object, part: Any) -> Any:
    """Return an API-shaped content part: image parts gain their URL, tool results recurse."""
    if not isinstance(part, dict):
        return part
    if part.get("type") == "image" and part.get("file_id"):
        return {**part, "url": file_url(chat_id, part["file_id"])}
    if part.get("type") == "tool_result" and isinstance(part.get("content"), list):
        return {**part, "content": [_part_to_json(chat_id, p) for p in part["content"]]}
    return part


def message_to_json(message: ChatMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "chat_id": str(message.chat_id),
        "role": message.role,
        "content": [_part_to_json(message.chat_id, p) for p in message.content],
        "usage": message.usage,
        "cost_usd": _usd(message.cost_usd),
        "model": message.model,
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
    }


def _usd(value: Decimal | None, places: int = 8) -> str | None:
    """Return a USD amount as DRF's DecimalField does: a string with fixed decimals, never an exponent."""
    return None if value is None else f"{Decimal(value):.{places}f}"


def usage_to_json(chat: Chat) -> dict[str, Any]:
    """Return a chat's usage and cost fields (the tree's sums and the budget only for a root chat)."""
    root = chat.parent_id is None
    return {
        "usage": chat.usage or {},
        "cost_usd": _usd(chat.cost_usd),
        "tree_usage": (chat.tree_usage or {}) if root else None,
        "tree_cost_usd": _usd(chat.tree_cost_usd) if root else None,
        "budget_usd": _usd(chat.budget_usd, 4) if root else None,
    }


_COST = serializers.DecimalField(max_digits=16, decimal_places=8, read_only=True)
_ROOT_COST = serializers.DecimalField(
    max_digits=16,
    decimal_places=8,
    read_only=True,
    allow_null=True,
    help_text="Root chats only: null for children.",
)
_BUDGET = serializers.DecimalField(
    max_digits=12,
    decimal_places=4,
    read_only=True,
    allow_null=True,
    help_text="Root chats only: the budget of the tree in USD; null: no budget (and for children).",
)


def audit_event_to_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "chat_id": str(event.chat_id),
        "kind": event.kind,
        "actor": event.actor,
        "user": event.user.get_username() if event.user is not None else None,
        "data": event.data,
        "at": event.at.isoformat().replace("+00:00", "Z"),
    }


class AuditEventSerializer(serializers.Serializer):
    """Read shape of an audit event (documentation only; audit_event_to_json produces it)."""

    id = serializers.IntegerField()
    chat_id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=AuditEvent.Kind.choices)
    actor = serializers.ChoiceField(choices=AuditEvent.Actor.choices)
    user = serializers.CharField(allow_null=True, help_text="The person's username, for a person's event.")
    data = serializers.DictField(help_text="What happened, by kind (see SPEC §8).")  # type: ignore[assignment]
    at = serializers.DateTimeField(help_text="When it happened (an action's start).")

    def to_representation(self, instance: AuditEvent) -> dict[str, Any]:
        return audit_event_to_json(instance)


class RecordingSerializer(serializers.Serializer):
    """Read shape of a recording (documentation only; chats.timeline.recording_to_json produces it)."""

    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=Recording.Kind.choices, help_text="Who worked on the desktop.")
    state = serializers.ChoiceField(choices=Recording.State.choices)
    complete = serializers.BooleanField(help_text="False when the recorder stopped early (see `note`).")
    note = serializers.CharField()
    started_at = serializers.DateTimeField(help_text="When the video's first frame was taken.")
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)
    content_type = serializers.CharField(allow_null=True, help_text="video/webm")
    url = serializers.CharField(allow_null=True, help_text="The video; answers HTTP Range requests.")
    thumbnail_url = serializers.CharField(
        allow_null=True, help_text="A PNG of the screen as the recording ended."
    )
    expired = serializers.BooleanField(
        help_text="The file passed CHATDESK_FILE_RETENTION_DAYS and was removed."
    )


class TimelineEntrySerializer(serializers.Serializer):
    """Read shape of a timeline entry (documentation only; chats.timeline.chat_timeline produces it)."""

    message_id = serializers.IntegerField(allow_null=True, help_text="The assistant message of the action.")
    tool_use_id = serializers.CharField(allow_null=True)
    recording_id = serializers.UUIDField(allow_null=True, help_text="The recording the action happened in.")
    t = serializers.FloatField(allow_null=True, help_text="Seconds into that recording.")
    at = serializers.DateTimeField(help_text="When the action started.")
    action = serializers.CharField(help_text="The computer action, or takeover / handback.")
    coordinate = serializers.ListField(
        child=serializers.IntegerField(),
        allow_null=True,
        help_text="Native pixels [x, y], when there is one.",
    )
    by = serializers.ChoiceField(
        choices=Recording.Kind.choices, help_text="Who acted: the model or a person."
    )


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def approval_to_json(approval: Approval) -> dict[str, Any]:
    """Return an approval's API shape (select_related ``screenshot`` and ``decided_by`` when listing)."""
    screenshot = approval.screenshot
    return {
        "id": str(approval.pk),
        "chat_id": str(approval.chat_id),
        "root_chat_id": str(approval.root_chat_id),
        "action": approval.action,
        "input": approval.input,
        "screenshot": file_url(screenshot.chat_id, screenshot.pk) if screenshot is not None else None,
        "state": approval.state,
        "decided_by": approval.decided_by.get_username() if approval.decided_by is not None else None,
        "note": approval.note,
        "created_at": _iso(approval.created_at),
        "decided_at": _iso(approval.decided_at),
    }


class ApprovalSerializer(serializers.Serializer):
    """Read shape of an approval (documentation only; approval_to_json produces it)."""

    id = serializers.UUIDField()
    chat_id = serializers.UUIDField(help_text="The chat whose action waits.")
    root_chat_id = serializers.UUIDField(help_text="The root of that chat's tree.")
    action = serializers.CharField(help_text="The computer action, e.g. `type`.")
    input = serializers.DictField(help_text="The action's input, as the model sent it.")
    screenshot = serializers.CharField(
        allow_null=True, help_text="The screen when the action was asked for, its target point marked."
    )
    state = serializers.ChoiceField(choices=Approval.State.choices)
    decided_by = serializers.CharField(allow_null=True, help_text="Who decided (username); null otherwise.")
    note = serializers.CharField(help_text="The decider's note for the model (or why it expired).")
    created_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: Approval) -> dict[str, Any]:
        return approval_to_json(instance)


APPROVAL_NOTE_MAX = 2000


class ApprovalDecisionSerializer(StrictSerializer):
    decision = serializers.ChoiceField(choices=Approval.Decision.choices)
    note = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=APPROVAL_NOTE_MAX,
        default="",
        help_text="For the model: why, or what to do instead (a denial's note reaches it with the error).",
    )


_POLICY_HELP = (
    "Which computer actions wait for a person's approval: `off`, `risky` (type, key, hold_key) or `all` "
    "(every action but screenshot, zoom, cursor_position, mouse_move and wait). Root chats only: a child "
    "follows its root's."
)


class ChatSerializer(serializers.ModelSerializer):
    parent_chat_id = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True)
    root_chat_id = serializers.UUIDField(source="root_id", read_only=True)
    workspace_agent = serializers.UUIDField(source="workspace_agent_id", read_only=True, allow_null=True)
    cost_usd = serializers.DecimalField(
        max_digits=16, decimal_places=8, read_only=True, help_text="What this chat's model calls cost, USD."
    )
    tree_usage = serializers.SerializerMethodField()
    tree_cost_usd = serializers.SerializerMethodField(
        help_text="Root chats: what the whole tree (this chat and its descendants) cost, USD."
    )
    budget_usd = serializers.SerializerMethodField()
    approval_policy = serializers.SerializerMethodField(
        help_text="The policy the chat follows: a root's own, a child's root's."
    )

    @extend_schema_field(serializers.ChoiceField(choices=Chat.ApprovalPolicy.choices))
    def get_approval_policy(self, chat: Chat) -> str:
        return chat_approval_policy(chat)

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField(), allow_null=True))
    def get_tree_usage(self, chat: Chat) -> dict[str, Any] | None:
        return usage_to_json(chat)["tree_usage"]

    @extend_schema_field(_ROOT_COST)
    def get_tree_cost_usd(self, chat: Chat) -> str | None:
        return usage_to_json(chat)["tree_cost_usd"]

    @extend_schema_field(_BUDGET)
    def get_budget_usd(self, chat: Chat) -> str | None:
        return usage_to_json(chat)["budget_usd"]

    class Meta:
        model = Chat
        fields = [
            "id",
            "title",
            "status",
            "paused_reason",
            "mode",
            "parent_chat_id",
            "root_chat_id",
            "workspace_agent",
            "model",
            "last_error",
            "archived",
            "usage",
            "cost_usd",
            "tree_usage",
            "tree_cost_usd",
            "budget_usd",
            "approval_policy",
            "help_reason",
            "awaiting",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


@functools.cache
def _chat_serializer() -> ChatSerializer:
    return ChatSerializer()


def chat_to_json(chat: Chat) -> dict[str, Any]:
    """Return ``chat`` as the API shows it (ChatSerializer), for live events: one serializer instance is
    built once and reused (it keeps no state between calls), since building a ModelSerializer's fields
    costs more than using them."""
    return dict(_chat_serializer().to_representation(chat))


class ChatCreateSerializer(StrictSerializer):
    message = StrictCharField(required=False, max_length=100_000, trim_whitespace=False)
    title = StrictCharField(required=False, max_length=200)
    workspace_agent = serializers.PrimaryKeyRelatedField(
        queryset=WorkspaceAgent.objects.none(), required=False, allow_null=True
    )
    model = StrictCharField(required=False, max_length=200)
    budget_usd = serializers.DecimalField(
        required=False,
        allow_null=True,
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        help_text="The tree's budget in USD (default CHATDESK_CHAT_BUDGET_USD); null: no budget.",
    )
    approval_policy = serializers.ChoiceField(
        required=False,
        choices=Chat.ApprovalPolicy.choices,
        help_text=f"{_POLICY_HELP} Default: CHATDESK_APPROVAL_POLICY.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            field = self.fields["workspace_agent"]
            field.queryset = WorkspaceAgent.objects.filter(owner=request.user)  # type: ignore[attr-defined]

    def validate_message(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class ChatUpdateSerializer(StrictSerializer):
    title = StrictCharField(required=False, max_length=200)
    archived = StrictBooleanField(required=False)
    budget_usd = serializers.DecimalField(
        required=False,
        allow_null=True,
        max_digits=12,
        decimal_places=4,
        min_value=Decimal(0),
        help_text="Root chats only: the tree's budget in USD; null: no budget.",
    )
    approval_policy = serializers.ChoiceField(
        required=False, choices=Chat.ApprovalPolicy.choices, help_text=_POLICY_HELP
    )


class MessageSerializer(serializers.Serializer):
    """Read shape of a message (documentation only; message_to_json produces it)."""

    id = serializers.IntegerField()
    chat_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=ChatMessage.Role.choices)
    content = serializers.ListField(child=serializers.DictField())
    usage = serializers.DictField()
    cost_usd = _COST
    model = serializers.CharField()
    created_at = serializers.DateTimeField()

    def to_representation(self, instance: ChatMessage) -> dict[str, Any]:
        return message_to_json(instance)


class MessageCreateSerializer(StrictSerializer):
    content = StrictCharField(max_length=100_000, trim_whitespace=False)

    def validate_content(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class QuerySerializer(serializers.Serializer):
    """Query parameters: a parameter given empty (``?parent=``) is an error, not silently left out."""

    def to_internal_value(self, data: Any) -> Any:
        names = [name for name, _field in self.fields.items()]
        empty = sorted(name for name in names if name in data and str(data.get(name)).strip() == "")
        if empty:
            raise serializers.ValidationError({name: ["This parameter may not be empty."] for name in empty})
        return super().to_internal_value(data)


class CursorField(serializers.IntegerField):
    default_error_messages = {"invalid": "Must be a message id: a whole number, 0 or more."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=0, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        value = parse_cursor(str(data))
        if value is None:
            self.fail("invalid")
        return value


class MessageListQuerySerializer(QuerySerializer):
    after_id = CursorField(required=False, default=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=1000)


class ApprovalListQuerySerializer(QuerySerializer):
    state = serializers.ChoiceField(
        required=False, choices=Approval.State.choices, help_text="Only the approvals in this state."
    )
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=200)


class ChatListQuerySerializer(QuerySerializer):
    # Declared fields are popped off the class, so this does not shadow Field.parent at run time.
    parent = serializers.UUIDField(required=False)  # type: ignore[assignment]
    archived = serializers.BooleanField(required=False, default=False)
