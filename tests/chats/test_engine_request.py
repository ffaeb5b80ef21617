"""Request payload shaping: screenshots leave in batches and caching breakpoints keep the prefix cached.

The last tests send the shapes of a 30-step computer-use run to the fake's prompt cache (Anthropic's
rules): most of the input must be read from the cache once the run is under way.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from chats.engine.request import (
    MAX_CACHE_BREAKPOINTS,
    OMITTED_SCREENSHOT_TEXT,
    add_cache_breakpoints,
    images_to_drop,
    json_copy,
    prune_screenshots,
)
from tests.support.fake_anthropic import PromptCache, png_bytes

EPHEMERAL = {"type": "ephemeral"}
OMITTED = {"type": "text", "text": OMITTED_SCREENSHOT_TEXT}


def image(tag: str) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": tag}}


def tool_result(tool_use_id: str, *content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": list(content)}


def step(n: int) -> list[dict[str, Any]]:
    """One computer-use step: the assistant's tool_use and the user's tool_result with a screenshot."""
    return [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": f"t{n}", "name": "computer", "input": {"action": "screenshot"}}
            ],
        },
        {
            "role": "user",
            "content": [tool_result(f"t{n}", {"type": "text", "text": f"step {n}"}, image(f"img{n}"))],
        },
    ]


def conversation(steps: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "Do the task"}]}]
    for n in range(1, steps + 1):
        messages.extend(step(n))
    return messages


def images_in(messages: list[dict[str, Any]]) -> list[str]:
    found = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, list):
            continue
        for block in content:
            if block["type"] == "image":
                found.append(block["source"]["data"])
            elif block["type"] == "tool_result" and isinstance(block.get("content"), list):
                found.extend(item["source"]["data"] for item in block["content"] if item["type"] == "image")
    return found


def count_breakpoints(value: Any) -> int:
    return json.dumps(value).count('"cache_control"')


# --- json_copy -----------------------------------------------------------------------------------


def test_json_copy_gives_new_containers_with_the_same_content() -> None:
    messages = conversation(3)

    copied = json_copy(messages)

    assert copied == messages
    result = copied[2]["content"][0]
    assert result is not messages[2]["content"][0]
    assert result["content"] is not messages[2]["content"][0]["content"]
    result["content"].clear()  # changing the copy leaves the original as it was
    copied[1]["content"][0]["input"]["action"] = "left_click"
    assert messages == conversation(3)


# --- prune_screenshots ---------------------------------------------------------------------------


def test_keeps_only_the_newest_screenshots() -> None:
    messages = conversation(5)

    pruned = prune_screenshots(messages, keep=3)

    assert images_in(pruned) == ["img3", "img4", "img5"]
    assert pruned[2]["content"][0] == tool_result("t1", {"type": "text", "text": "step 1"}, OMITTED)
    assert pruned[4]["content"][0] == tool_result("t2", {"type": "text", "text": "step 2"}, OMITTED)


def test_does_not_mutate_the_input() -> None:
    messages = conversation(4)
    before = copy.deepcopy(messages)

    prune_screenshots(messages, keep=1)

    assert messages == before


def test_keep_zero_replaces_every_image_and_tool_results_stay_valid() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image("top")]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "computer", "input": {}}]},
        {"role": "user", "content": [tool_result("a", image("only"))]},
    ]

    pruned = prune_screenshots(messages, keep=0)

    assert images_in(pruned) == []
    assert pruned[0]["content"] == [{"type": "text", "text": "look"}, OMITTED]
    assert pruned[2]["content"] == [{"type": "tool_result", "tool_use_id": "a", "content": [OMITTED]}]


def test_no_images_is_unchanged() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "plain string content"},
        {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        {"role": "user", "content": [tool_result("x", {"type": "text", "text": "ok"})]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "y", "content": "a string"}]},
    ]

    assert prune_screenshots(messages, keep=0) == messages


def test_keep_more_than_present_keeps_all() -> None:
    messages = conversation(2)

    assert prune_screenshots(messages, keep=10) == messages


def test_images_in_one_message_are_counted_newest_last() -> None:
    messages = [
        {
            "role": "user",
            "content": [tool_result("a", image("a1"), image("a2")), tool_result("b", image("b1"))],
        },
        {"role": "user", "content": [image("top1"), image("top2")]},
    ]

    pruned = prune_screenshots(messages, keep=3)

    assert images_in(pruned) == ["b1", "top1", "top2"]
    assert pruned[0]["content"][0]["content"] == [OMITTED, OMITTED]


def test_negative_keep_is_an_error() -> None:
    with pytest.raises(ValueError):
        prune_screenshots([], keep=-1)


def test_images_leave_in_batches() -> None:
    # keep 3, batch 10: all stay up to 12 images; the 13th sends 10 away at once; again at 23.
    assert [images_to_drop(total, 3, 10) for total in (0, 3, 12, 13, 14, 22, 23, 30)] == [
        0, 0, 0, 10, 10, 10, 20, 20,
    ]  # fmt: skip
    assert max(total - images_to_drop(total, 3, 10) for total in range(100)) == 3 + 10 - 1
    assert [images_to_drop(total, 3) for total in (2, 3, 4, 9)] == [0, 0, 1, 6]  # batch 1: per step
    with pytest.raises(ValueError):
        images_to_drop(5, 3, 0)


def test_batched_pruning_changes_nothing_between_batches() -> None:
    # 12 images with keep 3 and batch 10: none leaves, so the request is the conversation as it is.
    assert prune_screenshots(conversation(12), keep=3, batch=10) == conversation(12)
    pruned = prune_screenshots(conversation(13), keep=3, batch=10)
    assert images_in(pruned) == ["img11", "img12", "img13"]
    # The next 9 steps keep the same 10 omitted screenshots: the prefix before img11 does not change.
    later = prune_screenshots(conversation(22), keep=3, batch=10)
    assert later[: len(pruned) - 6] == pruned[: len(pruned) - 6]
    assert images_in(later) == [f"img{n}" for n in range(11, 23)]


# --- add_cache_breakpoints -----------------------------------------------------------------------


def marked(messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Return (message index, block index) of every block carrying cache_control."""
    return [
        (m, b)
        for m, message in enumerate(messages)
        for b, block in enumerate(message["content"])
        if isinstance(block, dict) and "cache_control" in block
    ]


