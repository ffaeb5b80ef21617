"""Cost you can see and cap (SPEC §10), with a real Celery worker, PostgreSQL, Redis and the fake API.

Usage and cost sums on a chat and its tree, a budget reached mid-run that pauses before the next model
call (a child and its waiting parent too) and a resume that continues with no duplicated message, the
monthly limit, resuming an interrupted chat without a new message, and compaction (automatic and on
demand) keeping tool pairs whole with the next request carrying the summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from chats import services
from chats.engine.compaction import SUMMARY_SYSTEM
from chats.engine.history import RESUMED_TEXT, SUMMARY_HEADING
from chats.models import Chat, ChatMessage, ChatModelConfig, ChatProvider, UserBudget
from tests.chats.conftest import first_live_events, wait_status, worker_env
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, text, tool_use
from tests.support.processes import running_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/experimental"
ROOT_MODEL = "claude-sonnet-5-5"
CHILD_MODEL = "claude-opus-5-5"
#: Round prices (USD per million tokens) so that costs are easy to check by hand.
PRICES = {"input_price": 1000, "output_price": 2000, "cache_write_price": 1250, "cache_read_price": 100}
#: One dollar of input, nothing else: a scripted call's usage (overrides what the fake computes).
ONE_DOLLAR = {
    "input_tokens": 1000,
    "output_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


@pytest.fixture(autouse=True)
def prices() -> None:
    # Transactional tests flush the tables the migrations filled: set the prices these tests rely on.
    for model in (ROOT_MODEL, CHILD_MODEL):
        ChatModelConfig.objects.update_or_create(model=model, defaults=PRICES)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Any]:
    with running_worker(tmp_path, concurrency=1, env=worker_env()) as process:
        yield process


def expected_cost(usage: dict[str, int]) -> Decimal:
    return (
        Decimal(usage["input_tokens"]) * 1000
        + Decimal(usage["output_tokens"]) * 2000
        + Decimal(usage["cache_creation_input_tokens"]) * 1250
        + Decimal(usage["cache_read_input_tokens"]) * 100
    ) / 1_000_000


def assistant_turns(request: RecordedRequest) -> int:
    return sum(1 for m in request.json["messages"] if m["role"] == "assistant")


def tool_result_json(request: RecordedRequest) -> dict[str, Any]:
    content = request.tool_results()[0]["content"]
    return json.loads(content if isinstance(content, str) else content[0]["text"])


def roles(chat: Chat) -> list[str]:
    return list(chat.messages.order_by("id").values_list("role", flat=True))


def test_usage_and_cost_sum_on_the_chat_and_its_tree(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    def script(request: RecordedRequest) -> Reply:
        if request.json["model"] == CHILD_MODEL:
            return reply(text("Child report."))
        step = assistant_turns(request)
        if step == 0:
            return reply(tool_use("spawn_computer_use_agent", {"prompt": "Look at the screen"}))
        if step == 1:
            return reply(tool_use("wait_agent", {"chat_id": tool_result_json(request)["chat_id"]}))
        return reply(text("All done."))

    fake.handle_with(script)
    chat = services.chat_create(owner=user, message="Delegate something")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)
    assert chat.status == Chat.Status.WAITING, chat.last_error
    child = Chat.objects.get(parent=chat)

    # Each message's cost is its call's usage at the model's prices; chats and the tree sum them.
    calls = [r for r in fake.message_requests if r.usage is not None]
    answers = ChatMessage.objects.filter(role=ChatMessage.Role.ASSISTANT, chat__root=chat).order_by("id")
    assert len(answers) == len(calls) == 4
    for answer in answers:
        assert answer.cost_usd == expected_cost(answer.usage) > 0
    assert chat.cost_usd == sum(a.cost_usd for a in answers if a.chat_id == chat.pk)
    assert child.cost_usd == sum(a.cost_usd for a in answers if a.chat_id == child.pk)
    assert chat.tree_cost_usd == chat.cost_usd + child.cost_usd
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    assert chat.tree_usage == {k: sum((r.usage or {})[k] for r in calls) for k in keys}

    body = api.get(f"{API}/chats/{chat.pk}").json()
    assert Decimal(body["cost_usd"]) == chat.cost_usd and Decimal(body["tree_cost_usd"]) == chat.tree_cost_usd
    assert body["budget_usd"] == "10.0000"  # CHATDESK_CHAT_BUDGET_USD
    child_body = api.get(f"{API}/chats/{child.pk}").json()
    assert Decimal(child_body["cost_usd"]) == child.cost_usd
    assert (child_body["tree_cost_usd"], child_body["budget_usd"], child_body["tree_usage"]) == (
        None,
        None,
        None,
    )
    message = api.get(f"{API}/chats/{chat.pk}/messages").json()[1]
    assert Decimal(message["cost_usd"]) == answers[0].cost_usd


def test_a_budget_reached_mid_run_pauses_before_the_next_call_and_resume_continues(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    def script(request: RecordedRequest) -> Reply:
        if assistant_turns(request) == 0:
            # A tool that answers at once (an error result: no such sub-agent).
            return reply(tool_use("wait_agent", {"chat_id": "nobody"}), usage=ONE_DOLLAR)
        return reply(text("Finished after the pause."), usage=ONE_DOLLAR)

    fake.handle_with(script)
    chat = services.chat_create(owner=user, message="Work", budget_usd=Decimal("0.5"))
    wait_status(chat, Chat.Status.PAUSED, Chat.Status.ERROR, Chat.Status.WAITING, timeout=60)

    # The first call cost $1, past the $0.50 budget: its tool ran, the next call was not made.
    assert (chat.status, chat.paused_reason) == (Chat.Status.PAUSED, Chat.PausedReason.BUDGET)
    assert len(fake.message_requests) == 1
    assert chat.last_error.startswith("Paused: this chat reached its budget of $0.50 ($1.00 spent)")
    assert roles(chat) == ["user", "assistant", "tool"]

    still = api.post(f"{API}/chats/{chat.pk}/resume")
    assert still.status_code == 409 and "$0.50" in still.json()["detail"]
    assert api.patch(f"{API}/chats/{chat.pk}", {"budget_usd": "5"}, format="json").status_code == 200
    resumed = api.post(f"{API}/chats/{chat.pk}/resume")
    assert resumed.status_code == 202, resumed.content
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)

    assert chat.status == Chat.Status.WAITING, chat.last_error
    assert chat.last_error == ""
    assert roles(chat) == ["user", "assistant", "tool", "assistant"]  # nothing duplicated
    second = fake.message_requests[1].json["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert len(fake.message_requests) == 2 and chat.tree_cost_usd == Decimal(2)


def test_a_child_over_budget_pauses_with_its_waiting_parent_and_both_resume(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    def script(request: RecordedRequest) -> Reply:
        step = assistant_turns(request)
        if request.json["model"] == CHILD_MODEL:
            if step == 0:  # no desktop here: the computer tool answers with an error result at once
                return reply(tool_use("screenshot", {}, toolset_name="computer"), usage=ONE_DOLLAR)
            return reply(text("Child finished."), usage=ONE_DOLLAR)
        if step == 0:
            return reply(tool_use("spawn_computer_use_agent", {"prompt": "Do GUI work"}), usage=ONE_DOLLAR)
        if step == 1:
            chat_id = tool_result_json(request)["chat_id"]
            return reply(
                tool_use("wait_agent", {"chat_id": chat_id, "timeout_seconds": 60}), usage=ONE_DOLLAR
            )
        return reply(text(f"Parent got: {tool_result_json(request)['report']}"), usage=ONE_DOLLAR)

    fake.handle_with(script)
    # Root: $1 (spawn) + $1 (wait); the child: $1, reaching $3 >= $2.50 before its second call.
    chat = services.chat_create(owner=user, message="Use the desktop", budget_usd=Decimal("2.5"))

    def paused_tree() -> bool:
        return Chat.objects.filter(root=chat, status=Chat.Status.PAUSED).count() == 2

    wait_until(paused_tree, timeout=60, what="the child and its waiting parent to pause")
    child = Chat.objects.get(parent=chat)
    chat.refresh_from_db()
    assert (child.paused_reason, chat.paused_reason) == (Chat.PausedReason.BUDGET, Chat.PausedReason.BUDGET)
    assert chat.awaiting is not None and chat.awaiting["chat_id"] == str(child.pk)  # still waiting for it
    assert "$2.50" in chat.last_error and "$3.00 spent" in child.last_error
    assert len(fake.message_requests) == 3

    api.patch(f"{API}/chats/{chat.pk}", {"budget_usd": "100"}, format="json")
    assert api.post(f"{API}/chats/{chat.pk}/resume").status_code == 202
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)
    child.refresh_from_db()

    assert chat.status == Chat.Status.WAITING, chat.last_error
    assert child.status == Chat.Status.COMPLETED, child.last_error
    assert roles(child) == ["user", "assistant", "tool", "assistant"]
    assert roles(chat) == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    final = chat.messages.filter(role=ChatMessage.Role.ASSISTANT).last()
    assert final is not None and final.text == "Parent got: Child finished."
    assert len(fake.message_requests) == 5 and chat.tree_cost_usd == Decimal(5)


def test_the_monthly_limit_pauses_before_the_first_call(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    UserBudget.objects.create(user=user, monthly_limit_usd=Decimal(0))
    chat = services.chat_create(owner=user, message="Hello")
    wait_status(chat, Chat.Status.PAUSED, Chat.Status.ERROR, Chat.Status.WAITING, timeout=60)
    assert chat.paused_reason == Chat.PausedReason.BUDGET
    assert "monthly limit of $0.00 is reached" in chat.last_error
    assert fake.message_requests == []
    assert api.post(f"{API}/chats/{chat.pk}/resume").status_code == 409

    UserBudget.objects.filter(user=user).update(monthly_limit_usd=Decimal(50))
    fake.add_response(reply(text("Hi!")))
    assert api.post(f"{API}/chats/{chat.pk}/resume").status_code == 202
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)
    assert roles(chat) == ["user", "assistant"]


def test_resume_continues_an_interrupted_answer_without_a_new_message(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    fake.script([reply(text("word " * 400), chunk_size=10, chunk_delay=0.02), reply(text("The rest."))])
    chat = services.chat_create(owner=user, message="Talk")
    first_live_events(chat, "message_part", count=2)  # the answer is streaming
    services.chat_interrupt(chat=chat)
    wait_until(
        lambda: chat.messages.filter(role=ChatMessage.Role.ASSISTANT).exists(), timeout=20, what="the partial"
    )

    assert api.post(f"{API}/chats/{chat.pk}/resume").status_code == 202
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)

    assert roles(chat) == ["user", "assistant", "assistant"]  # no message was added to resume
    sent = fake.message_requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[-1]["content"][-1]["text"] == RESUMED_TEXT
    assert api.post(f"{API}/chats/{chat.pk}/resume").status_code == 409  # not paused any more


def seed_history(chat: Chat, exchanges: int, filler: int) -> None:
    """Store ``exchanges`` rounds of question, tool call, tool result and answer, each ~``filler`` tokens."""
    for n in range(exchanges):
        q = ChatMessage.objects.create(
            chat=chat, role="user", content=[{"type": "text", "text": f"Q{n} " + "x" * 4 * filler}]
        )
        use = {"type": "tool_use", "id": f"t{n}", "name": "wait_agent", "input": {"chat_id": "none"}}
        a = ChatMessage.objects.create(chat=chat, role="assistant", content=[use], context_id=q.id)
        result = {
            "type": "tool_result",
            "tool_use_id": f"t{n}",
            "content": [{"type": "text", "text": "r" * 4 * filler}],
        }
        r = ChatMessage.objects.create(chat=chat, role="tool", content=[result])
        ChatMessage.objects.create(
            chat=chat, role="assistant", content=[{"type": "text", "text": f"A{n}"}], context_id=r.id
        )
        assert a.id < r.id


def is_summary_request(request: RecordedRequest) -> bool:
    return request.json.get("system") == SUMMARY_SYSTEM


def assert_tool_pairs_whole(messages: list[dict[str, Any]]) -> None:
    """Every tool_result answers a tool_use of the assistant turn just before it, and every tool_use is answered."""
    for index, message in enumerate(messages):
        uses = {
            b["id"]
            for b in message["content"]
            if message["role"] == "assistant" and b.get("type") == "tool_use"
        }
        if uses:
            answered = {
                b["tool_use_id"] for b in messages[index + 1]["content"] if b.get("type") == "tool_result"
            }
            assert uses <= answered
        if message["role"] == "user":
            results = {b["tool_use_id"] for b in message["content"] if b.get("type") == "tool_result"}
            before = messages[index - 1] if index else {"content": []}
            assert results <= {b.get("id") for b in before["content"]}


def test_a_long_history_is_compacted_before_the_request_that_would_pass_the_threshold(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    ChatModelConfig.objects.filter(model=ROOT_MODEL).update(context_limit=10_000)  # compact above 7,000
    chat = services.chat_create(owner=user, title="Long")
    seed_history(chat, exchanges=8, filler=500)  # ~8,000 tokens
    summaries: list[RecordedRequest] = []

    def script(request: RecordedRequest) -> Reply:
        if is_summary_request(request):
            summaries.append(request)
            return reply(text("The person asked eight questions; each was answered."))
        return reply(text("Answer to the new question."))

    fake.handle_with(script)
    services.chat_send_message(chat=chat, content="A new question")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)
    assert chat.status == Chat.Status.WAITING, chat.last_error

    assert len(summaries) == 1 and "Q0" in summaries[0].json["messages"][0]["content"][0]["text"]
    summary = chat.messages.get(role=ChatMessage.Role.SYSTEM)
    part = summary.content[0]
    assert (
        part["type"] == "summary" and part["text"] == "The person asked eight questions; each was answered."
    )
    assert summary.usage and summary.cost_usd > 0  # the summary call is paid for like any other
    request = next(r for r in fake.message_requests if not is_summary_request(r)).json["messages"]
    assert request[0]["role"] == "user" and request[0]["content"][0]["text"].startswith(SUMMARY_HEADING)
    assert_tool_pairs_whole(request)
    assert request[-1]["content"][-1]["text"] == "A new question"
    sent_text = json.dumps(request)
    assert "Q0 " not in sent_text and "Q7 " in sent_text  # the oldest replaced, the newest kept
    # The summary is a visible message of the chat.
    listed = api.get(f"{API}/chats/{chat.pk}/messages").json()
    assert any(m["role"] == "system" and m["content"][0]["type"] == "summary" for m in listed)


def test_compact_on_demand_stores_a_summary_the_next_request_carries(
    worker: Any, user: User, fake: FakeAnthropic, anthropic_provider: ChatProvider, api: APIClient
) -> None:
    chat = services.chat_create(owner=user, title="Short")
    seed_history(chat, exchanges=3, filler=10)
    fake.handle_with(
        lambda request: reply(
            text("Summary on demand.") if is_summary_request(request) else text("Next answer.")
        )
    )

    response = api.post(f"{API}/chats/{chat.pk}/compact")
    assert response.status_code == 202, response.content
    wait_until(
        lambda: chat.messages.filter(role=ChatMessage.Role.SYSTEM).exists(), timeout=60, what="the summary"
    )
    chat.refresh_from_db()
    assert chat.compacting_since is None and chat.status == Chat.Status.WAITING

    services.chat_send_message(chat=chat, content="Continue")
    wait_status(chat, Chat.Status.WAITING, Chat.Status.ERROR, timeout=60)
    request = fake.message_requests[-1].json["messages"]
    assert request[0]["content"][0]["text"] == f"{SUMMARY_HEADING}\n\nSummary on demand."
    assert_tool_pairs_whole(request)
