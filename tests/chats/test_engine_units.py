"""The turn engine's parts, in-process: message mapping, the claim, the sweep, screenshot pruning."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.utils import timezone
from pytest_django.fixtures import Settings

from chats import services
from chats.engine import turn_execute
from chats.engine.history import build_api_messages, unanswered_tool_uses
from chats.engine.lease import WORKER_LOST_MESSAGE, turn_claim, turns_sweep
from chats.engine.parts import PartPublisher
from chats.events import MessagePartEvent
from chats.models import Chat, ChatFile, ChatMessage, ChatProvider
from tests.factories import ChatFactory
from tests.support.fake_anthropic import FakeAnthropic, png_bytes, reply

pytestmark = pytest.mark.django_db

PNG = png_bytes(64, 40)


def add(chat: Chat, role: str, content: list[dict[str, Any]], **kw: Any) -> ChatMessage:
    return ChatMessage.objects.create(chat=chat, role=role, content=content, **kw)


def screenshot(chat: Chat) -> dict[str, str]:
    chat_file = ChatFile(chat=chat)
    chat_file.file.save("s.png", ContentFile(PNG), save=False)
    chat_file.save()
    return {"type": "image", "file_id": str(chat_file.pk)}


def test_history_maps_roles_tool_results_and_late_user_messages(user: User) -> None:
    chat = ChatFactory.create(owner=user)
    q = add(chat, "user", [{"type": "text", "text": "Q"}])
    use = {"type": "tool_use", "id": "t1", "name": "wait_agent", "input": {"chat_id": "c"}}
    a1 = add(chat, "assistant", [{"type": "text", "text": "A"}, use], context_id=q.id)
    add(chat, "user", [{"type": "text", "text": "late"}])  # sent while the tool ran
    result = add(
        chat,
        "tool",
        [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]}],
    )
    # Sent while the model wrote B: stored before B, but B had not seen it, so it goes after B.
    add(chat, "user", [{"type": "text", "text": "during B"}])
    add(chat, "assistant", [{"type": "text", "text": "B"}], context_id=result.id)
    messages = build_api_messages(list(chat.messages.all()), keep_screenshots=3)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"][1] == {
        "type": "tool_use",
        "id": "t1",
        "name": "wait_agent",
        "input": {"chat_id": "c"},
    }
    # tool_result first in its user turn, then the text sent meanwhile.
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "text"]
    assert messages[2]["content"][0]["tool_use_id"] == "t1" and "is_error" not in messages[2]["content"][0]
    assert messages[4]["content"] == [{"type": "text", "text": "during B"}]
    assert messages[2]["content"][1]["text"] == "late" and a1.context_id == q.id


def test_an_unanswered_tool_use_gets_an_error_result_in_the_request(user: User) -> None:
    chat = ChatFactory.create(owner=user)
    add(chat, "user", [{"type": "text", "text": "Q"}])
    add(chat, "assistant", [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}])
    add(chat, "user", [{"type": "text", "text": "never mind"}])
    assert [p["id"] for p in unanswered_tool_uses(list(chat.messages.all()))] == ["t1"]
    messages = build_api_messages(list(chat.messages.all()), keep_screenshots=3)
    assert messages[-1]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": "This tool call was not run.",
        "is_error": True,
    }


def test_only_the_newest_screenshots_are_loaded_and_sent(user: User) -> None:
    chat = ChatFactory.create(owner=user)
    add(chat, "user", [{"type": "text", "text": "go"}])
    for n in range(5):
        add(chat, "assistant", [{"type": "tool_use", "id": f"t{n}", "name": "computer", "input": {}}])
        add(chat, "tool", [{"type": "tool_result", "tool_use_id": f"t{n}", "content": [screenshot(chat)]}])
    messages = build_api_messages(list(chat.messages.all()), keep_screenshots=3)
    inner = [m["content"][0]["content"][0] for m in messages if m["content"][0]["type"] == "tool_result"]
    assert [b["type"] for b in inner] == ["text", "text", "image", "image", "image"]
    assert inner[0]["text"] == "[older screenshot omitted]"
    assert inner[-1]["source"]["media_type"] == "image/png" and inner[-1]["source"]["type"] == "base64"


def test_claim_is_atomic_and_a_redelivered_task_is_a_no_op(user: User) -> None:
    chat = ChatFactory.create(owner=user, status=Chat.Status.PENDING)
    claimed = turn_claim(chat_id=str(chat.pk), worker_id="w1")
    assert claimed is not None and claimed[0].status == Chat.Status.RUNNING and claimed[0].worker_id == "w1"
    assert turn_claim(chat_id=str(chat.pk), worker_id="w2") is None
    chat.refresh_from_db()
    assert chat.worker_id == "w1" and chat.heartbeat_at is not None


def test_a_waiting_parent_is_claimed_only_once_its_child_is_done(user: User) -> None:
    parent = ChatFactory.create(owner=user)
    child = services.chat_spawn_child(parent=parent, prompt="work")
    deadline = (timezone.now() + timedelta(minutes=5)).isoformat()
    awaiting = {"tool_use_id": "t1", "chat_id": str(child.pk), "deadline": deadline}
    Chat.objects.filter(pk=parent.pk).update(status=Chat.Status.PENDING, awaiting=awaiting)
    assert turn_claim(chat_id=str(parent.pk), worker_id="early") is None  # child still pending
    Chat.objects.filter(pk=child.pk).update(status=Chat.Status.COMPLETED)
    claimed = turn_claim(chat_id=str(parent.pk), worker_id="w")
    assert claimed is not None and claimed[1] == awaiting
    assert turn_claim(chat_id=str(parent.pk), worker_id="again") is None
    parent.refresh_from_db()
    assert parent.awaiting is None


def test_sweep_requeues_a_dead_workers_turn_once_then_fails_it(user: User, settings: Settings) -> None:
    settings.CHATDESK_TURN_LEASE_SECONDS = 5
    old = timezone.now() - timedelta(seconds=30)
    chat = ChatFactory.create(owner=user, status=Chat.Status.RUNNING, worker_id="dead", heartbeat_at=old)
    fresh = ChatFactory.create(
        owner=user, status=Chat.Status.RUNNING, worker_id="alive", heartbeat_at=timezone.now()
    )
    assert turns_sweep()["requeued"] == 1
    chat.refresh_from_db()
    assert (chat.status, chat.lease_recoveries, chat.worker_id) == (Chat.Status.PENDING, 1, "")
    Chat.objects.filter(pk=chat.pk).update(status=Chat.Status.RUNNING, worker_id="dead2", heartbeat_at=old)
    assert turns_sweep()["failed"] == 1
    chat.refresh_from_db()
    assert chat.status == Chat.Status.ERROR and chat.last_error == WORKER_LOST_MESSAGE
    fresh.refresh_from_db()
    assert fresh.status == Chat.Status.RUNNING


def test_deltas_are_coalesced_but_the_first_goes_out_at_once() -> None:
    sent: list[tuple[object, MessagePartEvent]] = []
    now = [0.0]
    parts = PartPublisher(
        "c", clock=lambda: now[0], send=lambda chat_id, event: sent.append((chat_id, event))
    )
    parts.on_text_delta(0, "He")
    assert [e["part"]["delta"] for _, e in sent] == ["He"]
    now[0] = 0.01
    parts.on_text_delta(0, "l")
    parts.on_text_delta(0, "lo")
    assert len(sent) == 1
    now[0] = 0.07
    parts.tick()
    assert [e["part"]["delta"] for _, e in sent] == ["He", "llo"]
    parts.on_tool_input_delta(1, '{"a"')
    parts.flush()
    assert sent[-1][1]["part"] == {"index": 1, "type": "tool_input", "delta": '{"a"'}


# Committed rows: the turn's stream watchdog and heartbeat read the chat from threads of their own.
@pytest.mark.django_db(transaction=True)
def test_pruned_screenshots_are_visible_in_the_request_and_the_step_limit_holds(
    user: User, settings: Settings
) -> None:
    settings.CHATDESK_MAX_STEPS = 1
    settings.CHATDESK_KEEP_SCREENSHOTS = 3
    settings.CHATDESK_SCREENSHOT_PRUNE_BATCH = 2  # 5 screenshots: the oldest 2 go, 3 stay
    chat = ChatFactory.create(
        owner=user, status=Chat.Status.PENDING, mode="computer_use", parent=ChatFactory.create(owner=user)
    )
    add(chat, "user", [{"type": "text", "text": "go"}])
    for n in range(5):
        add(chat, "assistant", [{"type": "tool_use", "id": f"t{n}", "name": "computer", "input": {}}])
        add(chat, "tool", [{"type": "tool_result", "tool_use_id": f"t{n}", "content": [screenshot(chat)]}])
    with FakeAnthropic() as fake:
        row = ChatProvider(provider="anthropic", base_url=fake.base_url)
        row.set_api_key("k")
        row.save()
        tool_call = {
            "type": "tool_use",
            "id": "tx",
            "name": "screenshot",
            "input": {"bad": 1},
            "toolset_name": "computer",
        }
        fake.add_response(reply(tool_call))
        # One step allowed: the model asks for a tool, the turn answers it, then hits the limit.
        turn_execute(chat_id=str(chat.pk))
        sent = fake.message_requests[0].json["messages"]
    images = [
        b
        for m in sent
        if m["role"] == "user"
        for r in m["content"]
        if r["type"] == "tool_result"
        for b in r["content"]
    ]
    assert [b["type"] for b in images] == ["text", "text", "image", "image", "image"]
    chat.refresh_from_db()
    assert chat.status == Chat.Status.ERROR and "CHATDESK_MAX_STEPS" in chat.last_error
    answered = chat.messages.last()
    assert answered is not None and answered.content[0]["is_error"] is True  # bad input: an error result


def queued_turns() -> int:
    from chatdesk.celery import turn_queue_depth

    depth = turn_queue_depth()
    assert depth is not None
    return depth


def purge_turn_queue() -> None:
    from chatdesk.celery import app

    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(app.conf.task_default_queue)


def test_the_sweep_requeues_lost_turns_without_piling_them_up(user: User, settings: Settings) -> None:
    settings.CHATDESK_TURN_LEASE_SECONDS = 5
    purge_turn_queue()
    chats = [ChatFactory.create(owner=user, status=Chat.Status.PENDING) for _ in range(3)]
    pending = Chat.objects.filter(pk__in=[c.pk for c in chats])
    long_ago = timezone.now() - timedelta(minutes=5)
    pending.update(updated_at=long_ago)

    assert turns_sweep()["woken"] == 3  # their tasks are gone (say, Redis restarted empty)
    assert queued_turns() == 3
    # While tasks wait in the queue (a backlog), old pending chats are waiting their turn: nothing more.
    pending.update(updated_at=long_ago)
    assert turns_sweep()["woken"] == 0
    assert queued_turns() == 3
    # Lost again: queued once more, but not at every sweep of the same lease period.
    purge_turn_queue()
    assert turns_sweep()["woken"] == 3
    purge_turn_queue()
    assert turns_sweep()["woken"] == 0
    purge_turn_queue()
