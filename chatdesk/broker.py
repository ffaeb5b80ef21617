"""The Celery broker transport in Redis mode: kombu's Redis transport, with one defect mended.

Why (measured, celery 5.7.0 + kombu 5.7.0 + redis-py 8.1.0, pinned in constraints.txt): when Redis goes
away while a worker holds unacknowledged messages (every running turn: tasks are ``acks_late``), the
worker's main process exits for good with ``Unrecoverable error: AttributeError("'NoneType' object has no
attribute 'hostname'")``. The sequence:

1. the consumer loses its connection; ``Consumer.on_connection_error_after_connected`` calls
   ``Connection.collect()``, which tries to close the default channel (interrupted by the Redis
   ``ConnectionError`` of its pending BRPOP, so the channel stays open) and then drops the transport's
   ``client`` (``transport.client = None``);
2. celery 5.7 then also calls ``connection.close()``, which closes that channel again; this time it
   disconnects its pools and restores the unacknowledged messages, for which it builds a new pool from
   ``Channel._connparams()``, which reads ``self.connection.client.hostname`` -> AttributeError;
3. an AttributeError is neither a connection nor a channel error, so ``ignore_errors`` lets it through,
   and celery treats it as unrecoverable.

The mend: a channel remembers the connection parameters it was built with, so a pool it needs after its
transport was detached is built from them (the restore then works, or fails with the connection error
that callers expect while Redis is still down). Idle workers hold nothing unacknowledged and never hit
this; busy ones (the ones that matter) always did.

``tests/chatdesk/test_broker.py`` holds the contract test (each kombu behaviour this relies on) and the
fault test (a worker running turns survives Redis stopping and starting).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _chatdesk_connparams: dict[bool, dict[str, Any]]

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        saved = self.__dict__.setdefault("_chatdesk_connparams", {})
        transport = self.connection
        if transport is not None and transport.client is not None:
            # Both variants at once: the restore after a detach needs the synchronous pool, which a
            # consumer's channel may never have built before.
            for variant in (asynchronous, not asynchronous):
                saved[variant] = super()._connparams(asynchronous=variant)
        elif asynchronous not in saved:
            # Detached before it ever connected: nothing to reach, which callers handle as a lost connection.
            raise redis.exceptions.ConnectionError("The broker connection was closed.")
        return dict(saved[asynchronous])


class Transport(kombu_redis.Transport):
    """kombu's Redis transport whose channels survive being closed after their connection was collected."""

    Channel = Channel
