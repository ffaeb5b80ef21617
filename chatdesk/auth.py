"""Bearer-token authentication for the REST API and WebSockets.

`Authorization: Bearer <api token>` authenticates as the token's user. Agent tokens (cda_…) are not
user credentials: they authenticate only the agent heartbeat (agents.api).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from chatdesk.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def bearer_from_header(value: str | bytes | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_user(request: Request) -> User:
    """Return the caller of a view behind IsAuthenticated. Raise NotAuthenticated for an anonymous one."""
    if not request.user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return cast("User", request.user)


def user_for_api_token(raw: str) -> AbstractBaseUser | None:
    token = ApiToken.objects.for_raw(raw)
    if token is None:
        return None
    now = timezone.now()
    # Touch last_used_at at most once a minute: a hot API client should not write on every request.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken | None] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header or not header.lower().startswith("bearer"):
            return None
        raw = bearer_from_header(header)
        if raw is None:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header; expected 'Bearer <token>'."
            )
        user = user_for_api_token(raw)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return (user, None)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerAuthMiddleware(BaseMiddleware):
    """Channels middleware: a valid Bearer header sets scope["user"] (else the session's user stands)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        raw = bearer_from_header(headers.get(b"authorization"))
        if raw is not None:
            user = await sync_to_async(user_for_api_token)(raw)
            scope = dict(scope, user=user or AnonymousUser(), auth_method="bearer")
        return await super().__call__(scope, receive, send)


def WebSocketAuthStack(inner: Any) -> Any:
    return AuthMiddlewareStack(BearerAuthMiddleware(inner))
