"""Recordings end to end (SPEC §9): a real Celery worker, the fake Anthropic API, a real agent with Xvnc and
ffmpeg. A scripted computer-use child works on the desktop; what it did is in a video, and the timeline
says where in the video each action is."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import WorkspaceAgent
from chats import services
from chats.models import AuditEvent, Chat, ChatFile, ChatProvider, Recording
from tests.chats.conftest import wait_status, worker_env
from tests.factories import WorkspaceAgentFactory, agent_token
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text, tool_use
from tests.support.media import ffmpeg_recorders, ffprobe
from tests.support.processes import running_worker, wait_until

if TYPE_CHECKING:
    from tests.support.agent_process import AgentProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.desktop,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("Xvnc", "openbox", "xdotool", "ffmpeg", "ffprobe")),
        reason="needs Xvnc, openbox, xdotool and ffmpeg",
    ),
]

ENV = worker_env(CHATDESK_AGENT_TIMEOUT_SECONDS="3600")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def anthropic_provider(fake: FakeAnthropic) -> ChatProvider:
    row = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC, base_url=fake.base_url)
    row.set_api_key("test-key")
    row.save()
    return row


@pytest.fixture
def desktop_agent(user: User) -> Iterator[tuple[WorkspaceAgent, AgentProcess]]:
    from tests.support.agent_process import running_agent

    row = WorkspaceAgentFactory.create(owner=user, name="desk")
    with running_agent(token=agent_token(row), geometry="1280x800") as agent:
        WorkspaceAgent.objects.filter(pk=row.pk).update(
            url=agent.ws_url, display_width=1280, display_height=800, last_seen=timezone.now()
        )
        row.refresh_from_db()
        yield row, agent


def steps(request: RecordedRequest) -> int:
    return sum(1 for m in request.json["messages"] if m["role"] == "assistant")


def scripted(actions: list[tuple[str, dict[str, Any]]], before: Callable[[int], None] | None = None) -> Any:
    """A child model that runs ``actions`` one per step (calling ``before(step)`` first), then reports."""

    def script(request: RecordedRequest) -> Reply:
        step = steps(request)
        if before is not None:
            before(step)
            connection.close()  # this runs on the fake server's thread
        if step < len(actions):
            name, tool_input = actions[step]
            return reply(tool_use(name, tool_input, toolset_name="computer"))
        return reply(text("Done."))

    return script


ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("screenshot", {}),
    ("left_click", {"coordinate": [640, 400]}),
    ("mouse_move", {"coordinate": [100, 700]}),
    ("wait", {"duration": 1}),
    ("double_click", {"coordinate": [900, 150]}),
    ("key", {"text": "Escape"}),
]


def stored_recordings(chat: Chat, count: int = 1, timeout: float = 60) -> list[Recording]:
    def done() -> list[Recording] | None:
        rows = list(Recording.objects.filter(chat=chat).order_by("started_at"))
        settled = [r for r in rows if r.state != Recording.State.RECORDING]
        return rows if len(settled) >= count and len(settled) == len(rows) else None

    return wait_until(done, timeout=timeout, what=f"{count} recording(s) of chat {chat.pk} to be stored")


def body(response: Any) -> bytes:
    """Return a streamed response's bytes."""
    return b"".join(response.streaming_content)


def file_path(chat_file: ChatFile) -> Path:
    return Path(settings.MEDIA_ROOT) / chat_file.file.name


def child_chat(user: User, agent_row: WorkspaceAgent, prompt: str = "Click around.") -> Chat:
    parent = Chat.objects.create(owner=user, workspace_agent=agent_row, model="claude-sonnet-5-5")
    return services.chat_spawn_child(parent=parent, prompt=prompt)


