"""The chat stream: ``/api/experimental/chats/{id}/stream?after_id=N``.

A client first gets every stored message after N (``{"type": "message", "message": {...}}``), then the
chat's current status, then live events (``message_part``, ``tool_output``, ``message``, ``status``,
``child``) as chats/events.py publishes them. A client that reconnects with the id of the last message it has misses
nothing: the consumer subscribes *before* reading the database, and drops any ``message`` whose id is
not above the last one it sent, so a message is neither lost between replay and live nor sent twice.

Live events come from the channel layer (Redis) when REDIS_URL is set; in the embedded default there is
no cross-process layer, so the consumer tails the ChatEvent table instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from chatdesk.closecodes import BAD_REQUEST as CLOSE_BAD_REQUEST
from chatdesk.closecodes import NOT_AUTHENTICATED as CLOSE_NOT_AUTHENTICATED
from chatdesk.closecodes import NOT_FOUND as CLOSE_NOT_FOUND
from chats.events import StatusEvent, group_name, status_event, uses_channel_layer
from chats.models import Chat, ChatEvent, ChatMessage
from chats.serializers import message_to_json, parse_cursor

logger = logging.getLogger(__name__)

REPLAY_PAGE = 200
TAIL_INTERVAL = 0.1
TAIL_PAGE = 500


class ChatStreamConsumer(AsyncJsonWebsocketConsumer):
    chat_id: str | None = None
    group: str | None = None
    last_message_id = 0
    event_cursor = 0
    tail_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_NOT_AUTHENTICATED, "Not authenticated.")
            return
        after_id = _after_id(self.scope.get("query_string", b""))
        if after_id is None:
            await self._refuse(CLOSE_BAD_REQUEST, "after_id must be a non-negative integer.")
            return
        chat_id = str(self.scope["url_route"]["kwargs"]["chat_id"])
        if not await _owns_chat(user, chat_id):
            await self._refuse(CLOSE_NOT_FOUND, "No such chat.")
            return
        self.chat_id = chat_id
        self.last_message_id = after_id
        # Subscribe first, then read: whatever is published meanwhile is buffered, then deduplicated.
        if uses_channel_layer():
            self.group = group_name(chat_id)
            await self.channel_layer.group_add(self.group, self.channel_name)
        else:
            self.event_cursor = await _latest_event_id(chat_id)
        await self.accept()
        await self._replay()
        status = await _status(chat_id)
        if status is not None:
            await self.send_json(status)
        if not uses_channel_layer():
            self.tail_task = asyncio.create_task(self._tail())

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        if self.tail_task is not None:
            self.tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.tail_task
            self.tail_task = None

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """The stream is one-way: anything a client sends is ignored, unparsed (a frame that is not JSON
        must not close the stream with 1011)."""

    async def chat_event(self, message: dict[str, Any]) -> None:
        """A live event from the channel layer (type ``chat.event``, see chats.events.publish)."""
        await self._forward(message["event"])

    async def _forward(self, event: dict[str, Any]) -> None:
        if event.get("type") == "message":
            message_id = int(event["message"]["id"])
            if message_id <= self.last_message_id:
                return
            self.last_message_id = message_id
        await self.send_json(event)

    async def _replay(self) -> None:
        assert self.chat_id is not None
        while True:
            page = await _messages_after(self.chat_id, self.last_message_id)
            for message in page:
                await self._forward({"type": "message", "message": message})
            if len(page) < REPLAY_PAGE:
                return

    async def _tail(self) -> None:
        """Embedded default: poll the ChatEvent table for this chat's new events."""
        assert self.chat_id is not None
        while True:
            try:
                events = await _events_after(self.chat_id, self.event_cursor)
            except Exception:  # a locked SQLite file or a dropped connection: try again shortly
                logger.exception("Could not read live events of chat %s.", self.chat_id)
                events = []
            for event_id, payload in events:
                self.event_cursor = event_id
                await self._forward(payload)
            if len(events) < TAIL_PAGE:
                await asyncio.sleep(TAIL_INTERVAL)

    async def _refuse(self, code: int, reason: str) -> None:
        await self.accept()
        await self.close(code=code, reason=reason)


def _after_id(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after_id")
    if not values:
        return 0
    return parse_cursor(values[-1])


@database_sync_to_async
def _owns_chat(user: Any, chat_id: str) -> bool:
    return Chat.objects.filter(pk=chat_id, owner=user).exists()


@database_sync_to_async
def _latest_event_id(chat_id: str) -> int:
    return ChatEvent.objects.filter(chat_id=chat_id).order_by("-id").values_list("id", flat=True).first() or 0


@database_sync_to_async
def _messages_after(chat_id: str, after_id: int) -> list[dict[str, Any]]:
    messages = ChatMessage.objects.filter(chat_id=chat_id, id__gt=after_id).order_by("id")[:REPLAY_PAGE]
    return [message_to_json(message) for message in messages]


@database_sync_to_async
def _status(chat_id: str) -> StatusEvent | None:
    chat = Chat.objects.filter(pk=chat_id).only("status", "paused_reason", "last_error").first()
    return status_event(chat) if chat is not None else None


@database_sync_to_async
def _events_after(chat_id: str, cursor: int) -> list[tuple[int, dict[str, Any]]]:
    rows = ChatEvent.objects.filter(chat_id=chat_id, id__gt=cursor).order_by("id")[:TAIL_PAGE]
    return [(row.id, row.payload) for row in rows]
