"""Exactly-once tool calls (SPEC §8, chats/engine/journal.py), in-process with the fake Anthropic API.

A counting tool stands in for an action on the desktop, so each test can see how often it really ran;
tests/desktop/test_control_e2e.py does the same with the real agent, Xvnc and Celery workers.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, ClassVar

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError
from django.utils import timezone

from chats import services
from chats.engine import turn_execute
from chats.engine.journal import UNKNOWN_OUTCOME
from chats.engine.lease import Heartbeat, new_worker_id, turn_claim
from chats.models import AuditEvent, Chat, ChatMessage, ChatProvider, ToolCall
from chats.tools.base import ImageFile, Tool, ToolContext, ToolResult, text_result
from chats.tools.help import HELP_REASON_MAX_CHARS
from tests.factories import ChatFactory
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, png_bytes, reply, tool_use

# Committed rows: the turn's heartbeat and stream watchdog read the chat from threads of their own.
pytestmark = pytest.mark.django_db(transaction=True)


class CountingTool(Tool):
    """An acting tool that counts its runs; ``during`` runs in the middle of the action."""

    name = "act"
    runs: ClassVar[list[str]] = []
    during: ClassVar[Any] = None

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        CountingTool.runs.append(ctx.tool_use_id)
        if CountingTool.during is not None:
            CountingTool.during(ctx.chat)
        return text_result(f"acted {len(CountingTool.runs)}")


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingTool]:
    CountingTool.runs = []
    CountingTool.during = None
    monkeypatch.setattr("chats.engine.tools_for_chat", lambda chat, provider_configured: [CountingTool()])
    return CountingTool


@pytest.fixture
def provider(fake: FakeAnthropic) -> ChatProvider:
    row = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC, base_url=fake.base_url)
    row.set_api_key("k")
    row.save()
    return row


def results_for(request: RecordedRequest, tool_use_id: str) -> list[dict[str, Any]]:
    return [
        block
        for message in request.json["messages"]
        if message["role"] == "user"
        for block in message["content"]
        if block.get("type") == "tool_result" and block.get("tool_use_id") == tool_use_id
    ]


def queued_chat(user: User, **fields: Any) -> Chat:
    chat = ChatFactory.create(owner=user, status=Chat.Status.PENDING, **fields)
    ChatMessage.objects.create(chat=chat, role="user", content=[{"type": "text", "text": "go"}])
    return chat


def test_an_action_during_which_the_chat_pauses_is_recorded_and_never_run_again(
    user: User, fake: FakeAnthropic, provider: ChatProvider, counting: type[CountingTool]
) -> None:
    chat = queued_chat(user)
    counting.during = lambda c: services.chat_interrupt(chat=c)  # a person stops the chat mid-action
    fake.add_response(reply(tool_use("act", {}, id="t1")))
    turn_execute(chat_id=str(chat.pk))
    chat.refresh_from_db()
    assert chat.status == Chat.Status.PAUSED and counting.runs == ["t1"]
    call = ToolCall.objects.get(chat=chat, tool_use_id="t1")
    assert call.state == ToolCall.State.DONE and call.content == [{"type": "text", "text": "acted 1"}]
    assert chat.messages.filter(role="tool").count() == 1  # stored although the chat was paused

    counting.during = None
    fake.add_response(reply("done"))
    services.chat_resume(chat=chat)
    turn_execute(chat_id=str(chat.pk))
    assert counting.runs == ["t1"]  # resuming did not run it again
    answered = results_for(fake.message_requests[-1], "t1")
    assert len(answered) == 1 and answered[0]["content"] == [{"type": "text", "text": "acted 1"}]


def test_a_worker_that_died_mid_action_leaves_an_unknown_outcome_not_a_second_run(
    user: User, fake: FakeAnthropic, provider: ChatProvider, counting: type[CountingTool]
) -> None:
    chat = queued_chat(user)
    ChatMessage.objects.create(chat=chat, role="assistant", content=[tool_use("act", {}, id="t1")])
    ToolCall.objects.create(chat=chat, tool_use_id="t1", name="act", worker_id="dead")  # started, never done
    fake.add_response(reply("I will take a screenshot."))
    turn_execute(chat_id=str(chat.pk))
    assert counting.runs == []
    assert ToolCall.objects.get(chat=chat, tool_use_id="t1").state == ToolCall.State.UNKNOWN
    answered = results_for(fake.message_requests[-1], "t1")
    assert len(answered) == 1 and answered[0]["is_error"] is True
    assert answered[0]["content"] == [{"type": "text", "text": UNKNOWN_OUTCOME}]


def test_a_late_result_after_the_outcome_was_declared_unknown_is_not_stored_twice(user: User) -> None:
    from chats.engine.journal import journal_finish, journal_settle, journal_start

    chat = ChatFactory.create(owner=user)
    assert journal_start(chat_id=chat.pk, tool_use_id="t1", name="act", worker_id="w1")
    assert not journal_start(chat_id=chat.pk, tool_use_id="t1", name="act", worker_id="w2")  # once
    assert journal_settle(chat_id=chat.pk, tool_use_id="t1")  # a new turn: unknown
    assert not journal_finish(chat_id=chat.pk, tool_use_id="t1", result=text_result("late"))
    assert chat.messages.filter(role="tool").count() == 1
    assert not journal_settle(chat_id=chat.pk, tool_use_id="t2")  # never started: the caller runs it


def test_a_child_exists_only_together_with_its_journal_entry(
    user: User, fake: FakeAnthropic, provider: ChatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = queued_chat(user)
    spawn = tool_use("spawn_computer_use_agent", {"prompt": "open the editor"}, id="s1")
    ChatMessage.objects.create(chat=root, role="assistant", content=[spawn])  # left open by a turn

    def recorded_elsewhere(**kwargs: Any) -> None:
        raise IntegrityError("tool_call_once")  # another turn recorded s1 first

    monkeypatch.setattr("chats.engine.journal_record", recorded_elsewhere)
    fake.add_response(reply("waiting"))
    turn_execute(chat_id=str(root.pk))
    assert not Chat.objects.filter(parent=root).exists()  # this turn's child went with its journal entry

    monkeypatch.undo()
    ChatMessage.objects.create(chat=root, role="assistant", content=[spawn | {"id": "s2"}])
    services.chat_queue_turn(chat=root)
    fake.add_response(reply("started it"))
    turn_execute(chat_id=str(root.pk))
    assert Chat.objects.filter(parent=root).count() == 1
    assert ToolCall.objects.get(chat=root, tool_use_id="s2").state == ToolCall.State.DONE
    assert len(results_for(fake.message_requests[-1], "s2")) == 1


def test_request_human_help_pauses_with_the_reason_and_tells_both_streams(
    user: User, fake: FakeAnthropic, provider: ChatProvider
) -> None:
    root = ChatFactory.create(owner=user)
    child = queued_chat(user, parent=root, mode=Chat.Mode.COMPUTER_USE)
    fake.add_response(
        reply(tool_use("request_human_help", {"reason": "Log in to the bank, please."}, id="h1"))
    )
    turn_execute(chat_id=str(child.pk))
    child.refresh_from_db()
    assert child.status == Chat.Status.PAUSED and child.paused_reason == Chat.PausedReason.NEEDS_HELP
    assert child.help_reason == "Log in to the bank, please."
    event = AuditEvent.objects.get(chat=child, kind=AuditEvent.Kind.HELP_REQUESTED)
    assert event.actor == AuditEvent.Actor.MODEL and event.data["reason"] == "Log in to the bank, please."
    result = child.messages.get(role="tool").content[0]
    assert result["tool_use_id"] == "h1" and result["is_error"] is False
    definitions = [t.get("name") for t in fake.message_requests[0].json["tools"]]
    assert "request_human_help" in definitions


@pytest.mark.parametrize("reason", ["", "   ", "x" * (HELP_REASON_MAX_CHARS + 1), 42])
def test_request_human_help_with_a_bad_reason_is_an_error_the_model_reads(
    user: User, fake: FakeAnthropic, provider: ChatProvider, reason: object
) -> None:
    root = ChatFactory.create(owner=user)
    child = queued_chat(user, parent=root, mode=Chat.Mode.COMPUTER_USE)
    fake.add_response(reply(tool_use("request_human_help", {"reason": reason}, id="h1")))
    fake.add_response(reply("I will go on by myself."))
    turn_execute(chat_id=str(child.pk))
    child.refresh_from_db()
    assert child.status == Chat.Status.COMPLETED and child.help_reason == ""
    answered = results_for(fake.message_requests[-1], "h1")
    assert answered[0]["is_error"] is True and "reason" in answered[0]["content"][0]["text"]
    assert not AuditEvent.objects.filter(chat=child).exists()


def test_a_paused_chat_keeps_its_lease_but_a_chat_claimed_by_another_worker_does_not(user: User) -> None:
    chat = queued_chat(user)
    worker = new_worker_id()
    assert turn_claim(chat_id=str(chat.pk), worker_id=worker) is not None
    services.chat_pause(chat=chat, reason=Chat.PausedReason.TAKEN_OVER)
    with Heartbeat(chat_id=chat.pk, worker_id=worker, interval=0.05) as beat:
        assert not beat.lost.wait(0.3)  # paused: still this turn's (it records its action's result)
        Chat.objects.filter(pk=chat.pk).update(worker_id="another")
        assert beat.lost.wait(5)


class RecordingTool(CountingTool):
    """An acting tool whose result stores what the action left (like the computer tool's screenshot)."""

    name = "act"
    recorded: ClassVar[list[str]] = []
    fail = False

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        result = super().run(ctx, tool_input)

        def record() -> None:
            if RecordingTool.fail:
                raise OSError("No space left on device")
            AuditEvent.objects.create(chat=ctx.chat, kind="action", actor="model", at=timezone.now())
            RecordingTool.recorded.append(ctx.tool_use_id)

        result.record = record
        return result


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> type[RecordingTool]:
    CountingTool.runs = []
    CountingTool.during = None
    RecordingTool.recorded = []
    RecordingTool.fail = False
    monkeypatch.setattr("chats.engine.tools_for_chat", lambda chat, provider_configured: [RecordingTool()])
    return RecordingTool


def test_what_an_action_left_is_stored_with_its_result(
    user: User, fake: FakeAnthropic, provider: ChatProvider, recording: type[RecordingTool]
) -> None:
    chat = queued_chat(user)
    fake.script([reply(tool_use("act", {}, id="t1")), reply("done")])
    turn_execute(chat_id=str(chat.pk))
    assert recording.recorded == ["t1"]
    assert AuditEvent.objects.filter(chat=chat, kind="action").count() == 1
    assert ToolCall.objects.get(chat=chat, tool_use_id="t1").state == ToolCall.State.DONE


def test_a_late_result_still_stores_what_the_action_left_but_not_the_result(user: User) -> None:
    """A later turn declared the outcome unknown: the action did run, so its audit entry is kept."""
    from chats.engine.journal import journal_finish, journal_settle, journal_start

    chat = ChatFactory.create(owner=user)
    assert journal_start(chat_id=chat.pk, tool_use_id="t1", name="act", worker_id="w1")
    assert journal_settle(chat_id=chat.pk, tool_use_id="t1")
    late = text_result("late")

    def record() -> None:
        AuditEvent.objects.create(chat=chat, kind="action", actor="model", at=timezone.now())

    late.record = record
    assert not journal_finish(chat_id=chat.pk, tool_use_id="t1", result=late)
    assert AuditEvent.objects.filter(chat=chat, kind="action").count() == 1
    assert chat.messages.filter(role="tool").count() == 1  # the unknown outcome only


def test_when_storing_what_an_action_left_fails_the_model_is_told_and_the_turn_goes_on(
    user: User, fake: FakeAnthropic, provider: ChatProvider, recording: type[RecordingTool]
) -> None:
    chat = queued_chat(user)
    recording.fail = True
    fake.script([reply(tool_use("act", {}, id="t1")), reply("done")])
    turn_execute(chat_id=str(chat.pk))
    chat.refresh_from_db()
    assert chat.status == Chat.Status.WAITING and recording.runs == ["t1"]
    assert ToolCall.objects.get(chat=chat, tool_use_id="t1").state == ToolCall.State.DONE
    answered = results_for(fake.message_requests[-1], "t1")
    assert len(answered) == 1 and answered[0]["is_error"] is True
    assert "could not be stored" in answered[0]["content"][0]["text"]


class ScreenshotTool(CountingTool):
    """An acting tool that returns a screenshot it has at hand (as the computer tool does); it stores no
    file, so the next request can only carry the image from the engine's memory."""

    name = "act"
    png = png_bytes(4, 3)

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        super().run(ctx, tool_input)
        file_id = str(uuid.uuid4())
        return ToolResult(
            content=[{"type": "image", "file_id": file_id}], images={file_id: ImageFile(self.png, 4, 3)}
        )


def test_the_next_request_sends_the_screenshot_an_action_returned_without_reading_it_back(
    user: User, fake: FakeAnthropic, provider: ChatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    CountingTool.runs = []
    CountingTool.during = None
    monkeypatch.setattr("chats.engine.tools_for_chat", lambda chat, provider_configured: [ScreenshotTool()])
    chat = queued_chat(user)
    fake.script([reply(tool_use("act", {}, id="t1")), reply("done")])
    turn_execute(chat_id=str(chat.pk))
    (result,) = results_for(fake.message_requests[-1], "t1")
    assert result["content"] == [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": base64.b64encode(ScreenshotTool.png).decode(),
            },
        }
    ]


