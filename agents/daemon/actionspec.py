"""The computer actions: vocabulary, limits, validation and time budget, shared by the server and the agent.

One module answers "may this action run, and if not, why" on both sides of the wire: the server
(``desktop.computer.parse_tool_use``, before a model's tool_use leaves the turn engine) and the agent
(``agents.daemon.actions.parse_action``, before anything touches the desktop). Both call
:func:`check_action`, so they accept the same inputs and refuse the others with the same message,
written for the model that sent it (it comes back as an error tool result; the chat goes on). Pure: no
Django, no I/O, so the agent runs without the server.

The model's input is untrusted. Checks are strict: a field the action does not take is refused (a
typo such as ``"coordinates"`` would otherwise click wherever the cursor is), numbers must be numbers
(``"5"`` and ``true`` are not), coordinates must lie on the declared display.

What comes from the Anthropic SDK (``anthropic``, pinned in constraints.txt), and why
--------------------------------------------------------------------------------------
- **The vocabulary**: the member names, in the API's order, and each member's input fields (required
  or optional) are read off the SDK's member registry (``COMPUTER_MEMBERS``: name -> generated input
  model), itself derived from the generated ``tool_use`` union. A member or field the SDK adds without
  a check here fails at import (:data:`SPECS`), so the two never drift apart silently.
- **CONFIRM_REQUIRED** (``type``, ``key``, ``hold_key``): the members the SDK's toolset refuses to run
  without a ``confirm`` callable, because keyboard input goes to whichever window has focus. Approvals
  gate exactly these under the ``risky`` policy (SPEC §8).
- **Scroll directions**: the generated ``ComputerScrollDirection`` literal.

Both registry values live in the SDK's private ``_toolsets`` package (its public ``anthropic.tools.computer``
exports only the classes a toolset driver subclasses); tests/agents/daemon/test_actionspec.py holds the
contract test that fails when an upgrade moves or changes them.

What is not used, and why
-------------------------
- ``parse_input`` (pydantic validation into the input models): it coerces (``"5"`` -> 5, ``true`` -> 1,
  ``2.0`` -> 2), keeps keys the schema does not declare, types durations as whole seconds while the
  older tool versions and SPEC §5 take fractions, and knows nothing of the display, so it cannot say
  "x must be 0 to 1279". The checks below are strict and say what to send instead.
- ``bounded_error``: messages here are built from clipped parts (:func:`clip`), so there is nothing to cut.
- The toolset classes, ``render_result`` and the confirm hook: they run member methods inside the SDK's
  tool runner, in-process. Our turn engine streams the reply, stores screenshots as chat files, runs each
  action on a remote agent, and an approval suspends the chat without holding a worker — none of which
  fits a synchronous ``confirm`` callable.

The price: importing the SDK (it imports its whole client and every generated type) is most of the
agent's start-up, 2.2 of 2.4 s measured on the loaded 2-core test machine (the agent alone imported
in 0.3 s). The agent pays it once, before it listens; the server has the SDK imported anyway.

Tool versions
-------------
``computer_toolset_20260801`` (GA) offers every member, ``key`` with ``repeat``; ``computer_20251124``
the same actions in ``input.action`` without ``repeat``; ``computer_20250124`` also without ``zoom``.
The agent does not know which version a model uses: it accepts the newest (a superset).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anthropic.lib.tools._toolsets._computer_registry import COMPUTER_MEMBERS, CONFIRM_REQUIRED
from anthropic.types import ComputerScrollDirection

from agents.daemon.keys import KeyNameError, normalize_keys, normalize_modifiers
from agents.daemon.scaling import Size, in_bounds

__all__ = [
    "ACTIONS",
    "ACTIONS_BY_VERSION",
    "COMPUTER_20250124",
    "COMPUTER_20251124",
    "COMPUTER_TOOLSET_20260801",
    "CONFIRM_REQUIRED",
    "MAX_HOLD_KEY_SECONDS",
    "MAX_KEY_REPEAT",
    "MAX_KEY_TEXT",
    "MAX_SCROLL_AMOUNT",
    "MAX_TYPE_TEXT",
    "MAX_WAIT_SECONDS",
    "SCROLL_DIRECTIONS",
    "SPECS",
    "TOOL_VERSIONS",
    "ActionError",
    "CheckedAction",
    "action_seconds",
    "check_action",
]

# --- vocabulary ----------------------------------------------------------------------------------

#: Every computer action, in the API's order (the SDK's member names).
ACTIONS: tuple[str, ...] = tuple(COMPUTER_MEMBERS)
SCROLL_DIRECTIONS: tuple[str, ...] = typing.get_args(ComputerScrollDirection)

COMPUTER_20250124 = "computer_20250124"
COMPUTER_20251124 = "computer_20251124"
COMPUTER_TOOLSET_20260801 = "computer_toolset_20260801"
TOOL_VERSIONS = (COMPUTER_20250124, COMPUTER_20251124, COMPUTER_TOOLSET_20260801)

ACTIONS_BY_VERSION: dict[str, tuple[str, ...]] = {
    COMPUTER_20250124: tuple(name for name in ACTIONS if name != "zoom"),
    COMPUTER_20251124: ACTIONS,
    COMPUTER_TOOLSET_20260801: ACTIONS,
}
# (action, field) pairs that only the toolset's input schema has.
_TOOLSET_ONLY_FIELDS = frozenset({("key", "repeat")})

# --- limits --------------------------------------------------------------------------------------

MAX_TYPE_TEXT = 10_000  # characters one ``type`` action may type
# Characters of a key combination (``key``, ``hold_key``) or of the keys held during a click or scroll.
MAX_KEY_TEXT = 500
MAX_WAIT_SECONDS = 100
MAX_HOLD_KEY_SECONDS = 30
MAX_SCROLL_AMOUNT = 100
MAX_KEY_REPEAT = 100

# --- field kinds ---------------------------------------------------------------------------------

_POINT = "point"  # [x, y] on the declared display
_REGION = "region"  # [x0, y0, x1, y1] pixel edges on the declared display
_DIRECTION = "direction"
_AMOUNT = "amount"
_REPEAT = "repeat"
_SECONDS = "seconds"
_KEYS = "keys"  # a key combination to press: "ctrl+s", "Return", "ctrl+a Delete"
_TYPED = "typed"  # text to type
_MODIFIERS = "modifiers"  # keys held during a click, drag or scroll; empty means none

# The generated models say only str / int / List[int]; what each field means is ours to check.
_KIND_BY_FIELD = {
    "coordinate": _POINT,
    "start_coordinate": _POINT,
    "region": _REGION,
    "scroll_direction": _DIRECTION,
    "scroll_amount": _AMOUNT,
    "repeat": _REPEAT,
    "duration": _SECONDS,
}
_TEXT_KIND = {"key": _KEYS, "hold_key": _KEYS, "type": _TYPED}  # any other member: _MODIFIERS
_MAX_SECONDS = {"wait": MAX_WAIT_SECONDS, "hold_key": MAX_HOLD_KEY_SECONDS}


@dataclass(frozen=True)
class MemberSpec:
    """The fields one action takes, each with the kind of check it gets."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    kinds: Mapping[str, str]

    def accepted(self, version: str) -> tuple[str, ...]:
        """Return the fields ``version`` lets this action take (required first)."""
        fields = (*self.required, *self.optional)
        if version == COMPUTER_TOOLSET_20260801:
            return fields
        return tuple(field for field in fields if (self.name, field) not in _TOOLSET_ONLY_FIELDS)


