"""Workspace agents page: register an agent (its token shown once, with the commands that save it in a
private file and run the agent with that file — never the token on a command line), see each agent's
status, delete one."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from agents import services
from agents.models import WorkspaceAgent
from chatdesk.exceptions import ChatdeskError
from chatdesk.views import page_user


class AgentForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. my-laptop"}))


@login_required
@require_http_methods(["GET", "POST"])
def agent_list(request: HttpRequest) -> HttpResponse:
    """GET lists the agents; POST registers one and shows its token on this response only.

    The token is never put in the session or a message cookie: it exists in this response and nowhere
    else (only its hash is stored).
    """
    form = AgentForm(request.POST or None)
    created = None
    if request.method == "POST":
        if form.is_valid():
            try:
                agent, raw = services.workspace_agent_create(
                    owner=page_user(request), name=form.cleaned_data["name"]
                )
            except ChatdeskError as exc:
                form.add_error("name", exc.message)
            else:
                created = {
                    "agent": agent,
                    "token": raw,
                    "save_command": services.workspace_agent_token_file_command(),
                    "command": services.workspace_agent_command(request=request),
                }
                form = AgentForm()
    agents = WorkspaceAgent.objects.filter(owner=page_user(request)).order_by(
        F("last_seen").desc(nulls_last=True), "name"
    )
    response = render(request, "agents/agent_list.html", {"form": form, "agents": agents, "created": created})
    if created:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def agent_delete(request: HttpRequest, pk: str) -> HttpResponse:
    agent = get_object_or_404(WorkspaceAgent, pk=pk, owner=page_user(request))
    name = agent.name
    agent.delete()
    messages.success(request, f"Workspace agent “{name}” deleted; its token no longer works.")
    return redirect("agent-list")
