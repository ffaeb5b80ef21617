"""An ASGI application for the contract tests in test_proxy_daphne.py, served by a real daphne.

Each WebSocket it accepts gets one text message: what ``desktop.consumers.daphne_protocol`` finds in
the ``send`` this application was given — directly (``/daphne``: daphne's own ``send``) or through
chatdesk's Channels middleware stack (``/channels``: what a consumer is given) — then a close.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")
django.setup()

from chatdesk.auth import WebSocketAuthStack  # noqa: E402
from desktop.consumers import daphne_protocol  # noqa: E402


async def report(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    protocol = daphne_protocol(send)
    found = {
        "protocol": type(protocol).__name__ if protocol is not None else None,
        "transport": type(protocol.transport).__name__ if protocol is not None else None,
    }
    await send({"type": "websocket.send", "text": json.dumps(found)})
    await send({"type": "websocket.close", "code": 1000})


through_channels = WebSocketAuthStack(report)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    if scope["path"] == "/channels":
        await through_channels(scope, receive, send)
    else:
        await report(scope, receive, send)
