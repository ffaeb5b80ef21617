"""Key-name normalization to xdotool keysyms."""

from __future__ import annotations

import pytest

from agents.daemon.keys import KeyNameError, normalize_keys, normalize_modifiers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ctrl+shift+t", ["ctrl+shift+t"]),
        ("Control+Shift+T", ["ctrl+shift+t"]),
        ("cmd+c", ["super+c"]),
        ("meta", ["super"]),
        ("win", ["super"]),
        ("Enter", ["Return"]),
        ("return", ["Return"]),
        ("Esc", ["Escape"]),
        ("backspace", ["BackSpace"]),
        ("tab", ["Tab"]),
        ("Del", ["Delete"]),
        ("PageUp", ["Page_Up"]),
        ("Prior", ["Page_Up"]),
        ("page_down", ["Page_Down"]),
        ("Next", ["Page_Down"]),
        ("home", ["Home"]),
        ("End", ["End"]),
        ("ArrowUp", ["Up"]),
        ("down", ["Down"]),
        ("f1", ["F1"]),
        ("F24", ["F24"]),
        ("space", ["space"]),
        (" ", ["space"]),
        ("A", ["a"]),
        ("ctrl+A", ["ctrl+a"]),
        ("alt+Tab", ["alt+Tab"]),
        ("ctrl+a Delete", ["ctrl+a", "Delete"]),
        ("ctrl++", ["ctrl+plus"]),
        ("ctrl+,", ["ctrl+comma"]),
        ("kp_enter", ["KP_Enter"]),
        ("XF86AudioMute", ["XF86AudioMute"]),
        ("5", ["5"]),
    ],
)
def test_key_names_are_normalized(text: str, expected: list[str]) -> None:
    assert normalize_keys(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", 'Unknown key name: "foo".'),
        ("ctrl+", 'Invalid key combination: "ctrl+".'),
        ("", "Key text is empty."),
        ("ctrl+bogus_key", 'Unknown key name: "bogus_key".'),
    ],
)
def test_bad_key_names_are_errors(text: str, message: str) -> None:
    with pytest.raises(KeyNameError, match=message.replace("+", r"\+").replace("(", r"\(")):
        normalize_keys(text)


def test_modifier_text_lists_the_keys_to_hold() -> None:
    assert normalize_modifiers("ctrl+shift") == ["ctrl", "shift"]
    assert normalize_modifiers("cmd") == ["super"]
    with pytest.raises(KeyNameError):
        normalize_modifiers("hyperdrive")
