"""Celery tasks of the desktop app: thin, they take ids and call a service."""

from __future__ import annotations

import logging

from celery import shared_task

from desktop.control import control_sweep
from desktop.recordings import recording_fetch, recording_stop, recordings_sweep

logger = logging.getLogger(__name__)


@shared_task(name="desktop.fetch_recording", acks_late=True, ignore_result=True)
def recording_fetch_task(recording_id: str) -> None:
    """Bring a stopped recording's file from its workspace agent into storage (desktop/recordings.py)."""
    recording_fetch(recording_id=recording_id)


@shared_task(name="desktop.sweep_recordings", ignore_result=True)
def recordings_sweep_task() -> None:
    """Stop the recordings nobody will stop: their turn's worker died (Celery beat)."""
    stopped = recordings_sweep()
    if stopped:
        logger.info("Stopped %d orphaned recordings.", stopped)


@shared_task(name="desktop.stop_recording", acks_late=True, ignore_result=True)
def recording_stop_task(recording_id: str) -> None:
    """Stop a recording on its agent and queue the fetch of its file (desktop/recordings.py)."""
    recording_stop(recording_id=recording_id)


@shared_task(name="desktop.sweep_holds", ignore_result=True)
def control_sweep_task() -> None:
    """Release the model's holds of desktops on which no turn runs any more (Celery beat)."""
    released = control_sweep()
    if released:
        logger.info("Released %d desktops the model held with no turn running.", released)
