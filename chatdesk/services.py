from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from chatdesk.models import ApiToken


def api_token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """Create an API token for ``user``. Return the row and the token, which is never shown again."""
    token = ApiToken(user=user, name=name)
    raw = token.assign_new_token()
    token.save()
    return token, raw
