from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from chatdesk.models import ApiToken
from chats.models import Chat

pytestmark = pytest.mark.django_db

API = "/api/experimental"
PROTECTED = [
    ("get", f"{API}/chats"),
    ("post", f"{API}/chats"),
    ("get", f"{API}/workspace-agents"),
    ("post", f"{API}/workspace-agents"),
    ("get", f"{API}/tokens"),
    ("post", f"{API}/tokens"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_anonymous_requests_are_a_401_with_a_bearer_challenge(method: str, path: str) -> None:
    client = APIClient()
    response = (
        client.get(path) if method == "get" else client.post(path, "{}", content_type="application/json")
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "authorization", ["Bearer cdk_not-a-real-token", "Bearer", "Bearer   ", "bearer cdk_x", "Bearerx"]
)
def test_a_bad_bearer_token_is_a_401(user, authorization: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization)
    response = client.get(f"{API}/chats")
    assert response.status_code == 401
    assert response.json()["detail"]


def test_a_bearer_token_authenticates_as_its_user(api, user) -> None:
    assert api.get(f"{API}/chats").status_code == 200
    token = ApiToken.objects.get(user=user)
    assert token.last_used_at is not None


def test_a_deactivated_users_token_stops_working(api, user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert api.get(f"{API}/chats").status_code == 401


def _session_client(user) -> APIClient:
    """Return a client logged in through the login form, as a browser is (password from the factory)."""
    client = APIClient(enforce_csrf_checks=True)
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/",
        {"username": user.username, "password": "pw-for-tests-1", "csrfmiddlewaretoken": _csrf_token(client)},
    )
    assert response.status_code == 302, response.content
    return client


def _csrf_token(client: APIClient) -> str:
    """Return the CSRF token the browser holds (its cookie; pages also render it)."""
    return client.cookies["csrftoken"].value


def test_session_authentication_works_for_reads(user) -> None:
    client = _session_client(user)
    assert client.get(f"{API}/chats").status_code == 200


def test_session_authentication_enforces_csrf_on_unsafe_methods(user) -> None:
    client = _session_client(user)
    body = json.dumps({"title": "from the browser"})

    refused = client.post(f"{API}/chats", body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Chat.objects.exists()

    token = _csrf_token(client)
    accepted = client.post(f"{API}/chats", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
    assert Chat.objects.get().title == "from the browser"


def test_session_authentication_enforces_csrf_on_patch_and_delete(user) -> None:
    client = _session_client(user)
    chat = Chat.objects.create(owner=user, title="kept")
    path = f"{API}/chats/{chat.id}"
    assert client.patch(path, json.dumps({"title": "x"}), content_type="application/json").status_code == 403
    assert client.delete(path).status_code == 403
    chat.refresh_from_db()
    assert chat.title == "kept"

    token = _csrf_token(client)
    assert client.delete(path, HTTP_X_CSRFTOKEN=token).status_code == 204


def test_a_bearer_request_needs_no_csrf_token(user, api_token: str) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert client.post(f"{API}/chats", "{}", content_type="application/json").status_code == 201
