from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from chatdesk.models import ApiToken
from chatdesk.services import api_token_create

pytestmark = pytest.mark.django_db

TOKENS = "/admin/chatdesk/apitoken/"
TOKEN = re.compile(r"cdk_[A-Za-z0-9_-]{20,}")


def test_creating_an_api_token_shows_it_exactly_once(admin_client, user) -> None:
    response = admin_client.post(f"{TOKENS}add/", {"user": user.pk, "name": "from admin"}, follow=True)
    assert response.status_code == 200
    # One token on the page (in the copy field and, for agents, in the command line using it).
    tokens = set(TOKEN.findall(response.content.decode()))
    assert len(tokens) == 1
    [raw] = tokens
    assert "no-store" in response["Cache-Control"]
    assert not any(raw in morsel.value for morsel in admin_client.cookies.values())
    token = ApiToken.objects.get(name="from admin")
    assert token.user == user

    for path in (TOKENS, f"{TOKENS}{token.pk}/change/"):
        html = admin_client.get(path).content.decode()
        assert raw not in html
        assert token.token_hash not in html

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/experimental/chats").status_code == 200


def test_deleting_an_api_token_in_the_admin_revokes_it(admin_client, user) -> None:
    token, raw = api_token_create(user=user, name="doomed")
    response = admin_client.post(f"{TOKENS}{token.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/experimental/chats").status_code == 401


def test_admin_pages_need_a_staff_login(client, user) -> None:
    for path in (TOKENS, "/admin/chats/chatprovider/", "/admin/agents/workspaceagent/"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]
