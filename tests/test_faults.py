"""Fault tests on the real parts: a Redis of the test's own stopped and started under load, idle stream
sockets held open, a provider that hangs after an interrupt.

Each test starts its own redis-server on a free port (tests/support/redis_server.py) and points daphne and
the Celery workers at it; the machine's shared Redis is never touched.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.contrib.auth.models import User
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chats.models import Chat, ChatMessage, ChatProvider
from tests.chats.conftest import wait_status, worker_env
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text
from tests.support.processes import Daphne, running_daphne, running_worker, wait_until
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.django_db(transaction=True)

IDLE_SECONDS = 60


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server


def api_client(daphne: Daphne, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{daphne.url}/api/experimental", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def open_stream(daphne: Daphne, token: str, chat_id: str, after_id: int = 0) -> ClientConnection:
    return connect(
        f"{daphne.ws_url}/api/experimental/chats/{chat_id}/stream?after_id={after_id}",
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
    )


def test_an_idle_stream_socket_stays_open_for_a_minute_in_redis_mode(
    tmp_path: Path, user: User, api_token: str, redis_server: RedisServer
) -> None:
    """redis-py 8's 5 s default socket timeout used to cut channels_redis's blocking receive (1011)."""
    env = worker_env(REDIS_URL=redis_server.url)
    with running_daphne(tmp_path, env=env) as daphne, api_client(daphne, api_token) as api:
        chat_id = api.post("/chats", json={"title": "idle"}).json()["id"]
        with open_stream(daphne, api_token, chat_id) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "status"
            started = time.monotonic()
            with pytest.raises(TimeoutError):  # nothing to say for a minute, and no close frame either
                ws.recv(timeout=IDLE_SECONDS)
            assert time.monotonic() - started >= IDLE_SECONDS
            # Still live: a message sent now reaches this very socket.
            sent = api.post(f"/chats/{chat_id}/messages", json={"content": "still there?"})
            assert sent.status_code == 202, sent.text
            events = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
            assert {"type": "message", "id": sent.json()["id"]} in [
                {"type": e["type"], "id": e.get("message", {}).get("id")} for e in events
            ]
        assert "Timeout reading" not in daphne.output()
