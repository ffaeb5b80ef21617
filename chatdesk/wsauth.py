"""WebSocket origin check.

A browser sends its session cookie with any WebSocket it opens, whichever page asked for it, so a
cookie-authenticated WebSocket must come from one of our own origins. "Ours" is decided exactly as
Django's CSRF check decides it for a POST (``CsrfViewMiddleware``): the Origin's scheme, host *and port*
must be the request's own (``https`` when the connection is secure, and the Host header, which must be
in ALLOWED_HOSTS), or an origin listed in CSRF_TRUSTED_ORIGINS (``https://*.example.com`` included).
A page on another port of the same host is another origin: ``http://127.0.0.1:9999`` may not use the
session of ``http://127.0.0.1:8000``.

A browser cannot put an Authorization header on a WebSocket, so a Bearer-authenticated connection is
not ambient authority and needs no Origin (API clients and scripts send none).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.http import is_same_domain

from chatdesk.auth import bearer_from_header
from chatdesk.closecodes import FORBIDDEN_ORIGIN as CLOSE_FORBIDDEN_ORIGIN


class _HandshakeRequest(HttpRequest):
    """The WebSocket handshake as an HttpRequest, so Django's own get_host() and is_secure() judge it
    (ALLOWED_HOSTS, USE_X_FORWARDED_HOST, SECURE_PROXY_SSL_HEADER)."""

    def __init__(self, scope: dict[str, Any]) -> None:
        super().__init__()
        self._secure = scope.get("scheme") in ("wss", "https")
        for name, value in scope.get("headers") or []:
            key = name.decode("latin-1").upper().replace("-", "_")
            self.META[f"HTTP_{key}"] = value.decode("latin-1")
        server = scope.get("server") or ("", "")
        self.META["SERVER_NAME"] = str(server[0] or "")
        self.META["SERVER_PORT"] = str(server[1] or "")

    def _get_scheme(self) -> str:
        return "https" if self._secure else "http"


def origin_allowed(scope: dict[str, Any], origin: str) -> bool:
    """Return True when ``origin`` may use the session on this WebSocket handshake (see module docstring)."""
    request = _HandshakeRequest(scope)
    try:
        good_origin = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    except DisallowedHost:
        pass
    else:
        if origin == good_origin:
            return True
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    wildcard_hosts = [
        urlsplit(trusted).netloc.lstrip("*")
        for trusted in settings.CSRF_TRUSTED_ORIGINS
        if "*" in trusted and urlsplit(trusted).scheme == parts.scheme
    ]
    return any(is_same_domain(parts.netloc, host) for host in wildcard_hosts)


class OriginOrBearerValidator:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        if bearer_from_header(headers.get(b"authorization")) is not None:
            return await self.application(scope, receive, send)
        origin = headers.get(b"origin")
        if origin is not None and origin_allowed(scope, origin.decode("latin-1")):
            return await self.application(scope, receive, send)
        return await _refuse(receive, send, "Origin not allowed." if origin else "Missing Origin header.")


async def _refuse(receive: Any, send: Any, reason: str) -> None:
    """Accept and close at once with 4403, so the client sees why (a bare 403 handshake says nothing)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN_ORIGIN, "reason": reason})
