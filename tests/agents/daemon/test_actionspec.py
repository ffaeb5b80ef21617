"""One action spec for both sides: the server's and the agent's validation give the same answers.

The table below is fed to ``desktop.computer.parse_tool_use`` (what the turn engine runs on a model's
tool_use) and to ``agents.daemon.actions.parse_action`` (what the agent runs on an RPC request); both
must accept the same inputs and refuse the others with the same message.
"""

from __future__ import annotations

from typing import Any

import pytest

from agents.daemon import actionspec
from agents.daemon.actions import parse_action
from desktop.computer import (
    COMPUTER_20250124,
    COMPUTER_20251124,
    COMPUTER_TOOLSET_20260801,
    ComputerToolInputError,
    parse_tool_use,
)

W, H = 1280, 800
ACTIONS = ", ".join(actionspec.ACTIONS)
OK = None

# (action, input fields, None when accepted or the message both sides answer)
TABLE: list[tuple[object, dict[str, Any], str | None]] = [
    # every action, valid
    ("key", {"text": "ctrl+s"}, OK),
    ("key", {"text": "ctrl+a Delete", "repeat": 3}, OK),
    ("key", {"text": " "}, OK),
    ("hold_key", {"text": "shift", "duration": 1.5}, OK),
    ("type", {"text": "hello world"}, OK),
    ("type", {"text": "y" * actionspec.MAX_TYPE_TEXT}, OK),
    ("cursor_position", {}, OK),
    ("mouse_move", {"coordinate": [0, 0]}, OK),
    ("left_mouse_down", {}, OK),
    ("left_mouse_up", {}, OK),
    ("left_click", {"coordinate": [W - 1, H - 1], "text": "ctrl+shift"}, OK),
    ("left_click", {"text": ""}, OK),
    ("left_click_drag", {"start_coordinate": [1, 2], "coordinate": [300, 400]}, OK),
    ("right_click", {"coordinate": [10, 10]}, OK),
    ("middle_click", {}, OK),
    ("double_click", {"coordinate": [5, 6]}, OK),
    ("triple_click", {"coordinate": [7, 8], "text": "shift"}, OK),
    ("scroll", {"scroll_direction": "up", "scroll_amount": 0}, OK),
    ("scroll", {"coordinate": [100, 100], "scroll_direction": "down", "scroll_amount": 100, "text": "ctrl"}, OK),
    ("wait", {"duration": 100}, OK),
    ("wait", {"duration": 0}, OK),
    ("screenshot", {}, OK),
    ("zoom", {"region": [0, 0, W, H]}, OK),
    # the action itself
    (None, {}, f'Missing "action". Available actions: {ACTIONS}.'),
    ("dance", {}, f'Unknown action "dance". Available actions: {ACTIONS}.'),
    (7, {}, f'Unknown action "7". Available actions: {ACTIONS}.'),
    # fields it does not take (refused on both sides, so a typo never clicks at the cursor)
    ("type", {"text": "hi", "coordinate": [1, 1]}, 'The "type" action does not accept "coordinate". It accepts: text.'),
    ("screenshot", {"extra": 1}, 'The "screenshot" action does not accept "extra". It takes no parameters.'),
    ("left_mouse_down", {"coordinate": [1, 1]}, 'The "left_mouse_down" action does not accept "coordinate". It takes no parameters.'),
    ("left_click", {"coordinates": [1, 1]}, 'The "left_click" action does not accept "coordinates". It accepts: coordinate, text.'),
    # text: keys, typed text and held modifiers, one limit each
    ("key", {}, 'Missing "text" for the "key" action.'),
    ("key", {"text": ""}, '"text" must not be empty for the "key" action.'),
    ("key", {"text": 5}, '"text" must be a string.'),
    ("key", {"text": "ctrl+nope"}, 'Unknown key name: "nope".'),
    ("key", {"text": "ctrl+"}, 'Invalid key combination: "ctrl+".'),
    ("key", {"text": "   "}, "Key text is empty."),
    ("key", {"text": "a " * 251}, '"text" is 502 characters long; the limit is 500. Split it into several actions.'),
    ("key", {"text": "a", "repeat": 0}, '"repeat" must be from 1 to 100, not 0.'),
    ("key", {"text": "a", "repeat": True}, '"repeat" must be a whole number from 1 to 100.'),
    ("type", {"text": ""}, '"text" must not be empty for the "type" action.'),
    ("type", {"text": "x" * 10_001}, '"text" is 10001 characters long; the limit is 10000. Split it into several actions.'),
    ("left_click", {"text": "hyper"}, 'Unknown key name: "hyper".'),
    ("left_click", {"text": 3}, '"text" must be a string.'),
    ("left_click", {"text": "shift+" * 100}, '"text" is 600 characters long; the limit is 500. Split it into several actions.'),
    ("scroll", {"scroll_direction": "up", "scroll_amount": 1, "text": "  "}, "Modifier text is empty."),
    # durations are seconds
    ("hold_key", {"text": "shift"}, 'Missing "duration" for the "hold_key" action.'),
    ("hold_key", {"duration": 1}, 'Missing "text" for the "hold_key" action.'),
    ("hold_key", {"text": "shift", "duration": 31}, '"duration" must be from 0 to 30 seconds, not 31.'),
    ("hold_key", {"text": "shift", "duration": "1"}, '"duration" must be a number of seconds from 0 to 30.'),
    ("wait", {}, 'Missing "duration" for the "wait" action.'),
    ("wait", {"duration": -1}, '"duration" must be from 0 to 100 seconds, not -1.'),
    ("wait", {"duration": 101}, '"duration" must be from 0 to 100 seconds, not 101.'),
    ("wait", {"duration": True}, '"duration" must be a number of seconds from 0 to 100.'),
    ("wait", {"duration": float("nan")}, '"duration" must be a number of seconds from 0 to 100.'),
    # coordinates are whole pixels on the declared display
    ("mouse_move", {}, 'Missing "coordinate" for the "mouse_move" action.'),
    ("mouse_move", {"coordinate": [W, 0]}, f'"coordinate" [{W}, 0] is outside the {W}x{H} display: x must be 0 to {W - 1} and y 0 to {H - 1}.'),
    ("mouse_move", {"coordinate": [-1, 5]}, f'"coordinate" [-1, 5] is outside the {W}x{H} display: x must be 0 to {W - 1} and y 0 to {H - 1}.'),
    ("mouse_move", {"coordinate": [1, 2, 3]}, '"coordinate" must be a pair of whole numbers [x, y].'),
    ("mouse_move", {"coordinate": [1.5, 2]}, '"coordinate" must be a pair of whole numbers [x, y].'),
    ("mouse_move", {"coordinate": ["1", "2"]}, '"coordinate" must be a pair of whole numbers [x, y].'),
    ("mouse_move", {"coordinate": [True, 2]}, '"coordinate" must be a pair of whole numbers [x, y].'),
    ("mouse_move", {"coordinate": "10,20"}, '"coordinate" must be a pair of whole numbers [x, y].'),
    ("left_click_drag", {"coordinate": [1, 1]}, 'Missing "start_coordinate" for the "left_click_drag" action.'),
    ("left_click_drag", {"start_coordinate": [1, 1], "coordinate": [1, 9999]}, f'"coordinate" [1, 9999] is outside the {W}x{H} display: x must be 0 to {W - 1} and y 0 to {H - 1}.'),
    # scrolling
    ("scroll", {"scroll_amount": 3}, 'Missing "scroll_direction" for the "scroll" action.'),
    ("scroll", {"scroll_direction": "down"}, 'Missing "scroll_amount" for the "scroll" action.'),
    ("scroll", {"scroll_direction": "sideways", "scroll_amount": 3}, 'Invalid scroll direction "sideways"; use one of: up, down, left, right.'),
    ("scroll", {"scroll_direction": "up", "scroll_amount": 101}, '"scroll_amount" must be from 0 to 100, not 101.'),
    ("scroll", {"scroll_direction": "up", "scroll_amount": 2.5}, '"scroll_amount" must be a whole number from 0 to 100.'),
    # zoom regions are pixel edges
    ("zoom", {}, 'Missing "region" for the "zoom" action.'),
    ("zoom", {"region": [0, 0, 10]}, '"region" must be four whole numbers [x0, y0, x1, y1].'),
    ("zoom", {"region": [10, 10, 5, 20]}, f'"region" [10, 10, 5, 20] is not a rectangle inside the {W}x{H} display: need 0 <= x0 < x1 <= {W} and 0 <= y0 < y1 <= {H}.'),
    ("zoom", {"region": [0, 0, W + 1, 20]}, f'"region" [0, 0, {W + 1}, 20] is not a rectangle inside the {W}x{H} display: need 0 <= x0 < x1 <= {W} and 0 <= y0 < y1 <= {H}.'),
]  # fmt: skip


