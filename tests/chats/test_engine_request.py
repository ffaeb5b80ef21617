"""Request payload shaping: only recent screenshots go back to the model, and caching breakpoints are set."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from chats.engine.request import (
    MAX_CACHE_BREAKPOINTS,
    OMITTED_SCREENSHOT_TEXT,
    add_cache_breakpoints,
    prune_screenshots,
)

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


# --- add_cache_breakpoints -----------------------------------------------------------------------


def test_breakpoints_on_system_tools_and_recent_user_messages() -> None:
    system = [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    tools: list[dict[str, Any]] = [{"name": "one", "input_schema": {}}, {"type": "computer_toolset_20260801"}]
    messages = conversation(3)

    new_system, new_tools, new_messages = add_cache_breakpoints(system, tools, messages)

    assert new_system == [
        {"type": "text", "text": "A"},
        {"type": "text", "text": "B", "cache_control": EPHEMERAL},
    ]
    assert new_tools[-1] == {"type": "computer_toolset_20260801", "cache_control": EPHEMERAL}
    assert "cache_control" not in new_tools[0]
    assert new_messages[-1]["content"][-1]["cache_control"] == EPHEMERAL  # the newest tool_result
    assert new_messages[-3]["content"][-1]["cache_control"] == EPHEMERAL  # the one before
    assert count_breakpoints([new_system, new_tools, new_messages]) == MAX_CACHE_BREAKPOINTS


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
    messages = conversation(4)
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


def test_assistant_messages_are_not_marked() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
    ]

    _, _, new_messages = add_cache_breakpoints("", [], messages)

    assert new_messages[0]["content"][0]["cache_control"] == EPHEMERAL
    assert "cache_control" not in new_messages[1]["content"][0]
