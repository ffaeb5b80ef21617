from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from agents.models import WorkspaceAgent
from chatdesk.exceptions import Conflict

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


def workspace_agent_heartbeat(*, agent: WorkspaceAgent, url: str, width: int, height: int) -> WorkspaceAgent:
    """Record that ``agent`` is alive at ``url`` with a display of ``width``x``height``."""
    agent.url = url
    agent.display_width = width
    agent.display_height = height
    agent.last_seen = timezone.now()
    agent.save(update_fields=["url", "display_width", "display_height", "last_seen", "updated_at"])
    return agent


def workspace_agent_command(*, request: HttpRequest, token: str) -> str:
    """Return the shell command that runs an agent against this server (as the browser reached it)."""
    server = request.build_absolute_uri("/").rstrip("/")
    return f"chatdesk-agent --server {shlex.quote(server)} --token {shlex.quote(token)}"


def workspace_agent_for_user(*, owner: User) -> WorkspaceAgent | None:
    """Return the owner's most recently seen connected agent, if any (the default for new chats)."""
    return WorkspaceAgent.objects.filter(owner=owner).connected().order_by("-last_seen").first()
