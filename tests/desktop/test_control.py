"""Who holds a desktop (desktop/control.py): each function, the refusals, the check constraint, the audit
rows and the message to the desktop's proxy viewers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import WorkspaceAgent
from chatdesk.exceptions import AgentNotConnected, Conflict
from chats.models import AuditEvent, Chat
from chats.services import chat_spawn_child
from chats.tools.base import ToolContext
from desktop import client as desktop_client
from desktop import control, services
from desktop.tools import ComputerTool
from tests.factories import ChatFactory, UserFactory, WorkspaceAgentFactory
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(user: User) -> WorkspaceAgent:
    return WorkspaceAgentFactory.create(owner=user, url="ws://127.0.0.1:9", last_seen=timezone.now())


@pytest.fixture
def root(user: User, agent: WorkspaceAgent) -> Chat:
    return ChatFactory.create(owner=user, workspace_agent=agent)


def child_of(root: Chat, status: str = Chat.Status.WAITING, **fields: Any) -> Chat:
    return ChatFactory.create(
        owner=root.owner,
        parent=root,
        workspace_agent=root.workspace_agent,
        mode=Chat.Mode.COMPUTER_USE,
        status=status,
        **fields,
    )


def spawn_child(root: Chat) -> Chat:
    """A computer-use child of ``root`` with its first turn queued (as the model spawns one)."""
    return chat_spawn_child(parent=root, prompt="Click around.")


def fresh(agent: WorkspaceAgent) -> WorkspaceAgent:
    return WorkspaceAgent.objects.select_related("desktop_held_by").get(pk=agent.pk)


def control_events(chat: Chat) -> list[tuple[str, str, str | None, Any]]:
    """(actor, change, holder, username) of each control audit row of ``chat``, in order."""
    rows = AuditEvent.objects.filter(chat=chat, kind=AuditEvent.Kind.CONTROL).select_related("user")
    return [
        (e.actor, e.data["change"], e.data["holder"], e.user.username if e.user else None)
        for e in rows.order_by("id")
    ]


def test_nobody_holds_a_new_desktop(agent: WorkspaceAgent) -> None:
    assert control.control_state(agent) == {"holder": None, "user": None, "since": None}


def test_take_makes_the_caller_the_holder_and_audits_it(
    user: User, agent: WorkspaceAgent, root: Chat
) -> None:
    control.control_take(chat=root, user=user)
    state = control.control_state(fresh(agent))
    assert (state["holder"], state["user"]) == ("person", "alice")
    assert state["since"] is not None
    assert control.may_send_input(fresh(agent), user.pk)
    assert control_events(root) == [("person", "takeover", "person", "alice")]

    # Taking it again changes nothing: same time, no second audit row.
    control.control_take(chat=root, user=user)
    assert control.control_state(fresh(agent))["since"] == state["since"]
    assert len(control_events(root)) == 1


def test_another_person_can_take_it_over(user: User, agent: WorkspaceAgent, root: Chat) -> None:
    bob = UserFactory.create(username="bob")
    bobs_chat = ChatFactory.create(owner=bob, workspace_agent=agent)
    control.control_take(chat=root, user=user)
    control.control_take(chat=bobs_chat, user=bob)
    row = fresh(agent)
    assert control.control_state(row)["user"] == "bob"
    assert control.may_send_input(row, bob.pk) and not control.may_send_input(row, user.pk)
    # Alice no longer holds it: her hand-back is refused.
    with pytest.raises(Conflict, match="Another person holds the desktop"):
        control.control_handback(chat=root, user=user, note="")
    assert control_events(bobs_chat) == [("person", "takeover", "person", "bob")]


def test_handback_needs_the_holder(user: User, agent: WorkspaceAgent, root: Chat) -> None:
    with pytest.raises(Conflict, match="not held"):
        control.control_handback(chat=root, user=user)
    control.control_model_acquire(agent=agent, chat=root)
    with pytest.raises(Conflict, match="The agent holds the desktop"):
        control.control_handback(chat=root, user=user)
    assert fresh(agent).desktop_holder == "model"


def test_handback_with_nothing_to_resume_leaves_nobody(user: User, agent: WorkspaceAgent, root: Chat) -> None:
    interrupted = child_of(root, Chat.Status.PAUSED, paused_reason=Chat.PausedReason.INTERRUPTED)
    control.control_take(chat=root, user=user)
    control.control_handback(chat=root, user=user, note="  done  ")
    row = fresh(agent)
    assert control.control_state(row)["holder"] is None
    assert row.desktop_held_by is None
    assert not control.may_send_input(row, user.pk)
    last = AuditEvent.objects.filter(chat=root, kind=AuditEvent.Kind.CONTROL).latest("id")
    assert last.data == {"holder": None, "change": "handback", "note": "done"}
    interrupted.refresh_from_db()
    assert interrupted.status == Chat.Status.PAUSED


def test_handback_that_resumes_a_chat_gives_the_desktop_to_the_model(
    user: User, agent: WorkspaceAgent, root: Chat
) -> None:
    busy = child_of(root, Chat.Status.RUNNING)
    services.desktop_takeover(chat=busy, user=user)
    busy.refresh_from_db()
    assert (busy.status, busy.paused_reason) == (Chat.Status.PAUSED, Chat.PausedReason.TAKEN_OVER)
    services.desktop_handback(chat=busy, user=user, note="logged in")
    busy.refresh_from_db()
    assert busy.status == Chat.Status.PENDING
    assert control.control_state(fresh(agent))["holder"] == "model"
    # Audited on the child the change came through (the root's stream gets it live too).
    assert control_events(busy) == [
        ("person", "takeover", "person", "alice"),
        ("person", "handback", "model", "alice"),
    ]
    assert control_events(root) == []


def test_model_acquires_only_when_no_person_holds_it(user: User, agent: WorkspaceAgent, root: Chat) -> None:
    acting = child_of(root, Chat.Status.RUNNING)
    assert control.control_model_acquire(agent=agent, chat=acting) is True
    assert fresh(agent).desktop_holder == "model"
    since = fresh(agent).desktop_held_at
    # Acquiring what the model holds changes nothing.
    assert control.control_model_acquire(agent=agent, chat=acting) is True
    assert fresh(agent).desktop_held_at == since
    assert control_events(acting) == [("model", "acquire", "model", None)]

    control.control_take(chat=root, user=user)
    assert control.control_model_acquire(agent=agent, chat=acting) is False
    assert control.control_state(fresh(agent))["user"] == "alice"


def test_model_release_waits_for_the_last_busy_chat(agent: WorkspaceAgent, root: Chat) -> None:
    first = child_of(root, Chat.Status.RUNNING)
    second = child_of(root, Chat.Status.PENDING)
    control.control_model_acquire(agent=agent, chat=first)
    # The first chat's turn ends while the second still has one queued: the model keeps the desktop.
    first.status = Chat.Status.COMPLETED
    first.save(update_fields=["status"])
    assert control.control_model_release(agent=agent, chat=first) is False
    assert fresh(agent).desktop_holder == "model"
    second.status = Chat.Status.COMPLETED
    second.save(update_fields=["status"])
    assert control.control_model_release(agent=agent, chat=second) is True
    assert fresh(agent).desktop_holder is None
    assert control_events(second) == [("model", "release", None, None)]


def test_model_release_never_takes_it_from_a_person(user: User, agent: WorkspaceAgent, root: Chat) -> None:
    acting = child_of(root, Chat.Status.RUNNING)
    control.control_model_acquire(agent=agent, chat=acting)
    control.control_take(chat=root, user=user)
    assert control.control_model_release(agent=agent, chat=acting) is False
    assert control.control_state(fresh(agent))["holder"] == "person"


def test_the_sweep_releases_a_hold_no_turn_will_release(
    user: User, agent: WorkspaceAgent, root: Chat
) -> None:
    """The worker of the holding turn died and its turn failed for good: nothing would release the desktop."""
    acting = child_of(root, Chat.Status.RUNNING)
    control.control_model_acquire(agent=agent, chat=acting)
    assert control.control_sweep() == 0  # its turn still runs
    Chat.objects.filter(pk=acting.pk).update(status=Chat.Status.ERROR)
    assert control.control_sweep() == 1
    assert fresh(agent).desktop_holder is None
    assert control_events(acting)[-1] == ("model", "release", None, None)
    assert control.control_sweep() == 0
    control.control_take(chat=root, user=user)
    assert control.control_sweep() == 0 and fresh(agent).desktop_holder == "person"  # a person's stays


def test_beat_runs_the_hold_sweep_that_workers_know() -> None:
    from celery import Celery

    from chatdesk.celery import app as celery_app
    from chatdesk.celery import schedule_sweep
    from desktop.tasks import control_sweep_task

    beat = Celery("beat-test", set_as_current=False)  # else turns queued after this test go to its broker
    schedule_sweep(beat)
    assert beat.conf.beat_schedule["desktop.sweep_holds"]["task"] == "desktop.sweep_holds"
    assert celery_app.tasks["desktop.sweep_holds"].name == control_sweep_task.name


def test_a_chat_without_an_agent_is_refused(user: User) -> None:
    chat = ChatFactory.create(owner=user, workspace_agent=None)
    with pytest.raises(AgentNotConnected):
        control.control_take(chat=chat, user=user)
    with pytest.raises(AgentNotConnected):
        control.control_handback(chat=chat, user=user)


def test_the_person_is_set_exactly_while_a_person_holds_it(user: User, agent: WorkspaceAgent) -> None:
    for holder, held_by in (("person", None), ("model", user), (None, user), ("robot", None)):
        with pytest.raises(IntegrityError), transaction.atomic():
            WorkspaceAgent.objects.filter(pk=agent.pk).update(desktop_holder=holder, desktop_held_by=held_by)
    for holder, held_by in (("person", user), ("model", None), (None, None)):
        WorkspaceAgent.objects.filter(pk=agent.pk).update(desktop_holder=holder, desktop_held_by=held_by)


def test_deleting_the_person_who_holds_it_frees_the_desktop(agent: WorkspaceAgent) -> None:
    bob = UserFactory.create(username="bob")
    control.control_take(chat=ChatFactory.create(owner=bob, workspace_agent=agent), user=bob)
    bob.delete()
    row = fresh(agent)
    assert (row.desktop_holder, row.desktop_held_by) == (None, None)


@pytest.fixture
def listener(agent: WorkspaceAgent) -> Iterator[list[dict[str, Any]]]:
    """Messages that reach a subscriber of the agent's control group (as a proxy viewer subscribes)."""
    if not settings.REDIS_URL:
        pytest.skip("the channel layer crosses threads with Redis only")
    received: list[dict[str, Any]] = []
    subscribed, stop = threading.Event(), threading.Event()

    async def listen() -> None:
        layer = channel_layers.make_backend("default")  # a layer of its own, bound to this thread's loop
        channel = await layer.new_channel()
        await layer.group_add(control.group_name(agent.pk), channel)
        subscribed.set()
        try:
            while not stop.is_set():
                try:
                    received.append(await asyncio.wait_for(layer.receive(channel), 0.2))
                except TimeoutError:
                    continue
        finally:
            await layer.group_discard(control.group_name(agent.pk), channel)

    thread = threading.Thread(target=lambda: asyncio.run(listen()))
    thread.start()
    assert subscribed.wait(10)
    yield received
    stop.set()
    thread.join(10)


