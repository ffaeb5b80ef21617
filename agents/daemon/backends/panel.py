"""What a new desktop shows (xvnc backend): a plain wallpaper and a panel with launchers.

A model sees the desktop through screenshots and a person through the viewer; both should find the usual
programs one click away rather than behind openbox's right-click menu (which stays). Along the bottom
edge runs a ``tint2`` panel: at its left end a launcher each for a terminal (xterm), Chromium and a file
manager (PCManFM), then the open windows, and a clock at the right end. The wallpaper is one plain colour
(``xsetroot``), dark enough that light windows and menus stand out. Everything comes from Debian packages
(the Makefile's DEB_PACKAGES).

The layout is fixed here, so where a launcher is can be computed (:func:`launcher_center`): the system
prompt names the launchers, and a test clicks them.

Chromium runs with a profile of its own in the desktop user's home, one per X display
(``~/.config/chatdesk/chromium/display-N``: two desktops of one user never share a running browser, while
a desktop that restarts on its display finds its logins again), without its first-run dialogs, and with
the flags a machine without a general network needs (no background networking, component updates, sync
or QUIC). Its sandbox needs unprivileged user namespaces; where the desktop's user cannot create one, the
launcher adds ``--no-sandbox`` and the agent logs a warning.

Imports nothing from Django.
"""

from __future__ import annotations

from dataclasses import dataclass

WALLPAPER = (
    "#2d4a63"  # a plain slate blue; its luminance (~68 of 255) leaves light menus and windows distinct
)
PANEL_HEIGHT = 40
PANEL_PADDING = 4  # left and right of the panel's items
LAUNCHER_ICON = 32
LAUNCHER_SPACING = 8
PANEL_BACKGROUND = "#1b2129"
PANEL_TEXT = "#e8e8e8"
ICON_THEME = "Adwaita"  # falls back to hicolor, where Chromium's own icon is
TERMINAL_FONT = ("Monospace", "11")


@dataclass(frozen=True)
class Launcher:
    """One launcher of the panel: ``key`` names it in code, ``name`` is its tooltip, ``wm_class`` the
    WM_CLASS of the window the program opens (``xdotool search --class``)."""

    key: str
    name: str
    icon: str
    wm_class: str
    description: str


LAUNCHERS: tuple[Launcher, ...] = (
    Launcher("terminal", "Terminal", "utilities-terminal", "xterm", "a terminal (xterm)"),
    Launcher("chromium", "Chromium", "chromium", "chromium", "the Chromium web browser"),
    Launcher("files", "Files", "system-file-manager", "pcmanfm", "a file manager (PCManFM)"),
)


def launcher(key: str) -> Launcher:
    """Return the launcher named ``key``; raise KeyError for another name."""
    for item in LAUNCHERS:
        if item.key == key:
            return item
    raise KeyError(key)


def launcher_center(key: str, screen: tuple[int, int]) -> tuple[int, int]:
    """Return the native pixel at the middle of launcher ``key``'s icon on a ``screen``-sized desktop."""
    index = [item.key for item in LAUNCHERS].index(key)
    x = PANEL_PADDING + index * (LAUNCHER_ICON + LAUNCHER_SPACING) + LAUNCHER_ICON // 2
    return x, screen[1] - PANEL_HEIGHT // 2


def chromium_profile(home: str, display: str) -> str:
    """Return the directory of the desktop's Chromium profile (see the module docstring)."""
    number = display.lstrip(":").split(".", 1)[0] or "0"
    return f"{home.rstrip('/')}/.config/chatdesk/chromium/display-{number}"


def chromium_argv(*, home: str, display: str, sandbox: bool = True) -> list[str]:
    """Return the command line that opens Chromium on the desktop."""
    argv = [
        "chromium",
        f"--user-data-dir={chromium_profile(home, display)}",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-crash-restore-bubble",
        "--password-store=basic",  # no keyring dialog: the desktop has no keyring daemon
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-gpu",  # Xvnc has no GPU
        "--start-maximized",
    ]
    if not sandbox:
        argv.append("--no-sandbox")
    return argv


