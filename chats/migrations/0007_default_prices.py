"""Prices of known Claude models (USD per million tokens), and the cost of messages recorded before.

Sources: Anthropic's pricing page and model overviews (platform.claude.com/docs/en/about-claude/pricing,
…/models/*/overview), November 2026. "Cache write" is the 5-minute entry, the only kind chatdesk writes.
Claude Haiku 5.5 is priced for prompts up to 100,000 tokens (longer prompts cost 5x).

A model config that already exists keeps what an admin set; only its empty prices are filled in. Later
price changes are new migrations (or admin edits), never edits of this table.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import migrations

# model: (display name, context limit, input, output, cache write, cache read)
PRICES: dict[str, tuple[str, int, str, str, str, str]] = {
    "claude-fable-5-2": ("Claude Fable 5.2", 1_000_000, "8", "40", "10", "0.20"),
    "claude-fable-5-1": ("Claude Fable 5.1", 1_000_000, "10", "50", "12.50", "0.25"),
    "claude-fable-5": ("Claude Fable 5", 1_000_000, "10", "50", "12.50", "1.00"),
    "claude-opus-5-5": ("Claude Opus 5.5", 1_000_000, "4", "20", "5", "0.20"),
    "claude-opus-5": ("Claude Opus 5", 1_000_000, "5", "25", "6.25", "0.50"),
    "claude-sonnet-5-5": ("Claude Sonnet 5.5", 1_000_000, "2", "10", "2.50", "0.10"),
    "claude-sonnet-5": ("Claude Sonnet 5", 1_000_000, "2", "10", "2.50", "0.20"),
    "claude-haiku-5-5": ("Claude Haiku 5.5", 1_000_000, "0.10", "0.50", "0.125", "0.01"),
    "claude-opus-4-8": ("Claude Opus 4.8", 200_000, "5", "25", "6.25", "0.50"),
    "claude-opus-4-7": ("Claude Opus 4.7", 200_000, "5", "25", "6.25", "0.50"),
    "claude-opus-4-6": ("Claude Opus 4.6", 200_000, "5", "25", "6.25", "0.50"),
    "claude-opus-4-5": ("Claude Opus 4.5", 200_000, "5", "25", "6.25", "0.50"),
    "claude-sonnet-4-6": ("Claude Sonnet 4.6", 200_000, "3", "15", "3.75", "0.30"),
    "claude-haiku-4-5": ("Claude Haiku 4.5", 200_000, "1", "5", "1.25", "0.10"),
}
FIELDS = ("input_price", "output_price", "cache_write_price", "cache_read_price")
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")


def add_prices(apps: Any, schema_editor: Any) -> None:
    ChatModelConfig = apps.get_model("chats", "ChatModelConfig")
    for model, (display, context, *prices) in PRICES.items():
        config = ChatModelConfig.objects.filter(provider="anthropic", model=model).first()
        if config is None:
            config = ChatModelConfig(
                provider="anthropic", model=model, display_name=display, context_limit=context, enabled=True
            )
        for field, price in zip(FIELDS, prices, strict=True):
            if getattr(config, field) is None:
                setattr(config, field, Decimal(price))
        config.save()
    backfill_costs(apps)


def backfill_costs(apps: Any) -> None:
    """Give messages recorded before prices existed their cost, and chats and trees their sums."""
    ChatModelConfig = apps.get_model("chats", "ChatModelConfig")
    ChatMessage = apps.get_model("chats", "ChatMessage")
    Chat = apps.get_model("chats", "Chat")
    table = {c.model: [getattr(c, f) for f in FIELDS] for c in ChatModelConfig.objects.all()}
    fallback = [max((row[i] for row in table.values() if row[i] is not None), default=Decimal(0)) for i in range(4)]
    chat_cost: dict[Any, Decimal] = defaultdict(Decimal)
    for message in ChatMessage.objects.exclude(usage={}).only("id", "chat_id", "usage", "model").iterator():
        prices = [p if p is not None else fallback[i] for i, p in enumerate(table.get(message.model, [None] * 4))]
        tokens = [message.usage.get(key) if isinstance(message.usage.get(key), int) else 0 for key in USAGE_KEYS]
        cost = (sum(Decimal(t) * p for t, p in zip(tokens, prices, strict=True)) / MILLION).quantize(
            QUANTUM, rounding=ROUND_HALF_UP
        )
        if cost:
            ChatMessage.objects.filter(pk=message.pk).update(cost_usd=cost)
            chat_cost[message.chat_id] += cost
    tree_cost: dict[Any, Decimal] = defaultdict(Decimal)
    tree_usage: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for chat in Chat.objects.only("id", "root_id", "usage").iterator():
        cost = chat_cost.get(chat.pk, Decimal(0))
        if cost:
            Chat.objects.filter(pk=chat.pk).update(cost_usd=cost)
        tree_cost[chat.root_id] += cost
        for key, value in (chat.usage or {}).items():
            if isinstance(value, int):
                tree_usage[chat.root_id][key] += value
    for root_id, usage in tree_usage.items():
        Chat.objects.filter(pk=root_id).update(tree_usage=dict(usage), tree_cost_usd=tree_cost[root_id])


class Migration(migrations.Migration):
    dependencies = [("chats", "0006_cost_usage_budgets")]

    operations = [migrations.RunPython(add_prices, migrations.RunPython.noop)]
