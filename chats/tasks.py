"""Celery tasks of the turn engine: thin, they take ids and call the engine.

``acks_late``: a task is acknowledged only once it returns, so a turn whose worker dies is not lost
silently; the claim in chats/engine/lease.py makes a redelivery harmless, and the sweep recovers turns
whose worker died.

Layering: this module sits below chats.transitions and chats.services, which send its tasks, and the
engine sits above them all. So the tasks import the engine when they run, not at import time: the one
deliberate deferred imports in chats (and the approvals' expiry, above the services too) (tests/test_layering.py checks there is no other cycle).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from chats.files import files_purge_expired

logger = logging.getLogger(__name__)


# Time limits. A turn may legitimately run long (CHATDESK_MAX_STEPS model calls and actions, each bounded
# by its own timeout), so the limit is not a budget for normal work: it protects the worker slot from a
# task that never returns. The soft limit ends the turn with a clear error (chats/engine: what it did is
# kept); the hard limit, a minute later, kills a pool process stuck where Python cannot interrupt it, and
# the lease sweep then recovers the chat like any dead worker's (re-queued once, then failed).
TURN_HARD_LIMIT_GRACE = 60
SWEEP_SOFT_LIMIT = 60
SWEEP_HARD_LIMIT = 90
# One summary call (with its retries); past the soft limit the compaction gives up and releases its claim.
COMPACT_SOFT_LIMIT = 900
COMPACT_HARD_LIMIT = 960


# The task name stays "chats.run_turn": tasks already queued in a broker keep their meaning.
@shared_task(
    name="chats.run_turn",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=settings.CHATDESK_TURN_TIME_LIMIT,
    time_limit=settings.CHATDESK_TURN_TIME_LIMIT + TURN_HARD_LIMIT_GRACE,
)
def turn_task(chat_id: str) -> None:
    """Run the chat's queued turn (a no-op when there is none: redelivered, interrupted, waiting)."""
    from chats.engine import turn_execute  # deferred: the engine imports the layers that send this task

    turn_execute(chat_id=chat_id)


@shared_task(
    name="chats.sweep_turns",
    ignore_result=True,
    soft_time_limit=SWEEP_SOFT_LIMIT,
    time_limit=SWEEP_HARD_LIMIT,
)
def sweep_turns() -> None:
    """Recover turns whose worker died, wake answerable waits, prune old live events (Celery beat)."""
    from chats.engine.lease import turns_sweep  # deferred, as above

    counts = turns_sweep()
    if any(counts.values()):
        logger.info("Turn sweep: %s", counts)


@shared_task(
    name="chats.compact",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=COMPACT_SOFT_LIMIT,
    time_limit=COMPACT_HARD_LIMIT,
)
def compact_task(chat_id: str) -> None:
    """Compact the chat's history on demand (POST /chats/{id}/compact); a no-op when there is nothing to."""
    from chats.engine.compaction import compaction_run  # deferred, as above

    compaction_run(chat_id=chat_id)


@shared_task(
    name="chats.expire_approvals",
    ignore_result=True,
    soft_time_limit=SWEEP_SOFT_LIMIT,
    time_limit=SWEEP_HARD_LIMIT,
)
def expire_approvals() -> None:
    """Expire the approvals undecided for CHATDESK_APPROVAL_TIMEOUT_SECONDS and resume their chats (Celery
    beat; chats/approvals.py)."""
    from chats.approvals import approvals_expire  # deferred: approvals sit above the services, as above

    expired = approvals_expire()
    if expired:
        logger.info("Expired %d approvals.", expired)


@shared_task(name="chats.purge_expired_files", ignore_result=True)
def purge_expired_files() -> None:
    """Remove the bytes of files older than CHATDESK_FILE_RETENTION_DAYS (Celery beat; chats/files.py)."""
    purged = files_purge_expired()
    if purged:
        logger.info("Purged %d expired files.", purged)
