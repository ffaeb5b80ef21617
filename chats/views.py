"""Chat pages: the chat list with its "New chat" form, and one chat's live page.

Server-rendered; the chat page's live parts (stream, desktop) are plain ES modules under
chatdesk/static/chatdesk/js/ that talk to the REST API and the WebSockets with the session.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from agents.models import WorkspaceAgent
from chatdesk.exceptions import ChatdeskError
from chatdesk.views import page_user
from chats import services
from chats.models import Chat
from chats.pricing import format_usd
from chats.selectors import chat_for_user, chats_for_user
from chats.serializers import ChatSerializer

CHATS_PER_PAGE = 50
#: The placeholder id of URL templates handed to the page's scripts (they put a real id in its place).
ZERO_ID = "00000000-0000-0000-0000-000000000000"


class AgentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: WorkspaceAgent) -> str:
        return f"{obj.name} — {obj.status}"


class NewChatForm(forms.Form):
    message = forms.CharField(
        max_length=100_000,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What should the agent do?"}),
    )
    workspace_agent = AgentChoiceField(
        queryset=WorkspaceAgent.objects.none(),
        required=False,
        empty_label="Automatic (the most recently connected agent, if any)",
        help_text="The desktop this chat's agent can use.",
    )

    def __init__(self, *args: Any, owner: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connected agents have the most recent heartbeats, so newest-seen first lists them first.
        self.fields["workspace_agent"].queryset = WorkspaceAgent.objects.filter(owner=owner).order_by(  # type: ignore[attr-defined]
            F("last_seen").desc(nulls_last=True), "name"
        )

    def clean_message(self) -> str:
        message: str = self.cleaned_data["message"]
        if not message.strip():
            raise forms.ValidationError("Write a message to start the chat.")
        return message


def _chat_list_page(request: HttpRequest, form: NewChatForm, *, status: int = 200) -> HttpResponse:
    archived = request.GET.get("archived", "").lower() in {"1", "true", "yes"}
    chats = chats_for_user(user=page_user(request)).filter(parent__isnull=True, archived=archived)
    page = Paginator(chats, CHATS_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "chats": page.object_list, "archived": archived}
    return render(request, "chats/chat_list.html", context, status=status)


@login_required
@require_GET
def chat_list(request: HttpRequest) -> HttpResponse:
    return _chat_list_page(request, NewChatForm(owner=page_user(request)))


@login_required
@require_POST
def chat_new(request: HttpRequest) -> HttpResponse:
    form = NewChatForm(request.POST, owner=page_user(request))
    if form.is_valid():
        try:
            chat = services.chat_create(
                owner=page_user(request),
                message=form.cleaned_data["message"],
                workspace_agent=form.cleaned_data["workspace_agent"],
            )
        except ChatdeskError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("chat-detail", pk=chat.pk)
    return _chat_list_page(request, form)


@login_required
@require_GET
@ensure_csrf_cookie
def chat_detail(request: HttpRequest, pk: str) -> HttpResponse:
    """One chat, live. Another user's chat is a 404, as for one that does not exist."""
    chat = chat_for_user(user=page_user(request), chat_id=pk)
    root = chat if chat.is_root else Chat.objects.select_related("workspace_agent").get(pk=chat.root_id)
    agent = chat.workspace_agent or root.workspace_agent
    children = list(Chat.objects.filter(parent=chat).order_by("created_at"))
    for child in children:
        child.cost_display = format_usd(child.cost_usd)  # type: ignore[attr-defined]
    api = f"/api/experimental/chats/{chat.pk}"
    config: dict[str, Any] = {
        "chat": ChatSerializer(chat).data,
        "urls": {
            "messages": reverse("chat-messages", kwargs={"pk": chat.pk}),
            "interrupt": reverse("chat-interrupt", kwargs={"pk": chat.pk}),
            "resume": reverse("chat-resume", kwargs={"pk": chat.pk}),
            "compact": reverse("chat-compact", kwargs={"pk": chat.pk}),
            "children": reverse("chat-children", kwargs={"pk": chat.pk}),
            "chat": reverse("chat-detail-api", kwargs={"pk": chat.pk}),
            "stream": f"{api}/stream",
            "recordings": reverse("chat-recordings", kwargs={"pk": chat.pk}),
            "timeline": reverse("chat-timeline", kwargs={"pk": chat.pk}),
            "page": reverse("chat-detail", kwargs={"pk": ZERO_ID}),
            # Approvals shown here: this chat's, and on a root's page its tree's (chat.js).
            "approvals": reverse("chat-approvals", kwargs={"pk": chat.pk}),
            "approval": reverse("approval-detail", kwargs={"pk": ZERO_ID}),
            # Another chat of the tree, and its desktop take-over (the help banner of a child that asks).
            "other_chat": reverse("chat-detail-api", kwargs={"pk": ZERO_ID}),
            "other_takeover": reverse("desktop-takeover", kwargs={"pk": ZERO_ID}),
        },
        "desktop": None,
    }
    if agent is not None:
        config["desktop"] = {
            "socket": f"{api}/desktop",
            "takeover": f"{api}/desktop/takeover",
            "handback": f"{api}/desktop/handback",
            "novnc": static("novnc/core/rfb.js"),
            "held_by_me": agent.desktop_held_by_id == request.user.pk,
            "agent_name": agent.name,
        }
    context = {
        "chat": chat,
        "root": root,
        "agent": agent,
        "children": children,
        "config": config,
        "usage": chat.usage or {},
        "cost_text": cost_text(chat),
    }
    return render(request, "chats/chat_detail.html", context)


def cost_text(chat: Chat) -> str:
    """Return the chat's cost for a person: its own, and for a root its tree's against the budget."""
    text = format_usd(chat.cost_usd)
    if chat.is_root:
        if chat.tree_cost_usd != chat.cost_usd:
            text += f" · with its agents {format_usd(chat.tree_cost_usd)}"
        text += f" of {format_usd(chat.budget_usd)} budget" if chat.budget_usd is not None else " · no budget"
    return text
