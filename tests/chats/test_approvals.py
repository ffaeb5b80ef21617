"""Approvals, the service (chats/approvals.py; SPEC §8): which actions wait, create, decide, expire, resume,
the audit rows and live events, the marked screenshot."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from celery import Celery
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.db import connection
from django.http import Http404
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from agents.daemon.actionspec import ACTIONS
from chatdesk.celery import app as celery_app
from chatdesk.celery import approval_expiry_interval, schedule_sweep
from chatdesk.exceptions import Conflict, ValidationError
from chats.approvals import (
    GATED,
    approval_create,
    approval_decide,
    approval_for,
    approval_mark_target,
    approval_required,
    approvals_expire,
)
from chats.models import Approval, AuditEvent, Chat, ChatFile
from chats.tasks import expire_approvals
from tests.chats.test_stream import open_stream, receive
from tests.factories import ChatFactory

S = Chat.Status
R = Chat.PausedReason


def paused_for_approval(**kwargs: object) -> Chat:
    return ChatFactory.create(status=S.PAUSED, paused_reason=R.AWAITING_APPROVAL, **kwargs)


def create(chat: Chat, tool_use_id: str = "toolu_1", action: str = "type", **extra: object) -> Approval:
    return approval_create(
        chat=chat,
        tool_use_id=tool_use_id,
        action=action,
        tool_input={"action": action, "text": "rm -rf /"},
        screenshot=extra.get("screenshot"),  # type: ignore[arg-type]
    )


def approval_events(chat: Chat) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(chat=chat, kind=AuditEvent.Kind.APPROVAL).order_by("id"))


# --- which actions wait -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS)
def test_each_policy_gates_exactly_its_actions(action: str) -> None:
    off, risky, every = (ChatFactory.create(approval_policy=p) for p in ("off", "risky", "all"))
    assert approval_required(chat=off, action=action) is False
    assert approval_required(chat=risky, action=action) is (action in {"type", "key", "hold_key"})
    looks_or_waits = {"screenshot", "zoom", "cursor_position", "mouse_move", "wait"}
    assert approval_required(chat=every, action=action) is (action not in looks_or_waits)


def test_risky_is_what_the_sdk_asks_a_confirmation_for() -> None:
    from anthropic.lib.tools._toolsets._computer_registry import CONFIRM_REQUIRED

    assert GATED["risky"] == CONFIRM_REQUIRED == {"type", "key", "hold_key"}
    assert GATED["off"] == frozenset()
    assert {"left_click", "scroll", "left_click_drag", "type"} <= GATED["all"]


@pytest.mark.django_db
def test_a_child_follows_its_roots_policy_not_its_own_column() -> None:
    root = ChatFactory.create(approval_policy="risky")
    child = ChatFactory.create(owner=root.owner, parent=root, approval_policy="off")
    grandchild = ChatFactory.create(owner=root.owner, parent=child, approval_policy="all")
    assert approval_required(chat=child, action="type") is True
    assert approval_required(chat=grandchild, action="left_click") is False  # risky: clicks run
    Chat.objects.filter(pk=root.pk).update(approval_policy="off")
    assert approval_required(chat=child, action="type") is False


@pytest.mark.django_db
@override_settings(CHATDESK_APPROVAL_POLICY="risky")
def test_a_new_chat_takes_the_default_policy_from_the_setting() -> None:
    assert ChatFactory.create().approval_policy == "risky"


# --- create ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_is_idempotent_per_tool_use_and_audited_once() -> None:
    root = ChatFactory.create()
    child = ChatFactory.create(owner=root.owner, parent=root)
    shot = ChatFile.objects.create(chat=child, file=ContentFile(b"png", name="s.png"))
    first = create(child, screenshot=shot)
    again = approval_create(
        chat=child, tool_use_id="toolu_1", action="key", tool_input={"action": "key"}, screenshot=None
    )
    assert again.pk == first.pk and again.action == "type" and again.screenshot_id == shot.pk
    assert first.state == "pending" and first.root_chat_id == root.pk and first.input["text"] == "rm -rf /"
    assert approval_for(chat=child, tool_use_id="toolu_1") == first
    assert approval_for(chat=child, tool_use_id="toolu_other") is None
    assert approval_for(chat=root, tool_use_id="toolu_1") is None
    (event,) = approval_events(child)
    assert event.actor == "model" and event.user is None
    assert event.data == {"approval_id": str(first.pk), "state": "pending", "action": "type", "note": ""}
    other = create(child, "toolu_2")
    assert other.pk != first.pk and len(approval_events(child)) == 2


# --- decide ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_approve_records_who_when_and_why_and_queues_the_paused_turn(user: User) -> None:
    chat = paused_for_approval(owner=user)
    approval = create(chat)
    decided = approval_decide(approval_id=approval.pk, user=user, decision="approve", note="fine")
    assert decided.state == "approved" and decided.decided_by == user and decided.note == "fine"
    assert decided.decided_at is not None
    approval.refresh_from_db()
    assert approval.state == "approved"
    chat.refresh_from_db()
    assert chat.status == S.PENDING and chat.paused_reason is None
    created, decision = approval_events(chat)
    assert created.data["state"] == "pending"
    assert (decision.actor, decision.user) == ("person", user)
    assert decision.data == {
        "approval_id": str(approval.pk),
        "state": "approved",
        "action": "type",
        "note": "fine",
    }


@pytest.mark.django_db
def test_deny_is_recorded_and_resumes_the_chat_too(user: User) -> None:
    chat = paused_for_approval(owner=user)
    approval = create(chat)
    decided = approval_decide(approval_id=approval.pk, user=user, decision="deny", note="not that window")
    assert decided.state == "denied" and decided.note == "not that window"
    chat.refresh_from_db()
    assert chat.status == S.PENDING


@pytest.mark.django_db
def test_a_second_decision_is_a_conflict_with_the_current_state(user: User) -> None:
    chat = paused_for_approval(owner=user)
    approval = create(chat)
    approval_decide(approval_id=approval.pk, user=user, decision="deny")
    with pytest.raises(Conflict) as raised:
        approval_decide(approval_id=approval.pk, user=user, decision="approve")
    assert raised.value.status_code == 409 and raised.value.extra == {"state": "denied"}
    approval.refresh_from_db()
    assert approval.state == "denied" and len(approval_events(chat)) == 2


@pytest.mark.django_db(transaction=True)
def test_two_decisions_at_once_one_wins_and_the_other_sees_it(user: User) -> None:
    approval = create(paused_for_approval(owner=user))
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(decision: str) -> None:
        try:
            start.wait(5)
            approval_decide(approval_id=approval.pk, user=user, decision=decision)
            outcomes.append(decision)
        except Conflict as exc:
            outcomes.append(f"409 {exc.extra['state']}")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(d,)) for d in ("approve", "deny")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    approval.refresh_from_db()
    winner = {"approved": "approve", "denied": "deny"}[approval.state]
    assert sorted(outcomes) == sorted([winner, f"409 {approval.state}"])
    assert len(approval_events(approval.chat)) == 2  # created, decided once


@pytest.mark.django_db
def test_another_users_approval_is_not_found_and_stays_pending(user: User, other_user: User) -> None:
    approval = create(paused_for_approval(owner=other_user))
    with pytest.raises(Http404):
        approval_decide(approval_id=approval.pk, user=user, decision="approve")
    approval.refresh_from_db()
    assert approval.state == "pending"


@pytest.mark.django_db
def test_a_decision_other_than_approve_or_deny_is_refused(user: User) -> None:
    approval = create(paused_for_approval(owner=user))
    with pytest.raises(ValidationError):
        approval_decide(approval_id=approval.pk, user=user, decision="maybe")
    approval.refresh_from_db()
    assert approval.state == "pending"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "reason"), [(S.PAUSED, R.INTERRUPTED), (S.PAUSED, R.TAKEN_OVER), (S.RUNNING, None)]
)
def test_a_chat_not_paused_for_the_approval_is_not_queued(
    user: User, status: str, reason: str | None
) -> None:
    chat = ChatFactory.create(owner=user, status=status, paused_reason=reason)
    approval = create(chat)
    approval_decide(approval_id=approval.pk, user=user, decision="approve")
    chat.refresh_from_db()
    assert (chat.status, chat.paused_reason) == (status, reason)


@pytest.mark.django_db(transaction=True)
async def test_creation_and_decision_go_live_to_the_chat_and_its_root(user: User, api_token: str) -> None:
    root = await database_sync_to_async(ChatFactory.create)(owner=user)
    child = await database_sync_to_async(paused_for_approval)(owner=user, parent=root)
    streams = [await open_stream(child.pk, api_token), await open_stream(root.pk, api_token)]
    for stream in streams:
        assert (await receive(stream))["type"] == "status"
    approval = await database_sync_to_async(create)(child)
    for stream in streams:
        live = await receive(stream)
        assert live["type"] == "approval" and live["event"]["chat_id"] == str(child.pk)
        assert live["event"]["data"]["state"] == "pending"
        assert live["event"]["data"]["approval_id"] == str(approval.pk)
    await database_sync_to_async(approval_decide)(approval_id=approval.pk, user=user, decision="approve")
    for stream in streams:
        kinds = {}
        while "approval" not in kinds:
            live = await receive(stream)
            kinds[live["type"]] = live
        assert kinds["approval"]["event"]["data"]["state"] == "approved"
        assert kinds["approval"]["event"]["user"] == "alice"
        await stream.disconnect()


# --- expiry ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(CHATDESK_APPROVAL_TIMEOUT_SECONDS=60)
def test_expiry_expires_only_old_pending_approvals_and_resumes_their_chats(user: User) -> None:
    old_chat, new_chat, decided_chat = (paused_for_approval(owner=user) for _ in range(3))
    old, new, decided = create(old_chat), create(new_chat), create(decided_chat)
    long_ago = timezone.now() - timedelta(seconds=61)
    Approval.objects.filter(pk__in=[old.pk, decided.pk]).update(created_at=long_ago)
    approval_decide(approval_id=decided.pk, user=user, decision="approve")

    assert approvals_expire() == 1
    old.refresh_from_db()
    assert old.state == "expired" and old.decided_by is None and old.decided_at is not None and old.note
    (_, expiry) = approval_events(old_chat)
    assert expiry.actor == "system" and expiry.data["state"] == "expired"
    old_chat.refresh_from_db()
    assert old_chat.status == S.PENDING
    new.refresh_from_db()
    new_chat.refresh_from_db()
    assert new.state == "pending" and new_chat.status == S.PAUSED
    decided.refresh_from_db()
    assert decided.state == "approved"
    assert approvals_expire() == 0


@pytest.mark.django_db
def test_expiry_resumes_a_chat_that_paused_after_its_approval_was_decided(user: User) -> None:
    # The person decided while the turn was still pausing: the decision found the chat running.
    chat = ChatFactory.create(owner=user, status=S.RUNNING)
    approval = create(chat)
    approval_decide(approval_id=approval.pk, user=user, decision="approve")
    Chat.objects.filter(pk=chat.pk).update(status=S.PAUSED, paused_reason=R.AWAITING_APPROVAL)
    waiting = paused_for_approval(owner=user)
    create(waiting)  # still pending: stays paused
    expire_approvals()
    chat.refresh_from_db()
    waiting.refresh_from_db()
    assert chat.status == S.PENDING and waiting.status == S.PAUSED


def test_expiry_runs_twice_per_timeout_and_at_least_every_30_seconds() -> None:
    assert approval_expiry_interval(900) == 30
    assert approval_expiry_interval(20) == 10


@override_settings(CHATDESK_APPROVAL_TIMEOUT_SECONDS=20)
def test_beat_schedules_the_expiry_task_that_workers_know() -> None:
    beat = Celery("beat-test", set_as_current=False)  # else turns queued after this test go to its broker
    schedule_sweep(beat)
    entry = beat.conf.beat_schedule["chats.expire_approvals"]
    assert entry["task"] == "chats.expire_approvals" and entry["schedule"] == 10
    assert celery_app.tasks["chats.expire_approvals"].name == expire_approvals.name


# --- the marked screenshot ------------------------------------------------------------------------------


def png(width: int = 320, height: int = 200, color: tuple[int, int, int] = (40, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def test_the_target_is_marked_with_a_ring_and_a_crosshair() -> None:
    marked = Image.open(io.BytesIO(approval_mark_target(png(), (100, 80)))).convert("RGB")
    assert marked.size == (320, 200)
    radius = max(10, 200 // 24)

    def red(x: int, y: int) -> bool:
        r, g, b = marked.getpixel((x, y))  # type: ignore[misc]
        return r > 180 and g < 90 and b < 90

    assert red(100 + radius, 80) and red(100 - radius, 80) and red(100, 80 + radius)  # the ring
    assert red(100 + 2 * radius - 2, 80) and red(100, 80 - 2 * radius + 2)  # the crosshair's arms
    assert marked.getpixel((100, 80)) == (40, 40, 40)  # the target itself stays visible
    assert marked.getpixel((300, 180)) == (40, 40, 40)  # far away: untouched


def test_no_point_leaves_the_screenshot_as_it_was_and_garbage_is_refused() -> None:
    original = png()
    assert approval_mark_target(original, None) is original
    with pytest.raises(ValueError, match="not a readable image"):
        approval_mark_target(b"not a png", (1, 1))
    edge = Image.open(io.BytesIO(approval_mark_target(original, (0, 199))))
    assert edge.size == (320, 200)  # a point at the edge is drawn clipped, not refused
