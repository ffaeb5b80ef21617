"""API tokens page: create a personal API token (shown once) and revoke tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from chatdesk.models import ApiToken
from chatdesk.services import api_token_create

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def page_user(request: HttpRequest) -> User:
    """Return the logged-in user of a page view behind @login_required."""
    return cast("User", request.user)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. ci-script"}))


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """GET lists the tokens; POST creates one and shows it on this response only.

    The token is never put in the session or a message cookie: only its hash is stored.
    """
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST":
        if form.is_valid():
            token, raw = api_token_create(user=page_user(request), name=form.cleaned_data["name"])
            created = {"token": token, "raw": raw}
            form = TokenForm()
    tokens = ApiToken.objects.filter(user=page_user(request))
    response = render(request, "tokens/token_list.html", {"form": form, "tokens": tokens, "created": created})
    if created:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=page_user(request))
    name = token.name
    token.delete()
    messages.success(request, f"API token “{name}” revoked.")
    return redirect("token-list")
