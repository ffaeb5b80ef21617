"""Long actions on a real Xvnc desktop: the deadline follows the action, and a caller that leaves stops it.

Text is typed into an xterm whose shell copies every keystroke to a file at once (``stty -icanon``),
so the file holds exactly what reached the desktop.
"""

from __future__ import annotations

import asyncio
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.daemon.client import AgentClient, AgentUnreachable
from tests.agents.daemon.conftest import TOKEN, needs_desktop, wait_until
from tests.support.agent_process import AgentProcess
from tests.support.waiting import wait_until_async

pytestmark = [needs_desktop, pytest.mark.desktop]

# Varied characters (capitals and punctuation need shift), so a key left down would show as a repeat.
TEXT = (string.ascii_letters + string.digits + ",.;-=/") * 60  # 4,080 characters: ~12 s of typing


@pytest.fixture
def typed(agent: AgentProcess, tmp_path: Path) -> Iterator[Path]:
    """A file that receives every key typed into a focused xterm on the agent's desktop."""
    target = tmp_path / "typed.txt"
    target.touch()
    proc = subprocess.Popen(
        ["xterm", "-geometry", "80x24+0+0", "-e", "sh", "-c", f"stty -icanon -echo; exec cat >> {target}"],
        env=agent.x_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _typed_into(agent, target, "?"), timeout=20, what="a focused xterm copying keys")
        target.write_text("")
        yield target
    finally:
        proc.terminate()
        proc.wait(5)


def _typed_into(agent: AgentProcess, target: Path, probe: str) -> bool:
    """Click the xterm, type ``probe`` and say whether it reached ``target``."""
    agent.call("action", {"action": "left_click", "coordinate": [100, 100]})
    agent.call("action", {"action": "type", "text": probe})
    try:
        wait_until(lambda: probe in target.read_text(), timeout=2, what="probe")
    except AssertionError:
        return False
    return True


def _ending_with(path: Path, end: str) -> str | None:
    text = path.read_text()
    return text if text.endswith(end) else None


async def test_a_long_type_completes_within_its_deadline(agent: AgentProcess, typed: Path) -> None:
    # 5 s covers the round trip; the ~12 s of typing come on top, derived from the text (actionspec).
    async with AgentClient(agent.ws_url, TOKEN, timeout=5) as client:
        result = await client.action({"action": "type", "text": TEXT})

    assert result.png is not None
    assert wait_until(lambda: typed.read_text() == TEXT, timeout=10, what="all the text in the file")


async def test_a_caller_that_gives_up_stops_the_typing(agent: AgentProcess, typed: Path) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        task = asyncio.ensure_future(client.call("action", {"action": "type", "text": TEXT}, deadline=60))
        await wait_until_async(lambda: len(typed.read_text()) >= 100, timeout=30, what="typing to begin")
        assert not task.done(), "the type ended before it could be interrupted"
        await client.close()  # the caller leaves mid-type
        with pytest.raises(AgentUnreachable):
            await task

    # A key left down (the typing was killed between a press and its release) autorepeats after ~0.6 s,
    # until another key is pressed: give one the time to show before typing anything else.
    await asyncio.sleep(1.5)
    # The desktop is free once the agent has cancelled the type: a marker typed now comes right after
    # what was typed (had the type gone on, the marker would follow all of it). Lower case: a shift
    # left down would show too.
    async with AgentClient(agent.ws_url, TOKEN) as client:
        await client.action({"action": "type", "text": "<end>"})
    content = wait_until(lambda: _ending_with(typed, ">"), timeout=30, what="the marker")
    stopped_at, marker = content[: -len("<end>")], content[-len("<end>") :]
    assert marker == "<end>"
    assert 100 <= len(stopped_at) < len(TEXT) / 2
    assert TEXT.startswith(stopped_at)  # nothing repeated


async def test_a_deadline_that_passes_closes_the_connection_and_stops_the_typing(
    agent: AgentProcess, typed: Path
) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        with pytest.raises(AgentUnreachable, match="did not answer 'action' in time"):
            await client.call("action", {"action": "type", "text": TEXT}, deadline=1)

    await asyncio.sleep(1.5)  # for a key left down to autorepeat, as above
    async with AgentClient(agent.ws_url, TOKEN) as client:
        await client.action({"action": "type", "text": "<end>"})
    content = wait_until(lambda: _ending_with(typed, ">"), timeout=30, what="the marker")
    stopped_at, marker = content[: -len("<end>")], content[-len("<end>") :]
    assert marker == "<end>"
    assert len(stopped_at) < len(TEXT) / 2 and TEXT.startswith(stopped_at)
