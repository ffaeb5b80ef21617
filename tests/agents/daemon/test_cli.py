"""The chatdesk-agent command line."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from agents.daemon.cli import parse_args
from tests.support.agent_process import REPO_ROOT, desktop_user, write_token_file


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATDESK_")}
    base["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "agents.daemon", *args],
        cwd=REPO_ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


USER_ARGS = ["--desktop-user", DESKTOP] if (DESKTOP := desktop_user()) else []
TOKEN_ENV = {"CHATDESK_AGENT_TOKEN": "t"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://x", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the chatdesk server URL is required"),
        (["--server", "http://x", "--geometry", "big"], "invalid geometry 'big'"),
        (["--server", "http://x", "--listen", "nowhere"], "invalid listen address"),
        (["--server", "ftp://x"], "invalid server URL"),
        (["--server", "http://x", "--backend", "wayland"], "invalid choice: 'wayland'"),
        (["--server", "http://x", "--desktop-user", "no-such-user-x"], "no user named 'no-such-user-x'"),
        (["--server", "http://x", "--desktop-user", "root"], "is root: choose an unprivileged account"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run_cli(*USER_ARGS, *args, env=TOKEN_ENV)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage: chatdesk-agent" in result.stderr


def test_a_missing_token_is_refused() -> None:
    result = run_cli("--server", "http://x", *USER_ARGS)
    assert result.returncode == 2
    assert "the agent token is required: --token-file FILE or CHATDESK_AGENT_TOKEN" in result.stderr


def test_a_token_on_the_command_line_is_refused_with_the_reason() -> None:
    result = run_cli("--server", "http://x", "--token", "cda_on_the_command_line", *USER_ARGS)
    assert result.returncode == 2
    assert "--token is not accepted: every local user can read a command line in `ps`" in result.stderr
    assert "--token-file" in result.stderr


def test_a_token_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("cda_secret\n")
    path.chmod(0o644)
    result = run_cli("--server", "http://x", "--token-file", str(path), *USER_ARGS)
    assert result.returncode == 2
    assert (
        f"the token file {path} may be read by other users (mode 0644): run `chmod 600 {path}`"
        in result.stderr
    )
    assert "cda_secret" not in result.stderr


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read the token file"), ("\n", "is empty")])
def test_a_missing_or_empty_token_file_is_refused(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        write_token_file(tmp_path, content)
    result = run_cli("--server", "http://x", "--token-file", str(tmp_path / "agent-token"), *USER_ARGS)
    assert result.returncode == 2
    assert message in result.stderr
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the agent refuses to run as root without --desktop-user")
def test_root_without_a_desktop_user_is_refused() -> None:
    result = run_cli("--server", "http://x", env=TOKEN_ENV)
    assert result.returncode == 2
    assert "chatdesk-agent runs as root: give --desktop-user USER" in result.stderr


def test_help_documents_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in (
        "--server", "--token-file", "--desktop-user", "--listen", "--geometry", "--backend", "--advertise-url",
        "--heartbeat-interval", "CHATDESK_AGENT_TOKEN_FILE", "CHATDESK_AGENT_TOKEN", "CHATDESK_AGENT_DESKTOP_USER",
        "CHATDESK_SERVER", "127.0.0.1:7420", "portabledesktop", "0600", "umask 077",
    ):  # fmt: skip
        assert text in result.stdout
    assert "--token TOKEN" not in result.stdout


def test_environment_variables_replace_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHATDESK_AGENT_TOKEN", "from-env")
    monkeypatch.setenv("CHATDESK_SERVER", "http://server:8000/")
    monkeypatch.setenv("CHATDESK_AGENT_GEOMETRY", "1920x1080")
    if DESKTOP:
        monkeypatch.setenv("CHATDESK_AGENT_DESKTOP_USER", DESKTOP)
    args = parse_args([])
    assert args.token == "from-env"
    assert args.server == "http://server:8000"
    assert args.geometry == (1920, 1080)
    assert args.listen == ("127.0.0.1", 7420)
    assert args.advertise_url == "ws://127.0.0.1:7420"
    assert args.desktop_user.name == (DESKTOP or pwd.getpwuid(os.geteuid()).pw_name)
    # A token file wins over the environment.
    assert parse_args(["--token-file", str(write_token_file(tmp_path, "from-file"))]).token == "from-file"
    monkeypatch.setenv("CHATDESK_AGENT_LISTEN", "0.0.0.0:7421")
    assert parse_args([]).advertise_url == "ws://127.0.0.1:7421"  # a reachable address, not 0.0.0.0