def server_answer(version: str, action: object, fields: dict[str, Any]) -> str | None:
    try:
        if version == COMPUTER_TOOLSET_20260801:
            assert isinstance(action, str)
            parse_tool_use(version, name=action, tool_input=fields, display_width=W, display_height=H)
        else:
            tool_input = fields if action is None else {"action": action, **fields}
            parse_tool_use(version, name="computer", tool_input=tool_input, display_width=W, display_height=H)
    except ComputerToolInputError as exc:
        return exc.message
    return None


def agent_answer(action: object, fields: dict[str, Any]) -> str | None:
    request = {**fields, "scaled_width": W, "scaled_height": H}
    if action is not None:
        request["action"] = action
    try:
        parse_action(request, (1920, 1200))  # a bigger native desktop: the checks are on the declared one
    except actionspec.ActionError as exc:
        return exc.message
    return None


@pytest.mark.parametrize(("action", "fields", "expected"), TABLE)
def test_server_and_agent_give_the_same_answer(
    action: object, fields: dict[str, Any], expected: str | None
) -> None:
    assert agent_answer(action, fields) == expected
    if isinstance(action, str):
        assert server_answer(COMPUTER_TOOLSET_20260801, action, fields) == expected
    if "repeat" not in fields:  # the one field only the toolset has (see test_older_versions_offer_less)
        assert server_answer(COMPUTER_20251124, action, fields) == expected


