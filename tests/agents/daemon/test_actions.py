"""Validation of action requests (no desktop needed)."""

from __future__ import annotations

from typing import Any

import pytest

from agents.daemon.actions import ActionError, parse_action

NATIVE = (1280, 800)

# What only the agent checks: the declared size the server sends along. Everything else an action
# may be is checked by actionspec, on both sides (tests/agents/daemon/test_actionspec.py).
BAD: list[tuple[Any, str]] = [
    (
        {"action": "screenshot", "scaled_width": 100},
        'Give both "scaled_width" and "scaled_height", or neither.',
    ),
    (
        {"action": "screenshot", "scaled_width": 0, "scaled_height": 5},
        '"scaled_width" must be an integer between 1 and 10000, got 0.',
    ),
    (
        {"action": "screenshot", "scaled_width": 640, "scaled_height": "400"},
        '"scaled_height" must be an integer between 1 and 10000, got 400.',
    ),
    (
        {"action": "left_click", "coordinate": [1000, 5], "scaled_width": 640, "scaled_height": 400},
        '"coordinate" [1000, 5] is outside the 640x400 display',
    ),
    (
        {"action": "left_click", "coordinate": [2000, 5]},
        '"coordinate" [2000, 5] is outside the 1280x800 display',
    ),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_input_is_rejected_with_a_clear_message(params: Any, message: str) -> None:
    with pytest.raises(ActionError) as info:
        parse_action(params, NATIVE)
    assert info.value.message.startswith(message)


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
    keys = parse_action({"action": "key", "text": "Control+T Return", "repeat": 2}, NATIVE)
    assert keys.combos == ["ctrl+t", "Return"] and keys.repeat == 2


def test_a_cancelled_action_knows_the_keys_it_may_have_left_down() -> None:
    typed = parse_action({"action": "type", "text": "Hi, é!\n"}, NATIVE)
    assert set(typed.keys_pressed()) == {"shift", "h", "i", "comma", "space", "exclam", "Return"}
    held = parse_action({"action": "key", "text": "ctrl+alt+Delete"}, NATIVE)
    assert held.keys_pressed() == ["ctrl", "alt", "Delete"]
    assert parse_action({"action": "left_click", "text": "shift"}, NATIVE).keys_pressed() == ["shift"]
    assert parse_action({"action": "mouse_move", "coordinate": [1, 1]}, NATIVE).keys_pressed() == []


def test_zoom_region_is_scaled_to_fill_the_declared_display() -> None:
    act = parse_action({"action": "zoom", "region": [0, 0, 100, 50]}, NATIVE)
    assert act.region == (0, 0, 100, 50)
    assert act.zoom_size == (1280, 640)
    act = parse_action({"action": "zoom", "region": [0, 0, 1429, 804]}, (1920, 1080))
    assert act.region == (0, 0, 1920, 1080) and act.zoom_size == (1429, 804)
