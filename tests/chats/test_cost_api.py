"""Cost and budgets at the edges: the chat JSON, budget input, resume and compact refusals, prices,
the admin, and the prices that ship as data."""

from __future__ import annotations

import importlib
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from chats.models import Chat, ChatMessage, ChatModelConfig, UserBudget
from chats.pricing import FALLBACK_PRICES, Prices, budget_block, format_usd, prices_for
from chats.services import message_append
from tests.factories import ChatFactory

if TYPE_CHECKING:
    from rest_framework.response import _MonkeyPatchedResponse

pytestmark = pytest.mark.django_db

API = "/api/experimental"


def post_json(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.post(path, json.dumps(body), content_type="application/json")


def patch_json(client: APIClient, path: str, body: object) -> _MonkeyPatchedResponse:
    return client.patch(path, json.dumps(body), content_type="application/json")


# --- budgets in the API ------------------------------------------------------------------------------


def test_a_new_root_chat_gets_the_default_budget_or_the_one_given(api: APIClient) -> None:
    default = post_json(api, f"{API}/chats", {}).json()
    assert default["budget_usd"] == f"{settings.CHATDESK_CHAT_BUDGET_USD:.4f}"
    assert (default["cost_usd"], default["tree_cost_usd"], default["tree_usage"]) == (
        "0.00000000",
        "0.00000000",
        {},
    )
    assert post_json(api, f"{API}/chats", {"budget_usd": "2.5"}).json()["budget_usd"] == "2.5000"
    assert post_json(api, f"{API}/chats", {"budget_usd": None}).json()["budget_usd"] is None


@pytest.mark.parametrize("bad", [-1, "-0.01", "lots", "NaN", "Infinity", True, [], {"usd": 1}, "1.00001"])
def test_a_bad_budget_is_a_400(api: APIClient, user: User, bad: Any) -> None:
    chat = ChatFactory.create(owner=user, budget_usd=Decimal(3))

    created = post_json(api, f"{API}/chats", {"budget_usd": bad})
    patched = patch_json(api, f"{API}/chats/{chat.pk}", {"budget_usd": bad})

    assert created.status_code == 400 and "budget_usd" in created.json()
    assert patched.status_code == 400 and "budget_usd" in patched.json()
    chat.refresh_from_db()
    assert chat.budget_usd == Decimal(3)


def test_patch_sets_and_clears_the_budget_of_a_root_only(api: APIClient, user: User) -> None:
    root = ChatFactory.create(owner=user)
    child = ChatFactory.create(owner=user, parent=root)

    assert patch_json(api, f"{API}/chats/{root.pk}", {"budget_usd": 7}).json()["budget_usd"] == "7.0000"
    assert patch_json(api, f"{API}/chats/{root.pk}", {"budget_usd": None}).json()["budget_usd"] is None
    refused = patch_json(api, f"{API}/chats/{child.pk}", {"budget_usd": 7})
    assert refused.status_code == 400 and "root" in refused.json()["detail"]


def test_another_users_chat_cannot_be_resumed_compacted_or_budgeted(other_api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user, status=Chat.Status.PAUSED)
    assert other_api.post(f"{API}/chats/{chat.pk}/resume").status_code == 404
    assert other_api.post(f"{API}/chats/{chat.pk}/compact").status_code == 404
    assert patch_json(other_api, f"{API}/chats/{chat.pk}", {"budget_usd": 1}).status_code == 404


# --- resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Chat.Status.WAITING, Chat.Status.RUNNING, Chat.Status.COMPLETED])
def test_resume_of_a_chat_that_is_not_paused_is_a_409(api: APIClient, user: User, status: str) -> None:
    chat = ChatFactory.create(owner=user, status=status)
    response = api.post(f"{API}/chats/{chat.pk}/resume")
    assert response.status_code == 409
    assert (
        response.json()["detail"] == f"The chat is not paused (it is {status}): there is nothing to resume."
    )


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        (Chat.PausedReason.TAKEN_OVER, "hand it back"),
        (Chat.PausedReason.NEEDS_HELP, "asked a person for help"),
        (Chat.PausedReason.AWAITING_APPROVAL, "approve or deny"),
    ],
)
def test_resume_says_why_it_cannot_lift_a_pause_only_a_person_can(
    api: APIClient, user: User, reason: str, says: str
) -> None:
    chat = ChatFactory.create(owner=user, status=Chat.Status.PAUSED, paused_reason=reason)
    response = api.post(f"{API}/chats/{chat.pk}/resume")
    assert response.status_code == 409 and says in response.json()["detail"]
    chat.refresh_from_db()
    assert chat.status == Chat.Status.PAUSED