def launcher_argv(item: Launcher, *, home: str, display: str, sandbox: bool = True) -> list[str]:
    """Return the command line launcher ``item`` runs."""
    if item.key == "terminal":
        return ["xterm", "-fa", TERMINAL_FONT[0], "-fs", TERMINAL_FONT[1]]
    if item.key == "chromium":
        return chromium_argv(home=home, display=display, sandbox=sandbox)
    if item.key == "files":
        return ["pcmanfm", home]
    raise KeyError(item.key)


def _exec_quote(arg: str) -> str:
    """Quote one argument of a desktop entry's Exec key (Desktop Entry Specification, "The Exec key")."""
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`"):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def desktop_entry(item: Launcher, argv: list[str]) -> str:
    """Return the text of the desktop entry (``.desktop`` file) the panel reads for launcher ``item``."""
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={item.name}\n"
        f"Comment=Open {item.description}\n"
        f"Exec={' '.join(_exec_quote(a) for a in argv)}\n"
        f"Icon={item.icon}\n"
        "Terminal=false\n"
    )


def tint2_config(entries: list[str]) -> str:
    """Return tint2's configuration: the panel described in the module docstring, whose launchers are the
    desktop entries at the paths ``entries`` (in :data:`LAUNCHERS` order)."""
    launchers = "".join(f"launcher_item_app = {path}\n" for path in entries)
    return f"""\
# Written by chatdesk-agent for this desktop; see agents/daemon/backends/panel.py.
# Background 1: the panel
rounded = 0
border_width = 0
background_color = {PANEL_BACKGROUND} 100
border_color = #000000 0
# Background 2: a window's button
rounded = 3
border_width = 0
background_color = #3a4552 100
border_color = #000000 0
# Background 3: the active window's button
rounded = 3
border_width = 0
background_color = #56677a 100
border_color = #000000 0

panel_items = LTC
panel_size = 100% {PANEL_HEIGHT}
panel_margin = 0 0
panel_padding = {PANEL_PADDING} 4 {LAUNCHER_SPACING}
panel_background_id = 1
panel_position = bottom center horizontal
panel_layer = top
panel_monitor = all
panel_dock = 0
wm_menu = 1
strut_policy = follow_size
panel_window_name = tint2
disable_transparency = 1
mouse_effects = 1
autohide = 0

launcher_padding = 0 0 {LAUNCHER_SPACING}
launcher_background_id = 0
launcher_icon_size = {LAUNCHER_ICON}
launcher_icon_theme = {ICON_THEME}
launcher_icon_theme_override = 1
launcher_tooltip = 1
startup_notifications = 0
{launchers}
taskbar_mode = single_desktop
taskbar_padding = 0 0 4
taskbar_background_id = 0
taskbar_name = 0
task_text = 1
task_icon = 1
task_centered = 0
task_maximum_size = 220 32
task_padding = 4 2 4
task_font = Sans 10
task_font_color = {PANEL_TEXT} 100
task_background_id = 2
task_active_background_id = 3
task_iconified_background_id = 2
task_tooltip = 1
mouse_left = toggle_iconify
mouse_middle = none
mouse_right = close

time1_format = %H:%M
time1_font = Sans 11
clock_font_color = {PANEL_TEXT} 100
clock_padding = 8 0
clock_background_id = 0
"""


def describe_for_model() -> str:
    """Return what the computer-use system prompt says about this desktop."""
    *first, last = [item.description for item in LAUNCHERS]
    names = f"{', '.join(first)} and {last}"
    return (
        "The desktop has a panel along the bottom edge of the screen. At its left end are launcher icons "
        f"that each open a program with one click; from left to right: {names}. The rest of the panel "
        "shows a button for each open window (click one to bring its window to the front) and a clock at "
        "the right end. A right click on the empty desktop opens a menu of programs too."
    )


__all__ = [
    "LAUNCHERS",
    "PANEL_HEIGHT",
    "WALLPAPER",
    "Launcher",
    "chromium_argv",
    "chromium_profile",
    "describe_for_model",
    "desktop_entry",
    "launcher",
    "launcher_argv",
    "launcher_center",
    "tint2_config",
]
