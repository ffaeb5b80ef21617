"""The live desktop: a WebSocket proxy from a browser (noVNC) to the chat's workspace agent.

``/api/experimental/chats/{id}/desktop[?view_only=1]`` carries raw RFB bytes in binary frames. Each
viewer gets its own upstream WebSocket to the agent's ``/vnc`` route (the agent's Xvnc runs
``-AlwaysShared``, so viewers never disconnect each other).

Trust boundaries:

* The browser is authenticated (session cookie, Origin already checked by ``chatdesk.wsauth``, or a
  Bearer API token) and must own the chat; another user's chat is "No such chat.", exactly like a
  missing one, so the close code never confirms that a chat exists.
* The agent is reached with the server credential, never with its token (``desktop.client``).
* A view-only viewer is untrusted as to input: its bytes go through ``desktop.rfb.RfbClientFilter``,
  which drops KeyEvent, PointerEvent, ClientCutText (and the other input-bearing messages) before
  they reach the desktop. Controlling viewers' bytes are copied untouched.

Refusals are sent after accepting, as a close frame with a 4xxx code and a reason, because a browser
sees nothing of a refused handshake (note: daphne 4.2 passes the code on but drops the reason text;
ASGI servers that implement the reason, and tests through the ASGI app, see both).

Flow control, so a slow browser cannot make the server buffer without bound:

* agent → browser: under daphne, ASGI ``send`` never blocks (Twisted buffers whatever it is given), so
  the consumer writes the browser's socket below ASGI (``_DaphneBrowser``) and watches what waits for
  it: while more than BROWSER_BUFFER (512 KiB) wait, the pump stops reading the agent, whose frames
  back up in the upstream connection's bounded buffer (``desktop.client.VNC_BUFFER``, then reading
  from the agent's socket pauses) and then in TCP, back to the agent and Xvnc. If the browser stays
  unwritable for longer than CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS (default 10), it is dropped with
  4408 "Viewer too slow." rather than holding the upstream open forever. Elsewhere (tests through
  the ASGI app, other servers) ``send`` itself is the back-pressure.
* browser → agent: each frame is written to the agent's socket at once; while more than
  ``VNC_WRITE_LIMIT`` bytes wait for it, the consumer waits, and reading from the browser's socket is
  paused.

Speed: under daphne the agent's frames are spliced, not re-encoded: ``desktop.wsframes`` reads only
their headers and the whole frames, byte for byte and never copied in user space, go to the browser's
socket through ``_DirectWriter`` (server frames are unmasked on both legs; see ``desktop.wsframes``
for the RFC 6455 invariants relied on), which also carries autobahn's own frames in order. Where it
cannot be used (TLS), Twisted's transport carries them. Elsewhere the payloads are extracted and sent
through ASGI. The browser's socket is set to TCP_NODELAY.

Keepalive: the upstream connection pings the agent every 15 s and answers its pings (a dead agent
closes the viewer);
daphne pings browsers itself (``--ping-interval``). When either side ends, the other is closed, and
the tasks and the upstream socket are released in ``disconnect()`` (and, as a last resort, when the
consumer's coroutine ends for any other reason). No database access happens per frame.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import os
import socket
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from agents.models import WorkspaceAgent
from chatdesk.closecodes import AGENT_UNREACHABLE as CLOSE_AGENT_UNREACHABLE
from chatdesk.closecodes import BAD_REQUEST as CLOSE_MALFORMED
from chatdesk.closecodes import NO_AGENT as CLOSE_NO_AGENT
from chatdesk.closecodes import NOT_AUTHENTICATED as CLOSE_NOT_AUTHENTICATED
from chatdesk.closecodes import NOT_FOUND as CLOSE_NO_SUCH_CHAT
from chatdesk.closecodes import TOO_SLOW as CLOSE_TOO_SLOW
from chatdesk.exceptions import AgentError, AgentNotConnected
from chats.models import Chat
from desktop.client import agent_for_chat, open_vnc_upstream
from desktop.rfb import RfbClientFilter, RfbProtocolError
from desktop.wsframes import DataFrames, VncUpstream, payload_of

logger = logging.getLogger(__name__)

REASON_NOT_AUTHENTICATED = "Not authenticated."
REASON_NO_SUCH_CHAT = "No such chat."
REASON_AGENT_UNREACHABLE = "Workspace agent unreachable."
REASON_AGENT_LOST = "Workspace agent connection lost."
REASON_AGENT_PROTOCOL = "Workspace agent protocol error."
REASON_TOO_SLOW = "Viewer too slow."
REASON_MALFORMED = "Malformed RFB stream."

# The agent accepts frames up to 1 MiB; RFB is a byte stream, so bigger browser frames are split.
MAX_UPSTREAM_FRAME = 256 * 1024
MAX_CLOSE_REASON = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code
# Bytes daphne may hold for a browser before the proxy stops reading the agent (the direct writer's
# queue, or Twisted's high-water mark for this connection): a few frames, so the socket never idles
# while the next one is read.
BROWSER_BUFFER = 512 * 1024
IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers per sendmsg()


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _daphne_protocol(send: Any) -> Any | None:
    """Return the browser connection's Twisted/autobahn protocol under daphne, else None.

    Daphne gives each application ``functools.partial(server.handle_reply, protocol)`` as ``send``;
    Channels' session middleware wraps it in an object whose ``real_send`` is that partial.
    """
    for _ in range(8):
        if isinstance(send, functools.partial):
            protocol = send.args[0] if send.args else None
            transport = getattr(protocol, "transport", None)
            needed = ("registerProducer", "pauseProducing", "writeSequence", "bufferSize")
            if transport is None or not all(hasattr(transport, name) for name in needed):
                return None
            return protocol if hasattr(protocol, "STATE_OPEN") else None
        send = getattr(getattr(send, "__self__", None), "real_send", None)
        if send is None:
            return None
    return None


class _DirectWriter:
    """Writes a browser's TCP connection under daphne itself, in place of Twisted's transport.

    Every byte for the browser goes through one ordered queue: the agent's frames (as received,
    memoryviews of the upstream's chunks) and whatever autobahn writes (pings, the close frame), which
    is diverted here by replacing ``write``/``writeSequence`` on this one transport instance. The
    queue is sent with ``sendmsg`` on a duplicate of the socket's descriptor, registered with the
    event loop on its own, so Twisted's reactor never sees it: no payload is copied in user space
    (Twisted would join its buffer into one ``bytes`` and send it in 128 KiB slices through its
    logging and context machinery). Frames never interleave, because nothing writes the socket but
    this queue. What is queued past ``BROWSER_BUFFER`` clears ``writable``, which stops the pump.

    Only for a plain TCP connection whose Twisted buffer is empty when attached (so nothing queued
    there can come after what is sent here); :meth:`attach` returns None otherwise (TLS, other
    transports, a newer Twisted without these attributes) and Twisted's path is used instead.
    """

    def __init__(self, transport: Any, writable: asyncio.Event) -> None:
        self._transport = transport
        self._writable = writable
        self._loop = asyncio.get_running_loop()
        self._sock = socket.socket(fileno=os.dup(transport.getHandle().fileno()))
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self._waiting = False  # a writer callback is registered for our descriptor
        self.failed = False
        transport.write = self.write
        transport.writeSequence = self.write_sequence

    @classmethod
    def attach(cls, transport: Any, writable: asyncio.Event) -> _DirectWriter | None:
        from twisted.internet import tcp as twisted_tcp  # here: only daphne's processes need Twisted

        if not isinstance(transport, twisted_tcp.Connection) or getattr(transport, "TLS", True):
            return None
        # Twisted's two write buffers (FileDescriptor): dataBuffer from offset on, then _tempDataBuffer.
        unsent = len(getattr(transport, "dataBuffer", b"?")) - getattr(transport, "offset", 0)
        if unsent or getattr(transport, "_tempDataLen", 1):
            return None
        return cls(transport, writable)

    # Twisted's ITransport.write / writeSequence, for autobahn
    def write(self, data: bytes) -> None:
        self.send((data,))

    def write_sequence(self, iovec: Any) -> None:
        self.send(iovec)

    def send(self, pieces: Any) -> None:
        """Queue ``pieces`` (bytes-like) after everything queued before, and send what the socket takes."""
        if self.failed or not self._transport.connected:
            return
        for piece in pieces:
            if len(piece):
                self._queue.append(memoryview(piece))
                self._queued += len(piece)
        if self._waiting:
            self._update_writable()
        else:
            self._flush()

    def _update_writable(self) -> None:
        if self._queued > BROWSER_BUFFER:
            self._writable.clear()
        else:
            self._writable.set()

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            try:
                sent = self._sock.sendmsg(itertools.islice(queue, IOV_MAX))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the connection broke: Twisted sees it too and daphne disconnects us
                self.failed = True
                queue.clear()
                self._queued = 0
                break
            self._queued -= sent
            while sent:
                head = queue[0]
                if len(head) > sent:
                    queue[0] = head[sent:]
                    break
                sent -= len(head)
                queue.popleft()
            if queue:
                break  # the socket took less than offered: it is full
        if queue and not self._waiting:
            self._loop.add_writer(self._sock.fileno(), self._flush)
            self._waiting = True
        elif not queue and self._waiting:
            self._loop.remove_writer(self._sock.fileno())
            self._waiting = False
        self._update_writable()

    def detach(self) -> None:
        """Give the connection back to Twisted, with whatever is still queued, in order."""
        if self._waiting:
            self._loop.remove_writer(self._sock.fileno())
            self._waiting = False
        for name in ("write", "writeSequence"):
            self._transport.__dict__.pop(name, None)
        rest, self._queue = b"".join(self._queue), collections.deque()
        self._queued = 0
        if rest and not self.failed and self._transport.connected:
            self._transport.write(rest)
        self._sock.close()  # our descriptor only; Twisted's stays open
        self._writable.set()


class _DaphneBrowser:
    """The browser's connection under daphne, reached below ASGI for flow control and speed.

    * Sending: the agent's whole WebSocket frames are written as they came (``desktop.wsframes``),
      skipping the per-frame cost of ASGI, Channels and autobahn (which formats debug log arguments
      for every frame): through a :class:`_DirectWriter` where possible, else Twisted's transport.
      Autobahn writes every frame it sends (pings, close) whole as well, so frames never
      interleave; once autobahn leaves the OPEN state (closing), nothing more is sent this way.
    * Writability: ``writable`` is cleared while more than ``BROWSER_BUFFER`` bytes wait for the
      browser. With Twisted's transport, through a Twisted IPushProducer registered on it: Twisted
      calls ``pauseProducing`` and ``resumeProducing``. (After daphne upgrades an HTTP connection,
      the dead HTTPChannel is still the registered producer; this replaces it.)
    * Reading: ``pause_reading`` stops reading the browser's socket (TCP back-pressure).
    * The socket is set to TCP_NODELAY: without it, the tail of each update waits in the kernel for
      the browser's (delayed) acknowledgement of the rest, stalling the stream and adding latency.
    """

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport = transport = protocol.transport
        self.writable = asyncio.Event()
        self.writable.set()
        self._reading_paused = False
        with contextlib.suppress(OSError):  # not TCP (daphne -u): no Nagle to turn off
            transport.setTcpNoDelay(True)
        self._direct = _DirectWriter.attach(transport, self.writable)
        if self._direct is None:
            transport.bufferSize = BROWSER_BUFFER  # this connection's high-water mark
            if transport.producer is not None:
                transport.unregisterProducer()
            transport.registerProducer(self, True)

    # IPushProducer (Twisted calls these on the event loop thread: daphne runs the asyncio reactor)
    def pauseProducing(self) -> None:
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        self.writable.set()  # the connection is gone; websocket.disconnect follows

    def send_frames(self, frames: DataFrames) -> bool:
        """Write whole, unmasked data frames as they are; return False when the connection is not open."""
        if self.protocol.state != self.protocol.STATE_OPEN or not self.transport.connected:
            return False
        if self._direct is not None:
            self._direct.send(frames)
        else:
            self.transport.writeSequence([bytes(piece) for piece in frames])
        return True

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport.connected:
            self._reading_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self.transport.connected:
                self.transport.resumeProducing()

    def detach(self) -> None:
        if self._direct is not None:
            self._direct.detach()
            self._direct = None
        if self.transport.producer is self:
            self.transport.unregisterProducer()
        self.resume_reading()


class DesktopProxyConsumer(AsyncWebsocketConsumer):
    """Proxy one browser viewer to the chat's workspace agent; see the module docstring."""

    # No channel layer: nothing is ever sent to a viewer by name, and subscribing every viewer would
    # cost a Redis connection and a blocking read loop each (an unknown alias means "none").
    channel_layer_alias = "desktop-proxy-uses-no-channel-layer"

    upstream: VncUpstream | None = None
    rfb_filter: RfbClientFilter | None = None
    _browser: _DaphneBrowser | None = None
    _tasks: tuple[asyncio.Task[None], ...] = ()
    _closing = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Normally done in disconnect(); this catches a consumer cancelled by the server.
            await self._release()

    # -- connection ------------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.accept()
        try:
            agent = await self._authorize()
            # open_timeout bounds the handshake; this bounds the TCP connect and DNS too.
            async with asyncio.timeout(settings.CHATDESK_AGENT_CONNECT_TIMEOUT + 1):
                upstream = await open_vnc_upstream(agent)
        except _Refused as refused:
            await self._refuse(refused.code, refused.reason)
            return
        except (AgentError, TimeoutError):
            await self._refuse(CLOSE_AGENT_UNREACHABLE, REASON_AGENT_UNREACHABLE)
            return
        self.upstream = upstream
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        if any(_truthy(v) for v in query.get("view_only", [])):
            self.rfb_filter = RfbClientFilter(view_only=True)
        protocol = _daphne_protocol(self.base_send)
        if protocol is not None:
            self._browser = _DaphneBrowser(protocol)
        self._tasks = (asyncio.create_task(self._agent_to_browser(), name="desktop-agent-to-browser"),)

    @database_sync_to_async
    def _authorize(self) -> WorkspaceAgent:
        """Return the agent to connect to. Raise _Refused with the close code and reason."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            raise _Refused(CLOSE_NOT_AUTHENTICATED, REASON_NOT_AUTHENTICATED)
        chat_id = self.scope["url_route"]["kwargs"]["chat_id"]
        chat = Chat.objects.select_related("workspace_agent").filter(pk=chat_id, owner=user).first()
        if chat is None:
            raise _Refused(CLOSE_NO_SUCH_CHAT, REASON_NO_SUCH_CHAT)
        try:
            agent = agent_for_chat(chat)
        except AgentNotConnected as exc:
            raise _Refused(CLOSE_NO_AGENT, exc.message) from None
        agent.get_server_credential()  # decrypt here (sync context) so a bad key fails as a refusal
        return agent

    async def _refuse(self, code: int, reason: str) -> None:
        self._closing = True
        await self.close(code=code, reason=reason[:MAX_CLOSE_REASON])

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        """Cancel the pump, close the upstream socket. Idempotent."""
        tasks, self._tasks = self._tasks, ()
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._browser is not None:
            self._browser.detach()
            self._browser = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            with contextlib.suppress(Exception):
                await upstream.close()

    async def _close_viewer(self, code: int, reason: str) -> None:
        """Close the browser side once; disconnect() then releases the upstream."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            await self.close(code=code, reason=reason[:MAX_CLOSE_REASON])

    # -- browser → agent -------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.upstream is None or self._closing:
            return  # refused or closing: whatever the browser still sends goes nowhere
        if bytes_data is None:
            await self._close_viewer(CLOSE_MALFORMED, f"{REASON_MALFORMED[:-1]}: text frame.")
            return
        data = bytes_data
        if self.rfb_filter is not None:
            try:
                data = self.rfb_filter.feed(data)
            except RfbProtocolError as exc:
                logger.info("view-only viewer of chat %s closed: %s", self.scope["url_route"]["kwargs"], exc)
                await self._close_viewer(CLOSE_MALFORMED, f"{REASON_MALFORMED[:-1]}: {exc}.")
                return
            if not data:
                return
        upstream = self.upstream
        if len(data) <= MAX_UPSTREAM_FRAME:
            upstream.send(data)
        else:
            view = memoryview(data)
            for start in range(0, len(view), MAX_UPSTREAM_FRAME):
                upstream.send(view[start : start + MAX_UPSTREAM_FRAME])
        if not upstream.writable:
            await self._wait_for_agent(upstream)

    async def _wait_for_agent(self, upstream: VncUpstream) -> None:
        """Wait until the agent's socket takes what was written; meanwhile stop reading the browser.

        Ends as well when the upstream connection does (the pump then closes the viewer): the
        consumer must stay free to handle the browser's disconnect.
        """
        if self._browser is not None:
            self._browser.pause_reading()
        try:
            await upstream.drain()
        finally:
            if self._browser is not None:
                self._browser.resume_reading()

    # -- agent → browser -------------------------------------------------------------------------------

    async def _agent_to_browser(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        grace = settings.CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS
        rfb_filter = self.rfb_filter
        browser = self._browser
        send = self.base_send
        code, reason = 1000, ""
        try:
            while True:
                if browser is not None and not browser.writable.is_set():
                    try:
                        await asyncio.wait_for(browser.writable.wait(), grace)
                    except TimeoutError:
                        code, reason = CLOSE_TOO_SLOW, REASON_TOO_SLOW
                        break
                frames = await upstream.read()  # whole data frames, as the agent sent them
                if not frames:
                    break  # the upstream connection ended
                if rfb_filter is not None and rfb_filter.needs_server_bytes:
                    rfb_filter.observe_server(payload_of(frames))
                if browser is None or not browser.send_frames(frames):
                    # Not under daphne (or the browser is closing): the payloads through ASGI,
                    # whose send is the back-pressure.
                    await send({"type": "websocket.send", "bytes": payload_of(frames)})
        except Exception:
            logger.exception("desktop proxy: agent-to-browser copy failed")
            code, reason = 1011, "Proxy error."
        if code == 1000 and upstream.failure is not None:
            protocol_error = upstream.failure.startswith("protocol error")
            code, reason = (
                CLOSE_AGENT_UNREACHABLE,
                REASON_AGENT_PROTOCOL if protocol_error else REASON_AGENT_LOST,
            )
        await self._close_viewer(code, reason)
        # Let go of the agent now rather than when the browser acknowledges the close (a slow
        # viewer may take a while); disconnect() finishes the rest.
        with contextlib.suppress(Exception):
            await upstream.close()
