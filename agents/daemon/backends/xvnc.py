"""The default backend: TigerVNC ``Xvnc`` + ``openbox`` + ``xdotool``.

Isolation choices, because the desktop is driven by a model and watched by people:

* Xvnc's RFB server listens only on a unix socket (mode 0600) inside a private 0700 directory,
  with TCP disabled (``-rfbport -1``); ``-SecurityTypes None`` is acceptable because nothing but
  this agent can open that socket. X11 itself does not listen on TCP, and clients need a random
  MIT-MAGIC-COOKIE from an Xauthority file in the same private directory.
* ``-displayfd`` lets Xvnc pick a free display number itself, so agents never race for one.
* ``-AcceptSetDesktopSize=0`` keeps the geometry fixed: the model's declared size depends on it.
* Nothing of the agent's environment reaches the desktop but an allowlist, and the desktop runs as
  ``self.user`` (``--desktop-user`` when the agent is root): see ``agents.daemon.boundary``. The private
  directory, its cookie file and the runtime directory then belong to that user; the agent (root) still
  reaches the RFB socket and the X display.
* Every child runs in its own session/process group; stopping kills those groups, every process
  whose environment names this display and its cookie file, then Xvnc, escalating to SIGKILL after
  a grace period.
* An agent killed without a chance to stop (SIGKILL, OOM) must not leave its desktop behind: Xvnc and
  openbox are started with a parent-death signal (``setpriv --pdeathsig TERM``), so they get SIGTERM the
  moment the agent dies (and X clients die with the X server); and the next agent to start sweeps the
  private directories whose agent is gone (``sweep_stale_desktops``), killing what still claims them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from pathlib import Path

from agents.daemon.backends import panel
from agents.daemon.backends.base import (
    SCROLL_BUTTONS,
    Desktop,
    DesktopError,
    InputError,
    ScrollDirection,
    run_command,
)
from agents.daemon.boundary import DesktopUser
from agents.daemon.screenshot import Capture, XConnection, XProtocolError

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0
STOP_GRACE = 3.0
# openbox announces itself (EWMH) within milliseconds; past this, go on without waiting any longer.
WM_START_TIMEOUT = 5.0
# The panel reserves its strip of the screen within a few hundred milliseconds; past this, go on.
PANEL_START_TIMEOUT = 5.0
XDOTOOL_TIMEOUT = 15.0
TYPE_CHUNK = 100
TYPE_DELAY_MS = 5
KEY_DELAY_MS = 5  # between keystrokes of a key action; xdotool's default sleeps 12 ms+ per key
DIR_PREFIX = "chatdesk-agent-"
OWNER_FILE = "agent"  # in the private directory: "<agent pid> <its start time>", to tell a stale one
X11_SOCKET_DIR = Path("/tmp/.X11-unix")  # noqa: S108 - where every X server puts its socket


def parent_death_prefix() -> list[str]:
    """Return the argv prefix that makes a child get SIGTERM when the agent dies ([] without setpriv)."""
    return ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def process_start_time(pid: int) -> str | None:
    """Return the start time of ``pid`` (clock ticks since boot, from /proc), None when it is gone.

    A pid and its start time name one process: a recycled pid has another start time.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


def write_xauthority(path: Path, cookie: bytes) -> None:
    """Write an Xauthority file with one FamilyWild entry (any host, any display number).

    Format (libXau): family, address, display number, auth name, auth data, each a big-endian
    u16 length (family: the value) followed by bytes.
    """

    def field(data: bytes) -> bytes:
        return struct.pack(">H", len(data)) + data

    entry = struct.pack(">H", 0xFFFF) + field(b"") + field(b"") + field(b"MIT-MAGIC-COOKIE-1") + field(cookie)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(entry)


def _process_alive(pid: int) -> bool:
    """Return True when ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _ancestors() -> set[int]:
    pids = set()
    pid = os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


async def connect_unix(path: str, *, time_limit: float) -> socket.socket:
    """Return a socket connected to the unix socket ``path``, retrying while its backlog is full.

    A non-blocking AF_UNIX connect() to a listener whose backlog is full fails with EAGAIN, which
    means "try again", not "in progress" as for TCP; asyncio's connect treats it as in progress and
    hands back a socket that never connected (its first recv() fails with EINVAL). Several viewers
    opening at once fill Xvnc's backlog, so connect here and retry until ``time_limit``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + time_limit
    delay = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if loop.time() + delay > deadline:
                raise TimeoutError(f"{path}: the listener's backlog stayed full") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        except BaseException:
            sock.close()
            raise


