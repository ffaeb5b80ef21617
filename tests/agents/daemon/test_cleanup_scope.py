"""Stopping a desktop kills its own programs, and only those."""

from __future__ import annotations

import subprocess

import pytest

from tests.agents.daemon.conftest import TOKEN, needs_desktop
from tests.support.agent_process import running_agent

pytestmark = [needs_desktop, pytest.mark.desktop]


def test_stopping_spares_programs_of_another_desktop_with_the_same_display_number() -> None:
    """Display numbers are reused: a program of another desktop that took ours must survive our stop."""
    with running_agent(token=TOKEN) as agent:
        ours = subprocess.Popen(["sleep", "300"], env=agent.x_env())
        # Same DISPLAY, another desktop's cookie file: what a later desktop on this number looks like.
        theirs_env = dict(agent.x_env(), XAUTHORITY="/tmp/another-desktop/Xauthority")
        theirs = subprocess.Popen(["sleep", "300"], env=theirs_env)
        try:
            assert agent.stop() == 0
            ours.wait(10)
            assert theirs.poll() is None, "a program of another desktop was killed"
        finally:
            theirs.kill()
            theirs.wait()
