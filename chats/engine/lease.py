"""Who runs a chat's turn: the atomic claim, the lease with its heartbeat, and the sweep.

Invariants:
- Only a conditional UPDATE (``pending -> running``, chats/transitions.py) starts a turn, so a redelivered or duplicated Celery
  task is a no-op, and every later write of the turn is conditional on still owning it (``worker_id``).
- A running turn renews ``heartbeat_at`` from a background thread. When a worker dies, its turns' leases
  expire; the sweep (Celery beat, ``chats.sweep_turns``) re-queues such a turn once, and fails it the next
  time with a clear ``last_error``. A chat is never left ``running`` without a live worker, and never run
  by two workers: the old worker, should it come back, finds the lease gone and stops without writing.
- A parent suspended in wait_agent is ``pending`` with ``awaiting`` set and no queued task. It is claimed
  only once its wait can be answered (the child finished or the deadline passed); any number of wake-ups
  (child end, deadline task, sweep) therefore resume it exactly once.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from chatdesk.celery import turn_queue_depth
from chats.models import Chat, ChatEvent
from chats.services import turn_wake
from chats.tools.wait import wait_resolvable
from chats.transitions import chat_transition

logger = logging.getLogger(__name__)

WORKER_LOST_MESSAGE = "The worker running this turn stopped unexpectedly, twice; the turn was abandoned."
#: How many times the sweep re-queues a turn whose worker died before failing it.
MAX_LEASE_RECOVERIES = 1
#: ChatEvent rows (the embedded event tail) older than this are deleted by the sweep.
EVENT_RETENTION = timedelta(minutes=10)


def new_worker_id() -> str:
    """Return an id for one claim: host and pid (for people reading the row) plus a unique suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def turn_claim(*, chat_id: str, worker_id: str) -> tuple[Chat, dict[str, Any] | None] | None:
    """Claim ``chat_id``'s queued turn for ``worker_id``.

    Return the chat (now ``running``) and the wait it was suspended in (or None), or None when there is
    nothing to run: the chat is not ``pending`` (already claimed, interrupted, deleted), or it waits for a
    child that is still working.
    """
    chat = Chat.objects.filter(pk=chat_id).only("status", "awaiting").first()
    if chat is None or chat.status != Chat.Status.PENDING:
        return None
    awaiting = chat.awaiting
    if awaiting and not wait_resolvable(awaiting):
        return None
    same_wait = Q(awaiting__tool_use_id=awaiting.get("tool_use_id")) if awaiting else Q(awaiting__isnull=True)
    now = timezone.now()
    chat = chat_transition(
        chat_id=chat_id,
        to=Chat.Status.RUNNING,
        expect=[Chat.Status.PENDING],
        where=same_wait,
        worker_id=worker_id,
        started_at=now,
        heartbeat_at=now,
    )
    return (chat, awaiting) if chat is not None else None


def turn_end(
    *,
    chat_id: UUID | str,
    worker_id: str,
    status: str,
    reason: str | None = None,
    last_error: str = "",
    awaiting: dict[str, Any] | None = None,
) -> Chat | None:
    """Move the running turn owned by ``worker_id`` to ``status`` (`paused` for ``reason``).

    Return the chat, or None when this worker no longer owns the turn (interrupted, swept, closed).
    """
    return chat_transition(
        chat_id=chat_id,
        to=status,
        expect=[Chat.Status.RUNNING],
        reason=reason,
        where=Q(worker_id=worker_id),
        last_error=last_error,
        awaiting=awaiting,
        lease_recoveries=0,
        heartbeat_at=None,
    )


