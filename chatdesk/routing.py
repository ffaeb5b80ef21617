"""WebSocket routes of every app."""

from __future__ import annotations

from typing import Any

from desktop.routing import websocket_urlpatterns as desktop_ws

try:  # each app contributes its routes; an app without consumers yet has no routing module
    from chats.routing import websocket_urlpatterns as chats_ws
except ImportError:  # pragma: no cover
    chats_ws = []
websocket_urlpatterns: list[Any] = [*chats_ws, *desktop_ws]
