"""Start a real ``chatdesk-agent`` subprocess for tests (a helper, not a pytest fixture file).

    from tests.support.agent_process import running_agent

    with running_agent(token="t0k", server_url="http://127.0.0.1:9", geometry="1280x800") as agent:
        agent.url        # "http://127.0.0.1:PORT" (GET /health)
        agent.ws_url     # "ws://127.0.0.1:PORT"   (the /rpc and /vnc WebSockets; AgentClient's url)
        agent.pid        # the agent process
        agent.display    # ":N" — starts the desktop on first access
        agent.x_env()    # os.environ + DISPLAY + XAUTHORITY, to start apps on the desktop
        agent.call("action", {"action": "screenshot"})   # one synchronous RPC call

The token reaches the agent as it should in production: through a 0600 token file (or, with
``token_via="env"``, CHATDESK_AGENT_TOKEN), never on its command line. Run as root, the agent starts its
desktop as ``DESKTOP_USER`` (created when missing, as ``make run`` does).

On exit the agent gets SIGTERM and is waited for (SIGKILL after a grace period), so its desktop
is stopped. Waiting is on conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
from websockets.sync.client import connect

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
DESKTOP_USER = "chatdesk-desktop"  # the account `make run` creates (Makefile: desktop-user)
USE_DEFAULT = "default"


def desktop_user() -> str | None:
    """Return the user agents in tests run their desktop as: DESKTOP_USER as root, else None (own user).

    Creates it when missing, with the same command as the Makefile's ``desktop-user`` target.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(DESKTOP_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{DESKTOP_USER}",
             "--shell", "/bin/bash", DESKTOP_USER],
            capture_output=True, check=False,
        )  # fmt: skip
        pwd.getpwnam(DESKTOP_USER)  # another test process may have created it meanwhile: fine
    return DESKTOP_USER


