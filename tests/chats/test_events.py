"""Publishing live events from synchronous code (a worker): one event loop per process, in order."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from channels.layers import channel_layers
from django.conf import settings

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