def test_a_child_run_is_recorded_and_its_timeline_points_into_the_video(
    tmp_path: Path,
    user: User,
    api: APIClient,
    other_api: APIClient,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],
) -> None:
    agent_row, agent = desktop_agent
    fake.handle_with(scripted(ACTIONS))
    with running_worker(tmp_path, concurrency=1, env=ENV):
        child = child_chat(user, agent_row)
        wait_status(child, Chat.Status.COMPLETED, Chat.Status.ERROR, timeout=120)
        assert child.status == Chat.Status.COMPLETED, child.last_error
        (recording,) = stored_recordings(child)
    assert ffmpeg_recorders(agent.display) == []
    assert recording.kind == "model" and recording.state == "stored" and recording.complete, recording.note
    assert recording.file is not None and recording.thumbnail is not None

    # ffprobe reads the stored video: VP8 at the desktop's size, as long as the recording ran.
    info = ffprobe(file_path(recording.file))
    assert (info.codec, info.width, info.height) == ("vp8", 1280, 800)
    assert recording.duration_seconds is not None
    assert recording.duration_seconds - 2.5 <= info.duration <= recording.duration_seconds + 0.5
    assert info.frames >= 3  # a click, a move and a double click changed the screen

    listed = api.get(f"/api/experimental/chats/{child.pk}/recordings").json()
    assert [r["id"] for r in listed] == [str(recording.pk)]
    assert listed[0]["content_type"] == "video/webm" and listed[0]["size_bytes"] == recording.file.size
    assert listed[0]["kind"] == "model" and listed[0]["thumbnail_url"]

    # Every action is on the timeline, in order, inside the video, at the time it started, between the
    # model taking the desktop (its first action) and letting it go (the end of its turn).
    timeline = api.get(f"/api/experimental/chats/{child.pk}/timeline").json()
    assert [e["action"] for e in timeline] == ["acquire", *(name for name, _ in ACTIONS), "release"]
    assert all(e["recording_id"] == str(recording.pk) and e["by"] == "model" for e in timeline)
    timeline = timeline[1:-1]
    offsets = [e["t"] for e in timeline]
    assert offsets == sorted(offsets) and 0 <= offsets[0] and offsets[-1] <= info.duration
    events = AuditEvent.objects.filter(chat=child, kind="action").order_by("at")
    raw = [(e.at - recording.started_at).total_seconds() for e in events]
    assert all(0 <= t <= info.duration for t in raw)
    assert offsets == [round(t, 3) for t in raw]
    click = timeline[1]
    assert click["coordinate"] == [640, 400] and click["message_id"] and click["tool_use_id"]

    # The file answers Range requests with the right bytes.
    url = listed[0]["url"]
    whole = file_path(recording.file).read_bytes()
    first = api.get(url, HTTP_RANGE="bytes=0-99")
    assert first.status_code == 206 and first["Content-Range"] == f"bytes 0-99/{len(whole)}"
    assert body(first) == whole[:100]
    middle = api.get(url, HTTP_RANGE=f"bytes={len(whole) // 2}-")
    assert body(middle) == whole[len(whole) // 2 :]
    tail = api.get(url, HTTP_RANGE="bytes=-10")
    assert body(tail) == whole[-10:]
    assert api.get(url, HTTP_RANGE=f"bytes={len(whole)}-").status_code == 416
    full = api.get(url)
    assert full.status_code == 200 and full["Accept-Ranges"] == "bytes"
    assert body(full) == whole

    # Another user learns nothing.
    for path in (
        f"/api/experimental/chats/{child.pk}/recordings",
        f"/api/experimental/chats/{child.pk}/timeline",
        url,
    ):
        assert other_api.get(path).status_code == 404


def test_a_takeover_is_recorded_as_a_person_recording(
    tmp_path: Path,
    user: User,
    api: APIClient,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],
) -> None:
    agent_row, agent = desktop_agent
    chat = Chat.objects.create(
        owner=user, workspace_agent=agent_row, model="claude-opus-5-5", mode=Chat.Mode.COMPUTER_USE,
        parent=Chat.objects.create(owner=user, workspace_agent=agent_row),
    )  # fmt: skip
    with running_worker(tmp_path, concurrency=1, env=ENV):
        assert (
            api.post(f"/api/experimental/chats/{chat.pk}/desktop/takeover", {}, format="json").status_code
            == 200
        )
        assert len(ffmpeg_recorders(agent.display)) == 1
        # The person does something on the desktop.
        agent.call("action", {"action": "left_click", "coordinate": [500, 500]})
        agent.call("action", {"action": "mouse_move", "coordinate": [50, 50]})
        assert (
            api.post(f"/api/experimental/chats/{chat.pk}/desktop/handback", {}, format="json").status_code
            == 200
        )
        (recording,) = stored_recordings(chat)
    assert ffmpeg_recorders(agent.display) == []
    assert recording.kind == "person" and recording.state == "stored" and recording.complete
    assert recording.file is not None and ffprobe(file_path(recording.file)).frames >= 1
    listed = api.get(f"/api/experimental/chats/{chat.pk}/recordings").json()
    assert [r["kind"] for r in listed] == ["person"]


