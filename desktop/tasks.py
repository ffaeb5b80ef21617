"""Celery tasks of the desktop app: thin, they take ids and call a service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="desktop.fetch_recording", acks_late=True, ignore_result=True)
def recording_fetch_task(recording_id: str) -> None:
    """Bring a stopped recording's file from its workspace agent into storage (desktop/recordings.py)."""
    from desktop.recordings import recording_fetch

    recording_fetch(recording_id=recording_id)
