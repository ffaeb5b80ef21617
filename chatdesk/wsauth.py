"""WebSocket origin check.

A browser sends its session cookie with any WebSocket it opens, whichever page asked for it, so a
cookie-authenticated WebSocket must come from one of our own origins (ALLOWED_HOSTS). A browser cannot
put an Authorization header on a WebSocket, so a Bearer-authenticated connection is not ambient
authority and needs no Origin (API clients and scripts send none).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import OriginValidator
from django.conf import settings

from chatdesk.auth import bearer_from_header
from chatdesk.closecodes import FORBIDDEN_ORIGIN as CLOSE_FORBIDDEN_ORIGIN


class OriginOrBearerValidator:
    def __init__(self, application: Any) -> None:
        self.application = application
        allowed = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        self.validator = OriginValidator(application, allowed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        if bearer_from_header(headers.get(b"authorization")) is not None:
            return await self.application(scope, receive, send)
        origin = headers.get(b"origin")
        parsed = urlparse(origin.decode("latin-1").lower()) if origin else None
        if parsed is not None and self.validator.valid_origin(parsed):
            return await self.application(scope, receive, send)
        return await _refuse(receive, send, "Origin not allowed." if origin else "Missing Origin header.")


async def _refuse(receive: Any, send: Any, reason: str) -> None:
    """Accept and close at once with 4403, so the client sees why (a bare 403 handshake says nothing)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN_ORIGIN, "reason": reason})
