from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet, Sum
from django.http import Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from rest_framework.exceptions import NotFound

from chats.api import MISSING, file_response
from chats.models import (
    Approval,
    AuditEvent,
    Chat,
    ChatFile,
    ChatMessage,
    ChatModelConfig,
    ChatProvider,
    UserBudget,
)
from chats.pricing import format_usd, month_start, user_month_spent
from chats.services import chat_delete, chat_update


class ChatProviderForm(forms.ModelForm):
    """The key is write-only: a password input that never renders the stored value."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)
    base_url = forms.URLField(
        required=False, assume_scheme="https", help_text="Empty: the provider's public API."
    )

    class Meta:
        model = ChatProvider
        fields = ["provider", "display_name", "api_key", "clear_api_key", "base_url", "enabled"]

    def save(self, commit: bool = True) -> ChatProvider:
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            provider.set_api_key(self.cleaned_data["api_key"])
        if commit:
            provider.save()
        return provider


@admin.register(ChatProvider)
class ChatProviderAdmin(admin.ModelAdmin):
    form = ChatProviderForm
    list_display = ["__str__", "provider", "key", "base_url", "enabled", "updated_at"]
    list_filter = ["enabled"]

    @admin.display(description="API key")
    def key(self, obj: ChatProvider) -> str:
        return f"set (…{obj.api_key_last4})" if obj.has_api_key else "not set"

    def save_model(self, request: HttpRequest, obj: ChatProvider, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)


@admin.register(ChatModelConfig)
class ChatModelConfigAdmin(admin.ModelAdmin):
    """Model configs and their prices (USD per million tokens; each must be 0 or more: the model's
    validators). Defaults for known models ship as data; an empty price counts as the most expensive known."""

    list_display = [
        "model", "display_name", "enabled", "is_default", "context_limit",
        "input_price", "output_price", "cache_write_price", "cache_read_price",
    ]  # fmt: skip
    list_filter = ["enabled", "is_default", "provider"]
    search_fields = ["model", "display_name"]
    fieldsets = [
        (None, {"fields": ["provider", "model", "display_name", "enabled", "is_default", "context_limit"]}),
        (
            "Prices (USD per million tokens)",
            {"fields": ["input_price", "output_price", "cache_write_price", "cache_read_price"]},
        ),
        ("Options", {"fields": ["options"]}),
    ]


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    """A person's monthly limit on what their chats may spend on model calls (the limit must be 0 or
    more). Once reached, their chats pause before the next model call (paused_reason ``budget``)."""

    list_display = ["user", "monthly_limit_usd", "spent_this_month", "updated_at"]
    search_fields = ["user__username"]

    @admin.display(description="Spent this month")
    def spent_this_month(self, obj: UserBudget) -> str:
        return f"{format_usd(user_month_spent(obj.user_id))} since {month_start():%Y-%m-%d}"


class ChatMessageInline(admin.TabularInline):
    model = ChatMessage
    fields = ("id", "role", "summary", "screenshots", "usage", "cost_usd", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ["id"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Content")
    def summary(self, message: ChatMessage) -> str:
        parts = []
        for part in message.content:
            kind = part.get("type")
            if kind == "text":
                parts.append(part.get("text", "")[:500])
            elif kind == "tool_use":
                parts.append(f"[tool {part.get('name')}: {str(part.get('input'))[:200]}]")
            elif kind == "tool_result":
                texts = [p.get("text", "") for p in part.get("content") or [] if p.get("type") == "text"]
                parts.append(f"[result{' (error)' if part.get('is_error') else ''}: {' '.join(texts)[:200]}]")
            elif kind == "summary":
                parts.append(f"[summary of earlier messages: {part.get('text', '')[:500]}]")
        return "\n".join(parts)

    @admin.display(description="Screenshots")
    def screenshots(self, message: ChatMessage) -> SafeString:
        file_ids = []
        for part in message.content:
            inner = part.get("content") if part.get("type") == "tool_result" else [part]
            for p in inner or []:
                if isinstance(p, dict) and p.get("type") == "image" and p.get("file_id"):
                    file_ids.append(p["file_id"])
        # The admin's own file view: the API's serves a chat's owner only, and staff read everyone's chats.
        return format_html_join(
            " ",
            '<a href="{0}" target="_blank"><img src="{0}" alt="screenshot" style="max-width:160px"></a>',
            ((reverse("admin:chats_chat_file", args=[message.chat_id, f]),) for f in file_ids),
        )


class AuditEventInline(admin.TabularInline):
    """Who did what on the chat's desktop (read-only: the audit log is never edited)."""

    model = AuditEvent
    fields = ("id", "at", "kind", "actor", "user", "data")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["id"]
    verbose_name = "audit event"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _ApprovalReadOnly:
    """What the approvals' inline and admin share: read-only (a decision is the chat owner's, through the API
    or the chat page), and the marked screenshot as a thumbnail."""

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Screenshot")
    def screenshot_thumb(self, approval: Approval) -> SafeString | str:
        if approval.screenshot_id is None or approval.screenshot is None:
            return "—"
        url = reverse("admin:chats_chat_file", args=[approval.screenshot.chat_id, approval.screenshot_id])
        return format_html(
            '<a href="{0}" target="_blank"><img src="{0}" alt="screenshot, target marked" style="max-width:160px"></a>',
            url,
        )


