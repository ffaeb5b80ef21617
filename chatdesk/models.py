from __future__ import annotations

from django.conf import settings
from django.db import models

from chatdesk.crypto import hash_token, new_token


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def for_raw(self, raw: str) -> ApiToken | None:
        return self.select_related("user").filter(token_hash=hash_token(raw), user__is_active=True).first()


class ApiToken(models.Model):
    """A personal API token. Only its SHA-256 is stored; the token is shown once, at creation."""

    PREFIX = "cdk"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(
        max_length=12, editable=False, help_text="The first characters, to tell tokens apart."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}…)"

    def assign_new_token(self) -> str:
        """Set a fresh token's hash on this row and return the token itself (to show once)."""
        raw = new_token(self.PREFIX)
        self.token_hash = hash_token(raw)
        self.token_prefix = raw[:10]
        return raw