def test_killing_ffmpeg_mid_chat_leaves_the_chat_working_and_the_recording_incomplete(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],
) -> None:
    agent_row, agent = desktop_agent
    display = agent.display
    actions = [("mouse_move", {"coordinate": [100 + 100 * i, 300]}) for i in range(8)]

    def kill_at_step_5(step: int) -> None:
        if step == 5:
            for pid in ffmpeg_recorders(display):
                os.kill(pid, signal.SIGKILL)

    fake.handle_with(scripted(actions, before=kill_at_step_5))
    with running_worker(tmp_path, concurrency=1, env=ENV):
        child = child_chat(user, agent_row)
        wait_status(child, Chat.Status.COMPLETED, Chat.Status.ERROR, timeout=120)
        (recording,) = stored_recordings(child)
    assert child.status == Chat.Status.COMPLETED, child.last_error
    results = [p for m in child.messages.filter(role="tool") for p in m.content]
    assert len(results) == 8 and not any(r["is_error"] for r in results)  # every action went on
    assert recording.complete is False and "signal 9" in recording.note
    assert recording.state in (Recording.State.STORED, Recording.State.FAILED)


def test_deleting_a_chat_mid_turn_stops_it_and_removes_its_files(
    tmp_path: Path,
    user: User,
    api: APIClient,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    desktop_agent: tuple[WorkspaceAgent, AgentProcess],
) -> None:
    agent_row, agent = desktop_agent
    fake.handle_with(scripted([("mouse_move", {"coordinate": [10 + i, 10]}) for i in range(500)]))
    with running_worker(tmp_path, concurrency=1, env=ENV) as worker:
        child = child_chat(user, agent_row)
        wait_until(lambda: ChatFile.objects.filter(chat=child).count() >= 5, timeout=60, what="screenshots")
        assert ffmpeg_recorders(agent.display)
        folder = Path(settings.MEDIA_ROOT) / "chats" / str(child.pk)
        assert any(folder.iterdir())
        parent = child.parent
        assert parent is not None
        response = api.delete(f"/api/experimental/chats/{parent.pk}")
        assert response.status_code == 204
        assert not Chat.objects.filter(pk__in=[parent.pk, child.pk]).exists()
        wait_until(lambda: not ffmpeg_recorders(agent.display), timeout=30, what="the recorder to stop")
        # The turn stopped: the model is not called again.
        calls = len(fake.message_requests)
        wait_until(
            lambda: "Task chats.run_turn" in worker.output() and "succeeded" in worker.output(), timeout=30
        )
    assert len(fake.message_requests) <= calls + 1
    assert not folder.exists() or not any(folder.iterdir())
    assert ChatFile.objects.count() == 0 and Recording.objects.count() == 0


def test_the_sweep_stops_a_recording_whose_turn_is_gone(
    user: User, desktop_agent: tuple[WorkspaceAgent, AgentProcess]
) -> None:
    from datetime import timedelta

    from desktop.recordings import recording_start, recordings_sweep

    agent_row, agent = desktop_agent
    chat = child_chat(user, agent_row)  # queued, never run: no worker here
    recording = recording_start(chat=chat, kind=Recording.Kind.MODEL)
    assert recording is not None and ffmpeg_recorders(agent.display)
    Recording.objects.filter(pk=recording.pk).update(started_at=recording.started_at - timedelta(minutes=5))
    assert recordings_sweep() == 0  # the chat's turn is queued: it may still be recording for it
    Chat.objects.filter(pk=chat.pk).update(status=Chat.Status.ERROR)  # its worker died, the sweep failed it
    assert recordings_sweep() == 1
    assert ffmpeg_recorders(agent.display) == []
    recording.refresh_from_db()
    assert recording.ended_at is not None and recording.duration_seconds is not None