def display_clients(display: str, xauthority: str) -> set[int]:
    """Return the pids of processes started for this desktop: DISPLAY is ``display`` (":N") and
    XAUTHORITY is this desktop's private cookie file.

    DISPLAY alone is not enough: once this desktop's Xvnc is gone, another desktop on the machine may
    take the same number, and its programs must not be killed with ours. The cookie path is unique to
    this desktop, and every program that can use it got it from our environment.
    """
    wanted = {f"DISPLAY={display}".encode(), f"DISPLAY={display}.0".encode()}
    cookie = f"XAUTHORITY={xauthority}".encode()
    spare = _ancestors()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        variables = set(environ.split(b"\0"))
        if cookie in variables and wanted.intersection(variables):
            found.add(int(entry.name))
    return found


def process_group_members(pgids: set[int]) -> set[int]:
    """Return the pids whose process group is in ``pgids``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:
            found.add(int(entry.name))
    return found


async def terminate(pids: set[int], *, grace: float = STOP_GRACE) -> None:
    """SIGTERM ``pids``, wait up to ``grace`` seconds for them to exit, then SIGKILL the rest."""
    pids = {p for p in pids if p != os.getpid()}
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        pids = {p for p in pids if _process_alive(p)}
        if not pids:
            return
        await asyncio.sleep(0.05)
    for pid in pids:
        log.warning("process %d ignored SIGTERM; killing it", pid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def ensure_x11_socket_dir() -> None:
    """Create /tmp/.X11-unix (1777) when missing: an Xvnc that is not root cannot create it itself."""
    with contextlib.suppress(FileExistsError):
        X11_SOCKET_DIR.mkdir()
        os.chmod(X11_SOCKET_DIR, 0o1777)  # noqa: S103 - sticky and world-writable, as X expects


def stale_desktop_dirs(parent: Path) -> list[Path]:
    """Return this machine's desktop directories (under ``parent``) whose agent is gone.

    Only directories whose owner file this user wrote are considered, and an agent is gone when no
    process has the pid and start time the file names.
    """
    stale = []
    for path in parent.glob(DIR_PREFIX + "*"):
        owner = path / OWNER_FILE
        try:
            if path.is_symlink() or owner.lstat().st_uid != os.geteuid():
                continue  # not written by an agent of this user (the desktop's user cannot forge one)
            pid_text, started = owner.read_text().split()
        except (OSError, ValueError):
            continue
        if not pid_text.isdigit() or process_start_time(int(pid_text)) != started:
            stale.append(path)
    return stale


def processes_of_desktop(path: Path) -> set[int]:
    """Return the pids that belong to the desktop in directory ``path``: its Xvnc (``-auth`` there) and
    every process whose XAUTHORITY is its cookie file, owned by the directory's user."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return set()
    cookie = str(path / "Xauthority").encode()
    spare = _ancestors()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"XAUTHORITY=" + cookie in environ or (b"-auth" in argv and cookie in argv):
            found.add(int(entry.name))
    return found


async def sweep_stale_desktops(parent: Path | None = None) -> None:
    """Stop the processes of every stale desktop (``stale_desktop_dirs``) and remove its directory."""
    for path in stale_desktop_dirs(parent or Path(tempfile.gettempdir())):
        victims = processes_of_desktop(path)
        log.warning(
            "removing the desktop left by an agent that died (%s, %d processes)", path.name, len(victims)
        )
        await terminate(victims)
        shutil.rmtree(path, ignore_errors=True)