def _member_spec(name: str) -> MemberSpec:
    fields = COMPUTER_MEMBERS[name].input.model_fields
    kinds = {
        field: _TEXT_KIND.get(name, _MODIFIERS) if field == "text" else _KIND_BY_FIELD[field]
        for field in fields
    }
    if _SECONDS in kinds.values() and name not in _MAX_SECONDS:
        raise LookupError(f"The computer action {name!r} takes a duration, but has no limit here.")
    return MemberSpec(
        name=name,
        required=tuple(f for f, info in fields.items() if info.is_required()),
        optional=tuple(f for f, info in fields.items() if not info.is_required()),
        kinds=kinds,
    )


#: Every action's fields and checks. Building it fails (LookupError) when the SDK has a field this
#: module has no check for: an SDK upgrade cannot widen what the desktop is asked to do unnoticed.
SPECS: dict[str, MemberSpec] = {name: _member_spec(name) for name in ACTIONS}


# --- validation ----------------------------------------------------------------------------------


class ActionError(ValueError):
    """An action that must not run; ``message`` is written for the model (or person) that sent it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CheckedAction:
    """A valid action. ``fields`` are the input fields given, as sent (coordinates as ``[x, y]`` lists,
    on the declared display); ``combos`` the normalized key combinations of ``key``/``hold_key``;
    ``held`` the keys held down: a click's, drag's or scroll's modifiers, or every key of ``hold_key``."""

    name: str
    fields: dict[str, Any]
    combos: tuple[str, ...] = ()
    held: tuple[str, ...] = ()


