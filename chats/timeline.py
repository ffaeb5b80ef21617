"""A chat's recordings and the timeline of its actions in them (SPEC §9).

The timeline is built from the audit log (chats/audit.py): every ``action`` event (the model's computer
actions; ``at`` is when the action started) and every ``control`` event (a person took or handed back the
desktop). Each is placed in the chat's recording that was running at that moment (a ``model`` recording
for the model's actions, a ``person`` one for control changes, else any), at ``t`` seconds from the
recording's first frame: the recording keeps real time (idle stretches drop frames, not time), so
``t = at - started_at``. An event no recording covers has ``recording_id`` and ``t`` null.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.urls import reverse
from django.utils import timezone

from chats.models import AuditEvent, Chat, ChatFile, Recording

#: An event this close outside a recording still belongs to it (a take-over starts its recording just after).
EDGE = timedelta(seconds=2)


class RecordingJson(TypedDict):
    id: str
    kind: str
    state: str
    complete: bool
    note: str
    started_at: str
    ended_at: str | None
    duration_seconds: float | None
    size_bytes: int | None
    content_type: str | None
    url: str | None
    thumbnail_url: str | None
    expired: bool


class TimelineEntry(TypedDict):
    message_id: int | None
    tool_use_id: str | None
    recording_id: str | None
    t: float | None
    at: str
    action: str
    coordinate: list[int] | None
    by: str


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _file_url(chat_file: ChatFile | None) -> str | None:
    if chat_file is None or chat_file.expired_at is not None:
        return None
    return reverse("chat-file", kwargs={"pk": chat_file.chat_id, "file_id": chat_file.pk})


def recording_to_json(recording: Recording) -> RecordingJson:
    video = recording.file
    return {
        "id": str(recording.pk),
        "kind": recording.kind,
        "state": recording.state,
        "complete": recording.complete,
        "note": recording.note,
        "started_at": _iso(recording.started_at) or "",
        "ended_at": _iso(recording.ended_at),
        "duration_seconds": recording.duration_seconds,
        "size_bytes": video.size if video is not None else None,
        "content_type": video.content_type if video is not None else None,
        "url": _file_url(video),
        "thumbnail_url": _file_url(recording.thumbnail),
        "expired": video is not None and video.expired_at is not None,
    }


def chat_recordings(*, chat: Chat) -> list[Recording]:
    """Return the chat's recordings, oldest first."""
    return list(chat.recordings.select_related("file", "thumbnail").order_by("started_at"))


def _covering(recordings: list[Recording], at: datetime, kind: str | None) -> Recording | None:
    """Return the recording running at ``at`` (of ``kind`` when there is one), None when none was."""
    now = timezone.now()
    matches = [
        r
        for r in recordings
        if r.state != Recording.State.FAILED and r.started_at - EDGE <= at <= (r.ended_at or now) + EDGE
    ]
    preferred = [r for r in matches if r.kind == kind]
    candidates = preferred or matches
    return candidates[-1] if candidates else None


def _offset(recording: Recording, at: datetime) -> float:
    """Return ``at``'s offset into ``recording``, within the video (seconds, millisecond precision)."""
    t = max(0.0, (at - recording.started_at).total_seconds())
    if recording.duration_seconds is not None:
        t = min(t, recording.duration_seconds)
    return round(t, 3)


def chat_timeline(*, chat: Chat) -> list[TimelineEntry]:
    """Return every action and control change of ``chat`` in time order, placed in its recordings."""
    recordings = chat_recordings(chat=chat)
    events = chat.audit_events.filter(kind__in=[AuditEvent.Kind.ACTION, AuditEvent.Kind.CONTROL])
    timeline: list[TimelineEntry] = []
    for event in events.order_by("at", "id"):
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        if event.kind == AuditEvent.Kind.ACTION:
            action = str(data.get("action") or "")
            by = Recording.Kind.PERSON if event.actor == AuditEvent.Actor.PERSON else Recording.Kind.MODEL
        else:  # a person's take-over or hand-back; the model's acquire or release (desktop/control.py)
            action = str(data.get("change") or "control")
            by = Recording.Kind.MODEL if event.actor == AuditEvent.Actor.MODEL else Recording.Kind.PERSON
        recording = _covering(recordings, event.at, by)
        coordinate = data.get("coordinate")
        timeline.append(
            {
                "message_id": data.get("message_id") if isinstance(data.get("message_id"), int) else None,
                "tool_use_id": str(data["tool_use_id"]) if data.get("tool_use_id") else None,
                "recording_id": str(recording.pk) if recording is not None else None,
                "t": _offset(recording, event.at) if recording is not None else None,
                "at": _iso(event.at) or "",
                "action": action,
                "coordinate": list(coordinate)
                if isinstance(coordinate, list) and len(coordinate) == 2
                else None,
                "by": by,
            }
        )
    return timeline