def test_older_versions_offer_less() -> None:
    # The agent accepts the newest version's vocabulary; the server narrows it to the chat's version.
    assert agent_answer("key", {"text": "Down", "repeat": 5}) is None
    assert server_answer(COMPUTER_20251124, "key", {"text": "Down", "repeat": 5}) == (
        'The "key" action does not accept "repeat". It accepts: text.'
    )
    assert agent_answer("zoom", {"region": [0, 0, 10, 10]}) is None
    assert server_answer(COMPUTER_20250124, "zoom", {"region": [0, 0, 10, 10]}) == (
        f'Unknown action "zoom". Available actions: {", ".join(a for a in actionspec.ACTIONS if a != "zoom")}.'
    )


def test_the_input_must_be_an_object_on_both_sides() -> None:
    with pytest.raises(actionspec.ActionError) as agent:
        parse_action(["left_click"], (W, H))
    with pytest.raises(ComputerToolInputError) as server:
        parse_tool_use(
            COMPUTER_20251124, name="computer", tool_input=["x"], display_width=W, display_height=H
        )
    assert agent.value.message == server.value.message == "The tool input must be a JSON object."


# --- the SDK contract ----------------------------------------------------------------------------


def test_sdk_contract() -> None:
    """What actionspec reads from the SDK's private ``_toolsets`` package (anthropic is pinned exactly).

    When this fails after an upgrade, find where the SDK moved the registry and CONFIRM_REQUIRED, and
    update ``agents/daemon/actionspec.py``.
    """
    from anthropic.lib.tools._toolsets import _computer_registry
    from anthropic.types import COMPUTER_MEMBER_NAME_VALUES
    from pydantic import BaseModel

    assert _computer_registry.CONFIRM_REQUIRED == frozenset({"type", "key", "hold_key"})
    assert tuple(_computer_registry.COMPUTER_MEMBERS) == COMPUTER_MEMBER_NAME_VALUES
    for member in _computer_registry.COMPUTER_MEMBERS.values():
        assert issubclass(member.input, BaseModel)
    assert actionspec.ACTIONS == COMPUTER_MEMBER_NAME_VALUES
    assert actionspec.CONFIRM_REQUIRED == {"type", "key", "hold_key"}


def test_every_sdk_field_has_a_check() -> None:
    for name, spec in actionspec.SPECS.items():
        fields = actionspec.COMPUTER_MEMBERS[name].input.model_fields
        assert set(spec.kinds) == set(fields)
        assert set(spec.required) == {f for f, info in fields.items() if info.is_required()}
    assert actionspec.SPECS["left_click_drag"].required == ("coordinate", "start_coordinate")
    assert actionspec.SPECS["screenshot"].required == actionspec.SPECS["screenshot"].optional == ()


# --- the time an action may take -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "seconds"),
    [
        ({"action": "type", "text": "x" * 2000}, 2000 * actionspec.SECONDS_PER_TYPED_CHARACTER),
        ({"action": "type", "text": "x" * 50_000}, actionspec.MAX_TYPE_TEXT * actionspec.SECONDS_PER_TYPED_CHARACTER),
        ({"action": "key", "text": "a b c", "repeat": 10}, 30 * actionspec.SECONDS_PER_KEYSTROKE),
        ({"action": "key", "text": "Return"}, actionspec.SECONDS_PER_KEYSTROKE),
        ({"action": "hold_key", "text": "shift", "duration": 12}, 12 + actionspec.SECONDS_PER_KEYSTROKE),
        ({"action": "wait", "duration": 2.5}, 2.5),
        ({"action": "wait", "duration": 10_000}, actionspec.MAX_WAIT_SECONDS),
        ({"action": "wait", "duration": "forever"}, 0),
        ({"action": "scroll", "scroll_direction": "up", "scroll_amount": 50}, 50 * actionspec.SECONDS_PER_WHEEL_CLICK),
        ({"action": "left_click"}, 0),
        ({"action": "type", "text": 5}, 0),
    ],
)  # fmt: skip
def test_action_seconds_follow_the_action(request_: dict[str, Any], seconds: float) -> None:
    assert actionspec.action_seconds(request_) == pytest.approx(seconds)
