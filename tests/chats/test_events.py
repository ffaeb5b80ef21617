"""Publishing live events from synchronous code (a worker): one event loop per process, in order, without
the publisher waiting for Redis."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import channel_layers
from django.conf import settings

from chats import events
from chats.events import LAYER_MESSAGE_TYPE, group_name, sender


@pytest.mark.skipif(not settings.REDIS_URL, reason="the channel layer is Redis only with REDIS_URL")
def test_events_go_out_in_order_through_one_long_lived_loop() -> None:
    group = group_name(uuid.uuid4())
    received: list[Any] = []
    subscribed = threading.Event()
    count = 30

    async def listen() -> None:
        # A layer of its own: the process's layer binds its receive lock to the first loop that used it.
        layer = channel_layers.make_backend("default")
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        subscribed.set()
        try:
            async with asyncio.timeout(20):
                while len(received) < count:
                    received.append((await layer.receive(channel))["event"]["n"])
        finally:
            await layer.group_discard(group, channel)

    listener = threading.Thread(target=lambda: asyncio.run(listen()))
    listener.start()
    assert subscribed.wait(10)
    loop = sender.loop()
    for n in range(count):
        sender.group_send(group, {"type": LAYER_MESSAGE_TYPE, "event": {"n": n}})
    listener.join(30)

    assert received == list(range(count))
    assert sender.loop() is loop and loop.is_running()  # no loop (nor Redis pool) per event
    assert sum(1 for t in threading.enumerate() if t.name == "chat-events") == 1


class GatedLayer:
    """A channel layer whose sends wait for ``gate`` and fail for groups named ``fail``."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.sent: list[tuple[str, Any]] = []
        self.sending = threading.Event()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sending.set()
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        if group == "fail":
            raise ConnectionError("Redis went away")
        self.sent.append((group, message["n"]))


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedLayer:
    layer = GatedLayer()
    monkeypatch.setattr(events, "get_channel_layer", lambda: layer)
    return layer


@pytest.fixture
def own() -> Iterator[events.LayerSender]:
    """A sender of the test's own (the process's one is left alone)."""
    fresh = events.LayerSender()
    yield fresh
    fresh.close()


def test_a_publisher_does_not_wait_for_the_layer_and_events_keep_their_order(
    gated: GatedLayer, own: events.LayerSender
) -> None:
    for n in range(5):
        own.group_send("g", {"n": n})  # returns at once although the layer does not answer yet
    assert gated.sent == []
    assert not own.flush(timeout=0.2)  # still held by the layer
    gated.gate.set()
    assert own.flush(timeout=10)
    assert gated.sent == [("g", n) for n in range(5)]


def test_a_failed_send_is_logged_and_the_next_event_goes(
    gated: GatedLayer, own: events.LayerSender, caplog: pytest.LogCaptureFixture
) -> None:
    gated.gate.set()
    own.group_send("fail", {"n": 0})
    own.group_send("g", {"n": 1})
    assert own.flush(timeout=10)
    assert gated.sent == [("g", 1)]
    assert "A live event to fail was not sent." in caplog.text


def test_when_the_layer_hangs_the_queue_stays_bounded_and_drops_are_logged(
    gated: GatedLayer,
    own: events.LayerSender,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(events, "QUEUE_LIMIT", 3)
    own.group_send("g", {"n": 0})
    assert gated.sending.wait(10)  # the first event left the queue: the layer holds it
    for n in range(1, 10):
        own.group_send("g", {"n": n})
    gated.gate.set()
    assert own.flush(timeout=10)
    # One event in the layer, three in the queue: the other six were dropped.
    assert gated.sent == [("g", n) for n in range(4)]
    assert own.dropped == 6
    assert "Live events are not reaching Redis: 1 dropped so far." in caplog.text


def test_publishing_a_task_first_sends_the_live_events_queued_before_it(
    gated: GatedLayer, own: events.LayerSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Causal order across processes: the worker that runs a task may publish events of its own (the turn
    runs); the events queued before the task was published must reach Redis first."""
    from chatdesk.celery import send_live_events_first

    monkeypatch.setattr(events, "sender", own)
    own.group_send("g", {"n": 0})
    threading.Timer(0.3, gated.gate.set).start()  # the layer answers a moment later
    send_live_events_first()
    assert gated.sent == [("g", 0)]
