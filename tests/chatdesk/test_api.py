from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from chatdesk.models import ApiToken
from chatdesk.services import api_token_create

pytestmark = pytest.mark.django_db

API = "/api/experimental"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_create_a_token_shows_it_once_and_it_authenticates(api, user) -> None:
    response = api.post(f"{API}/tokens", json.dumps({"name": "ci"}), content_type="application/json")
    assert response.status_code == 201
    body = response.json()
    raw = body["token"]
    assert raw.startswith("cdk_")
    assert body["token_prefix"] == raw[:10]
    assert body["name"] == "ci"

    assert bearer(raw).get(f"{API}/chats").status_code == 200

    listed = api.get(f"{API}/tokens")
    one = api.get(f"{API}/tokens/{body['id']}")
    for later in (listed, one):
        assert later.status_code == 200
        assert raw not in later.content.decode()
    assert {t["name"] for t in listed.json()} == {"tests", "ci"}
    assert "token" not in one.json()
    assert one.json()["token_prefix"] == raw[:10]


def test_revoked_token_stops_working(api, user) -> None:
    token, raw = api_token_create(user=user, name="old")
    client = bearer(raw)
    assert client.get(f"{API}/chats").status_code == 200
    assert api.delete(f"{API}/tokens/{token.id}").status_code == 204
    assert client.get(f"{API}/chats").status_code == 401
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_a_token_can_revoke_itself(api, user) -> None:
    [token] = ApiToken.objects.filter(user=user)
    assert api.delete(f"{API}/tokens/{token.id}").status_code == 204
    assert api.get(f"{API}/tokens").status_code == 401


def test_another_users_tokens_are_invisible(api, other_user) -> None:
    theirs, raw = api_token_create(user=other_user, name="theirs")
    assert "theirs" not in api.get(f"{API}/tokens").content.decode()
    assert api.get(f"{API}/tokens/{theirs.id}").status_code == 404
    assert api.delete(f"{API}/tokens/{theirs.id}").status_code == 404
    assert bearer(raw).get(f"{API}/chats").status_code == 200


@pytest.mark.parametrize("path", ["tokens/abc", "tokens/999999", "tokens/-1"])
def test_bad_or_unknown_token_ids_are_a_json_404(api, path: str) -> None:
    response = api.get(f"{API}/{path}")
    assert response.status_code == 404
    assert response.json()["detail"]


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": 1}, {"name": "x" * 101}, {"name": "a", "scope": "all"}]
)
def test_create_a_token_with_bad_fields_is_a_400(api, user, body: dict) -> None:
    response = api.post(f"{API}/tokens", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) & {"name", "scope"}
    assert ApiToken.objects.filter(user=user).count() == 1


def test_unknown_api_path_is_a_json_404(api) -> None:
    response = api.get(f"{API}/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_unknown_page_path_is_an_html_404(client) -> None:
    response = client.get("/nothing-here/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_method_not_allowed_is_a_405(api) -> None:
    assert api.put(f"{API}/chats", "{}", content_type="application/json").status_code == 405


def test_a_token_id_beyond_the_integer_range_is_a_404(api) -> None:
    assert api.get(f"{API}/tokens/99999999999999999999999").status_code == 404


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(api) -> None:
    response = api.post(
        f"{API}/tokens", "{}", content_type="application/json", CONTENT_LENGTH=str(2 * 1024 * 1024)
    )
    assert response.status_code == 413
    assert "limit is 1048576 bytes" in response.json()["detail"]


def test_an_invalid_content_length_is_a_400(api) -> None:
    response = api.post(f"{API}/tokens", "{}", content_type="application/json", CONTENT_LENGTH="lots")
    assert response.status_code == 400
