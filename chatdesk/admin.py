from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from chatdesk.models import ApiToken


class ShowsNewTokenOnceAdmin(admin.ModelAdmin):
    """Creating a row shows its new token once, in the response to the POST itself.

    Only the token's hash is stored, so this is the one chance to copy it. It never goes into a message
    (Django keeps messages in a cookie or the session) nor into a redirect: the page is rendered directly.
    """

    credential_kind = "Token"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            request._chatdesk_new_token = obj.assign_new_token()  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def token_usage(self, request: HttpRequest, obj: Any, token: str) -> str:
        """Return a line showing how to use ``token`` (shown under it)."""
        return ""

    def response_add(
        self, request: HttpRequest, obj: Model, post_url_continue: str | None = None
    ) -> HttpResponse:
        token = getattr(request, "_chatdesk_new_token", None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "object": obj,
            "title": f"{self.credential_kind} for {obj}",
            "credential_kind": self.credential_kind,
            "token": token,
            "usage": self.token_usage(request, obj, token),
        }
        # Admin views are never_cache: the page is sent with Cache-Control: no-store.
        return TemplateResponse(request, "admin/chatdesk_new_token.html", context)


@admin.register(ApiToken)
class ApiTokenAdmin(ShowsNewTokenOnceAdmin):
    list_display = ["name", "user", "token_prefix", "created_at", "last_used_at"]
    search_fields = ["name", "user__username"]
    fields = ["user", "name", "token_prefix", "created_at", "last_used_at"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at"]
    credential_kind = "API token"

    def token_usage(self, request: HttpRequest, obj: Any, token: str) -> str:
        return f"Authorization: Bearer {token}"
