"""The server's way to a chat's desktop: find its workspace agent, then call it.

Used by the desktop proxy (``desktop.consumers``), the screenshot endpoint and the computer tool.

Trust boundary: the server never holds an agent's token (only its hash, to check heartbeats). It
presents ``agent.get_server_credential()``, a value derived from the token that the agent accepts
(``agents.daemon.credentials``). Errors raised here name the agent and what failed, never the
credential; they are ``chatdesk.exceptions`` errors, so the API and the turn engine can show them:

* ``AgentNotConnected`` (409) — the chat has no workspace agent, or it has stopped heartbeating;
* ``AgentUnreachable`` (502) — the agent did not answer, dropped the connection, timed out, or its URL
  is outside CHATDESK_AGENT_URL_ALLOW;
* ``AgentError`` (502) — the agent answered but refused (wrong credential) or reported an error
  (``AgentRequestFailed``: e.g. a coordinate outside the display; the message is written for the model);
* ``AgentCredentialUnreadable`` (503) — the server cannot decrypt its credential for the agent.

The server dials an agent only at an address CHATDESK_AGENT_URL_ALLOW allows, checked on the resolved
address when it connects and connected to as checked (``agents.daemon.addresses``). What the far end
answered (HTTP statuses, error texts) goes to the log, never into these messages: users see only that
the agent could not be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from asgiref.sync import async_to_sync
from django.conf import settings
from websockets.exceptions import InvalidStatus, InvalidURI, WebSocketException

from agents.daemon import client as agent_client
from agents.models import WorkspaceAgent
from agents.services import agent_url_allowlist
from chatdesk.exceptions import AgentError, AgentNotConnected, AgentUnreachable
from chats.models import Chat
from desktop.upstream import UpstreamLimits, VncUpstream, connect_upstream

logger = logging.getLogger(__name__)

NO_AGENT = "Chat has no workspace agent."
NOT_CONNECTED = "Workspace agent is not connected."
NOT_ALLOWED = (
    "Workspace agent {name!r} is at an address the server may not connect to (CHATDESK_AGENT_URL_ALLOW)."
)

# VNC upstream (per viewer). The agent sends the VNC server's bytes in frames of at most 256 KiB;
# VNC_BUFFER bounds the payload bytes buffered per viewer when the browser side is slow (reading from
# the agent pauses beyond it), max_frame the one frame that may be in progress besides.
VNC_BUFFER = 1024 * 1024
VNC_WRITE_LIMIT = 64 * 1024
VNC_LIMITS = UpstreamLimits(
    max_frame=4 * 1024 * 1024,
    buffer_limit=VNC_BUFFER,
    write_limit=VNC_WRITE_LIMIT,
    ping_interval=15.0,
    ping_timeout=15.0,
    close_timeout=2.0,
)

THUMBNAIL_MIN = 16
THUMBNAIL_MAX = 4096


class AgentRequestFailed(AgentError):
    """The agent answered a call with an error; the message is the agent's, written for the model."""


def agent_for_chat(chat: Chat) -> WorkspaceAgent:
    """Return the chat's workspace agent.

    Raise AgentNotConnected when the chat has none or it is not connected (the message says which).
    Touches the database when ``chat.workspace_agent`` was not loaded with select_related.
    """
    agent = chat.workspace_agent
    if agent is None:
        raise AgentNotConnected(NO_AGENT)
    if not agent.is_connected or not agent.url:
        raise AgentNotConnected(NOT_CONNECTED)
    return agent


