"""Computer actions on a desktop: a checked request becomes input events and a settled screenshot.

Requests are the Anthropic computer tool's input fields (``computer_20250124``, ``computer_20251124``
and the members of ``computer_toolset_20260801``) plus the declared display size the model sees
(``scaled_width``/``scaled_height``). What an action may be — names, fields, limits and the message
for the model when it is refused — is ``actionspec``, the module the server checks the same input
with; this module adds only the agent's side: the declared size, the mapping of coordinates to native
pixels (``scaling``; ``cursor_position`` maps back) and the execution.

A running action is cancelled when its caller leaves (``server``): the backend kills its input
command, and :meth:`ActionRunner.action` then releases every key the action may have left down, since
a key left down autorepeats on the desktop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from agents.daemon import actionspec, scaling
from agents.daemon.actionspec import ActionError
from agents.daemon.backends.base import Desktop, DesktopError, InputError
from agents.daemon.keys import KeyNameError, normalize_key
from agents.daemon.screenshot import Capture, SettleConfig, encode_png, fit_within, settled_grab

log = logging.getLogger(__name__)

CLICKS: dict[str, tuple[int, int]] = {  # action -> (X button, click count)
    "left_click": (1, 1),
    "right_click": (3, 1),
    "middle_click": (2, 1),
    "double_click": (1, 2),
    "triple_click": (1, 3),
}
MAX_DECLARED_SIDE = 10_000
# Keys ``type`` may hold down besides the typed characters' own (xdotool presses shift for capitals).
TYPING_MODIFIERS = ("shift",)
SPECIAL_TYPED_KEYS = {"\n": "Return", "\r": "Return", "\t": "Tab"}


class ScreenshotResult(TypedDict):
    png_base64: str
    width: int
    height: int


class ActionResult(TypedDict):
    output: str | None
    screenshot: ScreenshotResult | None


@dataclass
class Action:
    """A checked action; every coordinate is already in native pixels."""

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

    def keys_pressed(self) -> list[str]:
        """Return the keysyms this action may press, to release them when it is cut short."""
        keys = [*self.hold, *(key for combo in self.combos for key in combo.split("+"))]
        if self.name == "type" and self.text:
            keys += TYPING_MODIFIERS
            for char in set(self.text):
                try:
                    keys.append(SPECIAL_TYPED_KEYS.get(char) or normalize_key(char))
                except KeyNameError:
                    continue  # typed through a keycode xdotool binds and unbinds itself
        return list(dict.fromkeys(keys))


def _declared(width: object, height: object, native: scaling.Size) -> scaling.Size:
    if width is None and height is None:
        return scaling.declared_size(*native)
    if width is None or height is None:
        raise ActionError('Give both "scaled_width" and "scaled_height", or neither.')
    for name, value in (("scaled_width", width), ("scaled_height", height)):
        if not actionspec.is_int(value) or not 0 < value <= MAX_DECLARED_SIDE:  # type: ignore[operator]
            raise ActionError(
                f'"{name}" must be an integer between 1 and {MAX_DECLARED_SIDE}, got {actionspec.clip(value)}.'
            )
    return width, height  # type: ignore[return-value]


def parse_action(params: object, native: scaling.Size) -> Action:
    """Check one action request against a desktop of ``native`` size and return it.

    Raise ActionError with a message for the model on any problem (see ``actionspec.check_action``).
    """
    if not isinstance(params, Mapping):
        raise ActionError(actionspec.NOT_AN_OBJECT)
    fields = dict(params)
    name = fields.pop("action", None)
    declared = _declared(fields.pop("scaled_width", None), fields.pop("scaled_height", None), native)
    checked = actionspec.check_action(name, fields, declared)
    given = checked.fields

    def native_point(key: str) -> tuple[int, int] | None:
        point = given.get(key)
        return None if point is None else scaling.to_native(point[0], point[1], declared, native)

    act = Action(
        name=checked.name,
        declared=declared,
        native=native,
        coordinate=native_point("coordinate"),
        start_coordinate=native_point("start_coordinate"),
        combos=list(checked.combos),
        hold=list(checked.held),
        duration=float(given.get("duration", 0)),
        repeat=given.get("repeat", 1),
        scroll_direction=given.get("scroll_direction", "down"),
        scroll_amount=given.get("scroll_amount", 0),
    )
    if checked.name == "type":
        act.text = given["text"]
    if checked.name == "zoom":
        x0, y0, x1, y1 = given["region"]
        act.region = scaling.region_to_native((x0, y0, x1, y1), declared, native)
        crop_w, crop_h = act.region[2] - act.region[0], act.region[3] - act.region[1]
        # Scaled up (or down) to fill the declared display while keeping the region's aspect ratio.
        act.zoom_size = fit_within(crop_w, crop_h, declared)
    return act


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
            if value is not None and (not actionspec.is_int(value) or not 0 < value <= MAX_DECLARED_SIDE):
                raise ActionError(f"Screenshot size must be integers between 1 and {MAX_DECLARED_SIDE}.")
        async with self.lock:
            await self.ensure_started()
            frame = await self.desktop.grab()
        size = (width, height) if width is not None and height is not None else (frame.width, frame.height)
        png = await asyncio.to_thread(encode_png, frame, size)
        return _shot(png, size)

    async def action(self, params: object) -> ActionResult:
        """Check and run one action; return its result. Raise ActionError/DesktopError.

        Cancelled (its caller left), the action stops where it is and releases the keys it may have
        left down before the cancellation goes on.
        """
        if isinstance(params, Mapping) and params.get("action") == "wait":
            # A wait must not hold the desktop: other clients may act meanwhile.
            act = parse_action(params, self.desktop.native_size)
            await asyncio.sleep(act.duration)
            async with self.lock:
                await self.ensure_started()
                frame = await settled_grab(self.desktop.grab, before=None, config=self.settle)
            return await self._finish(_Pending(frame=frame, size=act.declared))
        async with self.lock:
            await self.ensure_started()
            act = parse_action(params, self.desktop.native_size)
            pending = await self._execute(act)
        return await self._finish(pending)

    async def _execute(self, act: Action) -> _Pending:
        """Perform ``act`` on the desktop and capture its result (caller holds the lock)."""
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
        before = await desktop.grab()
        try:
            await self._perform(act)
        except InputError as exc:
            raise ActionError(f'Action "{name}" failed: {exc}') from exc
        except asyncio.CancelledError:
            # The backend killed its input command, perhaps between a key's press and release; a key
            # left down autorepeats, typing on after the caller gave up.
            keys = act.keys_pressed()
            if keys:
                with contextlib.suppress(InputError, DesktopError):
                    await asyncio.shield(desktop.key_hold(keys, down=False))
            raise
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
        else:  # pragma: no cover - parse_action refuses unknown names
            raise ActionError(f'Unknown action "{name}".')

    async def _finish(self, pending: _Pending) -> ActionResult:
        if pending.frame is None or pending.size is None:
            return {"output": pending.output, "screenshot": None}
        png = await asyncio.to_thread(encode_png, pending.frame, pending.size, pending.crop)
        return {"output": pending.output, "screenshot": _shot(png, pending.size)}


__all__ = [
    "Action",
    "ActionError",
    "ActionResult",
    "ActionRunner",
    "DesktopError",
    "parse_action",
]
