"""Authentication, desktop restarts and clean shutdown of a real agent process."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx2 as httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from agents.daemon.client import AgentClient, AgentUnauthorized, AgentUnreachable, open_vnc
from tests.agents.daemon.conftest import TOKEN, needs_desktop, wait_until
from tests.support.agent_process import desktop_user, running_agent

pytestmark = [needs_desktop, pytest.mark.desktop]


def children(pid: int, name: str) -> list[int]:
    """Return pids of live processes named ``name`` whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if comm == name and int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def processes_on_display(display: str) -> list[int]:
    wanted = {f"DISPLAY={display}".encode(), f"DISPLAY={display}.0".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and wanted.intersection(environ):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


async def test_missing_or_wrong_token_is_refused_before_the_desktop_starts() -> None:
    with running_agent(token=TOKEN) as agent:
        for path in ("/rpc", "/vnc"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                with pytest.raises(InvalidStatus) as info:
                    connect(agent.ws_url + path, additional_headers=headers, open_timeout=5).close()
                assert info.value.response.status_code == 401
            response = httpx.get(agent.url + path, headers={"Authorization": "Bearer nope"})
            assert response.status_code == 401 and "invalid agent token" in response.text
        with pytest.raises(AgentUnauthorized):
            async with AgentClient(agent.ws_url, "wrong"):
                pass
        with pytest.raises(AgentUnauthorized):
            await open_vnc(agent.ws_url, "wrong", timeout=5)
        assert httpx.get(agent.url + "/nope").status_code == 404
        health = agent.health()
        assert health["desktop"] == "stopped" and health["x_display"] is None
        assert children(agent.pid, "Xvnc") == []
        assert "wrong" not in agent.log_text()


async def test_unreachable_agent_error_names_the_url_not_the_token() -> None:
    with pytest.raises(AgentUnreachable) as info:
        async with AgentClient("ws://127.0.0.1:9", "secret-token-xyz", timeout=3):
            pass
    assert "ws://127.0.0.1:9/rpc" in str(info.value) and "secret-token-xyz" not in str(info.value)


def test_a_killed_desktop_is_restarted_on_the_next_request() -> None:
    with running_agent(token=TOKEN) as agent:
        agent.info()
        [xvnc] = children(agent.pid, "Xvnc")
        old_wm = children(agent.pid, "openbox")
        os.kill(xvnc, signal.SIGKILL)
        wait_until(lambda: not alive(xvnc), what="Xvnc to die")
        shot = agent.call("screenshot")
        assert (shot["width"], shot["height"]) == (1280, 800)
        [new_xvnc] = children(agent.pid, "Xvnc")
        assert new_xvnc != xvnc
        assert agent.health()["desktop"] == "running"
        # Nothing of the old desktop is left behind.
        assert old_wm and not any(alive(p) for p in old_wm)


def test_sigterm_stops_the_whole_desktop() -> None:
    with running_agent(token=TOKEN) as agent:
        display = agent.display
        env = agent.x_env()
        private_dir = Path(agent.info()["xauthority"]).parent
        xterm = subprocess.Popen(["xterm"], env=env)
        # An app that detached itself (own session), as apps launched from the desktop may do.
        detached = subprocess.Popen(["setsid", "sleep", "300"], env=env, start_new_session=True)
        [xvnc] = children(agent.pid, "Xvnc")
        wm = children(agent.pid, "openbox")
        assert wm and processes_on_display(display)
        assert agent.stop() == 0
    xterm.wait(10)
    detached.wait(10)
    assert processes_on_display(display) == []
    assert not alive(xvnc) and not any(alive(p) for p in wm)
    assert not private_dir.exists()
    assert not Path(f"/tmp/.X11-unix/X{display.lstrip(':')}").exists()


def test_a_sigkilled_agent_leaves_no_desktop_behind() -> None:
    """SIGKILL gives the agent no chance to stop its desktop: Xvnc and openbox die with it (parent-death
    signal), and the next agent to start removes what is left (a detached program, the private folder)."""
    user = desktop_user()
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] if user else []
    with running_agent(token=TOKEN) as agent:
        private_dir = Path(agent.info()["xauthority"]).parent
        [xvnc] = children(agent.pid, "Xvnc")
        wm = children(agent.pid, "openbox")
        # A program of the desktop's user that detached itself and does not use X, so outlives Xvnc.
        straggler = subprocess.Popen([*as_user, "setsid", "sleep", "300"], env=agent.x_env())
        agent.process.kill()
        agent.process.wait()
        wait_until(lambda: not alive(xvnc) and not any(alive(p) for p in wm), what="Xvnc and openbox to die")
        assert straggler.poll() is None and private_dir.exists()
    try:
        with running_agent(token=TOKEN) as agent:
            straggler.wait(10)
            assert not private_dir.exists()
            assert agent.call("screenshot")["width"] == 1280
    finally:
        if straggler.poll() is None:
            straggler.kill()
