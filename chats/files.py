"""A chat's stored files (screenshots, recordings): storing them, deleting them, letting them expire.

Invariants:

- **Bytes exist only with their row.** A file is written to storage only while its chat's row is locked and
  still there (:func:`chat_file_store`), and removed if its row is not created; deleting a ChatFile row (one
  by one, or with its chat) removes its bytes once the deletion commits (the receivers in chats/models.py). Deleting a
  chat therefore leaves nothing on disk, even while its turn is storing screenshots.
- **Expiry keeps the row.** :func:`files_purge_expired` (Celery beat, ``chats.purge_expired_files``) removes
  the bytes of files older than CHATDESK_FILE_RETENTION_DAYS and sets ``expired_at``; the chat still shows
  that a screenshot or a recording was there, and its URL answers 404.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from chats.models import Chat, ChatFile, chat_file_remove

logger = logging.getLogger(__name__)

__all__ = ["chat_file_store", "files_purge_expired"]


def chat_file_store(
    *,
    chat_id: UUID | str,
    content: File[Any],
    content_type: str,
    size: int,
    width: int | None = None,
    height: int | None = None,
    file_id: UUID | None = None,
    chat_locked: bool = False,
) -> ChatFile | None:
    """Store ``content`` as a file of chat ``chat_id`` and return its row; None when the chat is gone.

    The chat's row is locked while the bytes are written and the row created, so a chat deleted meanwhile
    waits for this to finish (and then deletes the new file too), or was deleted before (and nothing is
    written); ``chat_locked``: the caller's transaction holds that lock already (and knows the chat is
    there). ``file_id``: the row's id, when the caller needs it before the file is stored. Storage reads
    ``content`` in chunks: a large file is never held in memory.
    """
    with transaction.atomic(savepoint=False):  # a failure re-raises: a caller's transaction rolls back
        if (
            not chat_locked
            and Chat.objects.select_for_update(no_key=True).filter(pk=chat_id).values_list("pk").first()
            is None
        ):
            return None
        chat_file = ChatFile(
            chat_id=chat_id, content_type=content_type, size=size, width=width, height=height
        )
        if file_id is not None:
            chat_file.pk = file_id
        chat_file.file.save(f"{chat_file.pk}", content, save=False)
        try:
            chat_file.save()
        except BaseException:
            chat_file.file.delete(save=False)
            raise
    return chat_file


def files_purge_expired(*, now: Any = None) -> int:
    """Remove the bytes of files older than CHATDESK_FILE_RETENTION_DAYS (0: none); return how many.

    The rows stay, with ``expired_at`` set and no file name, so the chat keeps a note that they expired.
    """
    days = settings.CHATDESK_FILE_RETENTION_DAYS
    if days <= 0:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    purged = 0
    expired = ChatFile.objects.filter(created_at__lt=cutoff, expired_at__isnull=True).only("pk", "file")
    for chat_file in expired.iterator(chunk_size=500):
        name = chat_file.file.name
        if (
            ChatFile.objects.filter(pk=chat_file.pk, expired_at__isnull=True).update(expired_at=now, file="")
            != 1
        ):
            continue  # purged (or deleted) by someone else meanwhile
        if name:
            chat_file_remove(name)
        purged += 1
    return purged
