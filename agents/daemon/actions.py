"""Computer actions: validation of model input and their execution on a desktop.

Requests use the Anthropic computer tool's input fields (``computer_20250124``,
``computer_20251124`` and the members of ``computer_toolset_20260801``), plus the declared display
size the model sees (``scaled_width``/``scaled_height``). Everything the model sends is untrusted:
it is checked here, and every problem becomes an ``ActionError`` whose message the model can
read and act on ('Coordinate (2000, 5) is outside the 1280x800 display.').

Coordinates arrive in *declared* pixels and are mapped to native ones with ``scaling``;
``cursor_position`` maps back. ``wait`` and ``hold_key`` durations are seconds.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from agents.daemon import scaling
from agents.daemon.backends.base import Desktop, DesktopError, InputError
from agents.daemon.keys import KeyNameError, normalize_keys, normalize_modifiers
from agents.daemon.screenshot import Capture, SettleConfig, encode_png, fit_within, settled_grab

log = logging.getLogger(__name__)

ACTIONS = (
    "key",
    "hold_key",
    "type",
    "cursor_position",
    "mouse_move",
    "left_mouse_down",
    "left_mouse_up",
    "left_click",
    "left_click_drag",
    "right_click",
    "middle_click",
    "double_click",
    "triple_click",
    "scroll",
    "wait",
    "screenshot",
    "zoom",
)
# Actions that only look: they change nothing, so they need no "settled" screenshot.
QUERY_ACTIONS = frozenset({"cursor_position", "screenshot", "zoom"})
CLICKS: dict[str, tuple[int, int]] = {  # action -> (X button, click count)
    "left_click": (1, 1),
    "right_click": (3, 1),
    "middle_click": (2, 1),
    "double_click": (1, 2),
    "triple_click": (1, 3),
}
SCROLL_DIRECTIONS = ("up", "down", "left", "right")

MAX_TEXT = 10_000
MAX_WAIT_SECONDS = 100.0
MAX_HOLD_SECONDS = 30.0
MAX_REPEAT = 100
MAX_SCROLL_AMOUNT = 100
MAX_DECLARED_SIDE = 10_000
MAX_BATCH = 100


class ActionError(ValueError):
    """Bad action input. The message is meant for the model (or person) that sent it."""


class ScreenshotResult(TypedDict):
    png_base64: str
    width: int
    height: int


class ActionResult(TypedDict):
    output: str | None
    screenshot: ScreenshotResult | None


@dataclass
class Action:
    """A validated action; every coordinate is already in native pixels."""

    name: str
    declared: scaling.Size
    native: scaling.Size
    coordinate: tuple[int, int] | None = None
    start_coordinate: tuple[int, int] | None = None
    text: str | None = None
    combos: list[str] = field(default_factory=list)
    hold: list[str] = field(default_factory=list)
    duration: float = 0.0
    repeat: int = 1
    scroll_direction: str = "down"
    scroll_amount: int = 0
    region: tuple[int, int, int, int] | None = None  # native pixel edges
    zoom_size: scaling.Size | None = None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)  # type: ignore[arg-type]


def _declared(params: Mapping[str, Any], native: scaling.Size) -> scaling.Size:
    width, height = params.get("scaled_width"), params.get("scaled_height")
    if width is None and height is None:
        return scaling.declared_size(*native)
    if width is None or height is None:
        raise ActionError('Give both "scaled_width" and "scaled_height", or neither.')
    for name, value in (("scaled_width", width), ("scaled_height", height)):
        if not _is_int(value) or not 0 < value <= MAX_DECLARED_SIDE:
            raise ActionError(
                f'"{name}" must be an integer between 1 and {MAX_DECLARED_SIDE}, got {value!r}.'
            )
    return width, height


def _point(params: Mapping[str, Any], key: str, action: str, declared: scaling.Size, *, required: bool):
    value = params.get(key)
    if value is None:
        if required:
            raise ActionError(f'Missing "{key}" for {action} action.')
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(map(_is_int, value))
    ):
        raise ActionError(f'"{key}" must be a list of two integers [x, y], got {value!r}.')
    x, y = value
    if not scaling.in_bounds(x, y, declared):
        raise ActionError(f"Coordinate ({x}, {y}) is outside the {declared[0]}x{declared[1]} display.")
    return x, y


def _text(params: Mapping[str, Any], action: str, *, required: bool) -> str | None:
    value = params.get("text")
    if value is None:
        if required:
            raise ActionError(f'Missing "text" for {action} action.')
        return None
    if not isinstance(value, str):
        raise ActionError(f'"text" must be a string, got {type(value).__name__}.')
    if len(value) > MAX_TEXT:
        raise ActionError(f"Text is too long ({len(value)} characters; the limit is {MAX_TEXT}).")
    return value


def _duration(params: Mapping[str, Any], action: str, limit: float) -> float:
    value = params.get("duration")
    if value is None:
        raise ActionError(f'Missing "duration" for {action} action.')
    if not _is_number(value):
        raise ActionError(f'"duration" must be a number of seconds, got {value!r}.')
    if not 0 <= value <= limit:
        raise ActionError(f"Duration must be between 0 and {limit:g} seconds, got {value:g}.")
    return float(value)


def _bounded_int(
    params: Mapping[str, Any], key: str, action: str, low: int, high: int, default: int | None
) -> int:
    value = params.get(key)
    if value is None:
        if default is None:
            raise ActionError(f'Missing "{key}" for {action} action.')
        return default
    if not _is_int(value) or not low <= value <= high:
        raise ActionError(f'"{key}" must be an integer between {low} and {high}, got {value!r}.')
    return value


def parse_action(params: object, native: scaling.Size) -> Action:
    """Validate one action request against a desktop of ``native`` size and return it.

    Raise ActionError with a message for the model on any problem.
    """
    if not isinstance(params, Mapping):
        raise ActionError("An action must be a JSON object.")
    name = params.get("action")
    if name is None:
        raise ActionError('Missing "action".')
    if not isinstance(name, str) or name not in ACTIONS:
        raise ActionError(f"Unknown action: {name}")
    declared = _declared(params, native)
    act = Action(name=name, declared=declared, native=native)

    def native_point(key: str, *, required: bool) -> tuple[int, int] | None:
        point = _point(params, key, name, declared, required=required)
        return None if point is None else scaling.to_native(point[0], point[1], declared, native)

    try:
        if name in ("key", "hold_key"):
            text = _text(params, name, required=True)
            assert text is not None
            act.combos = normalize_keys(text)
            if name == "key":
                act.repeat = _bounded_int(params, "repeat", name, 1, MAX_REPEAT, 1)
            else:
                act.hold = [k for combo in act.combos for k in combo.split("+")]
                act.duration = _duration(params, name, MAX_HOLD_SECONDS)
        elif name == "type":
            act.text = _text(params, name, required=True)
        elif name == "mouse_move":
            act.coordinate = native_point("coordinate", required=True)
        elif name in CLICKS or name in ("left_mouse_down", "left_mouse_up"):
            act.coordinate = native_point("coordinate", required=False)
            modifiers = _text(params, name, required=False)
            if modifiers and name in CLICKS:
                act.hold = normalize_modifiers(modifiers)
        elif name == "left_click_drag":
            act.start_coordinate = native_point("start_coordinate", required=True)
            act.coordinate = native_point("coordinate", required=True)
            modifiers = _text(params, name, required=False)
            act.hold = normalize_modifiers(modifiers) if modifiers else []
        elif name == "scroll":
            direction = params.get("scroll_direction")
            if direction is None:
                raise ActionError('Missing "scroll_direction" for scroll action.')
            if direction not in SCROLL_DIRECTIONS:
                raise ActionError(f"Invalid scroll direction: {direction}")
            act.scroll_direction = direction
            act.scroll_amount = _bounded_int(params, "scroll_amount", name, 0, MAX_SCROLL_AMOUNT, None)
            act.coordinate = native_point("coordinate", required=False)
            modifiers = _text(params, name, required=False)
            act.hold = normalize_modifiers(modifiers) if modifiers else []
        elif name == "wait":
            act.duration = _duration(params, name, MAX_WAIT_SECONDS)
        elif name == "zoom":
            act.region, act.zoom_size = _zoom_region(params, declared, native)
    except KeyNameError as exc:
        raise ActionError(str(exc)) from None
    return act


def _zoom_region(
    params: Mapping[str, Any], declared: scaling.Size, native: scaling.Size
) -> tuple[tuple[int, int, int, int], scaling.Size]:
    value = params.get("region")
    if value is None:
        raise ActionError('Missing "region" for zoom action.')
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 4
        or not all(map(_is_int, value))
    ):
        raise ActionError(f'"region" must be a list of four integers [x0, y0, x1, y1], got {value!r}.')
    x0, y0, x1, y1 = value
    width, height = declared
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ActionError(
            f"Region ({x0}, {y0}, {x1}, {y1}) must satisfy 0 <= x0 < x1 <= {width} and "
            f"0 <= y0 < y1 <= {height} on the {width}x{height} display."
        )
    region = scaling.region_to_native((x0, y0, x1, y1), declared, native)
    crop_w, crop_h = region[2] - region[0], region[3] - region[1]
    # Scaled up (or down) to fill the declared display while keeping the region's aspect ratio.
    return region, fit_within(crop_w, crop_h, declared)


def _shot(png: bytes, size: scaling.Size) -> ScreenshotResult:
    return {"png_base64": base64.b64encode(png).decode("ascii"), "width": size[0], "height": size[1]}


@dataclass
class _Pending:
    """What an executed action still needs outside the desktop lock: text output and an image."""

    output: str | None = None
    frame: Capture | None = None
    size: scaling.Size | None = None
    crop: tuple[int, int, int, int] | None = None


class ActionRunner:
    """Runs actions on one desktop, one at a time (an asyncio.Lock per desktop).

    The lock covers starting the desktop, the input and the settled capture, so two clients can
    never interleave a move with another's click. PNG encoding happens after the lock is
    released, in a thread, so it neither blocks the event loop nor the next action.
    """

    def __init__(self, desktop: Desktop, settle: SettleConfig | None = None) -> None:
        self.desktop = desktop
        self.settle = settle or SettleConfig()
        self.lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        """Start (or restart) the desktop if needed. Raise DesktopError when it cannot start."""
        async with self._start_lock:
            await self.desktop.start()

    async def info(self) -> dict[str, Any]:
        """Return the native and declared display sizes (starting the desktop)."""
        await self.ensure_started()
        native = self.desktop.native_size
        declared = scaling.declared_size(*native)
        return {
            "backend": self.desktop.name,
            "native": {"width": native[0], "height": native[1]},
            "declared": {"width": declared[0], "height": declared[1]},
            "x_display": self.desktop.x_display,
            "xauthority": self.desktop.xauthority,
        }

    async def screenshot(self, width: int | None = None, height: int | None = None) -> ScreenshotResult:
        """Return one immediate capture, at ``width`` x ``height`` (default: native size)."""
        if (width is None) != (height is None):
            raise ActionError('Give both "width" and "height", or neither.')
        for value in (width, height):
            if value is not None and (not _is_int(value) or not 0 < value <= MAX_DECLARED_SIDE):
                raise ActionError(f"Screenshot size must be integers between 1 and {MAX_DECLARED_SIDE}.")
        async with self.lock:
            await self.ensure_started()
            frame = await self.desktop.grab()
        size = (width, height) if width is not None and height is not None else (frame.width, frame.height)
        png = await asyncio.to_thread(encode_png, frame, size)
        return _shot(png, size)

    async def action(self, params: object) -> ActionResult:
        """Validate and run one action; return its result. Raise ActionError/DesktopError."""
        if isinstance(params, Mapping) and params.get("action") == "wait":
            # A wait must not hold the desktop: other clients may act meanwhile.
            act = parse_action(params, self.desktop.native_size)
            await asyncio.sleep(act.duration)
            async with self.lock:
                await self.ensure_started()
                frame = await settled_grab(self.desktop.grab, before=None, config=self.settle)
            return await self._finish(_Pending(frame=frame, size=act.declared))
        return (await self.batch([params]))[0]

    async def batch(self, items: object) -> list[ActionResult]:
        """Run several actions atomically (nobody else acts in between) and return their results.

        All are validated before any runs. Only the last action gets its settled screenshot;
        earlier ones get ``screenshot: null`` unless they are queries (screenshot, zoom).
        """
        if not isinstance(items, list) or not items:
            raise ActionError('"actions" must be a non-empty list.')
        if len(items) > MAX_BATCH:
            raise ActionError(f"At most {MAX_BATCH} actions per batch.")
        async with self.lock:
            await self.ensure_started()
            native = self.desktop.native_size
            actions = []
            for index, item in enumerate(items):
                try:
                    actions.append(parse_action(item, native))
                except ActionError as exc:
                    if len(items) == 1:
                        raise
                    raise ActionError(f"Action {index + 1}: {exc}") from None
            pending = []
            for index, act in enumerate(actions):
                pending.append(await self._execute(act, settle=index == len(actions) - 1))
        return [await self._finish(p) for p in pending]

    async def _execute(self, act: Action, *, settle: bool) -> _Pending:
        """Perform ``act`` on the desktop (caller holds the lock)."""
        desktop = self.desktop
        name = act.name
        if name == "cursor_position":
            x, y = scaling.to_declared(*await desktop.cursor_position(), act.native, act.declared)
            return _Pending(output=f"X={x},Y={y}")
        if name == "screenshot":
            frame = await settled_grab(desktop.grab, before=None, config=self.settle)
            return _Pending(frame=frame, size=act.declared)
        if name == "zoom":
            return _Pending(frame=await desktop.grab(), size=act.zoom_size, crop=act.region)
        before = await desktop.grab() if settle else None
        try:
            await self._perform(act)
        except InputError as exc:
            raise ActionError(f'Action "{name}" failed: {exc}') from exc
        if not settle:
            return _Pending()
        frame = await settled_grab(desktop.grab, before=before, config=self.settle)
        return _Pending(frame=frame, size=act.declared)

    async def _perform(self, act: Action) -> None:
        desktop = self.desktop
        name = act.name
        if name == "key":
            await desktop.key(act.combos, repeat=act.repeat)
        elif name == "type":
            await desktop.type_text(act.text or "")
        elif name == "mouse_move":
            assert act.coordinate is not None
            await desktop.move(*act.coordinate)
        elif name in CLICKS:
            button, count = CLICKS[name]
            await desktop.click(button, at=act.coordinate, count=count, hold=act.hold)
        elif name in ("left_mouse_down", "left_mouse_up"):
            await desktop.button(1, down=name == "left_mouse_down", at=act.coordinate)
        elif name == "left_click_drag":
            assert act.start_coordinate is not None and act.coordinate is not None
            await desktop.drag(act.start_coordinate, act.coordinate, hold=act.hold)
        elif name == "scroll":
            await desktop.scroll(
                act.scroll_direction,  # type: ignore[arg-type]
                act.scroll_amount,
                at=act.coordinate,
                hold=act.hold,
            )
        elif name == "hold_key":
            await desktop.key_hold(act.hold, down=True)
            try:
                await asyncio.sleep(act.duration)
            finally:
                # Never leave a key stuck down, even when the client went away meanwhile.
                await asyncio.shield(desktop.key_hold(act.hold, down=False))
        elif name == "wait":
            await asyncio.sleep(act.duration)
        else:  # pragma: no cover - parse_action rejects unknown names
            raise ActionError(f"Unknown action: {name}")

    async def _finish(self, pending: _Pending) -> ActionResult:
        if pending.frame is None or pending.size is None:
            return {"output": pending.output, "screenshot": None}
        png = await asyncio.to_thread(encode_png, pending.frame, pending.size, pending.crop)
        return {"output": pending.output, "screenshot": _shot(png, pending.size)}


__all__ = [
    "ACTIONS",
    "QUERY_ACTIONS",
    "Action",
    "ActionError",
    "ActionResult",
    "ActionRunner",
    "DesktopError",
    "parse_action",
]
