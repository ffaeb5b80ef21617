"""Sub-agent tools, tool offering, provider resolution and the title rule (in-process, real PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from chatdesk.exceptions import ProviderNotConfigured
from chats import services
from chats.models import Chat, ChatModelConfig, ChatProvider
from chats.providers import provider_configured, provider_resolve
from chats.tools.base import ToolContext, ToolResult
from chats.tools.catalog import tools_for_chat
from chats.tools.close import CloseAgentTool
from chats.tools.message import MessageAgentTool
from chats.tools.spawn import SpawnComputerUseAgentTool
from chats.tools.wait import WaitAgentTool, wait_resolvable
from desktop.services import desktop_handback, desktop_takeover
from desktop.tools import ComputerTool
from tests.factories import ChatFactory, WorkspaceAgentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_env_key(settings: Settings) -> None:
    settings.ANTHROPIC_API_KEY = ""
    settings.ANTHROPIC_BASE_URL = ""


def ctx(chat: Chat, tool_use_id: str = "toolu_1") -> ToolContext:
    return ToolContext(chat=chat, tool_use_id=tool_use_id)


def body(result: ToolResult) -> dict[str, Any]:
    return json.loads(result.content[0]["text"])


@pytest.mark.parametrize(
    ("prompt", "title"),
    [
        ("", "New Chat"),
        ("   ", "New Chat"),
        ("Open the browser", "Open the browser"),
        ("one two three four five six", "one two three four five six"),
        ("one two three four five six seven", "one two three four five six..."),
        (" ".join(["x" * 30] * 6), ("x" * 30 + " ") * 2 + "x" * 15 + "..."),
    ],
)
def test_child_title_is_the_first_six_words_of_the_prompt(prompt: str, title: str) -> None:
    made = services.title_from_prompt(prompt)
    assert made == title and len(made) <= 80


def test_provider_row_with_a_key_wins_over_the_environment(settings: Settings) -> None:
    settings.ANTHROPIC_API_KEY = "env-key"
    settings.ANTHROPIC_BASE_URL = "http://env.invalid"
    assert provider_resolve().api_key == "env-key"
    row = ChatProvider(provider="anthropic", base_url="http://db.invalid")
    row.set_api_key("db-key")
    row.save()
    resolved = provider_resolve()
    assert (resolved.api_key, resolved.base_url) == ("db-key", "http://db.invalid")
    assert "db-key" not in repr(resolved)
    row.enabled = False
    row.save()
    assert provider_resolve().api_key == "env-key"


def test_no_key_anywhere_is_not_configured() -> None:
    ChatProvider.objects.create(provider="anthropic")  # a row without a key does not count
    with pytest.raises(ProviderNotConfigured, match="No Anthropic API key is configured"):
        provider_resolve()
    assert provider_configured() is False


def test_sub_agent_tools_only_for_root_chats_with_a_key(user: User) -> None:
    root = ChatFactory.create(owner=user)
    assert tools_for_chat(root, provider_configured=False) == []
    names = [d["name"] for t in tools_for_chat(root, provider_configured=True) for d in t.definitions()]
    assert names == ["spawn_computer_use_agent", "wait_agent", "message_agent", "close_agent"]
    child = services.chat_spawn_child(parent=root, prompt="Click things")
    offered = tools_for_chat(child, provider_configured=True)
    assert isinstance(offered[0], ComputerTool) and [t.name for t in offered[1:]] == ["request_human_help"]
    # Even if a child's model calls it, spawning is refused.
    refused = SpawnComputerUseAgentTool().run(ctx(child), {"prompt": "recurse"})
    assert refused.is_error and refused.content[0]["text"] == "delegated chats cannot create child subagents"


def test_spawn_creates_a_queued_computer_use_child(user: User, settings: Settings) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    root = ChatFactory.create(owner=user, workspace_agent=agent, model="claude-haiku-9")
    ChatModelConfig.objects.update_or_create(
        model=settings.CHATDESK_COMPUTER_USE_MODEL, defaults={"options": {"max_output_tokens": 99}}
    )
    result = SpawnComputerUseAgentTool().run(ctx(root), {"prompt": "Open the settings and turn on dark mode"})
    data = body(result)
    child = Chat.objects.get(pk=data["chat_id"])
    assert data == {
        "chat_id": str(child.pk),
        "title": "Open the settings and turn on...",
        "status": "pending",
    }
    assert (child.mode, child.parent_id, child.root_id, child.owner_id) == (
        "computer_use",
        root.pk,
        root.pk,
        user.pk,
    )
    assert child.workspace_agent_id == agent.pk and child.model == settings.CHATDESK_COMPUTER_USE_MODEL
    assert child.model_config is not None and child.system_prompt.endswith(
        "Open the settings and turn on dark mode"
    )
    assert [m.text for m in child.messages.all()] == ["Open the settings and turn on dark mode"]
    assert (
        SpawnComputerUseAgentTool().run(ctx(root), {"prompt": " "}).content[0]["text"] == "prompt is required"
    )
    titled = body(SpawnComputerUseAgentTool().run(ctx(root), {"prompt": "x", "title": "Mine"}))
    assert titled["title"] == "Mine"


def test_agent_tools_refuse_chats_that_are_not_descendants(user: User, other_user: User) -> None:
    root = ChatFactory.create(owner=user)
    other_root = ChatFactory.create(owner=user)
    stranger = services.chat_spawn_child(parent=other_root, prompt="theirs")
    foreign = services.chat_spawn_child(parent=ChatFactory.create(owner=other_user), prompt="not yours")
    for target in (str(stranger.pk), str(foreign.pk), str(root.pk), "not-a-uuid"):
        for tool, extra in (
            (WaitAgentTool(), {}),
            (MessageAgentTool(), {"message": "hi"}),
            (CloseAgentTool(), {}),
        ):
            result = tool.run(ctx(root), {"chat_id": target, **extra})
            assert result.is_error
            assert result.content[0]["text"] == "target chat is not a descendant of current chat"


def test_wait_suspends_on_a_working_child_and_answers_a_finished_one(user: User) -> None:
    root = ChatFactory.create(owner=user)
    child = services.chat_spawn_child(parent=root, prompt="work")
    suspended = WaitAgentTool().run(ctx(root, "toolu_w"), {"chat_id": str(child.pk), "timeout_seconds": 30})
    assert suspended.suspend is not None and suspended.content == []
    assert suspended.suspend["chat_id"] == str(child.pk) and suspended.suspend["tool_use_id"] == "toolu_w"

    services.message_append(chat=child, role="assistant", content=[services.text_part("All done.")])
    Chat.objects.filter(pk=child.pk).update(status=Chat.Status.COMPLETED)
    finished = WaitAgentTool().run(ctx(root), {"chat_id": str(child.pk)})
    assert body(finished) == {
        "chat_id": str(child.pk),
        "title": "work",
        "report": "All done.",
        "status": "completed",
    }

    Chat.objects.filter(pk=child.pk).update(status=Chat.Status.RUNNING)
    timed_out = WaitAgentTool().resume(
        ctx(root, "toolu_w"),
        {"chat_id": str(child.pk)},
        {"tool_use_id": "toolu_w", "chat_id": str(child.pk), "deadline": "2000-01-01T00:00:00+00:00"},
    )
    assert (
        timed_out.is_error
        and body(timed_out)["error"] == "timed out waiting for delegated subagent completion"
    )


def test_a_child_paused_by_a_takeover_keeps_its_parent_waiting(user: User) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    root = ChatFactory.create(owner=user, workspace_agent=agent)
    child = services.chat_spawn_child(parent=root, prompt="work")
    suspended = WaitAgentTool().run(ctx(root, "toolu_w"), {"chat_id": str(child.pk), "timeout_seconds": 300})
    assert suspended.suspend is not None
    awaiting = suspended.suspend

    desktop_takeover(chat=child, user=user)
    child.refresh_from_db()
    assert child.status == Chat.Status.PAUSED
    # The person holds the desktop: the child will go on after hand-back, so the parent keeps waiting.
    assert not wait_resolvable(awaiting)
    assert WaitAgentTool().run(ctx(root), {"chat_id": str(child.pk)}).suspend is not None

    desktop_handback(chat=child, user=user, note="")
    child.refresh_from_db()
    assert child.status == Chat.Status.PENDING and not wait_resolvable(awaiting)

    # Paused by an interrupt (no one holds the desktop): the wait is over.
    services.chat_interrupt(chat=child)
    assert wait_resolvable(awaiting)


def test_message_agent_queues_a_turn_and_close_agent_completes(user: User) -> None:
    root = ChatFactory.create(owner=user)
    child = services.chat_spawn_child(parent=root, prompt="work")
    Chat.objects.filter(pk=child.pk).update(status=Chat.Status.COMPLETED)
    sent = body(MessageAgentTool().run(ctx(root), {"chat_id": str(child.pk), "message": "Also do this"}))
    assert sent["status"] == "pending"
    last = child.messages.last()
    assert last is not None and last.text == "Also do this"
    closed = body(CloseAgentTool().run(ctx(root), {"chat_id": str(child.pk)}))
    assert closed["status"] == "completed"
    child.refresh_from_db()
    assert child.status == Chat.Status.COMPLETED
