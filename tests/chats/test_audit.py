"""The audit log (SPEC §8): stored events, listed by the API after a cursor, sent live on the stream."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from chats.audit import audit_record
from chats.models import AuditEvent
from tests.chats.test_stream import open_stream, receive
from tests.factories import ChatFactory

API = "/api/experimental"


@pytest.mark.django_db
def test_events_are_listed_in_order_after_a_cursor_with_who_and_when(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user)
    started = timezone.now() - timedelta(seconds=5)
    first = audit_record(
        chat=chat,
        kind=AuditEvent.Kind.ACTION,
        actor=AuditEvent.Actor.MODEL,
        data={"action": "left_click", "coordinate": [10, 20]},
        at=started,
    )
    second = audit_record(
        chat=chat,
        kind=AuditEvent.Kind.CONTROL,
        actor=AuditEvent.Actor.PERSON,
        user=user,
        data={"holder": "person"},
    )
    listed = api.get(f"{API}/chats/{chat.id}/events").json()
    assert [e["id"] for e in listed] == [first.id, second.id]
    assert listed[0]["kind"] == "action" and listed[0]["actor"] == "model" and listed[0]["user"] is None
    assert listed[0]["data"] == {"action": "left_click", "coordinate": [10, 20]}
    assert listed[0]["at"] == started.isoformat().replace("+00:00", "Z")
    assert listed[1]["user"] == "alice" and listed[1]["data"] == {"holder": "person"}
    assert [e["id"] for e in api.get(f"{API}/chats/{chat.id}/events?after_id={first.id}").json()] == [
        second.id
    ]
    assert api.get(f"{API}/chats/{chat.id}/events?after_id=x").status_code == 400


@pytest.mark.django_db
def test_another_users_events_are_a_404(api: APIClient, other_user: User) -> None:
    chat = ChatFactory.create(owner=other_user)
    audit_record(
        chat=chat, kind=AuditEvent.Kind.HELP_REQUESTED, actor=AuditEvent.Actor.MODEL, data={"reason": "2FA"}
    )
    assert api.get(f"{API}/chats/{chat.id}/events").status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_events_go_out_live_to_the_chat_and_the_chats_named(user: User, api_token: str) -> None:
    root = await database_sync_to_async(ChatFactory.create)(owner=user)
    child = await database_sync_to_async(ChatFactory.create)(owner=user, parent=root)
    root_stream = await open_stream(root.pk, api_token)
    child_stream = await open_stream(child.pk, api_token)
    for stream in (root_stream, child_stream):
        assert (await receive(stream))["type"] == "status"
    event = await database_sync_to_async(audit_record)(
        chat=child,
        kind=AuditEvent.Kind.HELP_REQUESTED,
        actor=AuditEvent.Actor.MODEL,
        data={"reason": "A login needs a person."},
        also_to=[root.pk],
    )
    for stream in (child_stream, root_stream):
        live = await receive(stream)
        assert live["type"] == "help_requested"
        assert live["event"]["id"] == event.id and live["event"]["chat_id"] == str(child.pk)
        assert live["event"]["data"] == {"reason": "A login needs a person."}
        await stream.disconnect()
