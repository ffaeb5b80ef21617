"""Key-name normalization: from what a model writes to the keysyms xdotool understands.

The Anthropic computer tool says key names are case-insensitive and combos are joined with "+"
("ctrl+shift+t"); xdotool wants X keysym names ("Return", "Page_Up") and its own modifier
aliases ("ctrl", "alt", "shift", "super"). Several combos may be given at once separated by
spaces ("ctrl+a Delete"), as the reference implementation passes the text to ``xdotool key``.

A single upper-case letter is lowercased ("A" -> "a", "ctrl+T" -> "ctrl+t"): xdotool would
otherwise press shift with it, so "ctrl+T" would become ctrl+shift+t, which is never what a
model means by a case-insensitive key name. To get a capital letter, send "shift+a" or use the
``type`` action. This matches the original implementation.

An unknown name is an error rather than a silent no-op, so the model learns about its mistake.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re

MODIFIERS = frozenset({"ctrl", "alt", "shift", "super"})

_ALIASES: dict[str, str] = {
    # modifiers
    "ctrl": "ctrl",
    "control": "ctrl",
    "ctl": "ctrl",
    "control_l": "ctrl",
    "alt": "alt",
    "option": "alt",
    "opt": "alt",
    "alt_l": "alt",
    "shift": "shift",
    "shift_l": "shift",
    "super": "super",
    "super_l": "super",
    "cmd": "super",
    "command": "super",
    "meta": "super",
    "win": "super",
    "windows": "super",
    "logo": "super",
    # editing and navigation
    "return": "Return",
    "enter": "Return",
    "ret": "Return",
    "escape": "Escape",
    "esc": "Escape",
    "backspace": "BackSpace",
    "back_space": "BackSpace",
    "tab": "Tab",
    "delete": "Delete",
    "del": "Delete",
    "insert": "Insert",
    "ins": "Insert",
    "home": "Home",
    "end": "End",
    "page_up": "Page_Up",
    "pageup": "Page_Up",
    "pgup": "Page_Up",
    "prior": "Page_Up",
    "page_down": "Page_Down",
    "pagedown": "Page_Down",
    "pgdn": "Page_Down",
    "next": "Page_Down",
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "arrowup": "Up",
    "arrowdown": "Down",
    "arrowleft": "Left",
    "arrowright": "Right",
    "arrow_up": "Up",
    "arrow_down": "Down",
    "arrow_left": "Left",
    "arrow_right": "Right",
    "space": "space",
    "spacebar": "space",
    "caps_lock": "Caps_Lock",
    "capslock": "Caps_Lock",
    "num_lock": "Num_Lock",
    "numlock": "Num_Lock",
    "scroll_lock": "Scroll_Lock",
    "print": "Print",
    "printscreen": "Print",
    "print_screen": "Print",
    "prtsc": "Print",
    "menu": "Menu",
    "pause": "Pause",
    "break": "Break",
    "minus": "minus",
    "plus": "plus",
    "equal": "equal",
    "comma": "comma",
    "period": "period",
    "slash": "slash",
    "backslash": "backslash",
}
_ALIASES.update({f"f{n}": f"F{n}" for n in range(1, 25)})

# Punctuation typed as a single character; xdotool wants the keysym name.
_PUNCTUATION: dict[str, str] = {
    " ": "space",
    "!": "exclam",
    '"': "quotedbl",
    "#": "numbersign",
    "$": "dollar",
    "%": "percent",
    "&": "ampersand",
    "'": "apostrophe",
    "(": "parenleft",
    ")": "parenright",
    "*": "asterisk",
    "+": "plus",
    ",": "comma",
    "-": "minus",
    ".": "period",
    "/": "slash",
    ":": "colon",
    ";": "semicolon",
    "<": "less",
    "=": "equal",
    ">": "greater",
    "?": "question",
    "@": "at",
    "[": "bracketleft",
    "\\": "backslash",
    "]": "bracketright",
    "^": "asciicircum",
    "_": "underscore",
    "`": "grave",
    "{": "braceleft",
    "|": "bar",
    "}": "braceright",
    "~": "asciitilde",
}

_KEYSYM_SHAPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class KeyNameError(ValueError):
    """A key name or combo that cannot be pressed; the message is safe to show to a model."""


@functools.cache
def _xstring_to_keysym() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """Return libX11's XStringToKeysym, or None when libX11 is absent (then only the shape is checked).

    XStringToKeysym needs no display connection: it looks names up in libX11's static table.
    """
    name = ctypes.util.find_library("X11")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    func = lib.XStringToKeysym
    func.argtypes = [ctypes.c_char_p]
    func.restype = ctypes.c_ulong
    return func


def _is_keysym(name: str) -> bool:
    if not _KEYSYM_SHAPE.match(name):
        return False
    lookup = _xstring_to_keysym()
    if lookup is None:
        return True
    return bool(lookup(name.encode("ascii")))


def _case_variants(name: str) -> list[str]:
    """Return spellings to try for a keysym written in the wrong case (bounded: at most 4 parts)."""
    parts = name.split("_")
    if len(parts) > 4:
        return [name.capitalize()]
    variants = [""]
    for part in parts:
        variants = [f"{v}_{w}" if v else w for v in variants for w in {part.capitalize(), part.upper()}]
    return [name.capitalize(), *variants]


def normalize_key(name: str) -> str:
    """Return the xdotool keysym for one key name. Raise KeyNameError when unknown."""
    if len(name) == 1:
        if name.isascii() and name.isalpha():
            return name.lower()
        if name.isascii() and name.isdigit():
            return name
        if name in _PUNCTUATION:
            return _PUNCTUATION[name]
        raise KeyNameError(f'Unknown key name: "{name}".')
    alias = _ALIASES.get(name.lower())
    if alias is not None:
        return alias
    if _is_keysym(name):
        return name
    # Case-insensitive retry for keysyms outside the alias table ("kp_enter" -> "KP_Enter").
    for candidate in _case_variants(name):
        if _is_keysym(candidate):
            return candidate
    raise KeyNameError(f'Unknown key name: "{name}".')


def _split_combo(combo: str) -> list[str]:
    if combo == "+":
        return ["+"]
    if combo.endswith("++"):
        return [*combo[:-2].split("+"), "+"]
    return combo.split("+")


def normalize_combo(combo: str) -> str:
    """Return one "+"-joined combo with every part normalized ("Control+Shift+T" -> "ctrl+shift+t").

    Raise KeyNameError for an empty part or an unknown name.
    """
    parts = _split_combo(combo)
    if any(part == "" for part in parts):
        raise KeyNameError(f'Invalid key combination: "{combo}".')
    return "+".join(normalize_key(part) for part in parts)


def normalize_keys(text: str) -> list[str]:
    """Return the combos of a key action's ``text`` (space separated), each normalized.

    A text that is a single space means the space bar. Raise KeyNameError when empty or containing
    an unknown name. (How long a text may be is ``actionspec.MAX_KEY_TEXT``, checked before.)
    """
    if text == " ":
        return ["space"]
    combos = text.split()
    if not combos:
        raise KeyNameError("Key text is empty.")
    return [normalize_combo(combo) for combo in combos]


def normalize_modifiers(text: str) -> list[str]:
    """Return the keys to hold during a click or scroll ("ctrl+shift" -> ["ctrl", "shift"]).

    Any key may be held (the API says "key combination"), but normally these are modifiers.
    Raise KeyNameError for unknown names.
    """
    keys: list[str] = []
    for combo in text.split():
        keys.extend(normalize_combo(combo).split("+"))
    if not keys:
        raise KeyNameError("Modifier text is empty.")
    return keys
