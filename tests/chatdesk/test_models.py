from __future__ import annotations

import hashlib

import pytest
from django.db import connection

from chatdesk.models import ApiToken
from chatdesk.services import api_token_create

pytestmark = pytest.mark.django_db


def test_api_token_is_stored_only_as_its_sha256(user) -> None:
    token, raw = api_token_create(user=user, name="laptop")
    assert raw.startswith("cdk_")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM chatdesk_apitoken WHERE id = %s", [token.pk])
        row = tuple(str(value) for value in cursor.fetchone())
    assert not any(raw in column for column in row)
    assert hashlib.sha256(raw.encode()).hexdigest() in row
    assert token.token_prefix == raw[:10]


def test_api_token_lookup_finds_only_the_exact_token_of_an_active_user(user) -> None:
    token, raw = api_token_create(user=user, name="laptop")
    assert ApiToken.objects.for_raw(raw) == token
    assert ApiToken.objects.for_raw(raw[:-1]) is None
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert ApiToken.objects.for_raw(raw) is None


def test_each_api_token_is_different(user) -> None:
    raws = {api_token_create(user=user, name=f"t{i}")[1] for i in range(5)}
    assert len(raws) == 5