NOT_AN_OBJECT = "The tool input must be a JSON object."


def check_action(
    name: object, fields: Mapping[str, object], display: Size, *, version: str = COMPUTER_TOOLSET_20260801
) -> CheckedAction:
    """Return the action ``name`` with input ``fields`` checked against ``display`` (the declared size).

    ``version`` chooses the actions and fields on offer (default: the newest, a superset of the others).
    Raise ActionError, with a message for the model, for anything the desktop must not be asked to do.
    """
    allowed = ACTIONS_BY_VERSION[version]
    if name is None:
        raise ActionError(f'Missing "action". Available actions: {", ".join(allowed)}.')
    if not isinstance(name, str) or name not in allowed:
        raise ActionError(f'Unknown action "{clip(name)}". Available actions: {", ".join(allowed)}.')
    if not isinstance(fields, Mapping):
        raise ActionError(NOT_AN_OBJECT)
    spec = SPECS[name]
    accepted = spec.accepted(version)
    unexpected = sorted(str(key) for key in fields if key not in accepted)
    if unexpected:
        listed = ", ".join(f'"{clip(key)}"' for key in unexpected)
        hint = f" It accepts: {', '.join(accepted)}." if accepted else " It takes no parameters."
        raise ActionError(f'The "{name}" action does not accept {listed}.{hint}')

    checked: dict[str, Any] = {}
    for key in accepted:
        value = fields.get(key)
        if value is None:
            if key in spec.required:
                raise ActionError(f'Missing "{key}" for the "{name}" action.')
            continue
        checked[key] = _check_field(name, key, spec.kinds[key], value, display)

    text: str = checked.get("text", "")
    try:
        if name in ("key", "hold_key"):
            combos = tuple(normalize_keys(text))
            held = tuple(key for combo in combos for key in combo.split("+")) if name == "hold_key" else ()
            return CheckedAction(name=name, fields=checked, combos=combos, held=held)
        if text and spec.kinds.get("text") == _MODIFIERS:
            return CheckedAction(name=name, fields=checked, held=tuple(normalize_modifiers(text)))
    except KeyNameError as exc:
        raise ActionError(str(exc)) from None
    return CheckedAction(name=name, fields=checked)


def _check_field(action: str, key: str, kind: str, value: object, display: Size) -> object:
    if kind == _POINT:
        return _check_point(key, value, display)
    if kind == _REGION:
        return _check_region(value, display)
    if kind in (_KEYS, _TYPED):
        text = _check_string(key, value, MAX_TYPE_TEXT if kind == _TYPED else MAX_KEY_TEXT)
        if not text:
            raise ActionError(f'"{key}" must not be empty for the "{action}" action.')
        return text
    if kind == _MODIFIERS:
        return _check_string(key, value, MAX_KEY_TEXT)
    if kind == _DIRECTION:
        if value not in SCROLL_DIRECTIONS:
            raise ActionError(
                f'Invalid scroll direction "{clip(value)}"; use one of: {", ".join(SCROLL_DIRECTIONS)}.'
            )
        return value
    if kind == _AMOUNT:
        return _check_int(key, value, 0, MAX_SCROLL_AMOUNT)
    if kind == _REPEAT:
        return _check_int(key, value, 1, MAX_KEY_REPEAT)
    if kind == _SECONDS:
        return _check_seconds(key, value, _MAX_SECONDS[action])
    raise AssertionError(f"unhandled field kind {kind}")  # pragma: no cover - SPECS has no other kind