def test_a_policy_changed_during_a_turn_gates_the_next_action(
    user: User, fake: FakeAnthropic, provider: ChatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §8: a new approval policy applies to the tree's next actions, also within a running turn (the
    engine gives the child its root row fresh at each step; the gate reads the policy there)."""
    from agents.daemon.client import ActionResult
    from agents.models import WorkspaceAgent
    from chatdesk.exceptions import AgentUnreachable
    from desktop import client as desktop_client

    agent = WorkspaceAgent.objects.create(
        owner=user, name="desk", url="ws://127.0.0.1:9", display_width=1280, display_height=800
    )
    root = ChatFactory.create(owner=user, workspace_agent=agent)
    child = ChatFactory.create(
        owner=user,
        parent=root,
        workspace_agent=agent,
        mode=Chat.Mode.COMPUTER_USE,
        status=Chat.Status.PENDING,
        model="claude-opus-5-5",
    )
    ChatMessage.objects.create(chat=child, role="user", content=[{"type": "text", "text": "go"}])
    acted: list[str] = []

    def act(connected: Any, params: dict[str, Any]) -> ActionResult:
        acted.append(params["action"])
        services.chat_update(chat=Chat.objects.get(pk=root.pk), approval_policy=Chat.ApprovalPolicy.ALL)
        return ActionResult(output="ok", png=None, width=None, height=None)

    monkeypatch.setattr(desktop_client, "agent_for_chat", lambda chat: agent)
    monkeypatch.setattr(desktop_client, "run_action_sync", act)

    async def no_screenshot(*args: Any) -> None:
        raise AgentUnreachable  # the approval is asked without a picture: not needed here

    monkeypatch.setattr(desktop_client, "screenshot", no_screenshot)
    point = {"coordinate": [10, 10]}
    fake.script(
        [
            reply(tool_use("left_click", point, id="c1", toolset_name="computer")),
            reply(tool_use("left_click", point, id="c2", toolset_name="computer")),
        ]
    )
    turn_execute(chat_id=str(child.pk))
    child.refresh_from_db()
    assert acted == ["left_click"]  # the first click ran under "off"; the second waits for a person
    assert (child.status, child.paused_reason) == (Chat.Status.PAUSED, Chat.PausedReason.AWAITING_APPROVAL)
