"""Fault tests on the real parts: a Redis of the test's own stopped and started under load, idle stream
sockets held open, a provider that hangs after an interrupt.

Each test starts its own redis-server on a free port (tests/support/redis_server.py) and points daphne and
the Celery workers at it; the machine's shared Redis is never touched.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from websockets.sync.client import ClientConnection, connect

from chatdesk.celery import app as celery_app
from chats import services
from chats.models import Chat, ChatMessage, ChatProvider
from chats.tasks import TURN_HARD_LIMIT_GRACE, turn_task
from tests.chats.conftest import wait_status, worker_env
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text
from tests.support.processes import Daphne, running_daphne, running_worker, wait_until
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.django_db(transaction=True)

#: Longer than any read timeout of the channel layer's Redis connections: an idle stream outlives them all.
IDLE_SECONDS = settings.CHANNEL_LAYER_SOCKET_TIMEOUT + 5


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


def test_an_idle_stream_socket_stays_open_past_every_read_timeout_in_redis_mode(
    tmp_path: Path, user: User, api_token: str, redis_server: RedisServer
) -> None:
    """redis-py 8's 5 s default socket timeout used to cut channels_redis's blocking receive (1011)."""
    env = worker_env(REDIS_URL=redis_server.url)
    with running_daphne(tmp_path, env=env) as daphne, api_client(daphne, api_token) as api:
        chat_id = api.post("/chats", json={"title": "idle"}).json()["id"]
        with open_stream(daphne, api_token, chat_id) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "status"
            started = time.monotonic()
            with pytest.raises(TimeoutError):  # nothing to say for that long, and no close frame either
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


class StreamFollower:
    """A stream client that reconnects with its last message id whenever the socket drops, as chat.js does."""

    def __init__(self, daphne: Daphne, token: str, chat_id: str) -> None:
        self.daphne, self.token, self.chat_id = daphne, token, chat_id
        self.messages: list[dict[str, Any]] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StreamFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)

    @property
    def last_id(self) -> int:
        return max((m["id"] for m in self.messages), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with open_stream(self.daphne, self.token, self.chat_id, self.last_id) as ws:
                    while not self._stop.is_set():
                        try:
                            event = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        if event["type"] == "message":
                            self.messages.append(event["message"])
            except Exception:  # dropped or refused: try again
                self.reconnects += 1
                time.sleep(0.2)


def test_redis_stopped_and_started_under_load(
    tmp_path: Path,
    user: User,
    api_token: str,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    redis_server: RedisServer,
) -> None:
    """Workers keep running and finish every queued turn once; the API answers 503 and stores nothing
    while Redis is down; a stream follower resumes without losing a message."""
    fake.handle_with(
        lambda request: reply(text("An answer, streamed slowly."), chunk_size=2, chunk_delay=0.5)
    )
    env = worker_env(REDIS_URL=redis_server.url, CHATDESK_TURN_LEASE_SECONDS="5", CHATDESK_SWEEP_INTERVAL="1")
    with (
        running_daphne(tmp_path, env=env) as daphne,
        running_worker(tmp_path, name="r1", concurrency=2, beat=True, env=env) as w1,
        running_worker(tmp_path, name="r2", concurrency=2, env=env) as w2,
        api_client(daphne, api_token) as api,
    ):
        # Deadline wake-ups of suspended waits are countdown tasks that a worker holds unacknowledged
        # while it keeps waiting on the queue: with them, every worker is in the state that killed workers
        # when Redis went away (chatdesk/broker.py). These wake a chat that does not exist: a no-op.
        with celery_app.connection_for_write(redis_server.url) as broker:
            for _ in range(4):
                celery_app.send_task(
                    "chats.run_turn", args=[str(uuid.uuid4())], countdown=600, connection=broker,
                    queue=settings.CELERY_TASK_DEFAULT_QUEUE,
                )  # fmt: skip
        ids = [api.post("/chats", json={"message": f"question {n}"}).json()["id"] for n in range(3)]
        with StreamFollower(daphne, api_token, ids[0]) as follower:
            wait_until(
                lambda: Chat.objects.filter(pk__in=ids, status=Chat.Status.RUNNING).count() == len(ids),
                timeout=30,
                what="every turn in flight",
            )
            redis_server.stop()
            chats_before = Chat.objects.count()
            asked_before = ChatMessage.objects.filter(role=ChatMessage.Role.USER).count()
            refused = api.post("/chats", json={"message": "while Redis is down"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] and "nothing was saved" in refused.json()["detail"]
            refused = api.post(f"/chats/{ids[1]}/messages", json={"content": "and again"})
            assert refused.status_code == 503, refused.text
            # Nothing half-written: no chat, no message (a client's retry will not duplicate anything).
            assert Chat.objects.count() == chats_before
            assert ChatMessage.objects.filter(role=ChatMessage.Role.USER).count() == asked_before
            redis_server.start()

            def all_answered() -> bool:
                return Chat.objects.filter(pk__in=ids, status=Chat.Status.WAITING).count() == len(ids)

            wait_until(all_answered, timeout=120, interval=0.5, what="every queued turn to finish")
            for chat_id in ids:
                answers = ChatMessage.objects.filter(chat_id=chat_id, role=ChatMessage.Role.ASSISTANT)
                assert answers.count() == 1, f"chat {chat_id} answered {answers.count()} times"
            answer = ChatMessage.objects.get(chat_id=ids[0], role=ChatMessage.Role.ASSISTANT)
            wait_until(lambda: follower.last_id >= answer.id, timeout=30, what="the follower to catch up")
        seen = [m["id"] for m in follower.messages]
        assert seen == sorted(set(seen)), "a message was delivered twice or out of order"
        stored = list(ChatMessage.objects.filter(chat_id=ids[0]).order_by("id").values_list("id", flat=True))
        assert seen == stored, "the stream lost a message"
        # Back to normal: the API queues turns again, and both workers are still the ones started.
        again = api.post(f"/chats/{ids[0]}/messages", json={"content": "one more"})
        assert again.status_code == 202, again.text
        wait_status(Chat.objects.get(pk=ids[0]), Chat.Status.WAITING, timeout=60)
        for worker in (w1, w2):
            assert worker.proc.poll() is None, worker.output()[-3000:]
            assert "Unrecoverable error" not in worker.output()


def test_a_provider_that_hangs_after_an_interrupt_frees_the_worker(
    tmp_path: Path, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    """The provider sends the start of a reply, then nothing: an interrupt still ends the turn at once, and
    the only worker process is free for the next chat long before the provider would have said more."""
    first_delta_sent = threading.Event()

    def hang(request: RecordedRequest) -> Reply:
        first_delta_sent.set()
        return reply(text("One word, then a very long silence"), chunk_size=4, chunk_delay=45)

    fake.script([hang, lambda request: reply(text("Next chat's answer."))])
    with running_worker(tmp_path, concurrency=1, env=worker_env()):
        hung = services.chat_create(owner=user, message="Say something")
        wait_status(hung, Chat.Status.RUNNING)
        assert first_delta_sent.wait(20)
        services.chat_interrupt(chat=hung)
        following = services.chat_create(owner=user, message="Are you free?")
        # Within the 45 s silence: the interrupted stream was cut, so the one worker process moved on.
        wait_status(following, Chat.Status.WAITING, Chat.Status.ERROR, timeout=30)
    assert following.status == Chat.Status.WAITING, following.last_error
    hung.refresh_from_db()
    assert hung.status == Chat.Status.PAUSED
    assert not hung.messages.filter(role=ChatMessage.Role.ASSISTANT).exists()  # nothing was said yet


def test_a_turn_past_its_time_limit_ends_with_a_clear_error(
    tmp_path: Path,
    user: User,
    fake: FakeAnthropic,
    anthropic_provider: ChatProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Celery sends a task's time limits with the message, from the sender's settings (here: this process).
    monkeypatch.setattr(turn_task, "soft_time_limit", 3)
    monkeypatch.setattr(turn_task, "time_limit", 3 + TURN_HARD_LIMIT_GRACE)
    monkeypatch.setattr(turn_task, "_exec_options", None)  # Celery caches them at the first send
    fake.add_response(reply(text("Far too slow"), chunk_size=2, chunk_delay=20))
    with running_worker(tmp_path, concurrency=1, env=worker_env()):
        chat = services.chat_create(owner=user, message="Take your time")
        wait_status(chat, Chat.Status.ERROR, Chat.Status.WAITING, timeout=40)
    assert chat.status == Chat.Status.ERROR
    assert "CHATDESK_TURN_TIME_LIMIT" in chat.last_error
