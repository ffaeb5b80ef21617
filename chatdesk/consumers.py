"""The WebSocket answer for a path no route matches (a non-UUID chat id, a misspelled endpoint).

Without it Channels' router raises, and daphne answers the handshake with HTTP 500; a client deserves
the same close codes the real endpoints use (SPEC §4): 4401 when not authenticated, else 4404.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from chatdesk.closecodes import NOT_AUTHENTICATED, NOT_FOUND


class NotFoundConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        user: Any = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_AUTHENTICATED, reason="Not authenticated.")
        elif "/chats/" in self.scope.get("path", ""):
            await self.close(code=NOT_FOUND, reason="No such chat.")
        else:
            await self.close(code=NOT_FOUND, reason="No such WebSocket endpoint.")
