"""Fixtures for the turn engine's tests: the fake Anthropic API, a provider row pointing at it, helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from chats.events import group_name
from chats.models import Chat, ChatProvider
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.processes import wait_until


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def anthropic_provider(fake: FakeAnthropic) -> ChatProvider:
    """An enabled provider row with a key, pointing at the fake server (the DB path wins over env vars)."""
    row = ChatProvider(
        provider=ChatProvider.Provider.ANTHROPIC, display_name="Fake Anthropic", base_url=fake.base_url
    )
    row.set_api_key("test-key")
    row.save()
    return row


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for this run's workers and daphne: no API key from the environment."""
    env = {"ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": ""}
    env.update(extra)
    return env


def wait_status(chat: Chat, *statuses: str, timeout: float = 30) -> Chat:
    """Wait until ``chat`` has one of ``statuses``; return it fresh."""

    def check() -> Chat | None:
        chat.refresh_from_db()
        return chat if chat.status in statuses else None

    wait_until(check, timeout=timeout, interval=0.05, what=f"chat {chat.pk} to be {'/'.join(statuses)}")
    return chat


def first_live_events(chat: Chat, kind: str, *, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """Listen on the chat's channel-layer group (as a stream consumer does) until ``count`` events of ``kind``."""
    # A layer of its own: channels_redis binds a layer's receive lock to the first event loop that
    # receives, and each async_to_sync call runs a new loop.
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)

    async def listen() -> list[dict[str, Any]]:
        import asyncio

        channel = await layer.new_channel()
        await layer.group_add(group_name(chat.pk), channel)
        got: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while len(got) < count:
                    event = (await layer.receive(channel))["event"]
                    if event["type"] == kind:
                        got.append(event)
        finally:
            await layer.group_discard(group_name(chat.pk), channel)
        return got

    return async_to_sync(listen)()
