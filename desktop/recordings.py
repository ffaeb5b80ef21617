"""Recordings of a chat's desktop, server side (SPEC §9): start and stop them on the workspace agent, then
bring the file home.

When:
- a computer-use chat's turn records from its first computer action until the turn ends (``ComputerTool``:
  ``run`` starts, ``turn_ended`` stops), kind ``model``;
- a person's take-over records until the hand-back (``desktop.services``), kind ``person``.

How: the agent runs ffmpeg (``agents/daemon/recorder.py``) and keeps the file; once it is stopped, the Celery
task ``desktop.fetch_recording`` pulls it over the agent's RPC connection in 1 MiB chunks into a temporary
file (never whole in memory; at most CHATDESK_RECORDING_MAX_BYTES), stores it as a ChatFile with the
thumbnail the agent took as the recording ended, and tells the agent to delete its copy.

A recording is a side show: every failure here (no ffmpeg, agent unreachable, ffmpeg crashed) is logged and
leaves the chat working; the Recording row then says ``failed`` or ``complete: false`` with a ``note``.

Times: the agent reports the wall-clock time of the video's first frame and its own clock at the answer; the
server shifts the first by the difference between the clocks, so ``Recording.started_at`` is on the
server's clock, like the audit log's action times that the timeline subtracts it from.
"""

from __future__ import annotations

import base64
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models.signals import post_delete
from django.utils import timezone

from agents.models import DesktopHolder, WorkspaceAgent
from chatdesk.exceptions import ChatdeskError
from chats.files import chat_file_store
from chats.models import Chat, Recording
from chats.transitions import ACTIVE
from desktop import client

logger = logging.getLogger(__name__)

START_DEADLINE = 20.0
STOP_DEADLINE = 80.0  # a crashed recording is remuxed by the agent before it answers
READ_CHUNK = 1024 * 1024
#: The agent's ``-fs`` cap stops ffmpeg once the file passed the cap, so the file may end a little after it.
SIZE_SLACK = 1024 * 1024

__all__ = [
    "recording_fetch",
    "recording_start",
    "recording_stop",
    "recordings_forget_on_agent",
    "recordings_stop_person",
    "recordings_sweep",
]


def _agent_time(seconds: float | None, skew: timedelta) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(float(seconds), tz=UTC) + skew


async def _call(agent: WorkspaceAgent, method: str, params: dict[str, Any], deadline: float) -> Any:
    async with client.open_agent(agent) as rpc:
        return await rpc.call(method, params, deadline=deadline)


def recording_start(*, chat: Chat, kind: str) -> Recording | None:
    """Start recording ``chat``'s desktop; return the row, or None when recording is off or impossible."""
    if not settings.CHATDESK_RECORDING or chat.workspace_agent_id is None:
        return None
    agent = WorkspaceAgent.objects.filter(pk=chat.workspace_agent_id).first()
    if agent is None or not agent.url:
        return None
    params = {"fps": settings.CHATDESK_RECORDING_FPS, "max_bytes": settings.CHATDESK_RECORDING_MAX_BYTES}
    try:
        result = async_to_sync(_call)(agent, "recording_start", params, START_DEADLINE)
    except ChatdeskError as exc:
        logger.warning("Chat %s: could not start a %s recording: %s", chat.pk, kind, exc.message)
        return None
    skew = timezone.now() - datetime.fromtimestamp(float(result["now"]), tz=UTC)
    started_at = _agent_time(result.get("started_at"), skew) or timezone.now()
    recording = Recording(
        chat_id=chat.pk,
        kind=kind,
        workspace_agent=agent,
        agent_recording_id=str(result["id"]),
        started_at=started_at,
    )
    try:
        with transaction.atomic():
            if not Chat.objects.select_for_update(no_key=True).filter(pk=chat.pk).exists():
                raise Chat.DoesNotExist
            recording.save()
    except Chat.DoesNotExist:  # deleted meanwhile: the agent must not keep recording for nobody
        _forget(agent, str(result["id"]))
        return None
    logger.info("Chat %s: %s recording %s started.", chat.pk, kind, recording.pk)
    return recording


