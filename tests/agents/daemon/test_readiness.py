"""A desktop is ready when the agent says it is: its window manager already manages new windows."""

from __future__ import annotations

import subprocess

import pytest

from tests.agents.daemon.conftest import TOKEN, needs_desktop
from tests.support.agent_process import running_agent

pytestmark = [needs_desktop, pytest.mark.desktop]


def test_the_window_manager_runs_before_the_desktop_is_reported_started() -> None:
    with running_agent(token=TOKEN) as agent:
        env = agent.x_env()  # the first request: starts the desktop
        # EWMH: a running window manager names its check window on the root. Without it, a window
        # opened right now could be mapped before openbox takes over, and never get managed.
        prop = subprocess.run(
            ["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "window id #" in prop.stdout, prop.stdout
