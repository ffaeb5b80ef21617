"""End to end: root chats use the workspace tools through a real Celery worker, the fake Anthropic API and
a real agent: the model fixes a file with the editor and checks it with bash (the shell keeping its state
between calls), a command's output reaches the stream WebSocket (real daphne) while it runs, and an
interrupt stops a running command."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from websockets.sync.client import connect

from agents.models import WorkspaceAgent
from chats import services
from chats.models import Chat, ChatMessage, ChatProvider
from chats.tools.workspace import WORKSPACE_PROMPT
from tests.chats.conftest import wait_status, worker_env
from tests.desktop.conftest import agent_row
from tests.support.agent_process import AgentProcess, desktop_user, running_agent
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text, tool_use
from tests.support.processes import Process, running_daphne, running_worker, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.desktop,
    pytest.mark.skipif(not shutil.which("Xvnc"), reason="needs Xvnc"),
]

TOKEN = "cda_workspace_e2e_token_5b1f0c2d"
EDITOR = "str_replace_based_edit_tool"


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with running_agent(token=TOKEN) as process:
        yield process


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One worker for the module; heartbeats are not running, so agents stay `connected` for an hour."""
    with running_worker(
        tmp_path_factory.mktemp("worker"),
        concurrency=1,
        env=worker_env(CHATDESK_AGENT_TIMEOUT_SECONDS="3600"),
    ) as process:
        yield process


@pytest.fixture
def workspace(user: User, agent: AgentProcess) -> WorkspaceAgent:
    row = agent_row(user, token=TOKEN, url=agent.ws_url)
    WorkspaceAgent.objects.filter(pk=row.pk).update(last_seen=timezone.now())
    return row


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory of the desktop's user, where the model works (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="workspace-e2e-"))
    user = desktop_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def steps(request: RecordedRequest) -> int:
    return sum(1 for m in request.json["messages"] if m["role"] == "assistant")


def result_text(request: RecordedRequest) -> str:
    content = request.tool_results()[0]["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content if p["type"] == "text")


def tool_results(chat: Chat) -> list[dict[str, Any]]:
    return [p for m in chat.messages.filter(role=ChatMessage.Role.TOOL) for p in m.content]


def test_a_root_chat_fixes_a_file_with_the_editor_and_checks_it_with_bash(
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    workspace: WorkspaceAgent,
    worker: Process,
    workdir: Path,
) -> None:
    conf = workdir / "app.conf"
    conf.write_text("debug = true\nport = 80\n")
    os.chown(conf, workdir.stat().st_uid, workdir.stat().st_gid)  # the desktop user's file, as in a workspace
    seen: list[str] = []

    def model(request: RecordedRequest) -> Reply:
        step = steps(request)
        if step:
            seen.append(result_text(request))
        script = [
            tool_use(EDITOR, {"command": "view", "path": str(conf)}),
            tool_use(
                EDITOR,
                {
                    "command": "str_replace",
                    "path": str(conf),
                    "old_str": "port = 80",
                    "new_str": "port = 8080",
                },
            ),
            tool_use(
                "bash", {"command": f"cd {workdir} && grep -c 'port = 8080' app.conf && export CHECKED=yes"}
            ),
            tool_use("bash", {"command": 'echo "$CHECKED in $(pwd)"'}),
        ]
        return reply(script[step]) if step < len(script) else reply(text("The app now listens on port 8080."))

    fake.handle_with(model)
    chat = services.chat_create(
        owner=user, message="The app listens on the wrong port: fix app.conf, please."
    )
    assert chat.workspace_agent_id == workspace.pk
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)

    assert chat.status == Chat.Status.WAITING, chat.last_error
    assert conf.read_text() == "debug = true\nport = 8080\n", seen
    assert seen[0] == "1: debug = true\n2: port = 80"
    assert seen[1].startswith("Successfully replaced text at exactly one location.")
    assert seen[2] == "1\n"
    assert seen[3] == f"yes in {workdir}\n"  # the same shell: its directory and variables lasted
    assert not any(part["is_error"] for part in tool_results(chat))
    first = fake.message_requests[0].json
    declared = [{k: v for k, v in tool.items() if k != "cache_control"} for tool in first["tools"]]
    assert {"type": "bash_20250124", "name": "bash"} in declared
    assert {"type": "text_editor_20250728", "name": EDITOR, "max_characters": 16000} in declared
    system = (
        first["system"] if isinstance(first["system"], str) else "".join(b["text"] for b in first["system"])
    )
    assert WORKSPACE_PROMPT in system