class Heartbeat:
    """Renew a turn's lease every ``interval`` seconds in a background thread.

    ``lost`` becomes true when the lease is gone (the sweep gave the turn to another worker, or the chat
    was deleted); the turn then stops at its next safe point without writing anything more (but the
    result of an action under way, which the journal records once). A paused chat keeps its lease.
    """

    def __init__(self, *, chat_id: UUID | str, worker_id: str, interval: float | None = None) -> None:
        self.chat_id = chat_id
        self.worker_id = worker_id
        self.interval = interval or max(1.0, settings.CHATDESK_TURN_LEASE_SECONDS / 4)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{chat_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    renewed = Chat.objects.filter(
                        pk=self.chat_id, worker_id=self.worker_id, status=Chat.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a database hiccup: try again at the next beat, the lease has slack
                    logger.exception("Could not renew the lease of chat %s.", self.chat_id)
                    close_old_connections()
                    continue
                if (
                    renewed != 1
                    and not Chat.objects.filter(pk=self.chat_id, worker_id=self.worker_id).exists()
                ):
                    # Another worker claimed the chat (or it was deleted). A chat merely paused is still
                    # this turn's: it stops at its next safe point and records the result of the action
                    # under way (chats/engine/journal.py).
                    self.lost.set()
                    return
        finally:
            connection.close()  # this thread's own connection


def turns_sweep() -> dict[str, int]:
    """Recover turns whose worker died, wake waits that can be answered, and prune old live events.

    Return counts of what was done (for logs and tests).
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CHATDESK_TURN_LEASE_SECONDS)
    counts = {"requeued": 0, "failed": 0, "woken": 0, "events_pruned": 0}
    stale = Chat.objects.filter(status=Chat.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, updated_at__lt=cutoff)
    )
    for chat in stale.only("pk", "worker_id", "lease_recoveries"):
        owned_by_dead = Q(worker_id=chat.worker_id) & (
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
        )
        if chat.lease_recoveries < MAX_LEASE_RECOVERIES:
            if chat_transition(
                chat_id=chat.pk,
                to=Chat.Status.PENDING,
                expect=[Chat.Status.RUNNING],
                where=owned_by_dead,
                worker_id="",
                heartbeat_at=None,
                lease_recoveries=F("lease_recoveries") + 1,
            ):
                logger.warning("Chat %s lost its worker (%s); re-queuing its turn.", chat.pk, chat.worker_id)
                transaction.on_commit(functools.partial(turn_wake, chat_id=str(chat.pk)), robust=True)
                counts["requeued"] += 1
        elif chat_transition(
            chat_id=chat.pk,
            to=Chat.Status.ERROR,
            expect=[Chat.Status.RUNNING],
            where=owned_by_dead,
            last_error=WORKER_LOST_MESSAGE,
            worker_id="",
            heartbeat_at=None,
            lease_recoveries=0,
        ):
            logger.warning("Chat %s lost its worker again; its turn failed.", chat.pk)
            counts["failed"] += 1
    # Pending chats whose task may be gone (a broker restart), and suspended waits whose deadline passed
    # (a backup for the deadline task): queuing again is harmless, the claim decides. But not while tasks
    # wait in the queue: with a backlog, old pending chats are simply waiting their turn, and queuing them
    # again at every sweep would pile up duplicates. A chat re-queued here is not again for a lease period.
    if turn_queue_depth() == 0:
        stale_pending = Chat.objects.filter(status=Chat.Status.PENDING, updated_at__lt=cutoff)
        for chat in stale_pending.only("pk", "awaiting", "updated_at"):
            if chat.awaiting and not wait_resolvable(chat.awaiting):
                continue
            if not Chat.objects.filter(
                pk=chat.pk, status=Chat.Status.PENDING, updated_at=chat.updated_at
            ).update(updated_at=now):
                continue  # claimed or changed meanwhile
            try:
                turn_wake(chat_id=str(chat.pk))
            except Exception:  # the broker went away again: the next sweep tries once more
                logger.warning("Could not queue the turn of chat %s.", chat.pk, exc_info=True)
                Chat.objects.filter(pk=chat.pk, updated_at=now).update(updated_at=chat.updated_at)
                break
            counts["woken"] += 1
    counts["events_pruned"], _ = ChatEvent.objects.filter(created_at__lt=now - EVENT_RETENTION).delete()
    return counts
