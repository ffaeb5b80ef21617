"""`make run` (``manage.py runstack``) for real: the agent starts without the server's secrets, comes back
after a SIGKILL without leaving its old desktop behind, and Ctrl+C leaves nothing running."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from agents.models import WorkspaceAgent
from tests.support.agent_process import desktop_user, free_port
from tests.support.processes import ROOT, server_env
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.desktop,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("Xvnc") is None, reason="needs Xvnc"),
]

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-runstack-secret-key",
    "CHATDESK_ADMIN_PASSWORD": "runstack-admin-password",
}
SECRET_NAMES = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", *SECRETS)


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def proc_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").split("\0")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(root: int) -> set[int]:
    """Return the live processes below ``root`` (by parent pid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return {pid for pid in found if alive(pid)}


def the_agent(stack: subprocess.Popen[bytes]) -> int | None:
    for pid in descendants(stack.pid):
        argv = proc_argv(pid)
        if any(arg.endswith("chatdesk-agent") for arg in argv[:2]):
            return pid
    return None


def desktop_of(agent_pid: int) -> dict[int, str]:
    """Return {pid: name} of the agent's Xvnc and openbox (its children)."""
    return {
        pid: Path(proc_argv(pid)[0]).name
        for pid in descendants(agent_pid)
        if Path(proc_argv(pid)[0]).name in ("Xvnc", "openbox")
    }


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    var = tmp_path / "var"
    var.mkdir()
    env = server_env(CHATDESK_VAR_DIR=str(var), CELERY_CONCURRENCY="1", **SECRETS)
    port, agent_port = free_port(), free_port()
    log = tmp_path / "runstack.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runstack", "--port", str(port), "--agent-listen", f"127.0.0.1:{agent_port}"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield proc, var, agent_port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(log.read_text(errors="replace")[-4000:])


def start_desktop(port: int, token: str, *, quiet: bool = False) -> bool:
    """Ask the agent for its ``info`` (which starts its desktop); with ``quiet``, False if it cannot answer."""
    try:
        with connect(
            f"ws://127.0.0.1:{port}/rpc", additional_headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            ws.send(json.dumps({"id": 1, "method": "info", "params": {}}))
            return "result" in json.loads(ws.recv(timeout=30))
    except (OSError, WebSocketException):
        if quiet:
            return False
        raise


def local_agent_connected() -> WorkspaceAgent | None:
    agent = WorkspaceAgent.objects.filter(name="local desktop", owner__username="admin").first()
    return agent if agent is not None and agent.is_connected else None


def test_make_run_keeps_the_agent_away_from_the_servers_secrets_and_restarts_it(
    stack: tuple[subprocess.Popen[bytes], Path, int],
) -> None:
    proc, var, agent_port = stack
    row = wait_until(local_agent_connected, timeout=90, what="the local agent to heartbeat")
    agent_pid = wait_until(lambda: the_agent(proc), what="the agent process")

    # The agent's environment and command line hold none of the server's secrets, nor its token.
    token_file = var / "agent" / "token"
    token = token_file.read_text().strip()
    assert WorkspaceAgent.objects.for_raw_token(token) == row
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((var / "agent").stat().st_mode) == 0o700
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    environ, argv = proc_environ(agent_pid), proc_argv(agent_pid)
    assert not set(SECRET_NAMES).intersection(environ), set(SECRET_NAMES).intersection(environ)
    assert "CHATDESK_AGENT_TOKEN" not in environ
    assert token not in "\0".join(argv) and argv[argv.index("--token-file") + 1] == str(token_file)
    user = desktop_user()
    if user is not None:
        assert argv[argv.index("--desktop-user") + 1] == user

    # Its desktop runs as the desktop user, without the secrets either.
    start_desktop(agent_port, token)
    desktop = wait_until(
        lambda: desktop_of(agent_pid) if len(desktop_of(agent_pid)) == 2 else None, what="a desktop"
    )
    for pid in desktop:
        assert not set(SECRET_NAMES).intersection(proc_environ(pid))
        if user is not None:
            assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam(user).pw_uid

    # SIGKILL: the old desktop dies with the agent, and runstack starts a new agent, which comes back.
    os.kill(agent_pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in desktop), what="the old Xvnc and openbox to die")
    new_pid = wait_until(lambda: (p := the_agent(proc)) != agent_pid and p, timeout=30, what="a new agent")
    assert proc.poll() is None, "the stack stopped with its agent"
    wait_until(
        lambda: start_desktop(agent_port, token, quiet=True), timeout=30, what="the new agent to serve"
    )
    wait_until(lambda: len(desktop_of(new_pid)) == 2, what="the new desktop")
    assert "agent exited with code -9; starting it again in 1 s" in (var.parent / "runstack.log").read_text()

    # Ctrl+C stops everything: server, worker, agent and its desktop; the token file is gone.
    everything = descendants(proc.pid)
    assert new_pid in everything
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    wait_until(lambda: not any(alive(pid) for pid in everything), timeout=20, what="every process to stop")
    assert not token_file.exists()
    # The agent stopped first and told the server so: it shows disconnected at once.
    assert WorkspaceAgent.objects.get(pk=row.pk).status == "disconnected"
