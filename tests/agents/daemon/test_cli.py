"""The chatdesk-agent command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents.daemon.cli import parse_args
from tests.support.agent_process import REPO_ROOT


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://x", "--token", "t", "--bogus"], "unrecognized arguments: --bogus"),
        (["--server", "http://x"], "the agent token is required"),
        (["--token", "t"], "the chatdesk server URL is required"),
        (["--server", "http://x", "--token", "t", "--geometry", "big"], "invalid geometry 'big'"),
        (["--server", "http://x", "--token", "t", "--listen", "nowhere"], "invalid listen address"),
        (["--server", "ftp://x", "--token", "t"], "invalid server URL"),
        (["--server", "http://x", "--token", "t", "--backend", "wayland"], "invalid choice: 'wayland'"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage: chatdesk-agent" in result.stderr


def test_help_documents_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for text in (
        "--server", "--token", "--listen", "--geometry", "--backend", "--advertise-url", "--heartbeat-interval",
        "CHATDESK_AGENT_TOKEN", "CHATDESK_SERVER", "127.0.0.1:7420", "portabledesktop",
    ):  # fmt: skip
        assert text in result.stdout


def test_environment_variables_replace_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATDESK_AGENT_TOKEN", "from-env")
    monkeypatch.setenv("CHATDESK_SERVER", "http://server:8000/")
    monkeypatch.setenv("CHATDESK_AGENT_GEOMETRY", "1920x1080")
    args = parse_args([])
    assert args.token == "from-env"
    assert args.server == "http://server:8000"
    assert args.geometry == (1920, 1080)
    assert args.listen == ("127.0.0.1", 7420)
    assert args.advertise_url == "ws://127.0.0.1:7420"
    assert parse_args(["--token", "flag"]).token == "flag"  # a flag wins over the environment
