"""The interface every desktop backend implements.

A backend owns one desktop: it starts it lazily, notices when it died, stops it completely, and
turns the agent's input primitives (always in *native* pixels, already validated) into real
input events. Serialization is not the backend's job: ``actions.ActionRunner`` holds one lock
per desktop around every call.

Every process a backend starts runs as ``self.user`` with an environment from its allowlist
(``agents.daemon.boundary``): pass ``env=self.user.environment(...)`` and ``**self.user.spawn_options()``,
or use :func:`run_command` with ``user=self.user``.
"""

from __future__ import annotations

import abc
import asyncio
import socket
from typing import Literal

from agents.daemon.boundary import DesktopUser
from agents.daemon.screenshot import Capture

ScrollDirection = Literal["up", "down", "left", "right"]
# X11 pointer buttons: 1 left, 2 middle, 3 right; wheel 4 up, 5 down, 6 left, 7 right.
SCROLL_BUTTONS: dict[str, int] = {"up": 4, "down": 5, "left": 6, "right": 7}


class DesktopError(Exception):
    """The desktop could not be started or reached. The message is safe to show to a client."""


class InputError(Exception):
    """An input command failed on a running desktop (e.g. xdotool exited non-zero)."""


async def run_command(
    argv: list[str], *, what: str, time_limit: float, user: DesktopUser, env: dict[str, str] | None = None
) -> str:
    """Run ``argv`` (never through a shell) as ``user`` and return its stdout.

    ``env`` defaults to the user's allowlisted environment (no DISPLAY). The process is killed when
    ``time_limit`` passes or the caller is cancelled, so no input command outlives the action that ran
    it. Raise InputError naming ``what`` with the last line of stderr.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else user.environment(),
        **user.spawn_options(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
    except (TimeoutError, asyncio.CancelledError) as exc:
        proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise InputError(f"{what} timed out.") from None
        raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise InputError(f"{what} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return out.decode(errors="replace")


class Desktop(abc.ABC):
    """One desktop session; see module docstring."""

    name = "base"

    def __init__(self, geometry: tuple[int, int], *, user: DesktopUser | None = None) -> None:
        self.geometry = geometry
        self.user = user or DesktopUser.current()
        self.native_size: tuple[int, int] = geometry
        self.x_display: str | None = None
        self.xauthority: str | None = None

    def program_environment(self) -> dict[str, str] | None:
        """Return the environment of a program that draws on (or records) this desktop, None when it has
        no X display: the desktop user's allowlisted environment plus DISPLAY and XAUTHORITY."""
        if self.x_display is None:
            return None
        return self.user.environment(display=self.x_display, xauthority=self.xauthority)

    @abc.abstractmethod
    def is_running(self) -> bool:
        """Return True when the desktop is up (without starting it)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the desktop if it is not running (idempotent); restart it if it died.

        Raise DesktopError when it cannot be started.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the desktop and every process on it (idempotent)."""

    async def sweep_stale(self) -> None:
        """Stop what a previous agent that died without stopping (SIGKILL) left of its desktops.

        Called once when the agent starts; the default does nothing.
        """
        return None

    @abc.abstractmethod
    async def open_vnc(self) -> socket.socket:
        """Return a fresh non-blocking socket connected to the desktop's RFB server (one per viewer)."""

    @abc.abstractmethod
    async def grab(self) -> Capture:
        """Return the whole screen at native size."""

    @abc.abstractmethod
    async def cursor_position(self) -> tuple[int, int]:
        """Return the pointer position in native pixels."""

    @abc.abstractmethod
    async def move(self, x: int, y: int) -> None:
        """Move the pointer to native (x, y)."""

    @abc.abstractmethod
    async def click(
        self, button: int, *, at: tuple[int, int] | None = None, count: int = 1, hold: list[str] | None = None
    ) -> None:
        """Click ``button`` ``count`` times, first moving to ``at``, while holding the keys ``hold``."""

    @abc.abstractmethod
    async def button(self, button: int, *, down: bool, at: tuple[int, int] | None = None) -> None:
        """Press (down=True) or release a pointer button, first moving to ``at``."""

    @abc.abstractmethod
    async def drag(
        self, start: tuple[int, int], end: tuple[int, int], *, hold: list[str] | None = None
    ) -> None:
        """Press the left button at ``start``, move to ``end`` and release it there."""

    @abc.abstractmethod
    async def scroll(
        self,
        direction: ScrollDirection,
        amount: int,
        *,
        at: tuple[int, int] | None = None,
        hold: list[str] | None = None,
    ) -> None:
        """Turn the wheel ``amount`` clicks in ``direction``."""

    @abc.abstractmethod
    async def key(self, combos: list[str], *, repeat: int = 1) -> None:
        """Press and release each normalized combo ("ctrl+shift+t"), the sequence ``repeat`` times."""

    @abc.abstractmethod
    async def key_hold(self, keys: list[str], *, down: bool) -> None:
        """Press (down=True) or release the normalized keysyms ``keys``."""

    @abc.abstractmethod
    async def type_text(self, text: str) -> None:
        """Type ``text`` as keyboard input (never interpreted by a shell)."""
