"""The portabledesktop backend, against a fake ``portabledesktop`` on PATH that records its argv."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agents.daemon.client import AgentClient, open_vnc
from tests.agents.daemon.conftest import TOKEN, wait_until
from tests.support.agent_process import AgentProcess, running_agent

# A shell script, so the desktop's user (``--desktop-user`` when the tests run as root) can run it: it
# records its argv (fields separated by \x1f) and answers like portabledesktop v0.0.4.
FAKE = textwrap.dedent(
    """\
    #!/bin/sh
    line=""
    for arg in "$@"; do line="$line$(printf '\\037')$arg"; done
    printf '%s\\n' "${{line#?}}" >> '{log}'
    case "$1" in
      up)
        while [ $# -gt 0 ]; do [ "$1" = --geometry ] && geometry="$2"; shift; done
        printf '{{"vncPort": {port}, "geometry": "%s"}}\\n' "$geometry";;
      screenshot) cat '{shot}';;
      cursor) printf '{{"x": 640, "y": 400}}\\n';;
    esac
    """
)


def install_fake(vnc_port: int) -> tuple[Path, Path]:
    """Write the fake into a new directory every user may read; return (that directory, its argv log)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="fake-portabledesktop-"))
    bin_dir.chmod(0o755)
    log, shot = bin_dir / "argv.log", bin_dir / "screenshot.json"
    log.touch()
    log.chmod(0o666)  # appended to by the desktop's user
    png = io.BytesIO()
    Image.new("RGB", (1280, 800), (30, 60, 90)).save(png, format="PNG")
    shot.write_text(
        json.dumps({"data": base64.b64encode(png.getvalue()).decode(), "size": len(png.getvalue())})
    )
    script = bin_dir / "portabledesktop"
    script.write_text(FAKE.format(log=log, port=vnc_port, shot=shot))
    script.chmod(0o755)
    return bin_dir, log


class FakeVncServer:
    """A TCP listener that greets like an RFB server, standing in for portabledesktop's Xvnc."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(b"RFB 003.008\n")
                while data := conn.recv(4096):
                    self.received.append(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[AgentProcess, Path]]:
    vnc = FakeVncServer()
    bin_dir, log = install_fake(vnc.port)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        with running_agent(token=TOKEN, backend="auto", env=env) as agent:
            yield agent, log
    finally:
        vnc.close()
        shutil.rmtree(bin_dir)


def calls(log: Path) -> list[list[str]]:
    return [line.split("\x1f") for line in log.read_text().splitlines()] if log.exists() else []


async def run_and_record(agent: AgentProcess, log: Path, params: dict[str, Any]) -> list[list[str]]:
    before = len(calls(log))
    async with AgentClient(agent.ws_url, TOKEN) as client:
        await client.action(params)
    return [c for c in calls(log)[before:] if c[0] != "screenshot"]


async def test_auto_picks_portabledesktop_and_brings_it_up(fake: tuple[AgentProcess, Path]) -> None:
    agent, log = fake
    assert agent.health()["backend"] == "portabledesktop"
    async with AgentClient(agent.ws_url, TOKEN) as client:
        info = await client.info()
        shot = await client.screenshot(640, 400)
    assert info["backend"] == "portabledesktop" and info["native"] == {"width": 1280, "height": 800}
    assert (shot.width, shot.height) == (640, 400)
    assert ["up", "--json", "--geometry", "1280x800"] in calls(log)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": "mouse_move", "coordinate": [10, 20]}, [["mouse", "move", "10", "20"]]),
        (
            {"action": "left_click", "coordinate": [10, 20], "text": "shift"},
            [
                ["mouse", "move", "10", "20"],
                ["keyboard", "down", "--", "shift"],
                ["mouse", "click", "left"],
                ["keyboard", "up", "--", "shift"],
            ],
        ),
        ({"action": "double_click"}, [["mouse", "click", "left"], ["mouse", "click", "left"]]),
        ({"action": "right_click"}, [["mouse", "click", "right"]]),
        ({"action": "left_mouse_down"}, [["mouse", "down", "left"]]),
        ({"action": "left_mouse_up"}, [["mouse", "up", "left"]]),
        (
            {"action": "left_click_drag", "start_coordinate": [1, 2], "coordinate": [3, 4]},
            [
                ["mouse", "move", "1", "2"],
                ["mouse", "down", "left"],
                ["mouse", "move", "3", "4"],
                ["mouse", "up", "left"],
            ],
        ),
        (
            {"action": "scroll", "scroll_direction": "down", "scroll_amount": 3},
            [["mouse", "scroll", "0", "3"]],
        ),
        (
            {"action": "scroll", "scroll_direction": "left", "scroll_amount": 2},
            [["mouse", "scroll", "-2", "0"]],
        ),
        ({"action": "key", "text": "Control+Enter"}, [["keyboard", "key", "--", "ctrl+Return"]]),
        ({"action": "type", "text": "--help; rm -rf /"}, [["keyboard", "type", "--", "--help; rm -rf /"]]),
        (
            {"action": "hold_key", "text": "shift", "duration": 0},
            [["keyboard", "down", "--", "shift"], ["keyboard", "up", "--", "shift"]],
        ),
    ],
)
async def test_actions_map_to_portabledesktop_commands(
    fake: tuple[AgentProcess, Path], params: dict[str, Any], expected: list[list[str]]
) -> None:
    agent, log = fake
    assert await run_and_record(agent, log, params) == expected


async def test_cursor_position_and_vnc_go_through_portabledesktop(fake: tuple[AgentProcess, Path]) -> None:
    agent, log = fake
    async with AgentClient(agent.ws_url, TOKEN) as client:
        result = await client.action({"action": "cursor_position"})
    assert result.output == "X=640,Y=400"
    assert ["cursor", "--json"] in calls(log)
    ws = await open_vnc(agent.ws_url, TOKEN)
    try:
        assert await ws.recv() == b"RFB 003.008\n"
    finally:
        await ws.close()


def test_stopping_the_agent_runs_down() -> None:
    vnc = FakeVncServer()
    bin_dir, log = install_fake(vnc.port)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        with running_agent(token=TOKEN, backend="portabledesktop", env=env) as agent:
            agent.info()
        wait_until(lambda: ["down"] in calls(log), what="portabledesktop down")
    finally:
        vnc.close()
        shutil.rmtree(bin_dir)
