"""Benchmark of what a computer-use run costs, against the fake Anthropic server's prompt cache.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/bench_cost.py

A scripted 30-step computer-use run (a screenshot each step, 1280x800: 1,366 tokens each) goes through
the real turn engine, in-process (the agent call replaced by an instant stub returning a new screenshot
each step: only the agent is replaced), with the fake server computing usage and prompt caching by
Anthropic's rules (tests/support/fake_anthropic.py). Costs use the computer-use model's prices
(CHATDESK_COMPUTER_USE_MODEL's model config).

Figures:
- cache-read share of the input tokens of the requests after step 4 (target >= 70 %);
- the most screenshots in one request (target <= KEEP + BATCH);
- input tokens per step (all kinds), and price-weighted tokens per step (each kind of token weighted by
  its price relative to the input price: what a step costs, in uncached input tokens);
- the run's cost against the same run with caching off (the same requests, every input token billed as
  input), as a ratio (target <= 0.4);
- for comparison, without a target: the same figures with screenshots pruned one a step (batch 1, the
  shape before issue #13).

Prints a table (figure, target, pass/fail); always exits 0. Uses its own Celery queue and channel prefix
on the configured database and Redis (it creates a user `bench`).
"""

from __future__ import annotations

import os
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = uuid.uuid4().hex[:8]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")
os.environ["CHATDESK_CELERY_QUEUE"] = f"chatdesk-bench-{RUN}"
os.environ["CHATDESK_CHANNELS_PREFIX"] = f"chatdesk-bench-{RUN}"
os.environ["ANTHROPIC_API_KEY"] = ""

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402

from chats.models import Chat, ChatProvider  # noqa: E402
from chats.pricing import Prices, prices_for  # noqa: E402
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, png_bytes, reply, text, tool_use  # noqa: E402

STEPS = 30
SCREEN = (1280, 800)
AFTER = 4  # the share is measured on the requests after this step (the run's start writes the cache)
KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def main() -> int:
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    model = settings.CHATDESK_COMPUTER_USE_MODEL
    prices = prices_for(model)
    keep = settings.CHATDESK_KEEP_SCREENSHOTS
    batch = settings.CHATDESK_SCREENSHOT_PRUNE_BATCH
    print(f"{STEPS}-step run of {model} at ${prices.input}/{prices.output}/{prices.cache_write}/{prices.cache_read} "
          f"per million tokens (input/output/cache write/cache read); keep {keep}, batch {batch}")  # fmt: skip

    cached = run(user, cache=True, batch=batch)
    uncached = run(user, cache=False, batch=batch)
    per_step = run(user, cache=True, batch=1)

    rows: list[tuple[str, str, str, bool | None]] = []
    share = read_share(cached[AFTER:])
    rows.append((f"cache-read share of input after step {AFTER}", f"{share:.1%}", ">= 70 %", share >= 0.7))
    images = max(u["images"] for u in cached)
    rows.append(
        ("most screenshots in one request", str(images), f"<= {keep + batch}", images <= keep + batch)
    )
    rows.append(("input tokens per step (all kinds)", f"{input_per_step(cached):,.0f}", "", None))
    weighted = weighted_per_step(cached, prices)
    rows.append(("price-weighted tokens per step", f"{weighted:,.0f}", "", None))
    ratio = cost(cached, prices) / cost(uncached, prices)
    rows.append(("run cost vs the same run with caching off", f"{ratio:.2f}", "<= 0.4", ratio <= 0.4))
    rows.append(("run cost, caching on", f"${cost(cached, prices):.4f}", "", None))
    rows.append(("run cost, caching off", f"${cost(uncached, prices):.4f}", "", None))
    rows.append(
        (
            "batch 1 (before #13): cache-read share after step 4",
            f"{read_share(per_step[AFTER:]):.1%}",
            "",
            None,
        )
    )
    rows.append(("batch 1 (before #13): price-weighted tokens per step",
                 f"{weighted_per_step(per_step, prices):,.0f}", "", None))  # fmt: skip
    print()
    print(f"{'figure':<56} {'value':>12} {'target':>10}  result")
    for name, value, target, ok in rows:
        result = "" if ok is None else ("pass" if ok else "FAIL")
        print(f"{name:<56} {value:>12} {target:>10}  {result}")
    return 0


