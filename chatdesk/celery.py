"""The Celery app. Workers: `celery -A chatdesk worker` (add `-B` or run `celery -A chatdesk beat` once
per deployment for the periodic turn sweep). Task modules are found in the apps."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")

app = Celery("chatdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def schedule_sweep(sender: Celery, **kwargs: object) -> None:
    """Every CHATDESK_SWEEP_INTERVAL seconds, recover turns whose worker died (chats/engine/lease.py)."""
    from django.conf import settings

    sender.add_periodic_task(
        settings.CHATDESK_SWEEP_INTERVAL,
        sender.signature("chats.sweep_turns"),
        name="chats.sweep_turns",
        expires=settings.CHATDESK_SWEEP_INTERVAL,
    )
    # Recordings whose turn's worker died are stopped (desktop/recordings.py).
    sender.add_periodic_task(
        settings.CHATDESK_SWEEP_INTERVAL,
        sender.signature("desktop.sweep_recordings"),
        name="desktop.sweep_recordings",
        expires=settings.CHATDESK_SWEEP_INTERVAL,
    )
    # Files older than CHATDESK_FILE_RETENTION_DAYS lose their bytes (chats/files.py).
    sender.add_periodic_task(
        settings.CHATDESK_FILE_PURGE_INTERVAL,
        sender.signature("chats.purge_expired_files"),
        name="chats.purge_expired_files",
        expires=settings.CHATDESK_FILE_PURGE_INTERVAL,
    )
