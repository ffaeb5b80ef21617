"""Fixtures for the turn engine's tests: the fake Anthropic API, a provider row pointing at it, helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