def write_token_file(directory: Path, token: str) -> Path:
    """Write ``token`` to a new 0600 file in ``directory`` and return its path."""
    path = directory / "agent-token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OnLoopbackPort:
    """The http:// and ws:// base URLs of a server listening on 127.0.0.1:``port``."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass
class AgentProcess(OnLoopbackPort):
    """A running agent; see the module docstring."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    log_path: Path
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _info: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def health(self) -> dict[str, Any]:
        """Return GET /health."""
        return httpx.get(self.url + "/health", timeout=5).json()

    def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 60) -> Any:
        """Make one RPC call on a fresh connection; return the result, raise RuntimeError on an error reply.

        Progress frames (the output a ``bash`` call streams) are skipped.
        """
        with connect(
            self.ws_url + "/rpc",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=None,
            open_timeout=timeout,
        ) as ws:
            request_id = next(self._ids)
            ws.send(json.dumps({"id": request_id, "method": method, "params": params or {}}))
            reply = json.loads(ws.recv(timeout=timeout))
            while "progress" in reply:  # a call that streams (bash) sends its output before its reply
                reply = json.loads(ws.recv(timeout=timeout))
        if "error" in reply:
            raise RuntimeError(reply["error"]["message"])
        return reply["result"]

    def info(self) -> dict[str, Any]:
        """Return the agent's ``info`` (starts the desktop; refreshed on every call)."""
        self._info = self.call("info")
        return self._info

    @property
    def display(self) -> str:
        """The X display (":N") of the agent's desktop, starting it if needed."""
        return self.info()["x_display"]

    def x_env(self) -> dict[str, str]:
        """Return an environment that lets a program draw on the agent's desktop."""
        info = self.info()
        env = dict(os.environ)
        env["DISPLAY"] = info["x_display"]
        if info.get("xauthority"):
            env["XAUTHORITY"] = info["xauthority"]
        return env

    def mouse_location(self) -> tuple[int, int]:
        """Return where the X server says the pointer is, in native pixels (what a person would see)."""
        out = subprocess.run(
            ["xdotool", "getmouselocation", "--shell"],
            env=self.x_env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        values = dict(line.split("=", 1) for line in out.split())
        return int(values["X"]), int(values["Y"])

    def log_text(self) -> str:
        """Return what the agent wrote to stderr/stdout so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the agent and wait for it (SIGKILL after ``timeout``); return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode


def agent_command(
    *,
    token_file: Path | None,
    server_url: str | None,
    port: int,
    geometry: str,
    backend: str,
    desktop_user: str | None,
    extra_args: Sequence[str],
) -> list[str]:
    """Return the argv that runs the agent from this checkout (installed or not)."""
    argv = [sys.executable, "-m", "agents.daemon", "--listen", f"127.0.0.1:{port}", "--geometry", geometry]
    argv += ["--backend", backend]
    if server_url is not None:
        argv += ["--server", server_url]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    if desktop_user is not None:
        argv += ["--desktop-user", desktop_user]
    return argv + list(extra_args)


def wait_for_health(agent: AgentProcess, deadline: float) -> None:
    """Return once /health answers; raise RuntimeError when the agent exits or time runs out."""
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            raise RuntimeError(f"chatdesk-agent exited with {agent.process.returncode}:\n{agent.log_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(agent.url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"chatdesk-agent did not answer /health in time:\n{agent.log_text()}")


@contextlib.contextmanager
def running_agent(
    *,
    token: str,
    server_url: str = "http://127.0.0.1:9",
    geometry: str = "1280x800",
    backend: str = "xvnc",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    token_via: str = "file",  # noqa: S107 - how the token travels, not a token
    desktop_user_name: str | None = USE_DEFAULT,
) -> Iterator[AgentProcess]:
    """Run a chatdesk-agent on a free loopback port until the block ends (see module docstring).

    ``server_url`` defaults to a closed port: heartbeats then fail quietly with backoff. The token goes
    through a 0600 file (``token_via="file"``) or CHATDESK_AGENT_TOKEN (``"env"``). The desktop runs as
    ``desktop_user_name`` (default: ``desktop_user()``).
    """
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.pop("CHATDESK_AGENT_TOKEN", None)
    if desktop_user_name == USE_DEFAULT:
        desktop_user_name = desktop_user()
    with tempfile.TemporaryDirectory(prefix="chatdesk-agent-token-") as token_dir:
        token_file = None
        if token_via == "file":
            token_file = write_token_file(Path(token_dir), token)
        else:
            child_env["CHATDESK_AGENT_TOKEN"] = token
        yield from _run_agent(
            token=token,
            token_file=token_file,
            server_url=server_url,
            geometry=geometry,
            backend=backend,
            desktop_user_name=desktop_user_name,
            extra_args=extra_args,
            child_env=child_env,
        )


def _run_agent(
    *,
    token: str,
    token_file: Path | None,
    server_url: str,
    geometry: str,
    backend: str,
    desktop_user_name: str | None,
    extra_args: Sequence[str],
    child_env: dict[str, str],
) -> Iterator[AgentProcess]:
    last_error: Exception | None = None
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        log_file = tempfile.NamedTemporaryFile(prefix="chatdesk-agent-log-", suffix=".txt", delete=False)
        process = subprocess.Popen(
            agent_command(
                token_file=token_file,
                server_url=server_url,
                port=port,
                geometry=geometry,
                backend=backend,
                desktop_user=desktop_user_name,
                extra_args=extra_args,
            ),
            cwd=REPO_ROOT,
            env=child_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        log_file.close()
        agent = AgentProcess(process=process, port=port, token=token, log_path=Path(log_file.name))
        try:
            wait_for_health(agent, time.monotonic() + START_TIMEOUT)
        except RuntimeError as exc:
            agent.stop()
            last_error = exc
            if "Address already in use" in agent.log_text() or "cannot listen" in agent.log_text():
                continue
            raise
        try:
            yield agent
        finally:
            agent.stop()
            with contextlib.suppress(OSError):
                agent.log_path.unlink()
        return
    raise RuntimeError(f"could not start chatdesk-agent: {last_error}")
