from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from chatdesk.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "token_prefix", "created_at", "last_used_at"]
    search_fields = ["name", "user__username"]
    fields = ["user", "name", "token_prefix", "created_at", "last_used_at"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        raw = None if change else obj.assign_new_token()
        super().save_model(request, obj, form, change)
        if raw:
            messages.warning(
                request, f"API token {obj.name} (copy it now, it will not be shown again): {raw}"
            )
