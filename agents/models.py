from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from agents.daemon.credentials import server_credential
from chatdesk.crypto import DecryptionError, decrypt_secret, encrypt_secret, hash_token, new_token
from chatdesk.exceptions import AgentCredentialUnreadable


class WorkspaceAgentQuerySet(models.QuerySet["WorkspaceAgent"]):
    def connected(self) -> WorkspaceAgentQuerySet:
        cutoff = timezone.now() - timedelta(seconds=settings.CHATDESK_AGENT_TIMEOUT_SECONDS)
        return self.filter(last_seen__gte=cutoff)

    def for_raw_token(self, raw: str) -> WorkspaceAgent | None:
        return self.filter(token_hash=hash_token(raw)).first()


class DesktopHolder(models.TextChoices):
    """Who controls a desktop (null: nobody)."""

    MODEL = "model"  # the computer-use chats on it (while one of them acts)
    PERSON = "person"  # a user who took control


class WorkspaceAgent(models.Model):
    """A `chatdesk-agent` running in a workspace, next to a desktop.

    Its status is derived from ``last_seen``: `connected` while heartbeats arrive, else `disconnected`.
    """

    PREFIX = "cda"

    class Status(models.TextChoices):
        CONNECTED = "connected"
        DISCONNECTED = "disconnected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="workspace_agents"
    )
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=12, editable=False)
    # What the server presents to the agent (agents/daemon/credentials.py), encrypted at rest.
    server_credential_encrypted = models.TextField(editable=False, default="")
    url = models.CharField(
        max_length=500, blank=True, help_text="Where the server reaches the agent (ws://…)."
    )
    display_width = models.PositiveIntegerField(null=True, blank=True)
    display_height = models.PositiveIntegerField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    # Who controls the desktop (SPEC §8 "One holder"); changed only by desktop/control.py, which
    # documents the rules. ``desktop_held_by`` is the person, set exactly when the holder is a person
    # (a check constraint); ``desktop_held_at`` is when the holder last changed.
    desktop_holder = models.CharField(  # noqa: DJ001 (null, not "": the API says "holder": null)
        max_length=8, choices=DesktopHolder.choices, null=True, blank=True
    )
    desktop_held_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    desktop_held_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkspaceAgentQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen", "name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="workspace_agent_unique_name"),
            models.CheckConstraint(
                condition=Q(desktop_holder__isnull=True) | Q(desktop_holder__in=DesktopHolder.values),
                name="workspace_agent_desktop_holder_valid",
            ),
            # The person is set exactly while a person holds the desktop (each side false, not null,
            # when the holder is null: a check constraint passes on null).
            models.CheckConstraint(
                condition=Q(
                    desktop_holder__isnull=False,
                    desktop_holder=DesktopHolder.PERSON,
                    desktop_held_by__isnull=False,
                )
                | (Q(desktop_holder__isnull=True) | ~Q(desktop_holder=DesktopHolder.PERSON))
                & Q(desktop_held_by__isnull=True),
                name="workspace_agent_held_by_iff_person",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def status(self) -> str:
        if self.last_seen is None:
            return self.Status.DISCONNECTED
        age = timezone.now() - self.last_seen
        if age <= timedelta(seconds=settings.CHATDESK_AGENT_TIMEOUT_SECONDS):
            return self.Status.CONNECTED
        return self.Status.DISCONNECTED

    @property
    def is_connected(self) -> bool:
        return self.status == self.Status.CONNECTED

    def assign_new_token(self) -> str:
        """Set a fresh token's hash on this row and return the token itself (to show once)."""
        raw = new_token(self.PREFIX)
        self.token_hash = hash_token(raw)
        self.token_prefix = raw[:10]
        self.server_credential_encrypted = encrypt_secret(server_credential(raw))
        return raw

    def get_server_credential(self) -> str:
        """Return the Bearer credential to present when calling this agent.

        Raise AgentCredentialUnreadable (an AgentError, 503) when the server's keys cannot decrypt it.
        """
        try:
            return decrypt_secret(self.server_credential_encrypted)
        except DecryptionError:
            raise AgentCredentialUnreadable() from None