@pytest.mark.django_db(transaction=True)
def test_each_change_is_announced_to_the_desktops_viewers_once_committed(
    user: User, agent: WorkspaceAgent, root: Chat, listener: list[dict[str, Any]]
) -> None:
    with transaction.atomic():
        control.control_take(chat=root, user=user)
        control.control_take(chat=root, user=user)  # no change: no message
        assert listener == []  # not before the commit
    control.control_handback(chat=root, user=user)
    expected = [
        {"type": "desktop.control", "agent_id": str(agent.pk), "holder": "person", "user_id": user.pk},
        {"type": "desktop.control", "agent_id": str(agent.pk), "holder": None, "user_id": None},
    ]
    wait_until(lambda: len(listener) >= 2, timeout=10, what="two control messages")
    assert listener == expected


def test_the_computer_tool_refuses_an_action_when_a_person_took_the_desktop_just_before(
    user: User, agent: WorkspaceAgent, root: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the tool's acquire closes: a person takes control after the tool's first check, before
    the action goes to the agent. The action never reaches the agent; the chat pauses (taken_over)."""
    child = spawn_child(root)
    tool = ComputerTool(child)
    sent: list[Any] = []

    def connected_then_taken_over(chat: Chat) -> WorkspaceAgent:
        services.desktop_takeover(chat=root, user=user)  # a person, at this very moment
        return agent

    monkeypatch.setattr(desktop_client, "agent_for_chat", connected_then_taken_over)
    monkeypatch.setattr(desktop_client, "run_action_sync", lambda *args: sent.append(args))
    result = tool.run(ToolContext(chat=child, tool_use_id="t", name="screenshot"), {})
    assert result.pause == Chat.PausedReason.TAKEN_OVER and not result.is_error
    assert sent == []
    assert control.control_state(fresh(agent))["holder"] == "person"


def test_the_end_of_a_computer_use_turn_lets_the_desktop_go(agent: WorkspaceAgent, root: Chat) -> None:
    child = spawn_child(root)
    assert control.control_model_acquire(agent=agent, chat=child)
    ComputerTool(child).turn_ended()
    assert control.control_state(fresh(agent))["holder"] is None
