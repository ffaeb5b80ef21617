"""WebSocket routes of every app."""

from __future__ import annotations

from typing import Any

websocket_urlpatterns: list[Any] = []

try:  # each app contributes its routes; an app without consumers yet has no routing module
    from chats.routing import websocket_urlpatterns as chats_ws
except ImportError:  # pragma: no cover
    chats_ws = []
try:
    from desktop.routing import websocket_urlpatterns as desktop_ws
except ImportError:  # pragma: no cover
    desktop_ws = []
websocket_urlpatterns = [*chats_ws, *desktop_ws]
