"""The Celery app. Workers: `celery -A chatdesk worker` (add `-B` or run `celery -A chatdesk beat` once
per deployment for the periodic turn sweep). Task modules are found in the apps."""

from __future__ import annotations

import logging
import os
import threading

import redis
from celery import Celery
from celery.signals import before_task_publish, worker_process_shutdown
from redis.backoff import NoBackoff
from redis.retry import Retry

from chatdesk.exceptions import ServiceUnavailable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")

logger = logging.getLogger(__name__)

app = Celery("chatdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

BROKER_PROBE_TIMEOUT = 1.0
BROKER_DOWN_MESSAGE = (
    "The task queue (Redis) is unreachable, so the turn could not be queued; nothing was saved. "
    "Try again shortly."
)

_probes: dict[str, redis.Redis] = {}
_probe_lock = threading.Lock()


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
    # Desktops the model holds with no turn left to release them (its worker died; desktop/control.py).
    sender.add_periodic_task(
        settings.CHATDESK_SWEEP_INTERVAL,
        sender.signature("desktop.sweep_holds"),
        name="desktop.sweep_holds",
        expires=settings.CHATDESK_SWEEP_INTERVAL,
    )
    # Approvals undecided for CHATDESK_APPROVAL_TIMEOUT_SECONDS expire (chats/approvals.py): checked twice
    # per timeout, at least every 30 s, so one expires at most half a timeout (or 30 s) late.
    approvals_interval = approval_expiry_interval(settings.CHATDESK_APPROVAL_TIMEOUT_SECONDS)
    sender.add_periodic_task(
        approvals_interval,
        sender.signature("chats.expire_approvals"),
        name="chats.expire_approvals",
        expires=approvals_interval,
    )
    # Files older than CHATDESK_FILE_RETENTION_DAYS lose their bytes (chats/files.py).
    sender.add_periodic_task(
        settings.CHATDESK_FILE_PURGE_INTERVAL,
        sender.signature("chats.purge_expired_files"),
        name="chats.purge_expired_files",
        expires=settings.CHATDESK_FILE_PURGE_INTERVAL,
    )


@before_task_publish.connect
def send_live_events_first(**kwargs: object) -> None:
    """A task published now may make another process publish live events (a worker claims the turn and says
    it runs): the events this process queued before go out first, so viewers see them in causal order."""
    from chats.events import sender

    if not sender.flush():
        logger.warning("Live events queued before a task was published were not all sent in time.")


@worker_process_shutdown.connect
def flush_live_events(**kwargs: object) -> None:
    """A pool process exits (it skips atexit): send the live events it still holds (chats/events.py)."""
    from chats.events import sender

    if not sender.flush():
        logger.warning("Live events still queued when the worker process exited were dropped.")


def approval_expiry_interval(timeout_seconds: float) -> float:
    """Return how often (seconds) to look for expired approvals: half the timeout, at most 30 s."""
    return min(30.0, timeout_seconds / 2)


def require_turn_queue() -> None:
    """Return when a turn can be queued now; raise ServiceUnavailable (503) when the broker is down.

    A request that will queue a turn calls this *before* it writes anything, so a Redis outage answers
    503 with nothing stored (a client's retry then creates nothing twice). The embedded default's
    filesystem queue is always there. Should Redis go away between this check and the commit, the write
    stands (the chat is `pending` in the database) and the sweep queues the turn once Redis is back.
    """
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    with _probe_lock:
        probe = _probes.get(settings.REDIS_URL)
        if probe is None:
            probe = _probes[settings.REDIS_URL] = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=BROKER_PROBE_TIMEOUT,
                socket_timeout=BROKER_PROBE_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
    try:
        probe.ping()
    except redis.RedisError:
        raise ServiceUnavailable(BROKER_DOWN_MESSAGE) from None


def turn_queue_depth() -> int | None:
    """Return how many tasks wait in this deployment's queue (not those a worker holds), or None when
    the broker cannot say (unreachable)."""
    queue = app.conf.task_default_queue
    try:
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors:
                return 0  # an empty Redis list does not exist: nothing waits
    except Exception:
        logger.warning("Could not read the depth of queue %s.", queue, exc_info=True)
        return None