def is_int(value: object) -> bool:
    """Return True for a JSON integer (``True`` is a bool, not a number)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_string(key: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ActionError(f'"{key}" must be a string.')
    if len(value) > limit:
        raise ActionError(
            f'"{key}" is {len(value)} characters long; the limit is {limit}. Split it into several actions.'
        )
    return value


def _check_int(key: str, value: object, low: int, high: int) -> int:
    if not is_int(value):
        raise ActionError(f'"{key}" must be a whole number from {low} to {high}.')
    assert isinstance(value, int)
    if not low <= value <= high:
        raise ActionError(f'"{key}" must be from {low} to {high}, not {value}.')
    return value


def _check_seconds(key: str, value: object, high: int) -> int | float:
    # Seconds, as the Anthropic schema says (the original implementation took milliseconds); fractions
    # are fine, as the older tool versions allow.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActionError(f'"{key}" must be a number of seconds from 0 to {high}.')
    if not 0 <= value <= high:
        raise ActionError(f'"{key}" must be from 0 to {high} seconds, not {value}.')
    return value


def _int_list(value: object, length: int) -> list[int] | None:
    if not isinstance(value, list | tuple) or len(value) != length or not all(is_int(v) for v in value):
        return None
    return [int(v) for v in value]


def _check_point(key: str, value: object, display: Size) -> list[int]:
    point = _int_list(value, 2)
    if point is None:
        raise ActionError(f'"{key}" must be a pair of whole numbers [x, y].')
    x, y = point
    width, height = display
    # [0, 0] is a real pixel (the original treated it as missing).
    if not in_bounds(x, y, display):
        raise ActionError(
            f'"{key}" [{x}, {y}] is outside the {width}x{height} display: '
            f"x must be 0 to {width - 1} and y 0 to {height - 1}."
        )
    return point


def _check_region(value: object, display: Size) -> list[int]:
    region = _int_list(value, 4)
    if region is None:
        raise ActionError('"region" must be four whole numbers [x0, y0, x1, y1].')
    x0, y0, x1, y1 = region
    width, height = display
    # Pixel edges: the right/bottom edge may equal the display width/height.
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ActionError(
            f'"region" [{x0}, {y0}, {x1}, {y1}] is not a rectangle inside the {width}x{height} display: '
            f"need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}."
        )
    return region


def clip(value: object, limit: int = 40) -> str:
    """Return ``value`` as text of at most ``limit`` characters, for quoting model input in a message."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- time budget ---------------------------------------------------------------------------------

# Per-unit costs on a desktop, with room for a loaded machine. Measured on the Xvnc backend (2 shared
# cores, xdotool): typing ~3 ms a character (``type --delay 5`` in 100-character chunks), a keystroke
# of ``key`` ~6 ms, a wheel click 10 ms (``--delay 10``).
SECONDS_PER_TYPED_CHARACTER = 0.015
SECONDS_PER_KEYSTROKE = 0.03
SECONDS_PER_WHEEL_CLICK = 0.02


def action_seconds(request: Mapping[str, object]) -> float:
    """Return how long the action of ``request`` (``{"action": …, fields…}``) may take on a desktop.

    This is the part that grows with the input: the characters of ``type``, the keystrokes of ``key``,
    the seconds of ``wait`` and ``hold_key``, the wheel clicks of ``scroll``. A caller's deadline is this
    plus its fixed allowance for the round trip, the settling and the screenshot. Robust to invalid input
    (it is computed before the agent checks it): every figure is clamped to its limit.
    """
    action = request.get("action")
    text = request.get("text")
    text = text[:MAX_TYPE_TEXT] if isinstance(text, str) else ""
    if action == "type":
        return len(text) * SECONDS_PER_TYPED_CHARACTER
    if action == "key":
        combos = max(1, len(text.split()))
        return combos * _clamped(request.get("repeat"), 1, MAX_KEY_REPEAT) * SECONDS_PER_KEYSTROKE
    if action == "hold_key":
        return SECONDS_PER_KEYSTROKE + _clamped(request.get("duration"), 0, MAX_HOLD_KEY_SECONDS)
    if action == "wait":
        return _clamped(request.get("duration"), 0, MAX_WAIT_SECONDS)
    if action == "scroll":
        return _clamped(request.get("scroll_amount"), 0, MAX_SCROLL_AMOUNT) * SECONDS_PER_WHEEL_CLICK
    return 0.0


def _clamped(value: object, low: int, high: int) -> float:
    """Return ``value`` limited to low..high; ``low`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return float(low)
    return float(min(max(value, low), high))
