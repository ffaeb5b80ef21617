from __future__ import annotations

from typing import TYPE_CHECKING

from chatdesk.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Create an API token for ``user``. Return the row and the token, which is never shown again."""
    token = ApiToken(user=user, name=name)
    raw = token.assign_new_token()
    token.save()
    return token, raw
