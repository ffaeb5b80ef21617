"""WebSocket routes of the chats app (included by chatdesk.routing)."""

from __future__ import annotations

from django.urls import path

from chats.consumers import ChatStreamConsumer

websocket_urlpatterns = [
    path("api/experimental/chats/<uuid:chat_id>/stream", ChatStreamConsumer.as_asgi()),
]
