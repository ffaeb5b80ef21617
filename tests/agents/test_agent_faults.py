"""Fault tests on the real thing: an agent heartbeating to a real daphne is SIGKILLed, then started again.

What a user sees: the agent shows disconnected within 10 s (API and Agents page), nothing of its desktop
is left running, and the restarted agent is connected again. A clean stop shows at once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from django.test import Client

from agents.services import workspace_agent_create
from chatdesk.services import api_token_create
from tests.agents.daemon.conftest import needs_desktop
from tests.factories import UserFactory
from tests.support.agent_process import AgentProcess, running_agent
from tests.support.processes import running_daphne
from tests.support.waiting import wait_until

pytestmark = [needs_desktop, pytest.mark.desktop, pytest.mark.django_db(transaction=True)]

DISCONNECTED_WITHIN = 10.0  # seconds, after the agent died


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def desktop_pids(agent: AgentProcess) -> set[int]:
    """Return the pids of the agent's Xvnc and openbox, found by its cookie file in /proc."""
    xauthority = agent.info()["xauthority"].encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name in ("Xvnc", "openbox") and (
            xauthority in argv or b"XAUTHORITY=" + xauthority in environ
        ):
            found.add(int(entry.name))
    return found


def test_a_killed_agent_shows_disconnected_within_10_s_and_comes_back(tmp_path: Path) -> None:
    user = UserFactory.create(username="alice")
    row, token = workspace_agent_create(owner=user, name="desk")
    _, api_token = api_token_create(user=user, name="faults")
    page = Client()
    page.force_login(user)

    with running_daphne(tmp_path) as daphne:

        def status() -> str:
            response = httpx.get(
                f"{daphne.url}/api/experimental/workspace-agents/{row.pk}",
                headers={"Authorization": f"Bearer {api_token}"},
                timeout=5,
            )
            return response.json()["status"]

        with running_agent(token=token, server_url=daphne.url) as agent:
            wait_until(lambda: status() == "connected", timeout=30, what="the agent to connect")
            desktop = desktop_pids(agent)
            private_dir = Path(agent.info()["xauthority"]).parent
            assert len(desktop) == 2

            os.kill(agent.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            agent.process.wait()
            wait_until(lambda: status() == "disconnected", timeout=DISCONNECTED_WITHIN, what="disconnected")
            assert time.monotonic() - killed_at <= DISCONNECTED_WITHIN
            assert "Disconnected" in page.get("/agents/").content.decode()
            wait_until(lambda: not any(alive(pid) for pid in desktop), what="no orphaned Xvnc or openbox")

        with running_agent(token=token, server_url=daphne.url) as again:
            wait_until(lambda: status() == "connected", timeout=30, what="the restarted agent to connect")
            assert not private_dir.exists()  # the dead agent's desktop folder was swept
            assert len(desktop_pids(again)) == 2
            again.stop()
            # A clean stop says so: disconnected at once, not after the timeout.
            assert status() == "disconnected"