def run(user: Any, *, cache: bool, batch: int) -> list[dict[str, int]]:
    """Run the scripted computer-use turn; return each model request's usage (and its screenshot count)."""
    import desktop.client
    from agents.daemon.client import ActionResult
    from agents.models import WorkspaceAgent
    from chats import services
    from chats.engine import turn_execute
    from chats.transitions import chat_transition

    shots = iter(range(10_000))

    def instant_agent(agent: Any, params: dict[str, Any]) -> ActionResult:
        return ActionResult(
            output=None, png=png_bytes(*SCREEN, seed=next(shots)), width=SCREEN[0], height=SCREEN[1]
        )

    def answer(request: RecordedRequest) -> Any:
        done = sum(1 for m in request.json["messages"] if m["role"] == "assistant")
        if done >= STEPS:
            return reply(text("Done: the screen was looked at 30 times."), usage={"output_tokens": 20})
        return reply(tool_use("screenshot", {}, toolset_name="computer"), usage={"output_tokens": 30})

    settings.CHATDESK_SCREENSHOT_PRUNE_BATCH = batch
    real_agent = desktop.client.run_action_sync
    desktop.client.run_action_sync = instant_agent
    try:
        with FakeAnthropic(cache=cache) as fake:
            fake.handle_with(answer)
            provider, _ = ChatProvider.objects.get_or_create(provider="anthropic")
            provider.base_url, provider.enabled = fake.base_url, True
            provider.set_api_key("bench-key")
            provider.save()
            agent, _ = WorkspaceAgent.objects.get_or_create(owner=user, name="bench-agent")
            agent.url, agent.display_width, agent.display_height, agent.last_seen = (
                "ws://127.0.0.1:9",
                *SCREEN,
                timezone.now(),
            )
            if not agent.server_credential_encrypted:
                agent.assign_new_token()
            agent.save()
            parent = Chat.objects.create(owner=user, workspace_agent=agent, model=settings.CHATDESK_MODEL,
                                         budget_usd=None)  # fmt: skip
            child = Chat.objects.create(
                owner=user,
                parent=parent,
                mode="computer_use",
                workspace_agent=agent,
                model=settings.CHATDESK_COMPUTER_USE_MODEL,
                system_prompt=services.computer_use().system_prompt("Look at the screen 30 times."),
            )
            chat_transition(chat_id=child.pk, to=Chat.Status.PENDING, expect=[Chat.Status.WAITING])
            services.message_append(
                chat=child, role="user", content=[services.text_part("Look at the screen.")]
            )
            turn_execute(chat_id=str(child.pk))
            child.refresh_from_db()
            if child.status != Chat.Status.COMPLETED:
                raise RuntimeError(f"the run did not complete: {child.status} {child.last_error}")
            return [{**(r.usage or {}), "images": count_images(r)} for r in fake.message_requests]
    finally:
        desktop.client.run_action_sync = real_agent


def count_images(request: RecordedRequest) -> int:
    found = 0
    for message in request.json["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            inner = block.get("content") if isinstance(block.get("content"), list) else []
            found += sum(1 for item in [block, *inner] if item.get("type") == "image")
    return found


def read_share(usages: list[dict[str, int]]) -> float:
    return sum(u["cache_read_input_tokens"] for u in usages) / sum(sum(u[k] for k in KEYS) for u in usages)


def input_per_step(usages: list[dict[str, int]]) -> float:
    return sum(sum(u[k] for k in KEYS) for u in usages) / len(usages)


def cost(usages: list[dict[str, int]], prices: Prices) -> Decimal:
    return sum((prices.cost(u) for u in usages), Decimal(0))


def weighted_per_step(usages: list[dict[str, int]], prices: Prices) -> float:
    return float(cost(usages, prices) * 1_000_000 / prices.input) / len(usages)


if __name__ == "__main__":
    sys.exit(main())