class XvncDesktop(Desktop):
    """Xvnc + openbox on a private display; see the module docstring."""

    name = "xvnc"

    def __init__(self, geometry: tuple[int, int], *, user: DesktopUser | None = None) -> None:
        super().__init__(geometry, user=user)
        self._xvnc: asyncio.subprocess.Process | None = None
        self._wm: asyncio.subprocess.Process | None = None
        self._panel: asyncio.subprocess.Process | None = None
        self._panel_config: str | None = None
        self._x: XConnection | None = None
        self._dir: Path | None = None
        self._env: dict[str, str] = {}
        self.rfb_socket: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def program_environment(self) -> dict[str, str] | None:
        return dict(self._env) if self._env and self.x_display else None

    def is_running(self) -> bool:
        return self._xvnc is not None and self._xvnc.returncode is None and _process_alive(self._xvnc.pid)

    async def start(self) -> None:
        if self.is_running():
            if self._wm is None or self._wm.returncode is not None:
                await self._start_wm()
            if self._panel_config and (self._panel is None or self._panel.returncode is not None):
                await self._start_panel()
            return
        if self._xvnc is not None:
            log.warning("desktop %s died; starting a new one", self.x_display)
            await self.stop()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if shutil.which("Xvnc") is None:
            raise DesktopError("Failed to start desktop session: Xvnc is not installed.")
        self._dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))  # mode 0700
        (self._dir / OWNER_FILE).write_text(f"{os.getpid()} {process_start_time(os.getpid())}\n")
        cookie = os.urandom(16)
        xauthority = self._dir / "Xauthority"
        write_xauthority(xauthority, cookie)
        runtime_dir = self._dir / "runtime"
        runtime_dir.mkdir(mode=0o700)
        # The panel's files stay the agent's (read-only to the desktop): written through this descriptor,
        # opened before the desktop's user gets the directory around it, so nothing can redirect them.
        panel_dir = self._dir / "panel"
        panel_dir.mkdir(mode=0o755)
        panel_fd = os.open(panel_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            await self._start_display(xauthority, cookie, runtime_dir)
            await self._furnish(panel_dir, panel_fd)
        finally:
            os.close(panel_fd)
        log.info("desktop started on %s (%dx%d)", self.x_display, *self.native_size)

    async def _start_display(self, xauthority: Path, cookie: bytes, runtime_dir: Path) -> None:
        """Start Xvnc and the window manager."""
        assert self._dir is not None
        log_fd = os.open(self._dir / "Xvnc.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # Everything above is the agent's own doing; the desktop's user gets the directory only now.
            for path in (self._dir, xauthority, runtime_dir):
                self.user.give(path)
            if self.user.switch:
                ensure_x11_socket_dir()
            self.rfb_socket = str(self._dir / "rfb.sock")
            width, height = self.geometry
            read_fd, write_fd = os.pipe()
            argv = [
                *parent_death_prefix(),
                "Xvnc",
                "-displayfd", str(write_fd),
                "-geometry", f"{width}x{height}",
                "-depth", "24",
                "-dpi", "96",
                "-auth", str(xauthority),
                "-nolisten", "tcp",
                "-rfbport", "-1",
                "-rfbunixpath", self.rfb_socket,
                "-rfbunixmode", "0600",
                "-SecurityTypes", "None",
                "-AlwaysShared",
                # Xvnc black-lists a peer after 5 unauthenticated connections (several viewers opening at
                # once): its only peer is this agent, behind our own token check, so the list only hurts.
                "-UseBlacklist=0",
                "-AcceptSetDesktopSize=0",
            ]  # fmt: skip
            try:
                self._xvnc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                    env=self.user.environment(runtime_dir=str(runtime_dir)),
                    **self.user.spawn_options(),
                )
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
        finally:
            os.close(log_fd)
        try:
            number = await asyncio.wait_for(asyncio.to_thread(_read_display_number, read_fd), START_TIMEOUT)
        except TimeoutError:
            raise DesktopError("Failed to start desktop session: Xvnc did not come up in time.") from None
        finally:
            os.close(read_fd)
        if number is None:
            tail = (self._dir / "Xvnc.log").read_text(errors="replace").strip().splitlines()[-3:]
            log.error("Xvnc exited during start-up: %s", " | ".join(tail))
            raise DesktopError("Failed to start desktop session: Xvnc exited during start-up.")
        self.x_display = f":{number}"
        self.xauthority = str(xauthority)
        self._env = self.user.environment(
            display=self.x_display, xauthority=self.xauthority, runtime_dir=str(runtime_dir)
        )
        try:
            self._x = await XConnection.open(self.x_display, cookie)
        except (OSError, XProtocolError, TimeoutError) as exc:
            log.error("cannot open X display %s: %s", self.x_display, exc)
            raise DesktopError("Failed to start desktop session: cannot open the X display.") from exc
        self.native_size = (self._x.width, self._x.height)
        await self._start_wm()

    async def _start_wm(self) -> None:
        if shutil.which("openbox") is None:
            log.warning("openbox is not installed; the desktop has no window manager")
            return
        self._wm = await asyncio.create_subprocess_exec(
            *parent_death_prefix(),
            "openbox",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=self._env,
            **self.user.spawn_options(),
        )
        await self._wait_for_wm()

    async def _wait_for_wm(self) -> None:
        """Wait (bounded) until the window manager has taken over the root window.

        A window mapped before openbox selects SubstructureRedirect on the root may never be managed
        (no frame, no focus): the desktop is not ready until the WM says so. EWMH window managers say
        so by setting _NET_SUPPORTING_WM_CHECK on the root window once they are running.
        """
        assert self._x is not None and self._wm is not None
        deadline = asyncio.get_running_loop().time() + WM_START_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            atom = await self._x.intern_atom("_NET_SUPPORTING_WM_CHECK")
            if atom and await self._x.root_property_window(atom):
                return
            if self._wm.returncode is not None:
                log.warning("openbox exited during start-up (code %s)", self._wm.returncode)
                return
            await asyncio.sleep(0.02)
        log.warning("openbox did not announce itself within %.0fs; going on", WM_START_TIMEOUT)

    async def _furnish(self, panel_dir: Path, panel_fd: int) -> None:
        """Set the wallpaper and start the panel (see ``backends/panel.py``); the desktop works without."""
        if shutil.which("xsetroot"):
            try:
                await run_command(
                    ["xsetroot", "-solid", panel.WALLPAPER],
                    what="xsetroot",
                    time_limit=5,
                    user=self.user,
                    env=self._env,
                )
            except InputError as exc:
                log.warning("could not set the wallpaper: %s", exc)
        if shutil.which("tint2") is None:
            log.warning("tint2 is not installed; the desktop has no panel")
            return
        assert self.x_display is not None
        sandbox = await self._user_namespaces()
        if not sandbox:
            log.warning("the desktop's user cannot create user namespaces: Chromium runs without its sandbox")
        entries = []
        for item in panel.LAUNCHERS:
            argv = panel.launcher_argv(item, home=self.user.home, display=self.x_display, sandbox=sandbox)
            _write_new(panel_fd, f"{item.key}.desktop", panel.desktop_entry(item, argv))
            entries.append(str(panel_dir / f"{item.key}.desktop"))
        _write_new(panel_fd, "tint2rc", panel.tint2_config(entries))
        self._panel_config = str(panel_dir / "tint2rc")
        await self._start_panel()

    async def _user_namespaces(self) -> bool:
        """Return True when the desktop's user can create a user namespace (Chromium's sandbox needs one)."""
        if shutil.which("unshare") is None:
            return True
        try:
            await run_command(
                ["unshare", "--user", "true"], what="unshare", time_limit=5, user=self.user, env=self._env
            )
        except InputError:
            return False
        return True

    async def _start_panel(self) -> None:
        assert self._panel_config is not None
        self._panel = await asyncio.create_subprocess_exec(
            *parent_death_prefix(),
            "tint2",
            "-c",
            self._panel_config,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env=self._env,
            **self.user.spawn_options(),
        )
        await self._wait_for_panel()

    async def _wait_for_panel(self) -> None:
        """Wait (bounded) until the panel has reserved its strip: the window manager's work area
        (_NET_WORKAREA) is then shorter than the screen, and new windows are placed above the panel."""
        assert self._x is not None and self._panel is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PANEL_START_TIMEOUT
        atom = 0
        while loop.time() < deadline:
            atom = atom or await self._x.intern_atom("_NET_WORKAREA")
            if atom:
                area = await self._x.root_property_cardinals(atom)
                if len(area) >= 4 and area[3] < self.native_size[1]:
                    return
            if self._panel.returncode is not None:
                log.warning("tint2 exited during start-up (code %s)", self._panel.returncode)
                return
            await asyncio.sleep(0.02)
        log.warning("the panel did not take its place within %.0fs; going on", PANEL_START_TIMEOUT)

    async def sweep_stale(self) -> None:
        await sweep_stale_desktops()

    async def stop(self) -> None:
        if self._x is not None:
            self._x.close()
            self._x = None
        pgids = {p.pid for p in (self._panel, self._wm, self._xvnc) if p is not None}
        victims = process_group_members(pgids - {self._xvnc.pid} if self._xvnc else pgids)
        if self.x_display and self.xauthority:
            victims |= display_clients(self.x_display, self.xauthority)
        # Clients first, so they do not log X I/O errors for a server that vanished; then Xvnc.
        await terminate(victims)
        if self._xvnc is not None:
            await terminate(process_group_members({self._xvnc.pid}) | {self._xvnc.pid})
        for proc in (self._panel, self._wm, self._xvnc):
            if proc is not None:
                with contextlib.suppress(ProcessLookupError, TimeoutError):
                    await asyncio.wait_for(proc.wait(), STOP_GRACE)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._xvnc = self._wm = self._panel = None
        self._panel_config = None
        self._dir = None
        self._env = {}
        self.x_display = self.xauthority = self.rfb_socket = None

    # -- streams and queries -----------------------------------------------------------------

    async def open_vnc(self) -> socket.socket:
        if self.rfb_socket is None:
            raise DesktopError("Desktop is not running.")
        try:
            return await connect_unix(self.rfb_socket, time_limit=START_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise DesktopError("Failed to connect to VNC server.") from exc

    def _xconn(self) -> XConnection:
        if self._x is None:
            raise DesktopError("Desktop is not running.")
        return self._x

    async def grab(self) -> Capture:
        try:
            return await self._xconn().get_image()
        except (OSError, asyncio.IncompleteReadError, XProtocolError) as exc:
            raise DesktopError("Failed to capture the screen.") from exc

    async def cursor_position(self) -> tuple[int, int]:
        try:
            x, y, _mask = await self._xconn().query_pointer()
        except (OSError, asyncio.IncompleteReadError, XProtocolError) as exc:
            raise DesktopError("Failed to read the pointer position.") from exc
        return x, y

    # -- input ---------------------------------------------------------------------------------

    async def xdotool(self, *args: str | int, time_limit: float = XDOTOOL_TIMEOUT) -> str:
        """Run one xdotool command line (argv, never a shell) on this display; return stdout.

        Raise InputError when it fails or times out.
        """
        if self.x_display is None:
            raise DesktopError("Desktop is not running.")
        return await run_command(
            ["xdotool", *map(str, args)], what="xdotool", time_limit=time_limit, user=self.user, env=self._env
        )

    @staticmethod
    def _move(at: tuple[int, int] | None) -> list[str | int]:
        return ["mousemove", at[0], at[1]] if at is not None else []

    @staticmethod
    def _hold(keys: list[str] | None, *, down: bool) -> list[str | int]:
        ordered = list(keys or [])
        if not down:
            ordered.reverse()  # release in the opposite order of pressing
        args: list[str | int] = []
        for key in ordered:
            args += ["keydown" if down else "keyup", key]
        return args

    async def move(self, x: int, y: int) -> None:
        await self.xdotool(*self._move((x, y)))

    async def click(
        self, button: int, *, at: tuple[int, int] | None = None, count: int = 1, hold: list[str] | None = None
    ) -> None:
        await self.xdotool(
            *self._move(at),
            *self._hold(hold, down=True),
            # xdotool sleeps --delay after *every* click (100 ms by default), so set it: 0 for a
            # single click, 60 ms between the clicks of a double/triple click (well inside any
            # toolkit's double-click time).
            "click", "--repeat", count, "--delay", 0 if count == 1 else 60, button,
            *self._hold(hold, down=False),
        )  # fmt: skip

    async def button(self, button: int, *, down: bool, at: tuple[int, int] | None = None) -> None:
        await self.xdotool(*self._move(at), "mousedown" if down else "mouseup", button)

    async def drag(
        self, start: tuple[int, int], end: tuple[int, int], *, hold: list[str] | None = None
    ) -> None:
        middle = ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
        # An intermediate motion lets toolkits that need a drag threshold see a real drag.
        await self.xdotool(
            *self._move(start),
            *self._hold(hold, down=True),
            "mousedown", 1,
            *self._move(middle),
            *self._move(end),
            "mouseup", 1,
            *self._hold(hold, down=False),
        )  # fmt: skip

    async def scroll(
        self,
        direction: ScrollDirection,
        amount: int,
        *,
        at: tuple[int, int] | None = None,
        hold: list[str] | None = None,
    ) -> None:
        clicks: list[str | int] = ["click", "--repeat", amount, "--delay", 10, SCROLL_BUTTONS[direction]]
        await self.xdotool(
            *self._move(at),
            *self._hold(hold, down=True),
            *(clicks if amount else []),
            *self._hold(hold, down=False),
        )

    async def key(self, combos: list[str], *, repeat: int = 1) -> None:
        await self.xdotool("key", "--repeat", repeat, "--delay", KEY_DELAY_MS, "--", *combos)

    async def key_hold(self, keys: list[str], *, down: bool) -> None:
        await self.xdotool("keydown" if down else "keyup", "--", *keys)

    async def type_text(self, text: str) -> None:
        for start in range(0, len(text), TYPE_CHUNK):
            await self.xdotool("type", "--delay", TYPE_DELAY_MS, "--", text[start : start + TYPE_CHUNK])


def _write_new(dir_fd: int, name: str, text: str) -> None:
    """Write a new file ``name`` (0644) in the directory ``dir_fd``; never through a link."""
    fd = os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd
    )
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)


def _read_display_number(fd: int) -> int | None:
    """Block until Xvnc writes its display number on ``fd`` (it does when ready); None on EOF."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    text = data.decode().strip()
    return int(text) if text.isdigit() else None
