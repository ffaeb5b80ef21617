"""Desktop backends: ``xvnc`` (TigerVNC + openbox + xdotool) and ``portabledesktop`` (its CLI)."""

from __future__ import annotations

import shutil

from agents.daemon.backends.base import Desktop, DesktopError, InputError
from agents.daemon.boundary import DesktopUser

BACKENDS = ("auto", "xvnc", "portabledesktop")

__all__ = ["BACKENDS", "Desktop", "DesktopError", "InputError", "create_desktop", "resolve_backend"]


def resolve_backend(name: str) -> str:
    """Return the concrete backend for ``name``: "auto" means portabledesktop when on PATH, else xvnc."""
    if name == "auto":
        return "portabledesktop" if shutil.which("portabledesktop") else "xvnc"
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend: {name}")
    return name


def create_desktop(name: str, geometry: tuple[int, int], *, user: DesktopUser | None = None) -> Desktop:
    """Return an unstarted desktop of backend ``name`` ("auto", "xvnc" or "portabledesktop") whose
    processes run as ``user`` (default: the agent's own user)."""
    backend = resolve_backend(name)
    if backend == "portabledesktop":
        from agents.daemon.backends.portabledesktop import PortableDesktop

        return PortableDesktop(geometry, user=user)
    from agents.daemon.backends.xvnc import XvncDesktop

    return XvncDesktop(geometry, user=user)