def test_command_output_reaches_the_stream_before_the_command_ends(
    tmp_path: Path,
    user: User,
    api_token: str,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    workspace: WorkspaceAgent,
    worker: Process,
    workdir: Path,
) -> None:
    done = workdir / "done"
    command = f"for i in 1 2 3 4 5; do echo tick $i; sleep 0.4; done; touch {done}"
    fake.handle_with(
        lambda request: (
            reply(tool_use("bash", {"command": command})) if steps(request) == 0 else reply(text("Done."))
        )
    )
    chat = services.chat_create(owner=user)
    events: list[dict[str, Any]] = []
    first_piece_while_running: bool | None = None
    with (
        running_daphne(tmp_path) as daphne,
        connect(
            f"{daphne.ws_url}/api/experimental/chats/{chat.pk}/stream",
            additional_headers={"Authorization": f"Bearer {api_token}"},
        ) as ws,
    ):
        assert json.loads(ws.recv(timeout=10))["type"] == "status"
        services.chat_send_message(chat=chat, content="Count to five, slowly.")
        while True:
            event = json.loads(ws.recv(timeout=60))
            events.append(event)
            if event["type"] == "tool_output" and first_piece_while_running is None:
                first_piece_while_running = not done.exists()
            if event["type"] == "status" and event["status"] in ("waiting", "error"):
                break
    assert event["status"] == "waiting", event
    assert first_piece_while_running is True  # output was on the page before the command ended
    pieces = [e for e in events if e["type"] == "tool_output"]
    tool_use_id = chat.messages.filter(role=ChatMessage.Role.ASSISTANT).first().content[0]["id"]  # type: ignore[union-attr]
    assert {e["tool_use_id"] for e in pieces} == {tool_use_id}
    assert "".join(e["output"] for e in pieces) == "".join(f"tick {i}\n" for i in range(1, 6))
    # Every piece came before the stored result, which holds the whole output.
    result_at = next(
        i for i, e in enumerate(events) if e["type"] == "message" and e["message"]["role"] == "tool"
    )
    assert all(events.index(piece) < result_at for piece in pieces)


def test_an_interrupt_stops_the_running_command(
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    workspace: WorkspaceAgent,
    worker: Process,
    workdir: Path,
) -> None:
    pid_file = workdir / "sleep.pid"
    command = f"echo started; sleep 120 & echo $! > {pid_file}; wait"
    fake.handle_with(lambda request: reply(tool_use("bash", {"command": command})))
    chat = services.chat_create(owner=user, message="Wait for two minutes.")
    wait_until(pid_file.exists, timeout=60, what="the command to start")
    pid = int(wait_until(lambda: pid_file.read_text().strip(), what="the pid"))
    services.chat_interrupt(chat=chat)

    wait_until(lambda: tool_results(chat), timeout=30, what="the command's result")
    (result,) = tool_results(chat)
    assert result["is_error"]
    assert result["content"][0]["text"] == "started\n[The command was interrupted: the chat was stopped.]"
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=15, what="the command to be stopped")
    chat.refresh_from_db()
    assert chat.status == Chat.Status.PAUSED and chat.paused_reason == Chat.PausedReason.INTERRUPTED
    assert len(fake.message_requests) == 1  # the model was not asked again