def recording_stop(*, recording_id: UUID | str) -> None:
    """Stop a recording on its agent, note how it ended, and queue the fetch of its file (idempotent)."""
    recording = Recording.objects.filter(pk=recording_id).select_related("workspace_agent").first()
    if recording is None or recording.state != Recording.State.RECORDING or recording.workspace_agent is None:
        return
    try:
        result = async_to_sync(_call)(
            recording.workspace_agent, "recording_stop", {"id": recording.agent_recording_id}, STOP_DEADLINE
        )
    except ChatdeskError as exc:
        logger.warning("Recording %s: could not stop it on the agent: %s", recording.pk, exc.message)
        Recording.objects.filter(pk=recording.pk, state=Recording.State.RECORDING).update(
            state=Recording.State.FAILED, complete=False, ended_at=timezone.now(), note=_note(exc.message)
        )
        return
    skew = timezone.now() - datetime.fromtimestamp(float(result["now"]), tz=UTC)
    ended_at = _agent_time(result.get("ended_at"), skew) or timezone.now()
    updated = Recording.objects.filter(pk=recording.pk, state=Recording.State.RECORDING).update(
        ended_at=ended_at,
        duration_seconds=result.get("duration_seconds"),
        complete=bool(result.get("complete")),
        note=_note(result.get("reason") or ""),
    )
    if updated != 1:  # the chat was deleted meanwhile (or another stop won): the agent's copy must go
        if not Recording.objects.filter(pk=recording.pk).exists():
            _forget(recording.workspace_agent, recording.agent_recording_id)
        return
    thumbnail = result.get("thumbnail_base64")
    if thumbnail:
        png = base64.b64decode(thumbnail)
        thumb = chat_file_store(
            chat_id=recording.chat_id, content=ContentFile(png), content_type="image/png", size=len(png)
        )
        if thumb is not None:
            Recording.objects.filter(pk=recording.pk).update(thumbnail=thumb)
    from desktop.tasks import recording_fetch_task  # deferred: the tasks module imports this one

    transaction.on_commit(lambda: recording_fetch_task.delay(str(recording.pk)))


def recording_fetch(*, recording_id: UUID | str) -> None:
    """Bring a stopped recording's file from its agent into storage, then delete the agent's copy."""
    recording = Recording.objects.filter(pk=recording_id).select_related("workspace_agent").first()
    if recording is None or recording.state != Recording.State.RECORDING or recording.ended_at is None:
        return
    agent = recording.workspace_agent
    if agent is None:
        Recording.objects.filter(pk=recording.pk).update(state=Recording.State.FAILED, complete=False)
        return
    limit = settings.CHATDESK_RECORDING_MAX_BYTES + SIZE_SLACK
    with tempfile.TemporaryFile() as spool:
        try:
            size, truncated = async_to_sync(_download)(agent, recording.agent_recording_id, spool, limit)
        except ChatdeskError as exc:
            logger.warning("Recording %s: could not fetch it: %s", recording.pk, exc.message)
            Recording.objects.filter(pk=recording.pk).update(
                state=Recording.State.FAILED,
                complete=False,
                note=_note(f"the file could not be fetched: {exc.message}"),
            )
            return
        if size == 0:
            Recording.objects.filter(pk=recording.pk).update(
                state=Recording.State.FAILED,
                complete=False,
                note=recording.note or "the recorder wrote nothing",
            )
            _forget(agent, recording.agent_recording_id)
            return
        spool.seek(0)
        stored = chat_file_store(
            chat_id=recording.chat_id, content=File(spool), content_type="video/webm", size=size
        )
    _forget(agent, recording.agent_recording_id)
    if stored is None:
        return  # the chat is gone
    fields: dict[str, Any] = {"state": Recording.State.STORED, "file": stored}
    if truncated:
        fields.update(complete=False, note="the recording passed CHATDESK_RECORDING_MAX_BYTES and was cut")
    if Recording.objects.filter(pk=recording.pk, state=Recording.State.RECORDING).update(**fields) != 1:
        stored.delete()


