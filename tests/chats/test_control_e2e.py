"""Desktop control end to end (SPEC §8): real Celery workers, the real agent with Xvnc and an xterm, the
fake Anthropic API scripted per request.

What reaches the desktop is counted: the xterm runs ``cat`` on a raw terminal into a file, so every
character typed into it lands in the file at once, and a text typed twice would be there twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from agents.models import WorkspaceAgent
from chats import services
from chats.engine.journal import UNKNOWN_OUTCOME
from chats.models import AuditEvent, Chat, ChatMessage, ChatProvider, ToolCall
from tests.chats.conftest import wait_status, worker_env
from tests.chats.test_e2e import desktop_agent  # noqa: F401  (a fixture)
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text, tool_use
from tests.support.processes import running_worker, wait_until

if TYPE_CHECKING:
    from tests.support.agent_process import AgentProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.desktop,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("Xvnc", "openbox", "xdotool", "xterm")),
        reason="needs Xvnc, openbox, xdotool and xterm",
    ),
]

XTERM_CLICK = [300, 250]  # inside the xterm at +100+100
LONG_TEXT = "exactly-once " * 60  # 780 characters: ~3 s of typing (5 ms a character)
LEASE = {"CHATDESK_TURN_LEASE_SECONDS": "5", "CHATDESK_SWEEP_INTERVAL": "1"}
ENV = {"CHATDESK_AGENT_TIMEOUT_SECONDS": "3600"}


@contextlib.contextmanager
def typing_sink(agent: AgentProcess, sink: Path) -> Iterator[None]:
    """An xterm whose terminal is raw and whose input goes to ``sink`` character by character."""
    sink.touch()
    proc = subprocess.Popen(
        ["xterm", "-geometry", "80x24+100+100", "-e", "sh", "-c", f"stty raw -echo; exec cat > {sink}"],
        env=agent.x_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def mapped() -> bool:
            found = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--class", "xterm"],
                env=agent.x_env(),
                capture_output=True,
                text=True,
            )
            return bool(found.stdout.strip())

        wait_until(mapped, timeout=20, what="the xterm window")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def steps(request: RecordedRequest) -> int:
    return sum(1 for m in request.json["messages"] if m["role"] == "assistant")


def results_for(request: RecordedRequest, tool_use_id: str) -> list[dict[str, Any]]:
    return [
        block
        for m in request.json["messages"]
        if m["role"] == "user"
        for block in m["content"]
        if block.get("type") == "tool_result" and block.get("tool_use_id") == tool_use_id
    ]


def user_texts(request: RecordedRequest) -> list[str]:
    return [
        block["text"]
        for m in request.json["messages"]
        if m["role"] == "user"
        for block in m["content"]
        if block.get("type") == "text"
    ]


def child_of(user: User, agent_row: WorkspaceAgent, **root_fields: Any) -> Callable[[str], Chat]:
    root = Chat.objects.create(
        owner=user, workspace_agent=agent_row, model="claude-sonnet-5-5", **root_fields
    )
    return lambda prompt: services.chat_spawn_child(parent=root, prompt=prompt)


def started(chat_id: Any, tool_use_id: str) -> bool:
    return ToolCall.objects.filter(chat_id=chat_id, tool_use_id=tool_use_id).exists()


@pytest.mark.parametrize("slow", ["type", "wait"])
def test_takeover_during_a_slow_action_records_it_once_and_handback_resumes_with_it(
    slow: str,
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],  # noqa: F811
) -> None:
    from desktop.services import desktop_handback, desktop_takeover

    agent_row, agent = desktop_agent
    sink = tmp_path / "typed.txt"
    slow_input: dict[str, Any] = {"text": LONG_TEXT} if slow == "type" else {"duration": 3}
    seen: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply:
        step = steps(request)
        if step == 0:
            return reply(tool_use("left_click", {"coordinate": XTERM_CLICK}, "c1", toolset_name="computer"))
        if step == 1:
            return reply(tool_use(slow, slow_input, "slow", toolset_name="computer"))
        seen.append(request)
        return reply(text("Resumed."))

    fake.handle_with(script)
    with typing_sink(agent, sink):
        with running_worker(tmp_path, env=worker_env(**ENV)):
            child = child_of(user, agent_row)("Type into the terminal.")
            wait_until(lambda: started(child.pk, "slow"), timeout=60, what="the slow action to start")
            desktop_takeover(chat=child, user=user)  # while the action runs on the desktop
            wait_status(child, Chat.Status.PAUSED, Chat.Status.ERROR, timeout=30)
            assert child.paused_reason == Chat.PausedReason.TAKEN_OVER
            call = ToolCall.objects.get(chat=child, tool_use_id="slow")
            wait_until(lambda: ToolCall.objects.get(pk=call.pk).state == ToolCall.State.DONE, timeout=30)
            desktop_handback(chat=child, user=user, note="All yours again.")
            wait_status(child, Chat.Status.COMPLETED, Chat.Status.ERROR, timeout=60)
    assert child.status == Chat.Status.COMPLETED, child.last_error
    if slow == "type":
        assert sink.read_text() == LONG_TEXT  # typed exactly once
    # The model's next request holds the action's result once, then the note.
    assert len(seen) == 1
    answered = results_for(seen[0], "slow")
    assert len(answered) == 1 and not answered[0].get("is_error")
    assert any("All yours again." in t for t in user_texts(seen[0]))
    actions = AuditEvent.objects.filter(chat=child, kind=AuditEvent.Kind.ACTION, data__tool_use_id="slow")
    assert actions.count() == 1
    assert child.messages.filter(role=ChatMessage.Role.TOOL, content__0__tool_use_id="slow").count() == 1


def test_a_worker_killed_mid_action_tells_the_model_the_outcome_is_unknown(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],  # noqa: F811
) -> None:
    agent_row, agent = desktop_agent
    sink = tmp_path / "typed.txt"
    seen: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply:
        step = steps(request)
        if step == 0:
            return reply(tool_use("left_click", {"coordinate": XTERM_CLICK}, "c1", toolset_name="computer"))
        if step == 1:
            return reply(tool_use("type", {"text": LONG_TEXT}, "t1", toolset_name="computer"))
        seen.append(request)
        return reply(text("I will look at the screen before doing anything else."))

    fake.handle_with(script)
    with typing_sink(agent, sink):
        with running_worker(tmp_path, name="doomed", env=worker_env(**ENV, **LEASE)) as doomed:
            child = child_of(user, agent_row)("Type into the terminal.")
            wait_until(lambda: started(child.pk, "t1"), timeout=60, what="the typing to start")
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # the whole worker, mid-action
            doomed.proc.wait(timeout=10)
        typed_before = sink.read_text()
        with running_worker(tmp_path, name="rescuer", beat=True, env=worker_env(**ENV, **LEASE)):
            WorkspaceAgent.objects.filter(pk=agent_row.pk).update(last_seen=timezone.now())
            wait_status(child, Chat.Status.COMPLETED, Chat.Status.ERROR, timeout=90)
    assert child.status == Chat.Status.COMPLETED, child.last_error
    assert ToolCall.objects.get(chat=child, tool_use_id="t1").state == ToolCall.State.UNKNOWN
    answered = results_for(seen[0], "t1")
    assert len(answered) == 1 and answered[0]["is_error"] is True
    assert answered[0]["content"] == [{"type": "text", "text": UNKNOWN_OUTCOME}]
    # Nothing typed twice: at most the text once (the agent stops typing once its caller is gone).
    typed = sink.read_text()
    assert LONG_TEXT.startswith(typed) and typed.startswith(typed_before[: len(typed)])
    assert (
        AuditEvent.objects.filter(chat=child, kind=AuditEvent.Kind.ACTION, data__tool_use_id="t1").count()
        <= 1
    )


def test_the_model_asks_for_help_a_person_acts_and_hands_back_with_a_note(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],  # noqa: F811
) -> None:
    from desktop.services import desktop_handback, desktop_takeover

    agent_row, agent = desktop_agent
    sink = tmp_path / "typed.txt"
    seen: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply:
        if request.json["model"] != "claude-opus-5-5":  # the root: delegate, wait, answer
            step = steps(request)
            if step == 0:
                return reply(tool_use("spawn_computer_use_agent", {"prompt": "Log in."}, "s1"))
            if step == 1:
                child_id = Chat.objects.get(parent__isnull=False, owner=user).pk
                connection.close()  # this runs on the fake server's thread
                return reply(tool_use("wait_agent", {"chat_id": str(child_id), "timeout_seconds": 300}, "w1"))
            return reply(text("The sub-agent is done."))
        if steps(request) == 0:
            return reply(tool_use("request_human_help", {"reason": "Type the password, please."}, "h1"))
        seen.append(request)
        return reply(text("Logged in, thanks."))

    fake.handle_with(script)
    with typing_sink(agent, sink):
        with running_worker(tmp_path, concurrency=1, env=worker_env(**ENV)):
            WorkspaceAgent.objects.filter(pk=agent_row.pk).update(last_seen=timezone.now())
            root = services.chat_create(owner=user, message="Log me in.")
            child = wait_until(
                lambda: Chat.objects.filter(parent=root, status=Chat.Status.PAUSED).first(),
                timeout=60,
                what="the child to ask for help",
            )
            assert child.paused_reason == Chat.PausedReason.NEEDS_HELP
            assert child.help_reason == "Type the password, please."
            wait_status(root, Chat.Status.PENDING, timeout=30)  # suspended in wait_agent: no worker held
            assert AuditEvent.objects.filter(chat=child, kind=AuditEvent.Kind.HELP_REQUESTED).count() == 1
            desktop_takeover(chat=child, user=user)
            subprocess.run(  # the person types (as a viewer holding the desktop would)
                ["xdotool", "mousemove", "300", "250", "click", "1", "type", "--", "hunter2"],
                env=agent.x_env(),
                check=True,
            )
            wait_until(lambda: sink.read_text() == "hunter2", timeout=10, what="the person's typing")
            desktop_handback(chat=child, user=user, note="Password typed; you are logged in.")
            wait_status(root, Chat.Status.WAITING, Chat.Status.ERROR, timeout=90)
    child.refresh_from_db()
    assert root.status == Chat.Status.WAITING, root.last_error
    assert child.status == Chat.Status.COMPLETED, child.last_error
    assert len(seen) == 1 and any("Password typed; you are logged in." in t for t in user_texts(seen[0]))
    assert len(results_for(seen[0], "h1")) == 1


def test_a_gated_action_waits_for_approval_and_runs_once_on_one_worker(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],  # noqa: F811
    settings: Any,
) -> None:
    from chats.approvals import approval_decide

    settings.CHATDESK_APPROVAL_POLICY = "risky"  # the root's default; its child inherits it
    agent_row, agent = desktop_agent
    sink = tmp_path / "typed.txt"
    seen: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply:
        step = steps(request)
        if request.json["model"] != "claude-opus-5-5":  # the root: delegate, wait, answer
            if step == 0:
                return reply(tool_use("spawn_computer_use_agent", {"prompt": "Type hello."}, "s1"))
            if step == 1:
                child_id = Chat.objects.get(parent__isnull=False, owner=user).pk
                connection.close()  # this runs on the fake server's thread
                return reply(tool_use("wait_agent", {"chat_id": str(child_id), "timeout_seconds": 300}, "w1"))
            return reply(text("The sub-agent typed it."))
        if step == 0:
            return reply(tool_use("left_click", {"coordinate": XTERM_CLICK}, "c1", toolset_name="computer"))
        if step == 1:
            return reply(tool_use("type", {"text": "hello"}, "t1", toolset_name="computer"))
        seen.append(request)
        return reply(text("Typed."))

    fake.handle_with(script)
    with typing_sink(agent, sink):
        with running_worker(tmp_path, concurrency=1, env=worker_env(**ENV)):
            WorkspaceAgent.objects.filter(pk=agent_row.pk).update(last_seen=timezone.now())
            root = services.chat_create(owner=user, message="Type hello on the desktop.")
            assert root.approval_policy == "risky"
            child = wait_until(
                lambda: Chat.objects.filter(parent=root, status=Chat.Status.PAUSED).first(),
                timeout=60,
                what="the child to wait for an approval",
            )
            assert child.paused_reason == Chat.PausedReason.AWAITING_APPROVAL
            approval = child.approvals.get()
            assert (approval.action, approval.input, approval.state) == ("type", {"text": "hello"}, "pending")
            assert approval.screenshot is not None and approval.root_chat_id == root.pk
            assert sink.read_text() == ""  # the click ran, the typing waits
            assert not ToolCall.objects.filter(chat=child, tool_use_id="t1").exists()
            approval_decide(approval_id=approval.pk, user=user, decision="approve")
            wait_status(root, Chat.Status.WAITING, Chat.Status.ERROR, timeout=90)
    assert root.status == Chat.Status.WAITING, root.last_error
    assert sink.read_text() == "hello"  # typed once
    answered = results_for(seen[0], "t1")
    assert len(answered) == 1 and not answered[0].get("is_error")
    kinds = list(AuditEvent.objects.filter(chat__in=[root, child]).values_list("kind", "actor"))
    assert ("approval", "model") in kinds and ("approval", "person") in kinds


@pytest.mark.parametrize("outcome", ["deny", "expire"])
def test_a_denied_or_expired_action_is_an_error_with_the_note_and_the_chat_goes_on(
    outcome: str,
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],  # noqa: F811
) -> None:
    from chats.approvals import approval_decide

    agent_row, agent = desktop_agent
    sink = tmp_path / "typed.txt"
    seen: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply:
        step = steps(request)
        if step == 0:
            return reply(tool_use("left_click", {"coordinate": XTERM_CLICK}, "c1", toolset_name="computer"))
        if step == 1:
            return reply(tool_use("key", {"text": "x"}, "k1", toolset_name="computer"))
        seen.append(request)
        return reply(text("Understood, I will not press it."))

    fake.handle_with(script)
    env = worker_env(**ENV, CHATDESK_APPROVAL_TIMEOUT_SECONDS="2", CHATDESK_SWEEP_INTERVAL="1")
    with typing_sink(agent, sink):
        with running_worker(tmp_path, concurrency=1, beat=outcome == "expire", env=env):
            child = child_of(user, agent_row, approval_policy="risky")("Press x.")
            wait_status(child, Chat.Status.PAUSED, Chat.Status.ERROR, timeout=60)
            assert child.paused_reason == Chat.PausedReason.AWAITING_APPROVAL
            assert [a.action for a in child.approvals.all()] == ["key"]  # `risky`: the click was not gated
            if outcome == "deny":
                key = child.approvals.get(action="key")
                approval_decide(approval_id=key.pk, user=user, decision="deny", note="Not that key.")
            wait_status(child, Chat.Status.COMPLETED, Chat.Status.ERROR, timeout=60)
    assert child.status == Chat.Status.COMPLETED, child.last_error
    key = child.approvals.get(action="key")
    assert key.state == ("denied" if outcome == "deny" else "expired")
    assert sink.read_text() == ""  # the key never reached the desktop
    answered = results_for(seen[0], "k1")
    assert len(answered) == 1 and answered[0]["is_error"] is True
    message = answered[0]["content"][0]["text"]
    assert message.startswith("A person denied this action")
    if outcome == "deny":
        assert "Not that key." in message
