"""How chatdesk's web server is started: daphne, with two things mended where daphne drops them.

One argv for `make run`, the tests and the benchmarks: :func:`daphne_argv`, which runs this module
(``python -m chatdesk.serving``, daphne's own command line with the server class below).

Why not the stock ``daphne`` command (measured with daphne 4.2.3, pinned in constraints.txt):

- **Request bodies.** Twisted reads the whole body (to a temporary file) before daphne calls the
  application, and daphne then queues all of it, in 8 KiB messages, at once: a 400 MiB upload raised the
  process to 549 MB before any chatdesk code could refuse it. :class:`LimitedWebRequest` counts the body
  while it arrives and answers 413 as soon as it passes ``CHATDESK_MAX_BODY_BYTES`` (at once, for a
  declared ``Content-Length``), keeping nothing of it. The ASGI middleware in chatdesk/asgi.py enforces
  the same limit for any other ASGI server.
- **WebSocket close reasons.** daphne's ``websocket.close`` handler passes the code to autobahn but drops
  the ``reason`` (SPEC §4: the reason says why a connection was refused). :class:`ReasonedWebSocketProtocol`
  passes it on, trimmed to the 123 bytes a close frame can carry.

daphne builds its factories inside ``Server.run``; :class:`ChatdeskServer` takes them as they are
assigned and installs these classes. tests/chatdesk/test_serving.py checks both through a real server.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any, cast

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import reactor

# SPEC §4: WebSockets are pinged every 15 s (daphne's default is 20 s).
WEBSOCKET_PING_SECONDS = 15
# A close frame's payload is at most 125 bytes: a 2-byte code and a UTF-8 reason.
CLOSE_REASON_MAX_BYTES = 123
# After a 413, the rest of the body is read and thrown away for this long, so the client gets to read
# the answer instead of a reset connection; then the connection is closed.
DISCARD_SECONDS = 5.0


def daphne_argv(*, host: str, port: int, ping_interval: int = WEBSOCKET_PING_SECONDS) -> list[str]:
    """Return the argv that serves chatdesk.asgi with (chatdesk's) daphne on ``host``:``port``."""
    return [
        sys.executable, "-m", "chatdesk.serving", "-b", host, "-p", str(port),
        "--ping-interval", str(ping_interval),
        "chatdesk.asgi:application",
    ]  # fmt: skip


def body_limit() -> int:
    from django.conf import settings

    limit: int = settings.CHATDESK_MAX_BODY_BYTES
    return limit


def too_large_body(limit: int, length: int | None = None) -> bytes:
    size = f"{length} bytes" if length is not None else "over the limit"
    return json.dumps({"detail": f"Request body too large ({size}); the limit is {limit} bytes."}).encode()


class LimitedWebRequest(WebRequest):
    """daphne's request, refusing a body over the limit while it arrives (413), keeping none of it."""

    _refused = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        limit = body_limit()
        if length is not None and length > limit:
            self._refuse(too_large_body(limit, length))
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return  # thrown away
        self._received += len(data)
        limit = body_limit()
        if self._received > limit:
            self._refuse(too_large_body(limit))
            return
        super().handleContentChunk(data)

    def process(self) -> Any:
        if self._refused:
            self._close()  # the whole body arrived (and was thrown away): the answer is out, close now
            return None
        return super().process()

    def _refuse(self, body: bytes) -> None:
        self._refused = True
        content: Any = getattr(self, "content", None)
        if content is not None:
            content.close()
        self.content = io.BytesIO()  # stays empty: what Twisted reads back once the request "completes"
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + body
        )
        cast(Any, reactor).callLater(DISCARD_SECONDS, self._close)

    def _close(self) -> None:
        transport = self.channel.transport if self.channel is not None else None
        if transport is not None:
            transport.loseConnection()


class LimitedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = LimitedWebRequest
        return protocol


class ReasonedWebSocketProtocol(WebSocketProtocol):
    """daphne's WebSocket protocol, sending the application's close reason with its code."""

    def handle_reply(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            code = message.get("code")
            reason = str(message.get("reason") or "")
            encoded = reason.encode("utf-8")[:CLOSE_REASON_MAX_BYTES].decode("utf-8", "ignore")
            self.sendClose(code=1000 if code is None else code, reason=encoded or None)
            return
        super().handle_reply(message)


class ChatdeskServer(Server):
    """daphne's server with the request and WebSocket classes above (see the module docstring)."""

    @property
    def http_factory(self) -> HTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        self._http_factory = factory if isinstance(factory, LimitedHTTPFactory) else LimitedHTTPFactory(self)

    @property
    def ws_factory(self) -> WebSocketFactory:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: WebSocketFactory) -> None:
        factory.protocol = ReasonedWebSocketProtocol
        self._ws_factory = factory


class ChatdeskCommandLineInterface(CommandLineInterface):
    server_class = ChatdeskServer


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    ChatdeskCommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
