"""The ``bash`` tool on a real agent: one persistent shell per session, as the desktop's user, with a
timeout, an output cap, streamed output, and stopped when its caller leaves (agents/daemon/shell.py)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.daemon.client import AgentClient, AgentRequestError
from agents.daemon.toolspec import describe_bash_result
from tests.agents.daemon.conftest import TOKEN, needs_desktop
from tests.support.agent_process import AgentProcess, desktop_user, running_agent
from tests.support.waiting import wait_until, wait_until_async

pytestmark = [needs_desktop, pytest.mark.desktop]

SECRETS = {
    "SECRET_KEY": "django-secret-for-the-shell-test",
    "ANTHROPIC_API_KEY": "sk-ant-shell-test-key",
    "DATABASE_URL": "postgres://chatdesk:db-password-shell@127.0.0.1/chatdesk",
}


async def bash(
    agent: AgentProcess, session: str, command: str | None = None, **params: Any
) -> dict[str, Any]:
    """Run one bash call on a fresh connection; return its result."""
    request: dict[str, Any] = {"session": session, **params}
    if command is not None:
        request["command"] = command
    async with AgentClient(agent.ws_url, agent.token) as client:
        return await client.bash(request)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the desktop's user may write."""
    path = Path(tempfile.mkdtemp(prefix="shell-test-"))
    user = desktop_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_the_shell_keeps_its_directory_and_variables_until_restarted(agent: AgentProcess) -> None:
    first = await bash(agent, "persist", "cd /tmp && export X=1")
    assert first["exit_code"] == 0 and first["new_shell"] and first["output"] == ""
    second = await bash(agent, "persist", "pwd; echo $X")
    assert second["output"] == "/tmp\n1\n" and not second["new_shell"]
    # Another session is another shell.
    assert (await bash(agent, "someone-else", 'echo "[$X]"'))["output"] == "[]\n"

    restarted = await bash(agent, "persist", restart=True)
    assert restarted["restarted"] and describe_bash_result(restarted, timeout=1) == (
        "tool has been restarted.",
        False,
    )
    fresh = await bash(agent, "persist", 'pwd; echo "[$X]"')
    home = pwd.getpwnam(desktop_user() or pwd.getpwuid(os.getuid()).pw_name).pw_dir
    assert fresh["output"] == f"{home}\n[]\n"


async def test_commands_run_as_the_desktops_user_and_read_nothing_from_the_pipe(agent: AgentProcess) -> None:
    result = await bash(agent, "who", "id -un; cat; echo read-nothing; echo $DISPLAY")
    user = desktop_user() or pwd.getpwuid(os.getuid()).pw_name
    assert result["output"] == f"{user}\nread-nothing\n{agent.info()['x_display']}\n"


async def test_bad_commands_are_results_and_the_shell_goes_on(agent: AgentProcess) -> None:
    unbalanced = await bash(agent, "bad", 'echo "unterminated')
    assert unbalanced["exit_code"] == 2 and "unexpected EOF" in unbalanced["output"]
    text, is_error = describe_bash_result(unbalanced, timeout=1)
    assert is_error and text.endswith("[exit code 2]")
    assert (await bash(agent, "bad", "false"))["exit_code"] == 1
    assert (await bash(agent, "bad", "echo fine"))["output"] == "fine\n"
    with pytest.raises(AgentRequestError, match="no command provided"):
        await bash(agent, "bad", "   ")
    with pytest.raises(AgentRequestError, match="output_limit"):
        await bash(agent, "bad", "true", output_limit=10)


async def test_exit_ends_the_shell_and_the_next_command_gets_a_new_one(agent: AgentProcess) -> None:
    await bash(agent, "exits", "export KEPT=yes")
    ended = await bash(agent, "exits", "echo bye; exit 3")
    assert ended["output"] == "bye\n" and ended["exit_code"] == 3 and ended["shell_exited"]
    assert "The shell exited with status 3" in describe_bash_result(ended, timeout=1)[0]
    again = await bash(agent, "exits", 'echo "[$KEPT]"')
    assert again["new_shell"] and again["output"] == "[]\n"