def test_resume_of_an_interrupted_chat_queues_its_turn(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user, status=Chat.Status.PAUSED)
    response = api.post(f"{API}/chats/{chat.pk}/resume")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["paused_reason"]) == ("pending", None)
    assert not chat.messages.exists()


def test_resume_refuses_while_the_budget_is_still_reached(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(
        owner=user,
        status=Chat.Status.PAUSED,
        paused_reason=Chat.PausedReason.BUDGET,
        budget_usd=Decimal(1),
        tree_cost_usd=Decimal("1.25"),
    )
    response = api.post(f"{API}/chats/{chat.pk}/resume")
    assert response.status_code == 409
    assert response.json()["detail"].startswith(
        "Still paused: this chat reached its budget of $1.00 ($1.25 spent)"
    )
    patch_json(api, f"{API}/chats/{chat.pk}", {"budget_usd": 2})
    assert api.post(f"{API}/chats/{chat.pk}/resume").json()["status"] == "pending"


# --- compact -----------------------------------------------------------------------------------------


def test_compact_with_too_little_history_is_a_409_with_the_reason(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user)
    for n in range(4):
        ChatMessage.objects.create(chat=chat, role="user" if n % 2 == 0 else "assistant", content=[])
    response = api.post(f"{API}/chats/{chat.pk}/compact")
    assert response.status_code == 409
    assert response.json()["detail"].startswith("There is too little history to compact")


def test_compact_when_the_budget_is_reached_is_a_409(api: APIClient, user: User) -> None:
    chat = ChatFactory.create(owner=user, budget_usd=Decimal(0))
    for n in range(8):
        ChatMessage.objects.create(chat=chat, role="user" if n % 2 == 0 else "assistant", content=[])
    response = api.post(f"{API}/chats/{chat.pk}/compact")
    assert response.status_code == 409 and "budget" in response.json()["detail"]


# --- prices and costs --------------------------------------------------------------------------------


def test_a_call_costs_its_tokens_at_the_models_prices_and_sums_up_the_tree(user: User) -> None:
    ChatModelConfig.objects.update_or_create(
        model="priced-model",
        defaults={
            "input_price": 3,
            "output_price": 15,
            "cache_write_price": "3.75",
            "cache_read_price": "0.3",
        },
    )
    root = ChatFactory.create(owner=user, model="priced-model")
    child = ChatFactory.create(owner=user, parent=root, model="priced-model")
    usage = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
    }
    # 1000 x 3 + 100 x 15 + 2000 x 3.75 + 10000 x 0.3 = 15,000 per million: $0.015
    for chat in (root, child, child):
        message = message_append(chat=chat, role="assistant", content=[], usage=usage, model="priced-model")
        assert message.cost_usd == Decimal("0.015")
    root.refresh_from_db()
    child.refresh_from_db()
    assert (root.cost_usd, child.cost_usd, root.tree_cost_usd) == (
        Decimal("0.015"),
        Decimal("0.03"),
        Decimal("0.045"),
    )
    assert child.usage["cache_read_input_tokens"] == 20000 and root.tree_usage["input_tokens"] == 3000


def test_a_model_without_a_price_costs_the_most_expensive_known_price_never_nothing() -> None:
    ChatModelConfig.objects.all().delete()
    assert prices_for("no-such-model") == FALLBACK_PRICES  # nothing known: the shipped maximum
    ChatModelConfig.objects.create(
        model="cheap", input_price=1, output_price=2, cache_write_price=1, cache_read_price=0
    )
    ChatModelConfig.objects.create(
        model="dear", input_price=9, output_price=3, cache_write_price=None, cache_read_price=1
    )
    assert prices_for("no-such-model") == Prices(Decimal(9), Decimal(3), Decimal(1), Decimal(1))
    assert prices_for("dear").cache_write == Decimal(1)  # its unknown price: the dearest known
    assert prices_for("cheap") == Prices(Decimal(1), Decimal(2), Decimal(1), Decimal(0))


