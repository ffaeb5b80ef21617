"""Contract test of the channel-layer settings: reads must outlast channels_redis's blocking receive.

channels_redis receives with BZPOPMIN for ``RedisChannelLayer.brpop_timeout`` seconds; a socket timeout
at or below that (redis-py 8's default is 5 s, equal to it) cut every idle stream with 1011. The fault
test holding an idle stream for a minute is in tests/chats/test_faults.py.
"""

from __future__ import annotations

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings


def test_reads_wait_longer_than_the_blocking_receive() -> None:
    assert settings.CHANNEL_LAYER_SOCKET_TIMEOUT >= 2 * RedisChannelLayer.brpop_timeout


def test_the_redis_layer_gets_the_read_timeout() -> None:
    if not settings.REDIS_URL:
        pytest.skip("embedded mode: no Redis channel layer")
    layer = RedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    pool = layer.create_pool(0)
    assert pool.connection_kwargs["socket_timeout"] == settings.CHANNEL_LAYER_SOCKET_TIMEOUT
    assert pool.connection_kwargs["socket_keepalive"] is True
