"""Backend driving the ``portabledesktop`` CLI (coder/portabledesktop) when it is on PATH.

Command mapping (portabledesktop v0.0.4, as Coder's agent drives it; argv lists, never a shell)::

    start            portabledesktop up --json --geometry WxH   -> {"vncPort": N, "geometry": "WxH", ...}
    stop             portabledesktop down
    screenshot       portabledesktop screenshot --json          -> {"data": <base64 PNG>, ...}
    cursor           portabledesktop cursor --json              -> {"x": X, "y": Y}
    move             portabledesktop mouse move X Y
    click            portabledesktop mouse click BUTTON   (once per click; BUTTON: left|middle|right)
    button down/up   portabledesktop mouse down|up BUTTON
    scroll           portabledesktop mouse scroll DX DY   (signed wheel clicks; +DY down, +DX right)
    key              portabledesktop keyboard key -- COMBO
    key down/up      portabledesktop keyboard down|up -- KEY
    type             portabledesktop keyboard type -- TEXT

The CLI's ``up`` detaches, so this backend checks on every ``start()`` that the VNC port still
accepts connections and runs ``down`` + ``up`` when it does not (the original never noticed a dead
desktop). Held modifiers are pressed around clicks/scrolls with ``keyboard down/up``. Every call
runs under the agent's per-desktop lock, so actions are serialized (another fix over the original).
Note: portabledesktop's own Xvnc listens beyond loopback; prefer the xvnc backend where that matters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import socket
from typing import Any

from agents.daemon.backends.base import Desktop, DesktopError, InputError, ScrollDirection, run_command
from agents.daemon.boundary import DesktopUser
from agents.daemon.screenshot import Capture

log = logging.getLogger(__name__)

CLI = "portabledesktop"
COMMAND_TIMEOUT = 30.0
BUTTON_NAMES = {1: "left", 2: "middle", 3: "right"}
# `mouse scroll DX DY` takes signed wheel clicks per axis: positive DY scrolls down, positive DX right.
SCROLL_VECTORS: dict[str, tuple[int, int]] = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


class PortableDesktop(Desktop):
    """A desktop managed by the portabledesktop CLI."""

    name = "portabledesktop"

    def __init__(self, geometry: tuple[int, int], *, user: DesktopUser | None = None) -> None:
        super().__init__(geometry, user=user)
        self.vnc_port: int | None = None
        self._up = False

    async def run(self, *args: str | int, time_limit: float = COMMAND_TIMEOUT) -> str:
        """Run ``portabledesktop ARGS`` and return stdout; raise InputError on failure."""
        if shutil.which(CLI) is None:
            raise DesktopError("Failed to start desktop session: portabledesktop is not on PATH.")
        return await run_command(
            [CLI, *map(str, args)], what=f"portabledesktop {args[0]}", time_limit=time_limit, user=self.user
        )

    async def _json(self, *args: str | int) -> dict[str, Any]:
        out = await self.run(*args)
        try:
            data = json.loads(out)
        except ValueError:
            raise InputError(f"portabledesktop {args[0]} printed no JSON.") from None
        if not isinstance(data, dict):
            raise InputError(f"portabledesktop {args[0]} printed unexpected JSON.")
        return data

    def is_running(self) -> bool:
        return self._up

    async def _vnc_alive(self) -> bool:
        if self.vnc_port is None:
            return False
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.vnc_port), 2)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def start(self) -> None:
        if self._up and await self._vnc_alive():
            return
        if self._up:
            log.warning("portabledesktop session died; starting a new one")
            await self.stop()
        width, height = self.geometry
        try:
            info = await self._json("up", "--json", "--geometry", f"{width}x{height}")
        except (InputError, TimeoutError) as exc:
            log.error("portabledesktop up failed: %s", exc)
            raise DesktopError("Failed to start desktop session.") from exc
        port = info.get("vncPort")
        if not isinstance(port, int):
            raise DesktopError("Failed to start desktop session: portabledesktop reported no VNC port.")
        self.vnc_port = port
        geometry = str(info.get("geometry") or f"{width}x{height}")
        with contextlib.suppress(ValueError):
            w, h = (int(v) for v in geometry.lower().split("x"))
            self.native_size = (w, h)
        display = info.get("display")
        self.x_display = str(display) if display else None
        self._up = True

    async def stop(self) -> None:
        if not self._up:
            return
        self._up = False
        try:
            await self.run("down", time_limit=15)
        except (InputError, DesktopError, TimeoutError) as exc:
            log.warning("portabledesktop down failed: %s", exc)
        self.vnc_port = None

    async def open_vnc(self) -> socket.socket:
        if self.vnc_port is None:
            raise DesktopError("Desktop is not running.")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.vnc_port))
        except OSError as exc:
            sock.close()
            raise DesktopError("Failed to connect to VNC server.") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    async def grab(self) -> Capture:
        try:
            shot = await self._json("screenshot", "--json")
            png = base64.b64decode(shot["data"])
        except (InputError, KeyError, ValueError, TypeError) as exc:
            raise DesktopError("Failed to capture the screen.") from exc
        return Capture(width=self.native_size[0], height=self.native_size[1], data=png, mode="PNG")

    async def cursor_position(self) -> tuple[int, int]:
        data = await self._json("cursor", "--json")
        return int(data["x"]), int(data["y"])

    async def _hold(self, keys: list[str] | None, *, down: bool) -> None:
        ordered = list(keys or [])
        if not down:
            ordered.reverse()
        for key in ordered:
            await self.run("keyboard", "down" if down else "up", "--", key)

    async def move(self, x: int, y: int) -> None:
        await self.run("mouse", "move", x, y)

    async def click(
        self, button: int, *, at: tuple[int, int] | None = None, count: int = 1, hold: list[str] | None = None
    ) -> None:
        if at is not None:
            await self.move(*at)
        await self._hold(hold, down=True)
        try:
            for _ in range(count):  # the CLI clicks once per call (as Coder's driver uses it)
                await self.run("mouse", "click", BUTTON_NAMES[button])
        finally:
            await self._hold(hold, down=False)

    async def button(self, button: int, *, down: bool, at: tuple[int, int] | None = None) -> None:
        if at is not None:
            await self.move(*at)
        await self.run("mouse", "down" if down else "up", BUTTON_NAMES[button])

    async def drag(
        self, start: tuple[int, int], end: tuple[int, int], *, hold: list[str] | None = None
    ) -> None:
        await self.move(*start)
        await self._hold(hold, down=True)
        try:
            await self.run("mouse", "down", "left")
            await self.move(*end)
            await self.run("mouse", "up", "left")
        finally:
            await self._hold(hold, down=False)

    async def scroll(
        self,
        direction: ScrollDirection,
        amount: int,
        *,
        at: tuple[int, int] | None = None,
        hold: list[str] | None = None,
    ) -> None:
        if at is not None:
            await self.move(*at)
        await self._hold(hold, down=True)
        try:
            if amount:
                dx, dy = SCROLL_VECTORS[direction]
                await self.run("mouse", "scroll", dx * amount, dy * amount)
        finally:
            await self._hold(hold, down=False)

    async def key(self, combos: list[str], *, repeat: int = 1) -> None:
        for _ in range(repeat):
            for combo in combos:
                await self.run("keyboard", "key", "--", combo)

    async def key_hold(self, keys: list[str], *, down: bool) -> None:
        await self._hold(keys, down=down)

    async def type_text(self, text: str) -> None:
        await self.run("keyboard", "type", "--", text)
