"""Validation of action requests (no desktop needed)."""

from __future__ import annotations

from typing import Any

import pytest

from agents.daemon.actions import ACTIONS, ActionError, parse_action

NATIVE = (1280, 800)


def test_every_anthropic_computer_member_is_supported() -> None:
    from anthropic.types.beta.beta_computer_member_name import BETA_COMPUTER_MEMBER_NAME_VALUES

    assert set(BETA_COMPUTER_MEMBER_NAME_VALUES) == set(ACTIONS)


BAD: list[tuple[Any, str]] = [
    ({"action": "zoomx"}, "Unknown action: zoomx"),
    ({}, 'Missing "action".'),
    ([], "An action must be a JSON object."),
    ({"action": "key"}, 'Missing "text" for key action.'),
    ({"action": "key", "text": 5}, '"text" must be a string, got int.'),
    ({"action": "key", "text": "ctrl+nope"}, 'Unknown key name: "nope".'),
    ({"action": "key", "text": "a", "repeat": 0}, '"repeat" must be an integer between 1 and 100, got 0.'),
    ({"action": "type", "text": "x" * 10_001}, "Text is too long (10001 characters; the limit is 10000)."),
    ({"action": "hold_key", "text": "shift"}, 'Missing "duration" for hold_key action.'),
    (
        {"action": "hold_key", "text": "shift", "duration": 31},
        "Duration must be between 0 and 30 seconds, got 31.",
    ),
    ({"action": "wait", "duration": -1}, "Duration must be between 0 and 100 seconds, got -1."),
    ({"action": "wait", "duration": "3"}, "\"duration\" must be a number of seconds, got '3'."),
    ({"action": "mouse_move"}, 'Missing "coordinate" for mouse_move action.'),
    ({"action": "mouse_move", "coordinate": [1, 2, 3]}, '"coordinate" must be a list of two integers [x, y]'),
    ({"action": "mouse_move", "coordinate": [1.5, 2]}, '"coordinate" must be a list of two integers [x, y]'),
    ({"action": "mouse_move", "coordinate": "10,20"}, '"coordinate" must be a list of two integers [x, y]'),
    (
        {"action": "left_click", "coordinate": [2000, 5]},
        "Coordinate (2000, 5) is outside the 1280x800 display.",
    ),
    ({"action": "left_click", "coordinate": [-1, 5]}, "Coordinate (-1, 5) is outside the 1280x800 display."),
    (
        {"action": "left_click", "coordinate": [1000, 5], "scaled_width": 640, "scaled_height": 400},
        "Coordinate (1000, 5) is outside the 640x400 display.",
    ),
    ({"action": "left_click", "text": "hyper"}, 'Unknown key name: "hyper".'),
    (
        {"action": "left_click_drag", "coordinate": [1, 1]},
        'Missing "start_coordinate" for left_click_drag action.',
    ),
    ({"action": "scroll", "scroll_amount": 3}, 'Missing "scroll_direction" for scroll action.'),
    (
        {"action": "scroll", "scroll_direction": "sideways", "scroll_amount": 3},
        "Invalid scroll direction: sideways",
    ),
    ({"action": "scroll", "scroll_direction": "up"}, 'Missing "scroll_amount" for scroll action.'),
    (
        {"action": "scroll", "scroll_direction": "up", "scroll_amount": 101},
        '"scroll_amount" must be an integer',
    ),
    ({"action": "zoom"}, 'Missing "region" for zoom action.'),
    ({"action": "zoom", "region": [10, 10, 5, 20]}, "Region (10, 10, 5, 20) must satisfy"),
    ({"action": "zoom", "region": [0, 0, 1281, 20]}, "Region (0, 0, 1281, 20) must satisfy"),
    (
        {"action": "screenshot", "scaled_width": 100},
        'Give both "scaled_width" and "scaled_height", or neither.',
    ),
    ({"action": "screenshot", "scaled_width": 0, "scaled_height": 5}, '"scaled_width" must be an integer'),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_input_is_rejected_with_a_clear_message(params: Any, message: str) -> None:
    with pytest.raises(ActionError) as info:
        parse_action(params, NATIVE)
    assert str(info.value).startswith(message)


def test_coordinates_are_mapped_to_native_pixels() -> None:
    act = parse_action(
        {"action": "left_click", "coordinate": [1428, 803], "scaled_width": 1429, "scaled_height": 804},
        (1920, 1080),
    )
    assert act.coordinate == (1919, 1079)
    assert act.declared == (1429, 804)


def test_declared_size_defaults_to_the_reference_scaling() -> None:
    assert parse_action({"action": "screenshot"}, (1920, 1080)).declared == (1429, 804)


def test_zero_coordinate_is_a_real_coordinate() -> None:
    # The original treated [0, 0] as "missing"; it is the top-left pixel.
    assert parse_action({"action": "mouse_move", "coordinate": [0, 0]}, NATIVE).coordinate == (0, 0)


def test_modifiers_and_durations_are_parsed() -> None:
    act = parse_action({"action": "left_click", "text": "ctrl+shift"}, NATIVE)
    assert act.hold == ["ctrl", "shift"] and act.coordinate is None
    hold = parse_action({"action": "hold_key", "text": "shift", "duration": 1.5}, NATIVE)
    assert hold.hold == ["shift"] and hold.duration == 1.5


def test_zoom_region_is_scaled_to_fill_the_declared_display() -> None:
    act = parse_action({"action": "zoom", "region": [0, 0, 100, 50]}, NATIVE)
    assert act.region == (0, 0, 100, 50)
    assert act.zoom_size == (1280, 640)
    act = parse_action({"action": "zoom", "region": [0, 0, 1429, 804]}, (1920, 1080))
    assert act.region == (0, 0, 1920, 1080) and act.zoom_size == (1429, 804)
