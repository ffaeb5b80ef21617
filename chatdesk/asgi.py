"""ASGI entry point: HTTP to Django (request bodies limited while they stream in), WebSockets to Channels
consumers.

WebSockets accept the session cookie (the Origin must match ALLOWED_HOSTS) or an
`Authorization: Bearer <api token>` header.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from chatdesk.auth import WebSocketAuthStack  # noqa: E402
from chatdesk.consumers import NotFoundConsumer  # noqa: E402
from chatdesk.middleware import RequestBodyLimit  # noqa: E402
from chatdesk.routing import websocket_urlpatterns  # noqa: E402
from chatdesk.wsauth import OriginOrBearerValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(django_asgi_app),
        "websocket": OriginOrBearerValidator(
            # Last: any path no route matched closes with 4404, not an HTTP 500 at the handshake.
            WebSocketAuthStack(URLRouter([*websocket_urlpatterns, re_path(r"", NotFoundConsumer.as_asgi())]))
        ),
    }
)