def test_the_monthly_limit_counts_this_months_spending(user: User) -> None:
    chat = ChatFactory.create(owner=user, budget_usd=None)
    ChatMessage.objects.create(chat=chat, role="assistant", content=[], cost_usd=Decimal("0.75"))
    UserBudget.objects.create(user=user, monthly_limit_usd=Decimal(1))
    assert budget_block(chat) is None
    ChatMessage.objects.create(chat=chat, role="assistant", content=[], cost_usd=Decimal("0.25"))
    assert budget_block(chat) == (
        "Paused: your monthly limit of $1.00 is reached ($1.00 spent this month). "
        "An administrator can raise it; then resume to continue."
    )


def test_amounts_read_well() -> None:
    assert [format_usd(Decimal(v)) for v in ("0", "0.5", "0.0123", "12.345", "0.00001")] == [
        "$0.00", "$0.50", "$0.0123", "$12.35", "$0.0000",
    ]  # fmt: skip


def test_the_shipped_prices_cover_the_default_models_and_keep_what_an_admin_set() -> None:
    migration = importlib.import_module("chats.migrations.0007_default_prices")
    ChatModelConfig.objects.all().delete()
    ChatModelConfig.objects.create(model=settings.CHATDESK_MODEL, input_price=Decimal(7))

    migration.add_prices(apps, None)

    for model in (settings.CHATDESK_MODEL, settings.CHATDESK_COMPUTER_USE_MODEL, "claude-haiku-5-5"):
        config = ChatModelConfig.objects.get(model=model)
        assert None not in (
            config.input_price,
            config.output_price,
            config.cache_write_price,
            config.cache_read_price,
        )
    assert ChatModelConfig.objects.get(model=settings.CHATDESK_MODEL).input_price == Decimal(7)
    opus = ChatModelConfig.objects.get(model="claude-opus-5-5")
    assert (opus.input_price, opus.output_price, opus.cache_write_price, opus.cache_read_price) == (
        Decimal(4), Decimal(20), Decimal(5), Decimal("0.2"),
    )  # fmt: skip


# --- admin -------------------------------------------------------------------------------------------


def test_admin_refuses_a_negative_price(admin_client) -> None:
    response = admin_client.post(
        "/admin/chats/chatmodelconfig/add/",
        {"provider": "anthropic", "model": "claude-test-price", "enabled": "on", "context_limit": "200000",
         "options": "{}", "input_price": "-1", "output_price": "2"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 0" in response.content.decode()
    assert not ChatModelConfig.objects.filter(model="claude-test-price").exists()
    ok = admin_client.post(
        "/admin/chats/chatmodelconfig/add/",
        {"provider": "anthropic", "model": "claude-test-price", "enabled": "on", "context_limit": "200000",
         "options": "{}", "input_price": "1.5", "output_price": "2", "cache_write_price": "",
         "cache_read_price": "0"},
    )  # fmt: skip
    assert ok.status_code == 302
    config = ChatModelConfig.objects.get(model="claude-test-price")
    assert (config.input_price, config.cache_write_price, config.cache_read_price) == (
        Decimal("1.5"),
        None,
        0,
    )


def test_admin_sets_a_users_monthly_limit(admin_client, user: User) -> None:
    refused = admin_client.post("/admin/chats/userbudget/add/", {"user": user.pk, "monthly_limit_usd": "-5"})
    assert refused.status_code == 200 and not UserBudget.objects.exists()
    added = admin_client.post("/admin/chats/userbudget/add/", {"user": user.pk, "monthly_limit_usd": "25"})
    assert added.status_code == 302
    assert UserBudget.objects.get(user=user).monthly_limit_usd == Decimal(25)
    listing = admin_client.get("/admin/chats/userbudget/").content.decode()
    assert "alice" in listing and "Spent this month" in listing