async def test_a_command_past_its_timeout_is_stopped_and_the_shell_keeps_its_state(
    agent: AgentProcess,
) -> None:
    await bash(agent, "slow", "export STATE=kept")
    slow = await bash(agent, "slow", "echo begun; sleep 60", timeout=1)
    assert slow["timed_out"] and slow["exit_code"] is None and slow["output"].startswith("begun\n")
    assert not slow["shell_exited"]
    text, is_error = describe_bash_result(slow, timeout=1)
    assert is_error and "did not finish within 1 seconds and was stopped" in text
    after = await bash(agent, "slow", "echo $STATE; pgrep -x -u \"$(id -u)\" -f 'sleep 60' || echo no-sleep")
    assert after["output"] == "kept\nno-sleep\n" and not after["new_shell"]


async def test_a_command_that_keeps_the_shell_busy_costs_the_shell(agent: AgentProcess) -> None:
    busy = await bash(agent, "busy", "while :; do :; done", timeout=1)
    assert busy["timed_out"] and busy["shell_exited"]
    assert "next command starts a new shell" in describe_bash_result(busy, timeout=1)[0]
    assert (await bash(agent, "busy", "echo back"))["new_shell"]


async def test_ten_megabytes_of_output_are_cut_at_the_cap(agent: AgentProcess) -> None:
    big = await bash(
        agent, "big", "head -c 10000000 /dev/zero | tr '\\0' a; echo; echo THE-END", output_limit=30_000
    )
    output = big["output"]
    assert big["exit_code"] == 0 and big["truncated"]
    assert output.startswith("a" * 1000) and output.endswith("a\nTHE-END\n")
    assert "bytes of output cut: the command printed 10,000,009 bytes" in output
    assert len(output.encode()) < 30_000 + 300


async def test_output_streams_while_the_command_runs(agent: AgentProcess, shared_dir: Path) -> None:
    done = shared_dir / "done"
    seen: list[tuple[str, bool]] = []  # (piece, whether the command had finished when it arrived)

    def on_output(text: str) -> None:
        seen.append((text, done.exists()))

    async with AgentClient(agent.ws_url, TOKEN) as client:
        result = await client.bash(
            {
                "session": "stream",
                "command": f"for i in 1 2 3; do echo tick $i; sleep 0.5; done; touch {done}",
            },
            on_output=on_output,
        )
    assert result["output"] == "tick 1\ntick 2\ntick 3\n"
    assert "".join(piece for piece, _ in seen) == result["output"]
    assert seen[0] == ("tick 1\n", False)  # it arrived while the command was still running


async def test_background_jobs_outlive_a_command_and_their_output_comes_with_the_next(
    agent: AgentProcess,
) -> None:
    first = await bash(agent, "jobs", "(sleep 0.3; echo from-the-background) & echo started")
    assert first["output"] == "started\n"
    # The job prints between calls: its line is handed to whichever command runs next.
    for _ in range(100):
        result = await bash(agent, "jobs", "echo now")
        if "from-the-background" in result["output"]:
            assert result["output"] == "from-the-background\nnow\n"
            return
        assert result["output"] == "now\n"
        await asyncio.sleep(0.05)
    raise AssertionError("the background job's output never came")


async def test_a_caller_that_leaves_stops_its_command_but_not_the_shell(
    agent: AgentProcess, shared_dir: Path
) -> None:
    pid_file = shared_dir / "sleep.pid"
    await bash(agent, "leaver", "export MARK=still-here")
    client = AgentClient(agent.ws_url, TOKEN)
    await client.__aenter__()
    started = asyncio.Event()
    call = asyncio.create_task(
        client.bash(
            {"session": "leaver", "command": f"sleep 60 & echo $! > {pid_file}; echo started; wait"},
            on_output=lambda text: started.set(),
        )
    )
    await asyncio.wait_for(started.wait(), 30)
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}").exists()
    await client.close()  # the caller leaves
    with pytest.raises(Exception):
        await call
    await wait_until_async(
        lambda: not Path(f"/proc/{pid}").exists(), timeout=15, what="the command to be stopped"
    )
    assert (await bash(agent, "leaver", "echo $MARK"))["output"] == "still-here\n"


