"""WebSocket routes of every app."""

from __future__ import annotations

from typing import Any

from chats.routing import websocket_urlpatterns as chats_ws
from desktop.routing import websocket_urlpatterns as desktop_ws

websocket_urlpatterns: list[Any] = [*chats_ws, *desktop_ws]
