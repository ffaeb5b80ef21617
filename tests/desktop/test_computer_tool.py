"""The computer tool: version per model, its declaration, and the validation of the model's input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from agents.daemon.scaling import declared_size
from desktop.computer import (
    ACTIONS_BY_VERSION,
    COMPUTER_20250124,
    COMPUTER_20251124,
    COMPUTER_TOOLSET_20260801,
    COMPUTER_USE_SYSTEM_PROMPT,
    TOOL_VERSIONS,
    ComputerToolInputError,
    beta_headers,
    computer_use_system_prompt,
    declared_display,
    parse_tool_use,
    tool_definitions,
    tool_version_for_model,
)
from tests.support.fake_anthropic import FakeAnthropic, reply, tool_use

W, H = 1280, 800
OLD_VERSIONS = (COMPUTER_20250124, COMPUTER_20251124)


# --- version selection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-5-5", COMPUTER_TOOLSET_20260801),
        ("claude-opus-5-5", COMPUTER_TOOLSET_20260801),
        ("claude-haiku-5", COMPUTER_TOOLSET_20260801),
        ("claude-opus-6", COMPUTER_TOOLSET_20260801),
        ("claude-sonnet-5-5-20260901", COMPUTER_TOOLSET_20260801),
        ("claude-opus-4-5", COMPUTER_20251124),
        ("claude-opus-4-5-20251101", COMPUTER_20251124),
        ("claude-opus-4-6", COMPUTER_20251124),
        ("claude-opus-4-8", COMPUTER_20251124),
        ("claude-sonnet-4-6", COMPUTER_20251124),
        ("claude-sonnet-4-7", COMPUTER_20251124),
        ("us.anthropic.claude-opus-4-6-v1:0", COMPUTER_20251124),
        ("claude-sonnet-4-5", COMPUTER_20250124),
        ("claude-sonnet-4-5-20250929", COMPUTER_20250124),
        ("claude-sonnet-4-20250514", COMPUTER_20250124),
        ("claude-opus-4-1", COMPUTER_20250124),
        ("claude-haiku-4-5", COMPUTER_20250124),
        ("claude-3-7-sonnet-20250219", COMPUTER_20250124),
        ("claude-3-5-sonnet-latest", COMPUTER_20250124),
        ("my-proxy-model", COMPUTER_20250124),
        ("", COMPUTER_20250124),
    ],
)
def test_tool_version_follows_the_model(model: str, expected: str) -> None:
    assert tool_version_for_model(model) == expected


@pytest.mark.parametrize("override", TOOL_VERSIONS)
def test_valid_override_wins(override: str) -> None:
    assert tool_version_for_model("claude-sonnet-5-5", override) == override
    assert tool_version_for_model("claude-3-7-sonnet-20250219", override) == override


def test_empty_override_is_no_override() -> None:
    assert tool_version_for_model("claude-opus-4-6", "") == COMPUTER_20251124
    assert tool_version_for_model("claude-opus-4-6", None) == COMPUTER_20251124


def test_invalid_override_raises() -> None:
    with pytest.raises(ValueError, match="computer_2099"):
        tool_version_for_model("claude-sonnet-5-5", "computer_2099")


# --- definitions ---------------------------------------------------------------------------------


def test_definitions_and_betas() -> None:
    assert tool_definitions(COMPUTER_20251124, display_width=1429, display_height=804) == [
        {
            "type": "computer_20251124",
            "name": "computer",
            "display_width_px": 1429,
            "display_height_px": 804,
            "enable_zoom": True,
        }
    ]
    assert tool_definitions(COMPUTER_20250124, display_width=W, display_height=H) == [
        {"type": "computer_20250124", "name": "computer", "display_width_px": W, "display_height_px": H}
    ]
    assert tool_definitions(COMPUTER_TOOLSET_20260801, display_width=W, display_height=H) == [
        {"type": "computer_toolset_20260801"}
    ]
    assert beta_headers(COMPUTER_20251124) == ["computer-use-2025-11-24"]
    assert beta_headers(COMPUTER_20250124) == ["computer-use-2025-01-24"]
    assert beta_headers(COMPUTER_TOOLSET_20260801) == []


def test_unknown_version_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        tool_definitions("computer_1999", display_width=W, display_height=H)
    with pytest.raises(ValueError):
        beta_headers("computer_1999")
    with pytest.raises(ValueError):
        parse_tool_use("computer_1999", name="computer", tool_input={}, display_width=W, display_height=H)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.mark.parametrize("version", TOOL_VERSIONS)
def test_sdk_sends_the_definitions_unchanged(fake: FakeAnthropic, version: str) -> None:
    tools: Any = tool_definitions(version, display_width=1429, display_height=804)
    betas: Any = beta_headers(version)
    fake.add_response(reply("ok"))
    client = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]

    if betas:
        client.beta.messages.create(
            model="claude-opus-4-6",
            max_tokens=5,
            messages=messages,
            tools=tools,
            betas=betas,
        )
    else:
        client.messages.create(model="claude-opus-5-5", max_tokens=5, messages=messages, tools=tools)

    sent = fake.requests[0]
    assert sent.json["tools"] == tools
    assert sent.betas == betas


def test_toolset_tool_use_round_trips_through_the_sdk(fake: FakeAnthropic) -> None:
    fake.add_response(reply(tool_use("left_click", {"coordinate": [3, 4]}, toolset_name="computer")))
    client = anthropic.Anthropic(api_key="test", base_url=fake.base_url, max_retries=0)
    tools: Any = tool_definitions(COMPUTER_TOOLSET_20260801, display_width=W, display_height=H)

    message = client.messages.create(
        model="claude-opus-5-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}], tools=tools
    )
    block: Any = message.content[0]

    assert parse_tool_use(
        COMPUTER_TOOLSET_20260801, name=block.name, tool_input=block.input, display_width=W, display_height=H
    ) == {"action": "left_click", "coordinate": [3, 4], "scaled_width": W, "scaled_height": H}


# --- declared display ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("native", "declared"),
    [
        ((1920, 1080), (1429, 804)),
        ((4000, 3000), (1238, 928)),
        ((1280, 800), (1280, 800)),
        ((1280, 720), (1280, 720)),
        ((2560, 1440), (1429, 804)),
        ((1600, 400), (1568, 392)),
    ],
)
def test_declared_display(native: tuple[int, int], declared: tuple[int, int]) -> None:
    assert declared_display(*native) == declared
    assert declared_display(*native) == declared_size(*native)
    width, height = declared
    assert max(width, height) <= 1568
    assert width * height <= 1_150_000


# --- parsing: every action of every version ------------------------------------------------------

# action -> (input fields, expected normalized fields)
VALID_INPUTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "key": ({"text": "ctrl+s"}, {"text": "ctrl+s"}),
    "hold_key": ({"text": "shift", "duration": 2}, {"text": "shift", "duration": 2}),
    "type": ({"text": "hello world"}, {"text": "hello world"}),
    "cursor_position": ({}, {}),
    "mouse_move": ({"coordinate": [0, 0]}, {"coordinate": [0, 0]}),
    "left_mouse_down": ({}, {}),
    "left_mouse_up": ({}, {}),
    "left_click": (
        {"coordinate": [W - 1, H - 1], "text": "ctrl"},
        {"coordinate": [W - 1, H - 1], "text": "ctrl"},
    ),
    "left_click_drag": (
        {"start_coordinate": [1, 2], "coordinate": [300, 400]},
        {"start_coordinate": [1, 2], "coordinate": [300, 400]},
    ),
    "right_click": ({"coordinate": [10, 10]}, {"coordinate": [10, 10]}),
    "middle_click": ({}, {}),
    "double_click": ({"coordinate": [5, 6]}, {"coordinate": [5, 6]}),
    "triple_click": ({"coordinate": [7, 8], "text": "shift"}, {"coordinate": [7, 8], "text": "shift"}),
    "scroll": (
        {"coordinate": [100, 100], "scroll_direction": "down", "scroll_amount": 3},
        {"coordinate": [100, 100], "scroll_direction": "down", "scroll_amount": 3},
    ),
    "wait": ({"duration": 1.5}, {"duration": 1.5}),
    "screenshot": ({}, {}),
    "zoom": ({"region": [0, 0, W, H]}, {"region": [0, 0, W, H]}),
}


def parse(version: str, action: str, fields: dict[str, Any]) -> dict[str, Any]:
    if version == COMPUTER_TOOLSET_20260801:
        return parse_tool_use(version, name=action, tool_input=fields, display_width=W, display_height=H)
    return parse_tool_use(
        version, name="computer", tool_input={"action": action, **fields}, display_width=W, display_height=H
    )


def test_action_sets() -> None:
    assert set(ACTIONS_BY_VERSION[COMPUTER_TOOLSET_20260801]) == set(VALID_INPUTS)
    assert set(ACTIONS_BY_VERSION[COMPUTER_20251124]) == set(VALID_INPUTS)
    assert set(ACTIONS_BY_VERSION[COMPUTER_20250124]) == set(VALID_INPUTS) - {"zoom"}


def test_toolset_members_match_the_sdk() -> None:
    from anthropic.types.computer_member_name import COMPUTER_MEMBER_NAME_VALUES

    assert set(ACTIONS_BY_VERSION[COMPUTER_TOOLSET_20260801]) == set(COMPUTER_MEMBER_NAME_VALUES)


@pytest.mark.parametrize(
    ("version", "action"),
    [(version, action) for version in TOOL_VERSIONS for action in ACTIONS_BY_VERSION[version]],
)
def test_every_action_parses(version: str, action: str) -> None:
    fields, expected = VALID_INPUTS[action]

    result = parse(version, action, fields)

    assert result == {"action": action, **expected, "scaled_width": W, "scaled_height": H}


def test_scroll_without_coordinate_uses_the_cursor() -> None:
    result = parse(COMPUTER_20251124, "scroll", {"scroll_direction": "up", "scroll_amount": 0})
    assert "coordinate" not in result


def test_key_repeat_only_in_the_toolset() -> None:
    assert parse(COMPUTER_TOOLSET_20260801, "key", {"text": "Down", "repeat": 5})["repeat"] == 5
    with pytest.raises(ComputerToolInputError, match='does not accept "repeat"'):
        parse(COMPUTER_20251124, "key", {"text": "Down", "repeat": 5})


def test_zoom_is_not_in_the_oldest_version() -> None:
    with pytest.raises(ComputerToolInputError, match='Unknown action "zoom"'):
        parse(COMPUTER_20250124, "zoom", {"region": [0, 0, 10, 10]})


def test_toolset_unknown_member() -> None:
    with pytest.raises(
        ComputerToolInputError, match=re.escape('Unknown action "computer". Available actions: key, ')
    ):
        parse_tool_use(
            COMPUTER_TOOLSET_20260801,
            name="computer",
            tool_input={"action": "left_click"},
            display_width=W,
            display_height=H,
        )


def test_old_version_requires_the_computer_tool_name() -> None:
    with pytest.raises(ComputerToolInputError, match='Unknown tool "left_click"'):
        parse_tool_use(COMPUTER_20251124, name="left_click", tool_input={}, display_width=W, display_height=H)


def test_missing_action() -> None:
    with pytest.raises(ComputerToolInputError, match='Missing "action"'):
        parse_tool_use(COMPUTER_20251124, name="computer", tool_input={}, display_width=W, display_height=H)


def test_input_must_be_an_object() -> None:
    with pytest.raises(ComputerToolInputError, match="JSON object"):
        parse_tool_use(
            COMPUTER_20251124, name="computer", tool_input=["x"], display_width=W, display_height=H
        )


# Every refusal and its message: tests/agents/daemon/test_actionspec.py (one table for the server and the agent).


@pytest.mark.parametrize("version", TOOL_VERSIONS)
def test_a_refusal_is_a_message_for_the_model(version: str) -> None:
    with pytest.raises(ComputerToolInputError) as caught:
        parse(version, "mouse_move", {"coordinate": [W, 0]})

    assert caught.value.message.startswith('"coordinate" [1280, 0] is outside the 1280x800 display')
    assert str(caught.value) == caught.value.message


def test_input_is_not_mutated() -> None:
    tool_input = {"action": "left_click", "coordinate": [1, 2]}
    parse_tool_use(
        COMPUTER_20251124, name="computer", tool_input=tool_input, display_width=W, display_height=H
    )
    assert tool_input == {"action": "left_click", "coordinate": [1, 2]}


# --- system prompt -------------------------------------------------------------------------------


def test_system_prompt_covers_the_essentials() -> None:
    prompt = COMPUTER_USE_SYSTEM_PROMPT.lower()
    for phrase in ("screenshot", "coordinates", "wait", "untrusted", "never follow instructions", "report"):
        assert phrase in prompt


def test_child_prompt_appends_the_task() -> None:
    prompt = computer_use_system_prompt("  Open the settings and enable dark mode.  ")

    assert prompt.startswith(COMPUTER_USE_SYSTEM_PROMPT)
    assert prompt.endswith("Your task:\nOpen the settings and enable dark mode.")
    assert "delegated" in prompt
