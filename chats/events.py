"""Live chat events: the one way they leave a worker (or a web process) for stream consumers.

With Redis (REDIS_URL), events go through the channel layer (channels_redis) to the group of the chat.
In the embedded default there is no cross-process channel layer, so events are rows of ChatEvent that
the stream consumer tails. Either way an event is sent only once the transaction that produced it has
committed, so a consumer never sees a message it cannot read back from the database.

A worker publishes from synchronous code. ``async_to_sync`` would run each send in a new event loop, and
channels_redis keeps its connection pool per event loop: every event would open (and drop) a Redis
connection. :class:`LayerSender` instead keeps one event loop in a thread of its own per process, so
the pool and its connections live as long as the process. A publisher does not wait for Redis: events go
into one queue that a single task on that loop sends from, one after another, so they go out in the order
they were published (a turn's step is not slowed by a Redis round trip per event). The queue is bounded:
when Redis hangs, the newest events are dropped (and logged) rather than memory growing; a failed send is
logged and the next one goes on. Live events are best effort either way: stream clients catch up from the
database. Pending events are flushed when a worker process exits.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from typing import Any, Literal, TypedDict

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chats.models import Chat, ChatEvent, ChatMessage
from chats.serializers import chat_to_json, message_to_json, usage_to_json

logger = logging.getLogger(__name__)


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
#: How long one send may take before it is given up (logged) and the next one goes.
SEND_TIMEOUT = 10.0
#: Events waiting to be sent, at most; beyond it (Redis hangs) new events are dropped.
QUEUE_LIMIT = 10_000
#: How long a process that exits waits for its pending events.
EXIT_FLUSH_TIMEOUT = 5.0


class LayerSender:
    """Sends to the channel layer from synchronous code, in order and without waiting, through one
    long-lived event loop (and one sending task) per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pid = 0
        self.dropped = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        """Return this process's sending loop, started on first use (and again in a forked child)."""
        return self._started()[0]

    def _started(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[str, dict[str, Any]]]]:
        with self._lock:
            if (
                self._loop is None
                or self._queue is None
                or self._pid != os.getpid()
                or self._loop.is_closed()
            ):
                loop = asyncio.new_event_loop()
                queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)
                self._task = loop.create_task(self._send_all(queue))
                thread = threading.Thread(target=loop.run_forever, name="chat-events", daemon=True)
                thread.start()
                self._loop, self._queue, self._pid = loop, queue, os.getpid()
            return self._loop, self._queue

    def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``group``; it is sent after every message queued before it."""
        if get_channel_layer() is None:
            return
        loop, queue = self._started()
        loop.call_soon_threadsafe(self._put, queue, (group, message))

    def _put(
        self, queue: asyncio.Queue[tuple[str, dict[str, Any]]], item: tuple[str, dict[str, Any]]
    ) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning("Live events are not reaching Redis: %d dropped so far.", self.dropped)

    @staticmethod
    async def _send_all(queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while True:
            group, message = await queue.get()
            try:
                layer = get_channel_layer()
                if layer is not None:
                    await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT)
            except Exception:  # best effort: log it, and the next event goes on
                logger.warning("A live event to %s was not sent.", group, exc_info=True)
            finally:
                queue.task_done()

    def flush(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> bool:
        """Wait until every event queued so far in this process was sent (or given up). Return False when
        ``timeout`` passed first."""
        with self._lock:
            loop, queue = self._loop, self._queue
            if loop is None or queue is None or self._pid != os.getpid() or loop.is_closed():
                return True
        future = asyncio.run_coroutine_threadsafe(queue.join(), loop)
        try:
            future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            return False
        return True

    def close(self) -> None:
        """Stop this sender's loop, dropping what it still holds (flush first to send it)."""
        with self._lock:
            loop, task = self._loop, self._task
            self._loop = self._queue = self._task = None
        if loop is not None and task is not None and not loop.is_closed():

            async def stop() -> None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                loop.stop()

            asyncio.run_coroutine_threadsafe(stop(), loop)


sender = LayerSender()
atexit.register(sender.flush)  # a web process or script that exits; Celery's pool: chatdesk/celery.py


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
        publish(chat.parent_id, ChildEvent(type="child", chat=chat_to_json(chat)))


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
