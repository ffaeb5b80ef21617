"""The turn engine with a real Celery worker, PostgreSQL, Redis and the fake Anthropic API."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from chats import services
from chats.models import Chat, ChatMessage, ChatProvider
from tests.chats.conftest import first_live_events, wait_status, worker_env
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, error, reply, text
from tests.support.processes import running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Any]:
    with running_worker(tmp_path, concurrency=1, env=worker_env()) as process:
        yield process


def user_texts(request: RecordedRequest) -> list[str]:
    return [
        block["text"]
        for message in request.json["messages"]
        if message["role"] == "user"
        for block in message["content"]
        if block.get("type") == "text"
    ]


def test_a_turn_streams_saves_and_records_usage(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    fake.add_response(
        reply(text("Hello\x00 there"), chunk_size=2, usage={"input_tokens": 7, "output_tokens": 3})
    )
    chat = services.chat_create(owner=user, message="Hi")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR)
    assert chat.status == Chat.Status.WAITING, chat.last_error
    answer = chat.messages.get(role=ChatMessage.Role.ASSISTANT)
    assert answer.text == "Hello there"  # NULs stripped: jsonb rejects them
    assert answer.usage["input_tokens"] == 7 and chat.usage == answer.usage
    sent = fake.message_requests[0]
    assert sent.headers["authorization"] == "Bearer test-key"  # the ChatProvider row's key
    assert sent.json["model"] == "claude-sonnet-5-5" and sent.streaming
    assert sent.json["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert sent.json["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_rate_limit_is_retried_after_the_providers_delay(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    arrived: list[float] = []

    def at(response: Any) -> Any:
        def handler(request: RecordedRequest) -> Any:
            arrived.append(time.monotonic())
            return response

        return handler

    fake.script([at(error(429, headers={"retry-after": "1.5"})), at(reply(text("Made it.")))])
    chat = services.chat_create(owner=user, message="Hi")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR)
    assert chat.status == Chat.Status.WAITING, chat.last_error
    last = chat.messages.last()
    assert last is not None and last.text == "Made it."
    assert arrived[1] - arrived[0] >= 1.4


def test_server_errors_until_the_retries_run_out_end_in_a_readable_error(
    tmp_path: Path, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    fake.handle_with(lambda request: error(500, message="upstream exploded sk-ant-secret"))
    with running_worker(
        tmp_path, env=worker_env(CHATDESK_PROVIDER_RETRIES="2", CHATDESK_PROVIDER_RETRY_MAX_DELAY="0.2")
    ):
        chat = services.chat_create(owner=user, message="Hi")
        wait_status(chat, Chat.Status.ERROR, Chat.Status.WAITING)
    assert chat.status == Chat.Status.ERROR
    assert chat.last_error == "The model provider had a temporary error."
    assert len(fake.message_requests) == 3
    assert not chat.messages.filter(role=ChatMessage.Role.ASSISTANT).exists()


def test_without_any_key_the_chat_errors_clearly(worker: Any, user: User) -> None:
    chat = services.chat_create(owner=user, message="Hi")
    wait_status(chat, Chat.Status.ERROR, Chat.Status.WAITING)
    assert chat.last_error == "No Anthropic API key is configured."


def test_interrupt_stops_the_stream_and_keeps_the_partial_text(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    long_text = "word " * 400
    fake.add_response(reply(text(long_text), chunk_size=10, chunk_delay=0.02))
    chat = services.chat_create(owner=user, message="Talk for a while")
    parts = first_live_events(chat, "message_part", count=3)
    assert parts[0]["part"]["type"] == "text" and parts[0]["part"]["index"] == 0
    services.chat_interrupt(chat=chat)

    def partial_saved() -> ChatMessage | None:
        return chat.messages.filter(role=ChatMessage.Role.ASSISTANT).first()

    partial = wait_until(partial_saved, timeout=15, what="the partial answer to be saved")
    assert isinstance(partial, ChatMessage)
    assert partial.text and long_text.startswith(partial.text) and len(partial.text) < len(long_text)
    chat.refresh_from_db()
    assert chat.status == Chat.Status.PAUSED


def test_a_message_sent_during_a_turn_gets_its_own_turn_after_it(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    release = threading.Event()

    def slow_first(request: RecordedRequest) -> Reply:
        release.wait(20)
        return reply(text("First answer."))

    fake.script([slow_first, lambda request: reply(text("Second answer."))])
    chat = services.chat_create(owner=user, message="First question")
    fake.wait_for_requests(1, timeout=20)
    wait_status(chat, Chat.Status.RUNNING)
    services.chat_send_message(chat=chat, content="Second question")
    release.set()
    wait_until(lambda: len(fake.message_requests) == 2, timeout=20, what="the second turn")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR)
    second = fake.message_requests[1].json["messages"]
    # The model sees the queued question after the answer it had not read it for.
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert user_texts(fake.message_requests[1])[-1] == "Second question"
    assert [m.text for m in chat.messages.filter(role=ChatMessage.Role.ASSISTANT)] == [
        "First answer.",
        "Second answer.",
    ]


def test_a_turn_whose_worker_died_is_resumed_by_the_sweep(
    tmp_path: Path, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    release = threading.Event()

    def hang(request: RecordedRequest) -> Reply:
        release.wait(60)
        return reply(text("too late"))

    fake.script([hang, lambda request: reply(text("Recovered."))])
    lease = {"CHATDESK_TURN_LEASE_SECONDS": "5", "CHATDESK_SWEEP_INTERVAL": "1"}
    try:
        with running_worker(tmp_path, name="doomed", env=worker_env(**lease)) as doomed:
            chat = services.chat_create(owner=user, message="Hi")
            fake.wait_for_requests(1, timeout=20)
            wait_status(chat, Chat.Status.RUNNING)
            os.killpg(doomed.proc.pid, signal.SIGKILL)  # the whole worker, mid-turn
            doomed.proc.wait(timeout=10)
        chat.refresh_from_db()
        assert chat.status == Chat.Status.RUNNING  # nobody else knows yet
        with running_worker(tmp_path, name="rescuer", beat=True, env=worker_env(**lease)):
            wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=40)
    finally:
        release.set()
    assert chat.status == Chat.Status.WAITING, chat.last_error
    assert [m.text for m in chat.messages.filter(role=ChatMessage.Role.ASSISTANT)] == ["Recovered."]
    assert chat.lease_recoveries == 0 and chat.worker_id


def test_a_child_cannot_spawn_and_its_error_reaches_the_waiting_parent(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider
) -> None:
    """No desktop here: the child fails (its model errors), and wait_agent reports that error."""

    def script(request: RecordedRequest) -> Any:
        from tests.support.fake_anthropic import tool_use

        if request.json["model"] == "claude-opus-5-5":
            return error(400, message="bad child request")
        turns = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        if turns == 0:
            return reply(tool_use("spawn_computer_use_agent", {"prompt": "Do GUI things", "title": "GUI"}))
        if turns == 1:
            import json

            spawned = json.loads(request.tool_results()[0]["content"][0]["text"])
            return reply(tool_use("wait_agent", {"chat_id": spawned["chat_id"]}))
        return reply(text("The sub-agent failed."))

    fake.handle_with(script)
    chat = services.chat_create(owner=user, message="Use the desktop")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=30)
    assert chat.status == Chat.Status.WAITING, chat.last_error
    child = Chat.objects.get(parent=chat)
    assert child.status == Chat.Status.ERROR and child.title == "GUI"
    assert child.last_error == "The model provider rejected the request: bad child request"
    child_request = next(r for r in fake.message_requests if r.json["model"] == "claude-opus-5-5")
    assert [t.get("name") or t["type"] for t in child_request.json["tools"]] == [
        "computer_toolset_20260801",
        "request_human_help",
    ]
    wait_result = fake.message_requests[-1].tool_results()[0]
    assert wait_result["is_error"] is True
    assert '"status": "error"' in wait_result["content"][0]["text"]
    assert "bad child request" in wait_result["content"][0]["text"]
