"""WebSocket routes of the desktop app (included by chatdesk.routing)."""

from __future__ import annotations

from django.urls import path

from desktop.consumers import DesktopProxyConsumer

websocket_urlpatterns = [
    path("api/experimental/chats/<uuid:chat_id>/desktop", DesktopProxyConsumer.as_asgi()),
]
