"""The agent's recorder with real ffmpeg on a real Xvnc desktop (agents/daemon/recorder.py)."""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import signal
import time
from pathlib import Path

import pytest

from agents.daemon.boundary import ALLOWED_NAMES, IDENTITY_NAMES
from tests.support.agent_process import AgentProcess, desktop_user, running_agent
from tests.support.media import ffmpeg_recorders, ffprobe
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.desktop,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("Xvnc", "xdotool", "ffmpeg", "ffprobe")),
        reason="needs Xvnc, xdotool and ffmpeg",
    ),
]


def assert_desktop_process(pid: int) -> None:
    """ffmpeg runs as the desktop's user with the desktop's allowlisted environment, like its programs."""
    uid = int(
        next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
        ).split()[1]
    )
    name = desktop_user()
    expected = pwd.getpwnam(name).pw_uid if name is not None else os.geteuid()
    assert uid == expected
    names = {
        item.split(b"=", 1)[0].decode()
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if item
    }
    allowed = {*ALLOWED_NAMES, *IDENTITY_NAMES, "DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR"}
    assert {n for n in names if not n.startswith("LC_")} <= allowed, names


def download(agent: AgentProcess, recording_id: str, path: Path) -> bytes:
    data = b""
    while True:
        chunk = agent.call("recording_read", {"id": recording_id, "offset": len(data), "length": 256 * 1024})
        data += base64.b64decode(chunk["data_base64"])
        if chunk["eof"]:
            break
    path.write_bytes(data)
    return data


def test_a_recording_is_a_webm_that_lasts_as_long_as_it_ran(tmp_path: Path) -> None:
    with running_agent(token="recorder-token-1") as agent:
        agent.info()
        before = time.time()
        started = agent.call("recording_start", {"fps": 8})
        assert before - 1 <= started["started_at"] <= time.time()
        (pid,) = ffmpeg_recorders(agent.display)
        assert_desktop_process(pid)
        for x in range(100, 700, 100):  # the pointer moves: frames change
            agent.call("action", {"action": "mouse_move", "coordinate": [x, 300]})
        wait_until(lambda: time.time() - started["started_at"] > 3, timeout=10, what="3 s of recording")
        stopped = agent.call("recording_stop", {"id": started["id"]})
        assert stopped["state"] == "finished" and stopped["complete"] is True, stopped
        assert stopped["thumbnail_base64"]
        data = download(agent, started["id"], tmp_path / "r.webm")
        assert len(data) == stopped["size_bytes"] > 0
        assert not ffmpeg_recorders(agent.display)
    info = ffprobe(tmp_path / "r.webm")
    assert (info.codec, info.width, info.height) == ("vp8", 1280, 800)
    # Idle frames are dropped but time is kept: the video lasts (about) as long as the recording ran.
    assert stopped["duration_seconds"] - 2.5 <= info.duration <= stopped["duration_seconds"] + 0.5
    assert 2 <= info.frames < 8 * stopped["duration_seconds"]


def test_a_killed_recorder_leaves_an_incomplete_recording_and_the_desktop_working(tmp_path: Path) -> None:
    with running_agent(token="recorder-token-2") as agent:
        agent.info()
        started = agent.call("recording_start", {})
        for x in range(100, 1200, 100):  # frames in several of the file's one-second clusters
            agent.call("action", {"action": "mouse_move", "coordinate": [x, 200]})
            agent.call("action", {"action": "wait", "duration": 0.3})
        wait_until(lambda: time.time() - started["started_at"] > 4, timeout=10, what="4 s of recording")
        for pid in ffmpeg_recorders(agent.display):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not ffmpeg_recorders(agent.display), timeout=10, what="ffmpeg to die")
        result = agent.call("action", {"action": "left_click", "coordinate": [300, 300]})
        assert result["screenshot"]["width"] == 1280
        stopped = agent.call("recording_stop", {"id": started["id"]})
        assert stopped["complete"] is False and "signal 9" in stopped["reason"]
        assert stopped["state"] == "finished"
        download(agent, started["id"], tmp_path / "r.webm")
    # What ffmpeg had written was repaired: a player reads its duration.
    assert ffprobe(tmp_path / "r.webm").duration > 0


def test_stopping_the_agent_stops_its_recorders_and_removes_their_files() -> None:
    with running_agent(token="recorder-token-3") as agent:
        display = agent.display
        agent.call("recording_start", {})
        agent.call("recording_start", {})
        assert len(ffmpeg_recorders(display)) == 2
        # This agent's directory (other agents on the machine have their own), named in its owner file.
        directories = [
            d
            for d in Path("/tmp").glob("chatdesk-agent-recordings-*")
            if (d / "agent").is_file() and (d / "agent").read_text().split()[0] == str(agent.pid)
        ]
        assert len(directories) == 1 and any(directories[0].glob("*.webm"))
        agent.stop()
        assert ffmpeg_recorders(display) == []
    assert not any(d.exists() and any(d.glob("*.webm")) for d in directories)


def test_recorder_calls_refuse_bad_input() -> None:
    with running_agent(token="recorder-token-4") as agent:
        with pytest.raises(RuntimeError, match="fps"):
            agent.call("recording_start", {"fps": 1000})
        with pytest.raises(RuntimeError, match="No such recording"):
            agent.call("recording_stop", {"id": "nope"})
        with pytest.raises(RuntimeError, match="No such recording"):
            agent.call("recording_read", {"id": "../../etc/passwd", "offset": 0})
