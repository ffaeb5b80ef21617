"""A desktop ready for work: a plain wallpaper and a panel whose launchers open a terminal, Chromium and a
file manager with one click (agents/daemon/backends/panel.py). The clicks are the agent's own actions, at
the positions the panel's layout defines; the windows are found on the X display."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from agents.daemon.backends.panel import (
    LAUNCHER_ICON,
    LAUNCHERS,
    PANEL_HEIGHT,
    WALLPAPER,
    chromium_profile,
    launcher,
    launcher_center,
)
from tests.agents.daemon.conftest import needs_desktop
from tests.support.agent_process import AgentProcess, desktop_user
from tests.support.waiting import wait_until

pytestmark = [
    needs_desktop,
    pytest.mark.desktop,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("tint2", "chromium", "pcmanfm", "xsetroot")),
        reason="needs tint2, chromium, pcmanfm and xsetroot",
    ),
]

SCREEN = (1280, 800)


def windows(agent: AgentProcess, wm_class: str) -> list[str]:
    """Return the ids of the visible windows of class ``wm_class`` on the agent's desktop."""
    out = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--class", wm_class],
        env=agent.x_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.split()


def window_names(agent: AgentProcess, wm_class: str) -> list[str]:
    """Return the titles of the visible windows of class ``wm_class``, read one window at a time (a
    window that closes between the search and the read leaves the others' titles)."""
    names = []
    for window in windows(agent, wm_class):
        out = subprocess.run(
            ["xdotool", "getwindowname", window],
            env=agent.x_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0:
            names.append(out.stdout.strip())
    return names


def screenshot(agent: AgentProcess) -> Image.Image:
    shot = agent.call("screenshot")
    return Image.open(io.BytesIO(base64.b64decode(shot["png_base64"]))).convert("RGB")


def click_launcher(agent: AgentProcess, key: str) -> None:
    x, y = launcher_center(key, SCREEN)
    agent.call("action", {"action": "left_click", "coordinate": [x, y]})


def test_the_desktop_starts_with_a_wallpaper_and_the_panel(agent: AgentProcess) -> None:
    assert agent.info()["native"] == {"width": SCREEN[0], "height": SCREEN[1]}
    image = screenshot(agent)
    wallpaper = tuple(int(WALLPAPER[i : i + 2], 16) for i in (1, 3, 5))
    assert image.getpixel((640, 300)) == wallpaper
    assert image.getpixel((640, SCREEN[1] - PANEL_HEIGHT // 2)) != wallpaper  # the panel's strip
    # Each launcher shows an icon: its square holds more than the panel's colour.
    half = LAUNCHER_ICON // 2
    for item in LAUNCHERS:
        x, y = launcher_center(item.key, SCREEN)
        icon = image.crop((x - half, y - half, x + half, y + half))
        assert len(icon.getcolors(4096) or range(4097)) > 4, item.key
    # New windows go above the panel: the window manager leaves its strip out of the work area.
    area = subprocess.run(
        ["xprop", "-root", "_NET_WORKAREA"], env=agent.x_env(), capture_output=True, text=True, check=True
    ).stdout
    assert f"0, 0, {SCREEN[0]}, {SCREEN[1] - PANEL_HEIGHT}" in area


def test_the_terminal_launcher_opens_a_terminal(agent: AgentProcess) -> None:
    assert not windows(agent, "xterm")
    click_launcher(agent, "terminal")
    wait_until(lambda: windows(agent, "xterm"), timeout=15, what="a terminal window")


def test_the_chromium_launcher_opens_chromium_with_a_profile_of_its_own(agent: AgentProcess) -> None:
    user = desktop_user()
    home = pwd.getpwnam(user).pw_dir if user is not None else str(Path.home())
    profile = Path(chromium_profile(home, agent.info()["x_display"]))
    shutil.rmtree(profile, ignore_errors=True)  # a first start: any first-run dialog would show now
    try:
        click_launcher(agent, "chromium")
        wait_until(
            lambda: windows(agent, launcher("chromium").wm_class), timeout=20, what="a Chromium window"
        )
        assert profile.is_dir()
        if user is not None:
            assert profile.stat().st_uid == pwd.getpwnam(user).pw_uid
        # One window, a browser: no first-run or default-browser dialog beside it. Chromium maps its
        # window before it names it, so the names are read once the browser's own title shows.
        wait_until(
            lambda: any(name.endswith("Chromium") for name in window_names(agent, "chromium")),
            timeout=20,
            what="the Chromium window's title",
        )
        names = window_names(agent, "chromium")
        assert names and all(name.endswith("Chromium") for name in names), names
    finally:
        for pid in processes_with_argument(f"--user-data-dir={profile}"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not windows(agent, "chromium"), timeout=15, what="Chromium to close")
        shutil.rmtree(profile, ignore_errors=True)


def processes_with_argument(argument: str) -> list[int]:
    """Return the pids whose command line has ``argument`` (this test's own Chromium)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if argument.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def test_the_files_launcher_opens_a_file_manager(agent: AgentProcess) -> None:
    click_launcher(agent, "files")
    wait_until(lambda: windows(agent, launcher("files").wm_class), timeout=15, what="a file manager window")
