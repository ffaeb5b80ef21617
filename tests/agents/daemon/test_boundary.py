"""The agent boundary: a program on the desktop cannot read the agent's token nor the secrets the agent
was started with (SPEC §12).

The probe is what a model would run: a terminal opened from the desktop's own menu (openbox's root
menu, "Terminal emulator"), a command typed into it through the agent's actions. It writes what it
could see to a file, and the test reads that file.
"""

from __future__ import annotations

import base64
import io
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.agents.daemon.conftest import needs_desktop
from tests.support.agent_process import REPO_ROOT, AgentProcess, desktop_user, running_agent
from tests.support.waiting import wait_until

pytestmark = [needs_desktop, pytest.mark.desktop]

TOKEN = "cda_boundary_probe_token_7f3e1b"
SECRETS = {
    "SECRET_KEY": "django-secret-for-the-boundary-test",
    "ANTHROPIC_API_KEY": "sk-ant-boundary-test-key",
    "DATABASE_URL": "postgres://chatdesk:db-password-boundary@127.0.0.1/chatdesk",
    "REDIS_URL": "redis://:redis-password-boundary@127.0.0.1:6379/0",
    "CHATDESK_ADMIN_PASSWORD": "admin-password-boundary",
}


def process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def desktop_processes(agent: AgentProcess) -> dict[int, str]:
    """Return {pid: command name} of the processes whose cookie file is this desktop's (Xvnc by -auth)."""
    xauthority = agent.info()["xauthority"]
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            env = process_environ(int(entry.name))
        except OSError:
            continue
        if env.get("XAUTHORITY") == xauthority or xauthority.encode() in argv:
            found[int(entry.name)] = Path(argv[0].decode()).name
    return found


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the desktop's user may write (the probe's output goes there)."""
    path = Path(tempfile.mkdtemp(prefix="boundary-probe-"))
    user = desktop_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def menu_is_open(action_result: dict[str, object]) -> bool:
    """Return True when the action's screenshot shows openbox's root menu (light, where the root is black)."""
    shot = action_result["screenshot"]
    assert isinstance(shot, dict)
    image = Image.open(io.BytesIO(base64.b64decode(shot["png_base64"]))).convert("L")
    brightness = image.getpixel((100, 100))  # inside the menu, which opens at the click
    assert isinstance(brightness, int)
    return brightness > 128


def open_terminal_from_the_menu(agent: AgentProcess, attempts: int = 5) -> None:
    """Open openbox's root menu with a right click and choose "Terminal emulator" (its first item).

    openbox may miss a click (while it is still settling in, or when the release comes late and reads
    as a drag), so each step is checked on the screen and tried again, a bounded number of times.
    """
    before = set(desktop_processes(agent))

    def shell_ready() -> bool:
        new = {pid: name for pid, name in desktop_processes(agent).items() if pid not in before}
        return "xterm" in new.values() and "bash" in new.values()

    for _ in range(attempts):
        if not menu_is_open(agent.call("action", {"action": "right_click", "coordinate": [30, 30]})):
            agent.call("action", {"action": "key", "text": "Escape"})
            continue
        agent.call("action", {"action": "left_click", "coordinate": [60, 40]})
        try:
            wait_until(shell_ready, timeout=15, what="a terminal with its shell on the desktop")
            break
        except AssertionError:
            continue
    else:
        raise AssertionError(f"no terminal opened from the desktop's menu in {attempts} attempts")
    # The terminal's window must be mapped and focused before anything is typed into it.
    wait_until(
        lambda: (
            subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--class", "xterm"],
                env=agent.x_env(),
                capture_output=True,
            ).returncode
            == 0
        ),
        timeout=10,
        what="the terminal's window",
    )


def run_on_the_desktop(agent: AgentProcess, out: Path, script: str) -> str:
    """Type ``script`` into a terminal on the desktop (its output to a file) and return what it wrote."""
    open_terminal_from_the_menu(agent)
    result, done = out / "probe.txt", out / "done"
    agent.call("action", {"action": "type", "text": f"( {script} ) > {result} 2>&1; touch {done}"})
    agent.call("action", {"action": "key", "text": "Return"})
    wait_until(done.exists, timeout=30, what="the probe on the desktop to finish")
    return result.read_text(errors="replace")


@pytest.mark.parametrize("token_via", ["file", "env"])
def test_a_program_on_the_desktop_sees_neither_the_token_nor_the_servers_secrets(
    token_via: str, shared_dir: Path
) -> None:
    if token_via == "file" and desktop_user() is None:
        pytest.skip("the desktop runs as the agent's own user, who can read its token file (README)")
    env = {**os.environ, **SECRETS}
    with running_agent(token=TOKEN, env=env, token_via=token_via) as agent:
        token_file = next(
            (
                a
                for a in Path(f"/proc/{agent.pid}/cmdline").read_text().split("\0")
                if a.endswith("agent-token")
            ),
            None,
        )
        assert (token_file is not None) == (token_via == "file")
        script = "; ".join(
            [
                "echo '## env'; env",
                "echo '## id'; id -un",
                f"echo '## agent environ'; cat /proc/{agent.pid}/environ",
                f"echo '## agent memory'; ( exec 3< /proc/{agent.pid}/mem ) && echo mem-opened",
                f"echo '## token file'; cat {token_file or '/dev/null'}",
                "echo '## command lines'; ps -eo args",
                "echo '## end'",
            ]
        )
        seen = run_on_the_desktop(agent, shared_dir, script)

        assert "## end" in seen, seen
        assert TOKEN not in seen
        for name, value in SECRETS.items():
            assert value not in seen, f"a desktop program saw {name}"
        env_section = seen.split("## env", 1)[1].split("## id", 1)[0]
        for name in (*SECRETS, "CHATDESK_AGENT_TOKEN", "CHATDESK_AGENT_TOKEN_FILE"):
            assert f"\n{name}=" not in env_section
        assert "DISPLAY=" in env_section and "XAUTHORITY=" in env_section  # the desktop's own, allowed
        # The agent's /proc files and memory are closed to the desktop, whichever user it runs as.
        assert f"/proc/{agent.pid}/environ: Permission denied" in seen
        assert f"/proc/{agent.pid}/mem: Permission denied" in seen and "mem-opened" not in seen
        user = desktop_user()
        if user is not None:
            assert seen.split("## id", 1)[1].split()[0] == user
            if token_file:
                assert f"{token_file}: Permission denied" in seen
        # Nothing the agent started carries the secrets either (Xvnc, openbox, the terminal, its shell).
        processes = desktop_processes(agent)
        assert {"Xvnc", "openbox", "xterm", "bash"} <= set(processes.values())
        for pid in processes:
            environ = process_environ(pid)
            assert not set(SECRETS).intersection(environ), processes[pid]
            assert TOKEN not in Path(f"/proc/{pid}/environ").read_text(errors="replace")
            if user is not None:
                assert Path(f"/proc/{pid}").stat().st_uid == pwd.getpwnam(user).pw_uid, processes[pid]


@pytest.mark.skipif(desktop_user() is None, reason="needs root, to run the check as another user")
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs a Python the desktop user may run")
def test_a_non_dumpable_process_hides_its_environment_from_its_own_user(shared_dir: Path) -> None:
    """Without a separate desktop user, the agent's own user still cannot read its environment."""
    user = pwd.getpwnam(desktop_user() or "")
    # The checkout may be closed to that user (a clone under a 0700 mktemp folder): give it the module alone
    # (it imports only the standard library).
    shutil.copy(REPO_ROOT / "agents" / "daemon" / "boundary.py", shared_dir / "boundary.py")
    os.chmod(shared_dir / "boundary.py", 0o644)
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from boundary import make_undumpable; "
        "print(make_undumpable() if sys.argv[2] == 'yes' else 'dumpable', flush=True); time.sleep(60)"
    )
    results = {}
    for undumpable in ("yes", "no"):
        holder = subprocess.Popen(
            [*as_user, "/usr/bin/python3", "-c", code, str(shared_dir), undumpable],
            env={"PATH": "/usr/bin:/bin", "HOLDER_SECRET": "held-secret-value"},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() in ("True", "dumpable")
            reader = subprocess.run(
                [*as_user, "cat", f"/proc/{holder.pid}/environ"], capture_output=True, text=True, check=False
            )
            results[undumpable] = reader.stdout + reader.stderr
        finally:
            holder.kill()
            holder.wait()
    assert "held-secret-value" in results["no"]  # the control: same user, dumpable, readable
    assert "held-secret-value" not in results["yes"]
    assert "Permission denied" in results["yes"]
