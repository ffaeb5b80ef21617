"""Contract test of chatdesk/broker.py: what it relies on in kombu's Redis transport, and what it mends.

If kombu fixes the defect (the stock transport no longer fails), the first test fails: drop the
workaround and its setting (CELERY_BROKER_TRANSPORT) then.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import celery
import kombu
import pytest
import redis
from django.conf import settings
from kombu import Connection, Exchange, Queue

from chatdesk.broker import Transport
from tests.support.redis_server import RedisServer, running_redis

QUEUE = "contract"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


def channel_holding_an_unacked_message(url: str, transport: object) -> tuple[Connection, object]:
    """A connection whose default channel received one message and has not acknowledged it."""
    connection = Connection(url, transport=transport)
    channel = connection.default_channel
    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)(channel)
    queue.declare()
    connection.Producer(channel).publish({"n": 1}, exchange=QUEUE, routing_key=QUEUE)
    message = queue.get(no_ack=False)
    assert message is not None and message.payload == {"n": 1}
    return connection, channel


def detach(connection: Connection) -> None:
    """What Connection.collect() does to the transport after a lost connection (celery 5.7's consumer)."""
    connection._do_close_transport()


def test_the_stock_transport_still_fails_the_way_the_workaround_mends(redis_server: RedisServer) -> None:
    assert (celery.__version__, kombu.__version__, redis.__version__) == ("5.7.0", "5.7.0", "8.1.0"), (
        "Upgraded: check whether chatdesk/broker.py is still needed (this test says so)."
    )
    connection, channel = channel_holding_an_unacked_message(redis_server.url, "redis")
    detach(connection)
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()  # type: ignore[attr-defined]


def test_a_detached_channel_restores_its_unacked_messages(redis_server: RedisServer) -> None:
    connection, channel = channel_holding_an_unacked_message(redis_server.url, Transport)
    detach(connection)
    channel.close()  # type: ignore[attr-defined]
    client = redis.Redis.from_url(redis_server.url)
    assert client.llen(QUEUE) == 1  # back in the queue for the next worker


def test_a_detached_channel_whose_redis_is_gone_fails_with_a_connection_error(
    redis_server: RedisServer,
) -> None:
    connection, channel = channel_holding_an_unacked_message(redis_server.url, Transport)
    detach(connection)
    redis_server.stop()
    # A connection error is what kombu's and celery's callers catch; the message stays in Redis's unacked
    # index for the visibility-timeout restore.
    with pytest.raises(tuple(Transport.connection_errors)):
        channel.close()  # type: ignore[attr-defined]


def test_redis_mode_uses_the_mended_transport() -> None:
    if not settings.REDIS_URL:
        pytest.skip("embedded mode: no Redis broker")
    assert settings.CELERY_BROKER_TRANSPORT == "chatdesk.broker:Transport"
    from chatdesk.celery import app

    with app.connection_for_write() as connection:
        assert connection.transport_cls == "chatdesk.broker:Transport"
        assert isinstance(connection.transport, Transport)
