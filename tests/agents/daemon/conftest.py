"""Fixtures for the workspace agent tests: real agents on real Xvnc desktops, and X helpers."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.agent_process import AgentProcess, running_agent
from tests.support.waiting import wait_until

TOKEN = "test-agent-token-0123456789"
T = TypeVar("T")

needs_desktop = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("Xvnc", "openbox", "xdotool", "xterm", "xev")),
    reason="needs Xvnc, openbox, xdotool, xterm and xev",
)


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    """One 1280x800 agent per test module (its desktop starts on first use)."""
    with running_agent(token=TOKEN, geometry="1280x800") as proc:
        yield proc


@dataclass
class XEvent:
    kind: str
    time: int
    root: tuple[int, int] | None
    state: int
    button: int | None
    keysym: str | None


_HEAD = re.compile(r"^(\w+) event,")
_TIME = re.compile(r"time (\d+), \((-?\d+),(-?\d+)\), root:\((-?\d+),(-?\d+)\)")
_STATE = re.compile(r"state 0x([0-9a-f]+)")
_BUTTON = re.compile(r"button (\d+)")
_KEYSYM = re.compile(r"keysym 0x[0-9a-f]+, (\w+)\)")


class Xev:
    """An ``xev`` window on the agent's desktop whose events the test reads back."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        # stdbuf: xev writes through stdio; line buffering makes each event visible at once.
        self.process = subprocess.Popen(
            ["stdbuf", "-oL", "xev", "-geometry", "1100x700+0+0", "-event", "keyboard", "-event", "mouse",
             "-event", "structure"],
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def events(self) -> list[XEvent]:
        events = []
        for block in self.log.read_text(errors="replace").split("\n\n"):
            head = _HEAD.search(block.strip())
            if not head:
                continue
            t = _TIME.search(block)
            state = _STATE.search(block)
            button = _BUTTON.search(block)
            keysym = _KEYSYM.search(block)
            events.append(
                XEvent(
                    kind=head.group(1),
                    time=int(t.group(1)) if t else 0,
                    root=(int(t.group(4)), int(t.group(5))) if t else None,
                    state=int(state.group(1), 16) if state else 0,
                    button=int(button.group(1)) if button and "Button" in head.group(1) else None,
                    keysym=keysym.group(1) if keysym else None,
                )
            )
        return events

    def clear(self) -> None:
        """Forget events seen so far (truncate the log)."""
        self._file.flush()
        self._file.truncate(0)
        self._file.seek(0)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        self._file.close()


@pytest.fixture
def xev(agent: AgentProcess, tmp_path: Path) -> Iterator[Xev]:
    """An xev window covering most of the agent's desktop, mapped and ready."""
    win = Xev(agent.x_env(), tmp_path / "xev.log")
    try:
        wait_until(
            lambda: any(e.kind in ("MapNotify", "Expose") for e in win.events()),
            timeout=10,
            what="xev window",
        )
        yield win
    finally:
        win.close()


@pytest.fixture
def xterm(agent: AgentProcess) -> Iterator[subprocess.Popen[bytes]]:
    """An xterm at the top-left of the agent's desktop."""
    proc = subprocess.Popen(
        # A plain shell: the login user's rc files may take seconds (or print) before the first prompt.
        [
            "xterm",
            "-geometry",
            "80x24+0+0",
            "-bg",
            "white",
            "-fg",
            "black",
            "-e",
            "bash",
            "--norc",
            "--noprofile",
        ],
        env=agent.x_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(5)