def test_breakpoints_on_system_and_the_last_two_user_turns() -> None:
    system = [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    tools: list[dict[str, Any]] = [{"name": "one", "input_schema": {}}, {"type": "computer_toolset_20260801"}]
    messages = conversation(3)

    new_system, new_tools, new_messages = add_cache_breakpoints(system, tools, messages)

    # The system prompt's breakpoint covers the tools before it (order: tools, system, messages).
    assert new_system == [
        {"type": "text", "text": "A"},
        {"type": "text", "text": "B", "cache_control": EPHEMERAL},
    ]
    assert new_tools == tools
    assert marked(new_messages) == [(4, 0), (6, 0)]  # the previous step's tool_result, the newest one
    assert count_breakpoints([new_system, new_tools, new_messages]) == 3


def test_without_a_system_prompt_the_last_tool_is_marked() -> None:
    _, new_tools, _ = add_cache_breakpoints(None, [{"name": "a", "input_schema": {}}], conversation(1))

    assert new_tools[-1]["cache_control"] == EPHEMERAL


def test_after_a_batch_the_block_before_the_oldest_screenshot_is_marked() -> None:
    pruned = prune_screenshots(conversation(13), keep=3, batch=10)

    _, _, new_messages = add_cache_breakpoints("S", [], pruned)

    # Messages: task, then (assistant, user) per step; img11 is in message 22, after step 11's tool_use.
    assert marked(new_messages) == [(21, 0), (24, 0), (26, 0)]
    assert new_messages[21]["content"][0]["type"] == "tool_use"
    assert count_breakpoints(new_messages) + 1 == MAX_CACHE_BREAKPOINTS


def test_inputs_are_not_mutated() -> None:
    system = [{"type": "text", "text": "A"}]
    tools = [{"name": "one", "input_schema": {}}]
    messages = conversation(2)
    before = copy.deepcopy((system, tools, messages))

    add_cache_breakpoints(system, tools, messages)

    assert (system, tools, messages) == before


def test_string_system_and_string_content_become_blocks() -> None:
    new_system, new_tools, new_messages = add_cache_breakpoints(
        "Be brief.", [], [{"role": "user", "content": "hello"}]
    )

    assert new_system == [{"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL}]
    assert new_tools == []
    assert new_messages == [
        {"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": EPHEMERAL}]}
    ]


def test_existing_breakpoints_are_replaced_so_the_limit_holds() -> None:
    messages = prune_screenshots(conversation(13), keep=3, batch=10)
    for message in messages:
        for block in message["content"]:
            block["cache_control"] = EPHEMERAL
            for item in block.get("content", []) if isinstance(block.get("content"), list) else []:
                item["cache_control"] = EPHEMERAL

    result = add_cache_breakpoints(
        [{"type": "text", "text": "S"}], [{"name": "t", "input_schema": {}}], messages
    )

    assert count_breakpoints(result) == MAX_CACHE_BREAKPOINTS


def test_empty_system_and_tools_leave_the_budget_to_messages() -> None:
    new_system, new_tools, new_messages = add_cache_breakpoints(None, None, conversation(5))

    assert new_system is None
    assert new_tools == []
    assert count_breakpoints(new_messages) == 2  # only the last two user messages are marked


def test_assistant_messages_are_not_marked_at_the_end() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
    ]

    _, _, new_messages = add_cache_breakpoints("", [], messages)

    assert new_messages[0]["content"][0]["cache_control"] == EPHEMERAL
    assert "cache_control" not in new_messages[1]["content"][0]


