"""The agent boundary: who the desktop runs as, what it inherits, and what it can read of the agent.

Programs on the desktop are driven by a model that reads untrusted screen content, so they are treated
as hostile to the agent's token:

* **Environment.** A desktop program's environment is built from an allowlist (``ALLOWED_NAMES``,
  ``LC_*``) plus the desktop's own DISPLAY, XAUTHORITY and XDG_RUNTIME_DIR, never copied from the agent
  minus a denylist: whatever secret the agent was started with (a server's SECRET_KEY, an API key, a
  database URL) stays out.
* **A separate user.** Run as root, the agent starts every desktop process as ``--desktop-user`` (uid,
  gid and supplementary groups of that account, its HOME and SHELL). That user cannot read the agent's
  ``/proc/<pid>/environ`` or memory, nor its 0600 token file.
* **Not dumpable.** The agent marks itself non-dumpable (``PR_SET_DUMPABLE 0``): its ``/proc/<pid>``
  files then belong to root and ptrace is refused, so even a desktop program running as the agent's own
  user cannot read the token from ``/proc/<agent>/environ`` or ``/proc/<agent>/mem``. It cannot help
  with files that user can read (the token file), which is why root + ``--desktop-user`` is the setup
  that isolates the token (README, "The agent boundary").

Imports nothing from Django: the server's ``runstack`` uses ``agent_environment`` for the agent itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What a desktop program (and the agent started by ``make run``) may inherit from its parent.
ALLOWED_NAMES = ("PATH", "LANG", "LANGUAGE", "TERM", "TZ", "COLORTERM")
ALLOWED_PREFIXES = ("LC_",)
# Who the process is: taken from the account when the desktop runs as another user.
IDENTITY_NAMES = ("HOME", "USER", "LOGNAME", "SHELL")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PR_SET_DUMPABLE = 4


class BoundaryError(Exception):
    """The boundary cannot be set up as asked (unknown user, unsafe token file). The message says why."""


def allowlisted(environ: Mapping[str, str], *, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Return the variables of ``environ`` that are on the allowlist (plus the names in ``extra``)."""
    names = (*ALLOWED_NAMES, *extra)
    return {k: v for k, v in environ.items() if k in names or k.startswith(ALLOWED_PREFIXES)}


def agent_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the environment to start ``chatdesk-agent`` with: the allowlist and the user's identity.

    Used by ``runstack``, whose own environment holds the server's secrets.
    """
    env = allowlisted(environ, extra=(*IDENTITY_NAMES, "TMPDIR"))
    env.setdefault("PATH", DEFAULT_PATH)
    return env


@dataclass(frozen=True)
class DesktopUser:
    """The account desktop processes run as. ``switch`` is False when it is the agent's own user."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str
    switch: bool = field(default=False)

    @classmethod
    def current(cls) -> DesktopUser:
        """Return the agent's own user (no switch)."""
        entry = pwd.getpwuid(os.geteuid())
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            groups=tuple(os.getgroups()),
            home=os.environ.get("HOME") or entry.pw_dir,
            shell=entry.pw_shell or "/bin/sh",
        )

    @classmethod
    def named(cls, name: str) -> DesktopUser:
        """Return the account ``name`` to switch to. Raise BoundaryError when it cannot be used."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise BoundaryError(
                f"no user named {name!r}: create it (e.g. `useradd --system --create-home {name}`) "
                "or choose another --desktop-user"
            ) from None
        if entry.pw_uid == 0:
            raise BoundaryError(f"--desktop-user {name!r} is root: choose an unprivileged account")
        if entry.pw_uid == os.geteuid():
            return cls.current()
        if os.geteuid() != 0:
            raise BoundaryError(f"--desktop-user {name!r} needs the agent to run as root")
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            groups=tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
            home=entry.pw_dir,
            shell=entry.pw_shell or "/bin/sh",
            switch=True,
        )

    def environment(
        self, *, display: str | None = None, xauthority: str | None = None, runtime_dir: str | None = None
    ) -> dict[str, str]:
        """Return a desktop program's whole environment (see the module docstring)."""
        env = allowlisted(os.environ)
        env.setdefault("PATH", DEFAULT_PATH)
        env.update(HOME=self.home, USER=self.name, LOGNAME=self.name, SHELL=self.shell)
        for name, value in (
            ("DISPLAY", display),
            ("XAUTHORITY", xauthority),
            ("XDG_RUNTIME_DIR", runtime_dir),
        ):
            if value is not None:
                env[name] = value
        return env

    def spawn_options(self) -> dict[str, Any]:
        """Return the subprocess keyword arguments that start a process as this user, in its HOME."""
        options: dict[str, Any] = {"cwd": self.home if os.path.isdir(self.home) else "/"}
        if self.switch:
            # extra_groups too: without it the child keeps the agent's (root's) supplementary groups.
            options.update(user=self.uid, group=self.gid, extra_groups=list(self.groups))
        return options

    def give(self, path: Path) -> None:
        """Make ``path`` (created by the agent) belong to this user, so its desktop can use it."""
        if self.switch:
            os.chown(path, self.uid, self.gid)


def make_undumpable() -> bool:
    """Mark this process non-dumpable (see module docstring); return False where that is not possible."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def read_token_file(path: str) -> str:
    """Return the token stored in ``path``. Raise BoundaryError when it is missing, empty or not private.

    Like ssh with its keys, a token file that another user could read is refused: it is no secret.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise BoundaryError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BoundaryError(f"the token file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise BoundaryError(
                f"the token file {path} may be read by other users (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"run `chmod 600 {path}`"
            )
        token = file.read(4096).strip()
    if not token:
        raise BoundaryError(f"the token file {path} is empty")
    return token
