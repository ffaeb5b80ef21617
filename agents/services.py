from __future__ import annotations

import logging
import shlex
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from agents.daemon.addresses import AddressAllowlist, AddressNotAllowed, check_allowed
from agents.models import WorkspaceAgent
from chatdesk.exceptions import Conflict, ValidationError

logger = logging.getLogger(__name__)

# Where the Agents page and admin tell people to keep the token (never on the command line).
TOKEN_FILE_HINT = "~/.chatdesk-agent-token"  # noqa: S105 - a path, not a token

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def workspace_agent_create(*, owner: User, name: str) -> tuple[WorkspaceAgent, str]:
    """Register a workspace agent. Return it and its token (only its hash is stored: show it once).

    Raise Conflict when the owner already has an agent of that name.
    """
    agent = WorkspaceAgent(owner=owner, name=name)
    raw = agent.assign_new_token()
    try:
        with transaction.atomic():
            agent.save()
    except IntegrityError:
        raise Conflict(f"You already have a workspace agent named {name!r}.") from None
    return agent, raw


def workspace_agent_heartbeat(
    *, agent: WorkspaceAgent, url: str, width: int, height: int, stopping: bool = False
) -> WorkspaceAgent:
    """Record that ``agent`` is alive at ``url`` with a display of ``width``x``height`` — or, when it
    says it is ``stopping``, that it is gone (``disconnected`` at once, not after the timeout)."""
    if stopping:
        agent.last_seen = None
        agent.save(update_fields=["last_seen", "updated_at"])
        return agent
    agent.url = url
    agent.display_width = width
    agent.display_height = height
    agent.last_seen = timezone.now()
    agent.save(update_fields=["url", "display_width", "display_height", "last_seen", "updated_at"])
    return agent


@lru_cache(maxsize=4)
def _allowlist(entries: tuple[str, ...]) -> AddressAllowlist:
    return AddressAllowlist.parse(entries)


def agent_url_allowlist() -> AddressAllowlist:
    """Return CHATDESK_AGENT_URL_ALLOW, parsed: where the server may connect to reach an agent."""
    return _allowlist(tuple(settings.CHATDESK_AGENT_URL_ALLOW))


def agent_url_check(url: str) -> str:
    """Return ``url`` when the server may dial it: ws(s)://, a host and port, and the host resolving to
    an address CHATDESK_AGENT_URL_ALLOW allows. Raise ValidationError saying what is wrong.

    The server checks again, on the resolved address, every time it connects (``desktop.client``); this
    check only tells an agent with a bad URL at once, in its heartbeat's answer.
    """
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValidationError("Must be a ws:// or wss:// URL with a valid port.") from None
    if parts.scheme not in ("ws", "wss") or not host:
        raise ValidationError("Must be a ws:// or wss:// URL with a host.")
    try:
        check_allowed(host, port or (443 if parts.scheme == "wss" else 80), agent_url_allowlist())
    except AddressNotAllowed as exc:
        logger.warning("heartbeat refused: %s", exc)
        raise ValidationError(
            f"The server may not connect to {host}: it is outside CHATDESK_AGENT_URL_ALLOW "
            "(loopback and private networks by default). Advertise a URL the server may reach "
            "(--advertise-url), or ask the server's admin to allow it."
        ) from None
    return url


def workspace_agent_command(*, request: HttpRequest) -> str:
    """Return the shell command that runs an agent against this server (as the browser reached it).

    It names the token file, never the token: a command line is visible to every local user (``ps``).
    """
    server = request.build_absolute_uri("/").rstrip("/")
    return f"chatdesk-agent --server {shlex.quote(server)} --token-file {TOKEN_FILE_HINT}"


def workspace_agent_token_file_command() -> str:
    """Return the shell command that saves a token pasted on its input (then Enter, Ctrl+D) in a file
    only its owner can read."""
    return f"(umask 077; cat > {TOKEN_FILE_HINT})"


def workspace_agent_for_user(*, owner: User) -> WorkspaceAgent | None:
    """Return the owner's most recently seen connected agent, if any (the default for new chats)."""
    return WorkspaceAgent.objects.filter(owner=owner).connected().order_by("-last_seen").first()