def test_the_shell_sees_neither_the_token_nor_the_servers_secrets() -> None:
    """The agent is started the way that leaves the most to find: the token in its environment, and
    the server's secrets with it. The shell's environment is the desktop's allowlist, and the agent's
    /proc files are closed to it (non-dumpable; another user when run as root)."""
    env = {**os.environ, **SECRETS}
    with running_agent(token=TOKEN, env=env, token_via="env") as agent:
        result = agent.call(
            "bash",
            {
                "session": "probe",
                "command": f"echo '## env'; env; echo '## environ'; cat /proc/{agent.pid}/environ; echo; "
                f"echo '## cmdline'; cat /proc/{agent.pid}/cmdline; echo; echo '## end'",
            },
        )
        seen = result["output"]
        assert "## end" in seen, seen
        assert TOKEN not in seen
        for name, value in SECRETS.items():
            assert value not in seen, f"the shell saw {name}"
        env_part = seen.split("## env", 1)[1].split("## environ", 1)[0]
        for name in (*SECRETS, "CHATDESK_AGENT_TOKEN"):
            assert f"\n{name}=" not in env_part
        assert "\nHOME=" in env_part and "\nDISPLAY=" in env_part
        assert f"/proc/{agent.pid}/environ: Permission denied" in seen
        # The shell is the desktop user's, in a session of its own (what stopping it relies on).
        shell_pid = int(agent.call("bash", {"session": "probe", "command": "echo $$"})["output"])
        user = desktop_user()
        if user is not None:
            assert Path(f"/proc/{shell_pid}").stat().st_uid == pwd.getpwnam(user).pw_uid
        assert os.getsid(shell_pid) == shell_pid


def test_stopping_the_agent_stops_its_shells() -> None:
    with running_agent(token=TOKEN) as agent:
        out = agent.call("bash", {"session": "s", "command": "sleep 300 & echo $!; echo $$"})["output"]
        job, shell_pid = (int(line) for line in out.split())
        agent.stop()
    wait_until(
        lambda: not Path(f"/proc/{job}").exists() and not Path(f"/proc/{shell_pid}").exists(),
        timeout=15,
        what="the shell and its job to be gone",
    )


async def test_restart_ends_a_running_command_at_once(agent: AgentProcess) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        started = asyncio.Event()
        running = asyncio.create_task(
            client.bash(
                {"session": "restarted", "command": "echo go; sleep 60"}, on_output=lambda _: started.set()
            )
        )
        await asyncio.wait_for(started.wait(), 30)
        assert (await bash(agent, "restarted", restart=True))["restarted"]
        ended = await asyncio.wait_for(running, 15)  # not after its 120 s timeout
    assert ended["exit_code"] is None and ended["shell_exited"] and not ended["timed_out"]
    assert (await bash(agent, "restarted", "echo fresh"))["output"] == "fresh\n"


async def test_a_new_shell_after_exit_leaves_nothing_of_the_old_one_running(agent: AgentProcess) -> None:
    first = await bash(agent, "orphans", "sleep 300 & echo $!; exit 0")
    # The shell's exit ends the call, although the background job still holds the shell's output pipe.
    assert first["exit_code"] == 0 and first["shell_exited"] and not first["timed_out"]
    job = int(first["output"].split()[0])
    assert Path(f"/proc/{job}").exists()
    assert (await bash(agent, "orphans", "echo again"))["new_shell"]
    await wait_until_async(
        lambda: not Path(f"/proc/{job}").exists(), timeout=15, what="the old shell's job to end"
    )
