"""The audit log of a chat: who did what on its desktop, and when (SPEC §8 "Audit").

Every event is a row of ``AuditEvent`` (kept as long as the chat) and goes out live on the chat's stream as
``{"type": <kind>, "event": {...}}``; ``GET /chats/{id}/events?after_id=N`` lists them. What ``data`` holds,
by kind:

- ``action`` (by the model): ``tool_use_id``, ``message_id`` (the assistant message), ``action``, ``input``,
  ``coordinate`` (native pixels, when the action has one); ``at`` is when the action started.
- ``control`` (by a person, or by the model taking and letting go of the desktop; desktop/control.py):
  ``holder`` (``"model"``, ``"person"`` or null), ``change`` (``"takeover"``, ``"handback"``,
  ``"acquire"``, ``"release"``), ``note``.
- ``help_requested`` (by the model): ``reason``.
- ``approval`` (by the model when created, by a person or the system when decided): ``approval_id``,
  ``state``, ``action``, ``note`` (chats/approvals.py).

Writers call :func:`audit_record` inside their own transaction: the row and the live event then exist
exactly when the change they describe does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from chats.events import AuditLiveEvent, publish
from chats.models import AuditEvent, Chat
from chats.serializers import audit_event_to_json


def audit_record(
    *,
    chat: Chat,
    kind: str,
    actor: str,
    data: dict[str, Any] | None = None,
    user: User | None = None,
    at: datetime | None = None,
    also_to: Iterable[object] = (),
) -> AuditEvent:
    """Store one audit event of ``chat`` and send it live to the chat's stream (and to the chats ``also_to``,
    e.g. the root of a child that asks for help) once the transaction commits. Return the row."""
    event = AuditEvent.objects.create(
        chat=chat,
        kind=kind,
        actor=actor,
        user=user,
        data=data or {},
        at=at or timezone.now(),
    )
    payload = AuditLiveEvent(type=kind, event=audit_event_to_json(event))
    for chat_id in dict.fromkeys([chat.pk, *also_to]):
        publish(chat_id, payload)
    return event
