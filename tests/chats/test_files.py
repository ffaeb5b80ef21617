"""A chat's stored files: they die with their chat, expire after CHATDESK_FILE_RETENTION_DAYS, and a file
that is gone answers 404 (chats/files.py, the file view in chats/api.py, chats/timeline.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.utils import timezone
from rest_framework.test import APIClient

from chats.api import _parse_range
from chats.files import chat_file_store
from chats.models import AuditEvent, Chat, ChatFile, Recording
from chats.services import chat_file_store_png
from chats.tasks import purge_expired_files
from tests.factories import ChatFactory

pytestmark = pytest.mark.django_db(transaction=True)


def on_disk(chat_file: ChatFile) -> Path:
    return Path(settings.MEDIA_ROOT) / chat_file.file.name


def store_video(chat: Chat, data: bytes = b"\x1aE\xdf\xa3" + b"v" * 5000) -> ChatFile:
    stored = chat_file_store(
        chat_id=chat.pk, content=ContentFile(data), content_type="video/webm", size=len(data)
    )
    assert stored is not None
    return stored


def test_deleting_a_chat_removes_its_files_and_its_childrens_from_disk(user: User, api: APIClient) -> None:
    root = ChatFactory.create(owner=user)
    child = ChatFactory.create(owner=user, parent=root, mode=Chat.Mode.COMPUTER_USE)
    shot = chat_file_store_png(chat=root, png=b"\x89PNG fake", width=1, height=1)
    video = store_video(child)
    assert shot is not None
    Recording.objects.create(chat=child, kind="model", state="stored", started_at=timezone.now(), file=video)
    paths = [on_disk(shot), on_disk(video)]
    assert all(p.exists() for p in paths)

    assert api.delete(f"/api/experimental/chats/{root.pk}").status_code == 204

    assert not any(p.exists() for p in paths)
    assert not (Path(settings.MEDIA_ROOT) / "chats" / str(root.pk)).exists()
    assert not (Path(settings.MEDIA_ROOT) / "chats" / str(child.pk)).exists()
    assert not ChatFile.objects.exists() and not Recording.objects.exists()


def test_nothing_is_written_for_a_chat_that_is_gone(user: User) -> None:
    chat = ChatFactory.create(owner=user)
    chat_id = chat.pk
    Chat.objects.filter(pk=chat_id).delete()
    assert chat_file_store_png(chat=chat, png=b"png", width=1, height=1) is None
    folder = Path(settings.MEDIA_ROOT) / "chats" / str(chat_id)
    assert not folder.exists() or not any(folder.iterdir())


def test_the_retention_task_purges_old_files_and_keeps_newer_ones(
    user: User, api: APIClient, settings: object
) -> None:
    chat = ChatFactory.create(owner=user, mode=Chat.Mode.COMPUTER_USE, parent=ChatFactory.create(owner=user))
    old_video, new_video = store_video(chat), store_video(chat)
    old_shot = chat_file_store_png(chat=chat, png=b"old png", width=1, height=1)
    assert old_shot is not None
    days = settings.CHATDESK_FILE_RETENTION_DAYS  # type: ignore[attr-defined]
    assert days == 30
    ChatFile.objects.filter(pk__in=[old_video.pk, old_shot.pk]).update(
        created_at=timezone.now() - timedelta(days=days, minutes=1)
    )
    old_rec = Recording.objects.create(
        chat=chat, kind="model", state="stored", started_at=timezone.now(), file=old_video
    )
    Recording.objects.create(
        chat=chat, kind="person", state="stored", started_at=timezone.now(), file=new_video
    )
    old_paths = [on_disk(old_video), on_disk(old_shot)]

    purge_expired_files()

    assert not any(p.exists() for p in old_paths)
    assert on_disk(new_video).exists()
    old_video.refresh_from_db()
    assert old_video.expired_at is not None and not old_video.file.name  # the row says the file expired
    response = api.get(f"/api/experimental/chats/{chat.pk}/files/{old_video.pk}")
    assert response.status_code == 404 and "expired" in response.json()["detail"]
    assert api.get(f"/api/experimental/chats/{chat.pk}/files/{new_video.pk}").status_code == 200
    listed = {r["id"]: r for r in api.get(f"/api/experimental/chats/{chat.pk}/recordings").json()}
    assert listed[str(old_rec.pk)]["expired"] is True and listed[str(old_rec.pk)]["url"] is None
    assert [r["expired"] for r in listed.values()].count(False) == 1


def test_retention_zero_keeps_files_forever(user: User, settings: object) -> None:
    settings.CHATDESK_FILE_RETENTION_DAYS = 0  # type: ignore[attr-defined]
    chat = ChatFactory.create(owner=user)
    video = store_video(chat)
    ChatFile.objects.filter(pk=video.pk).update(created_at=timezone.now() - timedelta(days=3650))
    purge_expired_files()
    assert on_disk(video).exists()


def test_a_file_missing_from_storage_answers_404_not_500(user: User, api: APIClient) -> None:
    chat = ChatFactory.create(owner=user)
    video = store_video(chat)
    on_disk(video).unlink()
    response = api.get(f"/api/experimental/chats/{chat.pk}/files/{video.pk}", HTTP_RANGE="bytes=0-10")
    assert response.status_code == 404


def test_admin_shows_each_chats_stored_size(user: User, admin_client: object) -> None:
    chat = ChatFactory.create(owner=user, title="Sized chat")
    store_video(chat, b"x" * 3000)
    chat_file_store_png(chat=chat, png=b"y" * 2000, width=1, height=1)
    page = admin_client.get("/admin/chats/chat/").content.decode()  # type: ignore[attr-defined]
    assert "Sized chat" in page and "4.9\xa0KB" in page


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-10", (990, 999)),
        ("bytes=900-5000", (900, 999)),
        ("bytes=1000-", (-1, -1)),
        ("bytes=-0", (-1, -1)),
        ("bytes=5-2", None),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
    ],
)
def test_range_headers_are_read_as_rfc_9110_says(header: str, expected: tuple[int, int] | None) -> None:
    assert _parse_range(header, 1000) == expected


def test_the_timeline_places_actions_and_control_changes_in_their_recordings(
    user: User, api: APIClient
) -> None:
    chat = ChatFactory.create(owner=user, mode=Chat.Mode.COMPUTER_USE, parent=ChatFactory.create(owner=user))
    t0 = timezone.now() - timedelta(minutes=10)
    model = Recording.objects.create(
        chat=chat,
        kind="model",
        state="stored",
        started_at=t0,
        ended_at=t0 + timedelta(seconds=60),
        duration_seconds=60,
    )
    person = Recording.objects.create(
        chat=chat, kind="person", state="stored", started_at=t0 + timedelta(seconds=100),
        ended_at=t0 + timedelta(seconds=130), duration_seconds=30,
    )  # fmt: skip
    action = {
        "tool_use_id": "tu_1",
        "message_id": 7,
        "action": "left_click",
        "input": {},
        "coordinate": [5, 6],
    }
    AuditEvent.objects.create(
        chat=chat, kind="action", actor="model", data=action, at=t0 + timedelta(seconds=12.5)
    )
    AuditEvent.objects.create(
        chat=chat, kind="control", actor="person", user=user, data={"holder": "person", "change": "takeover"},
        at=t0 + timedelta(seconds=99.5),
    )  # fmt: skip
    AuditEvent.objects.create(
        chat=chat,
        kind="action",
        actor="model",
        data={**action, "tool_use_id": "tu_2"},
        at=t0 + timedelta(seconds=80),
    )
    timeline = api.get(f"/api/experimental/chats/{chat.pk}/timeline").json()
    assert [(e["action"], e["by"], e["recording_id"], e["t"]) for e in timeline] == [
        ("left_click", "model", str(model.pk), 12.5),
        ("left_click", "model", None, None),  # between recordings
        ("takeover", "person", str(person.pk), 0.0),
    ]
    assert timeline[0]["coordinate"] == [5, 6] and timeline[0]["message_id"] == 7