# --- the shapes against the prompt cache's rules ---------------------------------------------------

SYSTEM = "You are a computer use agent. " * 40  # ~300 tokens, like the computer-use system prompt
SCREEN = (1280, 800)  # 1,366 tokens a screenshot


def screenshot(n: int) -> dict[str, Any]:
    data = base64.b64encode(png_bytes(*SCREEN, seed=n)).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def run_steps(steps: int, *, keep: int, batch: int) -> list[dict[str, int]]:
    """Send the requests of a ``steps``-step computer-use run, shaped as the engine shapes them, to the
    fake's prompt cache; return each request's usage."""
    cache = PromptCache()
    images = [screenshot(n) for n in range(steps)]
    history: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": "Do the task"}]}]
    usages = []
    for n in range(steps + 1):
        shaped = prune_screenshots(history, keep, batch)
        system, tools, messages = add_cache_breakpoints(
            SYSTEM, [{"type": "computer_toolset_20260801"}], shaped
        )
        body = {"model": "claude-opus-5-5", "system": system, "tools": tools, "messages": messages}
        usages.append({**cache.usage(body), "images": len(images_in_request(messages))})
        history.append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": f"t{n}", "name": "screenshot", "input": {}}],
            }
        )
        if n < steps:
            result = tool_result(f"t{n}", {"type": "text", "text": f"step {n}"}, images[n])
            history.append({"role": "user", "content": [result]})
    return usages


def images_in_request(messages: list[dict[str, Any]]) -> list[Any]:
    return [
        item
        for message in messages
        for block in message["content"]
        for item in ([block] + (block["content"] if isinstance(block.get("content"), list) else []))
        if item.get("type") == "image"
    ]


def cache_read_share(usages: list[dict[str, int]]) -> float:
    read = sum(u["cache_read_input_tokens"] for u in usages)
    total = sum(
        u["cache_read_input_tokens"] + u["cache_creation_input_tokens"] + u["input_tokens"] for u in usages
    )
    return read / total


def test_batched_pruning_keeps_most_input_a_cache_read_over_a_long_run() -> None:
    usages = run_steps(30, keep=3, batch=10)

    assert cache_read_share(usages[4:]) >= 0.7
    assert max(u["images"] for u in usages) <= 3 + 10


def test_pruning_one_screenshot_a_step_loses_the_cache() -> None:
    """What the batches fix: each step turns one more image into text just before the breakpoints."""
    usages = run_steps(30, keep=3, batch=1)

    assert cache_read_share(usages[4:]) < 0.2