def _agent_url(agent: WorkspaceAgent) -> str:
    """Return the agent's base URL as ws(s)://host[:port][/path] (http(s) accepted, as the client does)."""
    parts = urlsplit(agent.url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise AgentUnreachable(f"Workspace agent {agent.name!r} has no usable URL.")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _map_error(agent: WorkspaceAgent, what: str, exc: agent_client.AgentClientError) -> AgentError:
    """Return the chatdesk error for a client error. The client's own text may hold the URL; log it only."""
    logger.warning("workspace agent %s (%s): %s failed: %s", agent.name, agent.pk, what, exc)
    if isinstance(exc, agent_client.AgentUnauthorized):
        return AgentError(f"Workspace agent {agent.name!r} refused the server's credential ({what}).")
    if isinstance(exc, agent_client.AgentRequestError):
        return AgentRequestFailed(f"Workspace agent {agent.name!r}: {exc.message}")
    if isinstance(exc, agent_client.AgentAddressNotAllowed):
        return AgentUnreachable(NOT_ALLOWED.format(name=agent.name))
    if isinstance(exc, agent_client.AgentUnreachable):
        return AgentUnreachable(f"Workspace agent {agent.name!r} could not be reached ({what}).")
    return AgentError(f"Workspace agent {agent.name!r} failed ({what}).")


@contextlib.asynccontextmanager
async def open_agent(agent: WorkspaceAgent) -> AsyncIterator[agent_client.AgentClient]:
    """Yield a connected AgentClient for ``agent`` (RPC connection), closed on exit.

    Raise AgentUnreachable / AgentError when connecting fails; errors from calls made inside the
    block are mapped too.
    """
    client = agent_client.AgentClient(
        _agent_url(agent),
        agent.get_server_credential(),
        timeout=settings.CHATDESK_AGENT_CONNECT_TIMEOUT,
        allow=agent_url_allowlist(),
    )
    try:
        await client.__aenter__()
    except agent_client.AgentClientError as exc:
        raise _map_error(agent, "connect", exc) from None
    try:
        yield client
    except agent_client.AgentClientError as exc:
        raise _map_error(agent, "call", exc) from None
    finally:
        await client.close()


async def open_vnc_upstream(agent: WorkspaceAgent) -> VncUpstream:
    """Return a WebSocket to the agent's VNC route (raw RFB in binary frames) for one viewer.

    Connected here rather than through ``agents.daemon.client.open_vnc`` because the proxy owns this
    connection's keepalive (ping every 15 s) and its buffer bounds (flow control per viewer:
    ``desktop.upstream``). The agent is reached directly, whatever HTTP(S)_PROXY says; no extension
    (compression) is negotiated.
    The whole handshake is bounded by CHATDESK_AGENT_CONNECT_TIMEOUT; the address is checked against
    CHATDESK_AGENT_URL_ALLOW first (see module docstring).
    Raise AgentUnreachable (no answer, refused, timeout, address not allowed) or AgentError (credential
    refused).
    """
    url = _agent_url(agent) + "/vnc"
    credential = agent.get_server_credential()
    try:
        async with asyncio.timeout(settings.CHATDESK_AGENT_CONNECT_TIMEOUT):
            target = await agent_client.checked_address(url, agent_url_allowlist())
    except agent_client.AgentClientError as exc:
        raise _map_error(agent, "VNC connect", exc) from None
    except TimeoutError:
        raise AgentUnreachable(f"Workspace agent {agent.name!r} could not be reached.") from None
    try:
        return await connect_upstream(
            url,
            headers={"Authorization": f"Bearer {credential}"},
            open_timeout=settings.CHATDESK_AGENT_CONNECT_TIMEOUT,
            limits=VNC_LIMITS,
            user_agent="chatdesk-server",
            address=target.get("host"),
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        logger.warning("workspace agent %s (%s): VNC connect answered HTTP %s", agent.name, agent.pk, status)
        if status == 401:
            raise AgentError(f"Workspace agent {agent.name!r} refused the server's credential.") from None
        raise AgentUnreachable(f"Workspace agent {agent.name!r} could not be reached.") from None
    except InvalidURI:
        raise AgentUnreachable(f"Workspace agent {agent.name!r} has no usable URL.") from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        logger.warning("workspace agent %s (%s): VNC connect failed: %r", agent.name, agent.pk, exc)
        raise AgentUnreachable(f"Workspace agent {agent.name!r} could not be reached.") from None


def thumbnail_size(native: tuple[int, int], width: int) -> tuple[int, int]:
    """Return (width, height) for a thumbnail ``width`` wide, keeping ``native``'s aspect ratio.

    ``width`` is clamped to 16..4096; the height is at least 1.
    """
    width = max(THUMBNAIL_MIN, min(THUMBNAIL_MAX, width))
    native_w, native_h = native
    return width, max(1, round(native_h * width / native_w))


async def screenshot(agent: WorkspaceAgent, width: int | None = None) -> agent_client.Screenshot:
    """Return a PNG screenshot of the agent's desktop: native size, or ``width`` wide (aspect kept).

    Raise AgentUnreachable / AgentError.
    """
    async with open_agent(agent) as client:
        if width is None:
            return await client.screenshot()
        if agent.display_width and agent.display_height:
            native = (agent.display_width, agent.display_height)
        else:
            info = await client.info()
            native = (int(info["native"]["width"]), int(info["native"]["height"]))
        return await client.screenshot(*thumbnail_size(native, width))


async def run_action(agent: WorkspaceAgent, params: dict[str, Any]) -> agent_client.ActionResult:
    """Run one computer action (Anthropic tool input + scaled_width/scaled_height) on the agent.

    Raise AgentRequestFailed (the agent refused it; the message is for the model), AgentUnreachable
    or AgentError.
    """
    async with open_agent(agent) as client:
        return await client.action(params)


def run_action_sync(agent: WorkspaceAgent, params: dict[str, Any]) -> agent_client.ActionResult:
    """Synchronous :func:`run_action` for Celery tasks and other sync code (no event loop running)."""
    return async_to_sync(run_action)(agent, params)
