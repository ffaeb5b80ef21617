"""Request-size limits: one for Django's handler, one at the ASGI level (see RequestBodyLimit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class BodySizeLimitMiddleware:
    """Refuse request bodies over CHATDESK_MAX_BODY_BYTES with 413, before anything reads them.

    Django's own DATA_UPLOAD_MAX_MEMORY_SIZE raises deep inside request parsing (and DRF turns it into a
    400); a declared Content-Length over the limit is answered here, cheaply and with the right status.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.CHATDESK_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Invalid Content-Length header."}, status=400)
        if length > limit:
            return JsonResponse(
                {"detail": f"Request body too large: {length} bytes; the limit is {limit} bytes."}, status=413
            )
        return self.get_response(request)


class RequestBodyLimit:
    """ASGI middleware: read an HTTP request's body up to CHATDESK_MAX_BODY_BYTES while it streams in,
    answering 413 the moment it passes the limit; hand Django the body with its real Content-Length.

    Under daphne the server itself refuses oversized bodies earlier (chatdesk/serving.py); this is the same
    rule for any ASGI server, and it makes chunked bodies work: without a Content-Length header, Django
    and DRF read an empty body (a chunked POST /chats became a "New Chat" with no message).
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.application(scope, receive, send)
        limit = settings.CHATDESK_MAX_BODY_BYTES
        headers = [
            (k, v) for k, v in scope.get("headers", []) if k not in (b"content-length", b"transfer-encoding")
        ]
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return await _answer(send, 400, "Invalid Content-Length header.")
            if length > limit:
                return await _answer(send, 413, _too_large(limit, length))
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _answer(send, 413, _too_large(limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would say it

        return await self.application(dict(scope, headers=headers), replay, send)


def _too_large(limit: int, length: int | None = None) -> str:
    size = f"{length} bytes" if length is not None else "over the limit"
    return f"Request body too large ({size}); the limit is {limit} bytes."


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
