"""Live chat events: the one way they leave a worker (or a web process) for stream consumers.

With Redis (REDIS_URL), events go through the channel layer (channels_redis) to the group of the chat.
In the embedded default there is no cross-process channel layer, so events are rows of ChatEvent that
the stream consumer tails. Either way an event is sent only once the transaction that produced it has
committed, so a consumer never sees a message it cannot read back from the database.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chats.models import Chat, ChatEvent, ChatMessage
from chats.serializers import ChatSerializer, message_to_json


class MessageEvent(TypedDict):
    type: Literal["message"]
    message: dict[str, Any]


class MessagePartEvent(TypedDict):
    type: Literal["message_part"]
    part: dict[str, Any]  # {"index": int, "type": "text"|"tool_input"|"reset", "delta": str}


class ToolOutputEvent(TypedDict):
    """Output of a running tool (a ``bash`` command) as it is printed; the tool_result follows."""

    type: Literal["tool_output"]
    tool_use_id: str
    output: str


class StatusEvent(TypedDict):
    type: Literal["status"]
    status: str
    paused_reason: str | None  # why the chat is paused (SPEC §8); null unless status is paused
    last_error: str


class ChildEvent(TypedDict):
    type: Literal["child"]
    chat: dict[str, Any]


class AuditLiveEvent(TypedDict):
    """An audit event sent live: ``type`` is its kind (``control``, ``help_requested``, ``approval``, ``action``)."""

    type: str
    event: dict[str, Any]


Event = MessageEvent | MessagePartEvent | ToolOutputEvent | StatusEvent | ChildEvent | AuditLiveEvent

LAYER_MESSAGE_TYPE = "chat.event"


def group_name(chat_id: object) -> str:
    return f"chat.{chat_id}"


def uses_channel_layer() -> bool:
    return bool(settings.REDIS_URL)


def publish(chat_id: object, event: Event) -> None:
    """Send ``event`` to everyone streaming chat ``chat_id``, once the current transaction commits."""

    def send() -> None:
        if uses_channel_layer():
            layer = get_channel_layer()
            if layer is not None:
                async_to_sync(layer.group_send)(
                    group_name(chat_id), {"type": LAYER_MESSAGE_TYPE, "event": event}
                )
        else:
            ChatEvent.objects.create(chat_id=str(chat_id), payload=dict(event))

    # Live events are best effort: a Redis that is down must not fail (or half-fail) the write that
    # produced them. Stream clients catch up from the database when they reconnect.
    transaction.on_commit(send, robust=True)


def publish_message(message: ChatMessage) -> None:
    publish(message.chat_id, MessageEvent(type="message", message=message_to_json(message)))


def publish_tool_output(chat_id: object, tool_use_id: str, output: str) -> None:
    """Send a piece of a running tool's output to the chat's viewers (not stored: the result is)."""
    publish(chat_id, ToolOutputEvent(type="tool_output", tool_use_id=tool_use_id, output=output))


def status_event(chat: Chat) -> StatusEvent:
    return StatusEvent(
        type="status", status=chat.status, paused_reason=chat.paused_reason, last_error=chat.last_error
    )


def publish_status(chat: Chat) -> None:
    """Send the chat's status to its viewers; a child's changed row goes to its parent's viewers too."""
    publish(chat.pk, status_event(chat))
    if chat.parent_id is not None:
        publish_child(chat)


def publish_child(chat: Chat) -> None:
    """Tell the parent's viewers that a child chat was created or changed."""
    if chat.parent_id is not None:
        publish(chat.parent_id, ChildEvent(type="child", chat=dict(ChatSerializer(chat).data)))
