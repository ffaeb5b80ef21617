"""Live chat events: the one way they leave a worker (or a web process) for stream consumers.

With Redis (REDIS_URL), events go through the channel layer (channels_redis) to the group of the chat.
In the embedded default there is no cross-process channel layer, so events are rows of ChatEvent that
the stream consumer tails. Either way an event is sent only once the transaction that produced it has
committed, so a consumer never sees a message it cannot read back from the database.

A worker publishes from synchronous code. ``async_to_sync`` would run each send in a new event loop, and
channels_redis keeps its connection pool per event loop: every event would open (and drop) a Redis
connection. :class:`LayerSender` instead keeps one event loop in a thread of its own per process, so
the pool and its connections live as long as the process; each send waits for its own completion, so
events go out in the order they were published.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future
from typing import Any, Literal, TypedDict

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chats.models import Chat, ChatEvent, ChatMessage
from chats.serializers import ChatSerializer, message_to_json, usage_to_json


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


class UsageEvent(TypedDict):
    """A chat's token usage and cost changed (a model call was recorded in it or, for a root, its tree)."""

    type: Literal["usage"]
    chat_id: str
    usage: dict[str, int]
    cost_usd: str
    tree_usage: dict[str, int] | None  # root chats only, like the next two
    tree_cost_usd: str | None
    budget_usd: str | None


class AuditLiveEvent(TypedDict):
    """An audit event sent live: ``type`` is its kind (``control``, ``help_requested``, ``approval``, ``action``)."""

    type: str
    event: dict[str, Any]


Event = (
    MessageEvent | MessagePartEvent | ToolOutputEvent | StatusEvent | ChildEvent | UsageEvent | AuditLiveEvent
)

LAYER_MESSAGE_TYPE = "chat.event"
#: How long a publish waits for the channel layer before giving up on that event.
SEND_TIMEOUT = 10.0


class LayerSender:
    """Sends to the channel layer from synchronous code through one long-lived event loop per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        """Return this process's sending loop, started on first use (and again in a forked child)."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="chat-events", daemon=True)
                thread.start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``group`` and wait until the layer took it (at most SEND_TIMEOUT)."""
        layer = get_channel_layer()
        if layer is None:
            return
        future: Future[None] = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), self.loop())
        future.result(timeout=SEND_TIMEOUT)


sender = LayerSender()


def group_name(chat_id: object) -> str:
    return f"chat.{chat_id}"


def uses_channel_layer() -> bool:
    return bool(settings.REDIS_URL)


def publish(chat_id: object, event: Event) -> None:
    """Send ``event`` to everyone streaming chat ``chat_id``, once the current transaction commits."""

    def send() -> None:
        if uses_channel_layer():
            sender.group_send(group_name(chat_id), {"type": LAYER_MESSAGE_TYPE, "event": event})
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


def usage_event(chat: Chat) -> UsageEvent:
    data = usage_to_json(chat)
    return UsageEvent(
        type="usage",
        chat_id=str(chat.pk),
        usage=data["usage"],
        cost_usd=data["cost_usd"],
        tree_usage=data["tree_usage"],
        tree_cost_usd=data["tree_cost_usd"],
        budget_usd=data["budget_usd"],
    )


def publish_usage(chat: Chat, root: Chat | None = None) -> None:
    """Tell viewers that ``chat``'s usage changed: its own stream, its parent's (the child's row) and,
    for a child, its root's stream (the tree's sums)."""
    publish(chat.pk, usage_event(chat))
    if chat.parent_id is not None:
        publish_child(chat)
        if root is not None:
            publish(root.pk, usage_event(root))