class ApprovalInline(_ApprovalReadOnly, admin.TabularInline):
    """The chat's approvals (read-only: a decision is the owner's, through the API or the chat page)."""

    model = Approval
    fk_name = "chat"
    fields = (
        "created_at",
        "action",
        "input",
        "screenshot_thumb",
        "state",
        "decided_by",
        "note",
        "decided_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Approval)
class ApprovalAdmin(_ApprovalReadOnly, admin.ModelAdmin):
    """Every approval, to see who decided what (read-only: a decision is the chat owner's)."""

    list_display = ["created_at", "action", "state", "chat", "decided_by", "decided_at"]
    list_filter = ["state", "action"]
    search_fields = ["id", "chat__id", "chat__title", "tool_use_id", "chat__owner__username"]
    fields = (
        "id", "chat", "root_chat", "tool_use_id", "action", "input", "screenshot_thumb", "state",
        "decided_by", "note", "created_at", "decided_at",
    )  # fmt: skip
    readonly_fields = fields
    list_select_related = ["chat", "decided_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = [
        "title", "owner", "status", "paused_reason", "mode", "model", "parent_link", "stored_size", "archived",
        "updated_at",
    ]  # fmt: skip
    list_filter = ["status", "paused_reason", "mode", "archived"]
    search_fields = ["title", "id", "owner__username"]
    readonly_fields = [
        "id",
        "owner",
        "status",
        "paused_reason",
        "mode",
        "parent",
        "root",
        "workspace_agent",
        "model_config",
        "model",
        "system_prompt",
        "last_error",
        "usage",
        "cost_usd",
        "tree_cost_usd",
        "budget_usd",
        "approval_policy",
        "help_reason",
        "worker_id",
        "started_at",
        "heartbeat_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields += ["stored_size"]
    fields = ["title", "archived", *readonly_fields]
    inlines = [ChatMessageInline, AuditEventInline, ApprovalInline]
    list_select_related = ["owner", "parent"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Chat]:
        """Each chat with the bytes its files hold in storage (screenshots, recordings; not expired ones)."""
        stored = Sum("files__size", filter=Q(files__expired_at__isnull=True), default=0)
        return super().get_queryset(request).annotate(stored_bytes=stored)

    @admin.display(description="Stored", ordering="stored_bytes")
    def stored_size(self, chat: Chat) -> str:
        return filesizeformat(getattr(chat, "stored_bytes", 0) or 0)

    def save_model(self, request: HttpRequest, obj: Chat, form: forms.ModelForm[Chat], change: bool) -> None:
        """Save only what staff may change. A full save would write back the status read when the form
        was loaded, over a move a worker made meanwhile (statuses change in chats/transitions.py)."""
        chat_update(chat=obj, title=obj.title, archived=obj.archived)

    def delete_model(self, request: HttpRequest, obj: Chat) -> None:
        chat_delete(chat=obj)  # locks the chat tree first: safe while a turn runs (chats/services.py)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Chat]) -> None:
        for chat in queryset:
            chat_delete(chat=chat)

    def get_urls(self) -> list[URLPattern]:
        file_view = self.admin_site.admin_view(self.file_view)
        return [
            path("<uuid:chat_id>/files/<uuid:file_id>/", file_view, name="chats_chat_file"),
            *super().get_urls(),
        ]

    def file_view(self, request: HttpRequest, chat_id: str, file_id: str) -> HttpResponseBase:
        """Serve a chat's file (screenshot thumbnails) to staff who may view chats."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        chat_file = get_object_or_404(ChatFile, pk=file_id, chat_id=chat_id)
        try:
            return file_response(chat_file, request.headers.get("Range"))
        except NotFound:
            raise Http404(MISSING) from None

    @admin.display(description="Parent")
    def parent_link(self, chat: Chat) -> str:
        if chat.parent_id is None:
            return "—"
        url = reverse("admin:chats_chat_change", args=[chat.parent_id])
        return format_html('<a href="{}">{}</a>', url, chat.parent)
