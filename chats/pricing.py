"""What model calls cost, and whether a chat may make the next one (SPEC §10).

Prices are USD per million tokens on ChatModelConfig (input, output, cache write, cache read); defaults
for known model names ship as data (migration ``0007_default_prices``) and admins edit them. A model
without a known price is counted at the most expensive known price (per kind of token), never as free.

A message's cost is computed once, when its model call is recorded, at the prices of that moment; a chat
sums its messages (``cost_usd``) and a root chat its whole tree (``tree_cost_usd``).

Budgets: a root chat's ``budget_usd`` caps its tree; a person's ``UserBudget.monthly_limit_usd`` caps
everything they spend in a calendar month (UTC). :func:`budget_block` says, before a model call, whether
it may start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Max, Sum
from django.utils import timezone

from chats.models import Chat, ChatMessage, ChatModelConfig

__all__ = [
    "FALLBACK_PRICES",
    "Prices",
    "budget_block",
    "format_usd",
    "month_start",
    "prices_for",
    "usage_cost",
    "user_month_spent",
]

MILLION = Decimal(1_000_000)
COST_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_write: Decimal
    cache_read: Decimal

    def cost(self, usage: dict[str, Any]) -> Decimal:
        """Return the USD cost of one call's ``usage`` (the API's four token counts)."""

        def tokens(key: str) -> Decimal:
            value = usage.get(key)
            return (
                Decimal(value)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0
                else Decimal(0)
            )

        total = (
            tokens("input_tokens") * self.input
            + tokens("output_tokens") * self.output
            + tokens("cache_creation_input_tokens") * self.cache_write
            + tokens("cache_read_input_tokens") * self.cache_read
        )
        return (total / MILLION).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


#: Used when no model config has a price at all (the most expensive of the prices that ship as data).
FALLBACK_PRICES = Prices(
    input=Decimal(10), output=Decimal(50), cache_write=Decimal("12.5"), cache_read=Decimal(1)
)
_FIELDS = {
    "input": "input_price",
    "output": "output_price",
    "cache_write": "cache_write_price",
    "cache_read": "cache_read_price",
}


def _most_expensive() -> dict[str, Decimal]:
    known = ChatModelConfig.objects.aggregate(**{kind: Max(field) for kind, field in _FIELDS.items()})
    return {
        kind: known[kind] if known[kind] is not None else getattr(FALLBACK_PRICES, kind) for kind in _FIELDS
    }


def prices_for(model: str, config: ChatModelConfig | None = None) -> Prices:
    """Return the prices of ``model``: its config's (``config`` when it is that model's), else the most
    expensive known price for each kind of token the config does not price."""
    if config is None or config.model != model:
        config = ChatModelConfig.objects.filter(model=model).first()
    given: dict[str, Decimal | None] = {
        kind: getattr(config, field) if config is not None else None for kind, field in _FIELDS.items()
    }
    fallback = _most_expensive() if any(value is None for value in given.values()) else {}
    values = {kind: value if value is not None else fallback[kind] for kind, value in given.items()}
    return Prices(**values)


def usage_cost(usage: dict[str, Any], *, model: str, config: ChatModelConfig | None = None) -> Decimal:
    return prices_for(model, config).cost(usage)


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def user_month_spent(user_id: int) -> Decimal:
    """Return what ``user_id``'s chats spent on model calls since the start of this month (UTC)."""
    spent = ChatMessage.objects.filter(chat__owner_id=user_id, created_at__gte=month_start()).aggregate(
        total=Sum("cost_usd")
    )["total"]
    return spent or Decimal(0)


def format_usd(value: Decimal) -> str:
    """Return ``value`` for a person: in cents ("$12.34", "$0.50"), or to 1/100 cent when that matters
    ("$0.0123")."""
    cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    places = Decimal("0.01") if abs(value) >= 1 or cents == value else Decimal("0.0001")
    return f"${value.quantize(places, rounding=ROUND_HALF_UP)}"


def budget_block(chat: Chat) -> str | None:
    """Return why ``chat`` may not start a model call now (its tree's budget or its owner's monthly limit
    is reached), as a sentence for a person with the amounts; None when it may. One query, plus one
    when the owner has a monthly limit."""
    row = (
        Chat.objects.filter(pk=chat.root_id or chat.pk)
        .values_list("budget_usd", "tree_cost_usd", "owner__budget__monthly_limit_usd")
        .first()
    )
    if row is None:
        return None
    budget, spent, monthly_limit = row
    if budget is not None and spent >= budget:
        return (
            f"Paused: this chat reached its budget of {format_usd(budget)} ({format_usd(spent)} spent). "
            "Raise the budget and resume to continue."
        )
    if monthly_limit is not None:
        month = user_month_spent(chat.owner_id)
        if month >= monthly_limit:
            return (
                f"Paused: your monthly limit of {format_usd(monthly_limit)} is reached "
                f"({format_usd(month)} spent this month). An administrator can raise it; then resume to continue."
            )
    return None
