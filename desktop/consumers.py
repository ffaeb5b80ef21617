"""The live desktop: a WebSocket proxy from a browser (noVNC) to the chat's workspace agent.

``/api/experimental/chats/{id}/desktop[?view_only=1]`` carries raw RFB bytes in binary frames. Each
viewer gets its own upstream WebSocket to the agent's ``/vnc`` route (``desktop.upstream``; the
agent's Xvnc runs ``-AlwaysShared``, so viewers never disconnect each other).

Trust boundaries:

* The browser is authenticated (session cookie, Origin already checked by ``chatdesk.wsauth``, or a
  Bearer API token) and must own the chat; another user's chat is "No such chat.", exactly like a
  missing one, so the close code never confirms that a chat exists.
* The agent is reached with the server credential, never with its token (``desktop.client``).
* Input comes only from the person holding the desktop (SPEC §8, desktop/control.py). Every viewer's
  bytes go through ``desktop.rfb.RfbClientFilter`` (in :meth:`DesktopProxyConsumer.receive`, the one
  place where browser bytes go upstream), which drops KeyEvent, PointerEvent, ClientCutText (and the
  other input-bearing messages) before they reach the desktop unless the viewer's user holds it:
  whatever the query string says (``?view_only=1`` only makes a viewer view-only for good). The
  holder can change while viewers stay connected: each viewer joins its agent's control group
  (``desktop.control.group_name``) before it reads who holds the desktop, and when a change is
  announced it reads the holder again and switches its filter from that message on (the filter's
  parser keeps its place). Input dropped from a viewer that does not hold the desktop is counted and
  logged at DEBUG, never answered with an error. A viewer that cannot join the group (the channel
  layer is down) stays view-only; each viewer also rechecks the holder every
  ``CONTROL_RECHECK_SECONDS`` (group memberships expire, a message can be lost). No viewer may take
  the desktop exclusively (ClientInit is always shared).

Refusals are sent after accepting, as a close frame with a 4xxx code and a reason, because a browser
sees nothing of a refused handshake (note: daphne 4.2 passes the code on but drops the reason text;
ASGI servers that implement the reason, and tests through the ASGI app, see both).

Both legs use their libraries' public APIs for the bytes: the agent's WebSocket is websockets'
sans-I/O ``ClientProtocol``; the browser's is ASGI ``websocket.send``.

Flow control, so a slow browser cannot make the server buffer without bound:

* agent → browser: ASGI has no back-pressure and daphne's ``send`` never waits (Twisted buffers
  whatever it is given). So under daphne the consumer registers itself, through Twisted's public
  ``IConsumer.registerProducer``, as the streaming producer of the browser's TCP transport: Twisted
  calls ``pauseProducing`` once more than its ``bufferSize`` (64 KiB) waits for the socket and
  ``resumeProducing`` once all of it went to the kernel. Each message waits until then, so daphne
  holds at most one message (``MAX_BROWSER_MESSAGE``) past those 64 KiB; meanwhile the pump holds what it last read from the
  upstream, the agent's frames back up in the upstream's bounded buffer (``desktop.client.VNC_BUFFER``,
  then reading from the agent's socket pauses) and then in TCP, back to the agent and Xvnc. If the browser
  stays unwritable for longer than CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS (default 10), it is dropped
  with 4408 "Viewer too slow." rather than holding the upstream open forever; it then has
  SLOW_VIEWER_CLOSE_SECONDS to read what was sent before the close frame and the close frame itself
  (autobahn's ``closeHandshakeTimeout`` option for that connection; its default, 1 s, would cut the
  close frame off for any viewer that is slow indeed). Elsewhere (tests through the ASGI app, other
  servers) ``send`` itself is the back-pressure.
* browser → agent: each frame is written to the agent's socket at once; while more than
  ``VNC_WRITE_LIMIT`` bytes wait for it, the consumer waits, and reading from the browser's socket is
  paused (the transport's public ``IPushProducer.pauseProducing``).

The browser's socket is set to TCP_NODELAY (``ITCPTransport.setTcpNoDelay``): without it, the tail of
each update waits in the kernel for the browser's delayed acknowledgement of the rest, stalling the
stream and adding latency.

Reaching the browser's transport is the one thing below ASGI, and it takes two private details, both
pinned exactly in constraints.txt and each checked by a contract test
(``tests/desktop/test_proxy_daphne.py``), so an upgrade that changes them fails in CI: daphne passes
each application ``functools.partial(server.handle_reply, protocol)`` as ``send`` (daphne 4.2.3), and
Channels' session middleware keeps the server's ``send`` as ``real_send`` on the object whose bound
method it passes on (channels 4.3.2). Everything used from there is public: the protocol's
``transport``, ``state``/``STATE_OPEN`` and ``closeHandshakeTimeout`` (autobahn), and Twisted's
``IConsumer``, ``IPushProducer`` and ``ITCPTransport`` methods. When the lookup fails (another server,
or a changed wrapping) the proxy still works, without the bound.

Decision (issue #15): public APIs. This path replaced one that spliced the agent's frames into the
browser's socket below Twisted (the two details above, plus Twisted's ``dataBuffer`` and
``_tempDataLen``, a replaced ``transport.write``, an ``os.dup`` of the socket, 536 lines of
hand-written WebSocket framing, and the agent writing its transport beside websockets' undocumented
``drain()``). It costs daphne about twice the CPU per MB (four more copies: websockets' reader,
``bytes`` for ASGI, autobahn's framing, Twisted's buffer). Against the bar set for the change,
>= 300 MB/s (a 30 fps full-screen raw 1280x800 stream is ~120 MB/s) and bounded memory for a slow
viewer, memory holds in every run and throughput at the median on this loaded machine. ``make
bench`` (bench/bench_proxy.py), the two paths alternated, 12 runs each on this 2-core machine while
other engineers' test suites kept its load average at 2.4-5 (websockify itself: 309-1025 MB/s):

=====================================================  ======================  ===================
figure (range, median)                                 old: splice             this: public APIs
=====================================================  ======================  ===================
throughput (MB/s)                                      262-546, 446            199-564, 301
  as a ratio to websockify in the same run             0.50-0.85               0.33-0.70
CPU ms per MB: daphne / agent                          0.74 / 0.56             1.55 / 0.68
added latency p50 over websockify (ms)                 0.35-0.59               0.47-0.70
daphne RSS per idle viewer (KiB)                       32-33                   33-35
slow viewer (asks ~400 MB in 5 s, reads none):         <= 0.7 / 1.4            <= 2.8 / 1.5
  peak RSS growth daphne / agent (MiB)
50 concurrent viewers: full frames / errors            50 / 0                  50 / 0
=====================================================  ======================  ===================

In quieter minutes (load about 2) single throughput runs gave 458-577 MB/s; at 1.55 ms/MB daphne
alone could carry ~600 MB/s on an idle core. The 12 runs went below 300 MB/s five times (load 2.4-5),
never below 199 MB/s (1.7x a full-screen raw stream). If the bar must hold on a saturated machine,
the splice is the way back (in git history before this change), with a contract test for each of
its private details.

Keepalive: the upstream connection pings the agent every 15 s and answers its pings (a dead agent
closes the viewer); daphne pings browsers itself (``--ping-interval``). When either side ends, the
other is closed, and the tasks and the upstream socket are released in ``disconnect()`` (and, as a
last resort, when the consumer's coroutine ends for any other reason). No database access happens
per frame; one query per viewer per holder change, and per minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
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
from desktop import control
from desktop.client import agent_for_chat, open_vnc_upstream
from desktop.rfb import RfbClientFilter, RfbProtocolError
from desktop.upstream import VncUpstream

logger = logging.getLogger(__name__)

# RFC 6455 codes (the 4xxx ones are chatdesk's, from chatdesk.closecodes).
CLOSE_NORMAL = 1000
CLOSE_PROXY_ERROR = 1011

REASON_NOT_AUTHENTICATED = "Not authenticated."
REASON_NO_SUCH_CHAT = "No such chat."
REASON_AGENT_UNREACHABLE = "Workspace agent unreachable."
REASON_AGENT_LOST = "Workspace agent connection lost."
REASON_AGENT_PROTOCOL = "Workspace agent protocol error."
REASON_TOO_SLOW = "Viewer too slow."
REASON_MALFORMED = "Malformed RFB stream."
REASON_PROXY_ERROR = "Proxy error."

# The agent accepts frames up to 1 MiB, daphne sends messages up to 1 MiB (its
# websocket_max_message_size applies both ways); RFB is a byte stream, so bigger pieces are split.
MAX_UPSTREAM_FRAME = 256 * 1024
MAX_BROWSER_MESSAGE = 256 * 1024
# How often a viewer following the holder checks it without being told (see _keep_following).
CONTROL_RECHECK_SECONDS = 60.0
MAX_CLOSE_REASON = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code
# How long a viewer dropped as too slow has to read what was sent before its close frame, and the
# close frame, before daphne drops its TCP connection (what waits for it meanwhile is bounded).
SLOW_VIEWER_CLOSE_SECONDS = 10.0


class _Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _ViewerTooSlow(Exception):
    pass


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def daphne_protocol(send: Any) -> Any | None:
    """Return the browser connection's protocol (daphne's autobahn WebSocket protocol), else None.

    ``send`` is what the consumer was given: under daphne, ``functools.partial(server.handle_reply,
    protocol)``, possibly wrapped by Channels' session middleware in a bound method of an object whose
    ``real_send`` is the server's ``send`` (see the module docstring: both are private, pinned, and
    checked by contract tests).
    """
    for _ in range(8):  # middleware wrappings
        if isinstance(send, functools.partial):
            protocol = send.args[0] if send.args else None
            transport = getattr(protocol, "transport", None)
            needed = ("registerProducer", "unregisterProducer", "pauseProducing", "resumeProducing")
            if transport is None or not all(hasattr(transport, name) for name in needed):
                return None
            return protocol if hasattr(protocol, "STATE_OPEN") else None
        send = getattr(getattr(send, "__self__", None), "real_send", None)
        if send is None:
            return None
    return None


class _DaphneBrowser:
    """The browser's connection under daphne, for what ASGI cannot do: flow control and TCP_NODELAY.

    Registered as the streaming producer (Twisted's ``IPushProducer``) of the connection's transport:
    Twisted clears ``writable`` while more than the transport's ``bufferSize`` waits for the browser.
    (After daphne upgrades an HTTP connection, the dead HTTPChannel is still the registered producer;
    this replaces it.) ``pause_reading`` stops reading the browser's socket (TCP back-pressure).
    """

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._transport = transport = protocol.transport
        self.writable = asyncio.Event()
        self.writable.set()
        self._reading_paused = False
        set_no_delay = getattr(transport, "setTcpNoDelay", None)  # not TCP (daphne -u): no Nagle
        if set_no_delay is not None:
            with contextlib.suppress(OSError):
                set_no_delay(True)
        transport.unregisterProducer()
        transport.registerProducer(self, True)

    # IPushProducer (Twisted calls these on the event loop thread: daphne runs the asyncio reactor)
    def pauseProducing(self) -> None:
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:
        self.writable.set()  # the connection is gone; websocket.disconnect follows

    @property
    def is_open(self) -> bool:
        """False once the WebSocket is closing: daphne would refuse to send."""
        return bool(self._protocol.state == self._protocol.STATE_OPEN)

    def allow_slow_close(self, seconds: float) -> None:
        """Give the closing handshake ``seconds`` (for a viewer behind on reading)."""
        self._protocol.closeHandshakeTimeout = seconds

    def pause_reading(self) -> None:
        if not self._reading_paused and self._transport.connected:
            self._reading_paused = True
            self._transport.pauseProducing()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self._transport.connected:
                self._transport.resumeProducing()

    def detach(self) -> None:
        self._transport.unregisterProducer()
        self.resume_reading()


class DesktopProxyConsumer(AsyncWebsocketConsumer):
    """Proxy one browser viewer to the chat's workspace agent; see the module docstring."""

    # The default channel layer carries holder changes (desktop.control). channels_redis reads every
    # consumer's channel of a process through one shared receive loop, so a viewer costs no connection.

    upstream: VncUpstream | None = None
    rfb_filter: RfbClientFilter | None = None
    control_group: str | None = None
    view_only_for_good = False  # ?view_only=1: never input, whoever holds the desktop
    _agent_id: Any = None
    _user_id: Any = None
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
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.view_only_for_good = any(_truthy(v) for v in query.get("view_only", []))
        try:
            agent, may_send_input = await self._authorize()
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
        self.rfb_filter = RfbClientFilter(view_only=not may_send_input, always_shared=True)
        protocol = daphne_protocol(self.base_send)
        if protocol is not None:
            self._browser = _DaphneBrowser(protocol)
        self._tasks = (asyncio.create_task(self._agent_to_browser(), name="desktop-agent-to-browser"),)
        if self.control_group is not None:
            self._tasks += (asyncio.create_task(self._keep_following(), name="desktop-control-recheck"),)

    @database_sync_to_async
    def _authorize(self) -> tuple[WorkspaceAgent, bool]:
        """Return the agent to connect to, and whether this viewer may send it input now (joining the
        agent's control group on the way). Raise _Refused with the close code and reason."""
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
        self._agent_id, self._user_id = agent.pk, user.pk
        return agent, not self.view_only_for_good and self._follow_control()

    def _follow_control(self) -> bool:
        """Join the agent's control group, then read who holds the desktop (in that order, so no change
        falls between the two); return whether this viewer may send input. A viewer that cannot join
        stays view-only. In _authorize's thread: one database connection for both reads."""
        group = control.group_name(self._agent_id)
        try:
            async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        except Exception:
            logger.warning("desktop proxy: cannot follow the holder of agent %s; view only", self._agent_id)
            return False
        self.control_group = group
        agent = _holder_of(self._agent_id)
        return agent is not None and control.may_send_input(agent, self._user_id)

    async def _keep_following(self) -> None:
        """Every CONTROL_RECHECK_SECONDS, join the control group again and read the holder: group
        membership expires (the layer's group_expiry, a day by default) and a message can be lost (Redis
        restarting), and neither may leave a viewer with a right to type it no longer has."""
        while True:
            await asyncio.sleep(CONTROL_RECHECK_SECONDS)
            try:
                if self.control_group is not None:
                    await self.channel_layer.group_add(self.control_group, self.channel_name)
                await self._apply_holder()
            except Exception:
                logger.warning("desktop proxy: cannot recheck the holder of agent %s", self._agent_id)
                if self.rfb_filter is not None:
                    self.rfb_filter.view_only = True  # fail closed until the next check

    async def desktop_control(self, message: dict[str, Any]) -> None:
        """The holder of the desktop changed (``desktop.control.ControlMessage``): read it and switch."""
        if self.control_group is not None and self.rfb_filter is not None:
            await self._apply_holder()

    async def _apply_holder(self) -> None:
        """Let this viewer's input through exactly while its user holds the desktop (read fresh)."""
        assert self.rfb_filter is not None
        agent = await database_sync_to_async(_holder_of)(self._agent_id)
        may = agent is not None and control.may_send_input(agent, self._user_id)
        if self.rfb_filter.view_only == may:
            logger.debug(
                "desktop proxy: viewer of agent %s %s input",
                self._agent_id,
                "sends" if may else "no longer sends",
            )
        self.rfb_filter.view_only = not may

    async def _refuse(self, code: int, reason: str) -> None:
        self._closing = True
        await self.close(code=code, reason=reason[:MAX_CLOSE_REASON])

    async def disconnect(self, code: int) -> None:
        await self._release()

    async def _release(self) -> None:
        """Leave the control group, cancel the pump, close the upstream socket. Idempotent."""
        group, self.control_group = self.control_group, None
        if group is not None:
            with contextlib.suppress(Exception):
                await self.channel_layer.group_discard(group, self.channel_name)
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
        upstream = self.upstream
        if upstream is None or self._closing:
            return  # refused or closing: whatever the browser still sends goes nowhere
        if bytes_data is None:
            await self._close_viewer(CLOSE_MALFORMED, f"{REASON_MALFORMED[:-1]}: text frame.")
            return
        rfb_filter = self.rfb_filter
        assert rfb_filter is not None  # set with the upstream
        dropped = rfb_filter.dropped_messages
        try:
            data = rfb_filter.feed(bytes_data)
        except RfbProtocolError as exc:
            logger.info("viewer of chat %s closed: %s", self.scope["url_route"]["kwargs"], exc)
            await self._close_viewer(CLOSE_MALFORMED, f"{REASON_MALFORMED[:-1]}: {exc}.")
            return
        if rfb_filter.dropped_messages != dropped:
            logger.debug(
                "desktop proxy: dropped %d input message(s) of user %s on agent %s (%d in all): not the holder",
                rfb_filter.dropped_messages - dropped,
                self._user_id,
                self._agent_id,
                rfb_filter.dropped_messages,
            )
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
            await upstream.wait_writable()
        finally:
            if self._browser is not None:
                self._browser.resume_reading()

    # -- agent → browser -------------------------------------------------------------------------------

    async def _agent_to_browser(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        code, reason = CLOSE_NORMAL, ""
        try:
            while payloads := await upstream.read():
                if not await self._to_browser(payloads):
                    break  # the browser's side is closing
        except _ViewerTooSlow:
            code, reason = CLOSE_TOO_SLOW, REASON_TOO_SLOW
        except Exception:
            logger.exception("desktop proxy: agent-to-browser copy failed")
            code, reason = CLOSE_PROXY_ERROR, REASON_PROXY_ERROR
        if code == CLOSE_NORMAL and upstream.failure is not None:
            protocol_error = upstream.failure.startswith("protocol error")
            code, reason = (
                CLOSE_AGENT_UNREACHABLE,
                REASON_AGENT_PROTOCOL if protocol_error else REASON_AGENT_LOST,
            )
        await self._close_viewer(code, reason)  # (nothing to do when the browser is closing)
        # Let go of the agent now rather than when the browser acknowledges the close (a slow
        # viewer may take a while); disconnect() finishes the rest.
        with contextlib.suppress(Exception):
            await upstream.close()

    async def _to_browser(self, payloads: list[bytes | bytearray]) -> bool:
        """Send the agent's payloads to the browser; return False once the browser's side is closing.

        Each message waits until the browser's connection is writable (so Twisted holds one message
        at a time, and sends it without joining buffers). Raise _ViewerTooSlow when it stays
        unwritable for CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS.
        """
        browser, rfb_filter = self._browser, self.rfb_filter
        for payload in payloads:
            view = memoryview(payload)
            for start in range(0, len(view), MAX_BROWSER_MESSAGE):
                if browser is not None and not browser.writable.is_set():
                    try:
                        async with asyncio.timeout(settings.CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS):
                            await browser.writable.wait()
                    except TimeoutError:
                        browser.allow_slow_close(SLOW_VIEWER_CLOSE_SECONDS)
                        raise _ViewerTooSlow from None
                if self._closing or (browser is not None and not browser.is_open):
                    return False
                data = bytes(view[start : start + MAX_BROWSER_MESSAGE])  # ASGI wants bytes
                if rfb_filter is not None and rfb_filter.needs_server_bytes:
                    rfb_filter.observe_server(data)
                await self.send(bytes_data=data)
        return True


def _holder_of(agent_id: Any) -> WorkspaceAgent | None:
    """Return the agent with just who holds its desktop (None when it is gone)."""
    return WorkspaceAgent.objects.only("desktop_holder", "desktop_held_by").filter(pk=agent_id).first()