async def _download(agent: WorkspaceAgent, agent_id: str, spool: Any, limit: int) -> tuple[int, bool]:
    """Copy the agent's file into ``spool`` chunk by chunk; return (bytes written, cut at ``limit``)."""
    offset = 0
    async with client.open_agent(agent) as rpc:
        while True:
            chunk = await rpc.call("recording_read", {"id": agent_id, "offset": offset, "length": READ_CHUNK})
            data = base64.b64decode(chunk["data_base64"])
            if offset + len(data) > limit:
                spool.write(data[: limit - offset])
                return limit, True
            spool.write(data)
            offset += len(data)
            if chunk["eof"] or not data:
                return offset, False


def _forget(agent: WorkspaceAgent, agent_id: str) -> None:
    """Tell the agent to stop (if needed) and delete one of its recordings (best effort)."""
    try:
        async_to_sync(_call)(agent, "recording_delete", {"id": agent_id}, STOP_DEADLINE)
    except ChatdeskError as exc:
        logger.info("Could not delete recording %s on agent %s: %s", agent_id, agent.pk, exc.message)


def _note(text: str) -> str:
    return text[:300]


def recordings_stop_person(*, agent: WorkspaceAgent) -> None:
    """Stop every person recording running on ``agent``'s desktop (the desktop was handed back).

    In a task: stopping waits for the video to hold a frame of the moment (up to a few seconds), which
    the hand-back's HTTP answer should not.
    """
    from desktop.tasks import recording_stop_task  # deferred: the tasks module imports this one

    running = Recording.objects.filter(
        workspace_agent=agent, kind=Recording.Kind.PERSON, state=Recording.State.RECORDING
    )
    for recording_id in running.values_list("pk", flat=True):
        recording_stop_task.delay(str(recording_id))


def recordings_sweep() -> int:
    """Stop the recordings nobody will stop (their turn's worker died; a hold ended without a hand-back
    the server saw); return how many. Run by the beat task ``desktop.sweep_recordings``."""
    cutoff = timezone.now() - timedelta(seconds=settings.CHATDESK_TURN_LEASE_SECONDS)
    running = Recording.objects.filter(state=Recording.State.RECORDING, started_at__lt=cutoff).select_related(
        "chat", "workspace_agent"
    )
    stopped = 0
    for recording in running.order_by("-started_at"):
        if recording.kind == Recording.Kind.MODEL:
            newest = (
                Recording.objects.filter(chat_id=recording.chat_id, kind=Recording.Kind.MODEL)
                .order_by("-started_at")
                .values_list("pk", flat=True)
                .first()
            )
            if recording.chat.status in ACTIVE and newest == recording.pk:
                continue  # its turn still works on the desktop
        elif (
            recording.workspace_agent is not None
            and recording.workspace_agent.desktop_holder == DesktopHolder.PERSON
        ):
            continue  # the person still holds the desktop
        recording_stop(recording_id=recording.pk)
        stopped += 1
    return stopped


def recordings_forget_on_agent(sender: type[Recording], instance: Recording, **kwargs: Any) -> None:
    """A recording deleted with its chat while the agent still records it: stop and delete it there."""
    if instance.state != Recording.State.RECORDING or instance.workspace_agent_id is None:
        return
    agent_id, agent_pk = instance.agent_recording_id, instance.workspace_agent_id

    def forget() -> None:
        agent = WorkspaceAgent.objects.filter(pk=agent_pk).first()
        if agent is not None:
            _forget(agent, agent_id)

    transaction.on_commit(forget)


post_delete.connect(recordings_forget_on_agent, sender=Recording, dispatch_uid="desktop.recordings.forget")
