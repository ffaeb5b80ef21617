"""The project's one error vocabulary.

Services raise these; the DRF exception handler (``chatdesk.api.exception_handler``) turns them into
responses, the turn engine turns them into a chat's ``last_error``. Messages are written for a person:
never put an SDK's raw exception text or a secret in one.
"""

from __future__ import annotations

from typing import Any


class ChatdeskError(Exception):
    """Base class. ``message`` is safe to show to the user; ``extra`` (JSON values) joins it in the response
    body, beside ``detail`` (e.g. a Conflict's ``{"state": "approved"}``)."""

    status_code = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, extra: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.extra: dict[str, Any] = dict(extra or {})
        super().__init__(self.message)


class ValidationError(ChatdeskError):
    status_code = 400


class ServerMisconfigured(ChatdeskError):
    """The server cannot do this because of its own configuration, not the request (logged for the admin)."""

    status_code = 503
    default_message = "The server is misconfigured; an administrator must fix it."


class Conflict(ChatdeskError):
    status_code = 409


class ServiceUnavailable(ChatdeskError):
    """A service chatdesk depends on (Redis, PostgreSQL) is unreachable; the request changed nothing."""

    status_code = 503
    default_message = (
        "chatdesk cannot reach a service it needs right now; nothing was saved. Try again shortly."
    )


class ProviderError(ChatdeskError):
    """The model provider failed."""

    status_code = 502
    default_message = "The model provider failed."


class ProviderNotConfigured(ProviderError):
    default_message = "No Anthropic API key is configured."


class ProviderTransientError(ProviderError):
    """Worth retrying: rate limits, overload, 5xx, connection errors.

    ``retry_after`` is the provider's hint in seconds, when it gave one.
    """

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderPermanentError(ProviderError):
    """Not worth retrying: bad request, authentication, permission, not found."""


class AgentError(ChatdeskError):
    """A workspace agent could not be used."""

    status_code = 502
    default_message = "The workspace agent failed."


class AgentNotConnected(AgentError):
    status_code = 409
    default_message = "The chat has no connected workspace agent."


class AgentUnreachable(AgentError):
    status_code = 502
    default_message = "The workspace agent could not be reached."


class AgentCredentialUnreadable(AgentError, ServerMisconfigured):
    """The server cannot decrypt its credential for an agent (its encryption keys changed)."""

    status_code = 503
    default_message = (
        "The server cannot decrypt its credential for this workspace agent: its encryption keys were "
        "changed without keeping the old one. An administrator must fix the server's configuration."
    )
