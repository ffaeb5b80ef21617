"""Real server processes for tests: daphne and Celery workers on the test database.

They are separate processes, so they see only committed rows: use them from tests marked
`@pytest.mark.django_db(transaction=True)`. Each waits for readiness with a deadline and is stopped (and
reaped) when its context ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from django.conf import settings

from chatdesk.serving import WEBSOCKET_PING_SECONDS, daphne_argv
from tests.support.agent_process import OnLoopbackPort, free_port
from tests.support.waiting import wait_until

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def server_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that shares this test run's database, Redis and var dir."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="chatdesk.settings",
        SECRET_KEY=settings.SECRET_KEY,
        CHATDESK_VAR_DIR=str(settings.VAR_DIR),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        CHATDESK_CELERY_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        PYTHONUNBUFFERED="1",
    )
    if settings.REDIS_URL:  # live events must reach this run's consumers, not another run's
        env["CHATDESK_CHANNELS_PREFIX"] = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env.update(extra)
    return env


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def _spawn(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Process]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    process = Process(proc, log)
    try:
        yield process
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 15) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@dataclass
class Daphne(Process, OnLoopbackPort):
    port: int


@contextlib.contextmanager
def running_daphne(
    tmp_path: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    ping_interval: int = WEBSOCKET_PING_SECONDS,
) -> Iterator[Daphne]:
    """A real daphne serving chatdesk on ``port`` (a free one by default); ``env`` adds variables."""
    port = port or free_port()
    argv = daphne_argv(host="127.0.0.1", port=port, ping_interval=ping_interval)
    with _spawn(argv, server_env(**(env or {})), tmp_path / f"daphne-{port}.log") as p:
        daphne = Daphne(p.proc, p.log, port)

        def up() -> bool:
            if daphne.proc.poll() is not None:
                raise AssertionError(f"daphne exited:\n{daphne.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
            return False

        wait_until(up, timeout=30, what="daphne to listen")
        yield daphne


@contextlib.contextmanager
def running_worker(
    tmp_path: Path,
    *,
    concurrency: int = 1,
    name: str = "w1",
    beat: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[Process]:
    """A real Celery worker (prefork pool) on this run's queue; ``beat`` embeds the periodic sweep."""
    argv = [
        sys.executable, "-m", "celery", "-A", "chatdesk", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--pool", "prefork", "-n", f"{name}@%h",
        "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if beat:
        argv += ["-B", "--schedule", str(tmp_path / f"beat-{name}")]
    with _spawn(argv, server_env(**(env or {})), tmp_path / f"celery-{name}.log") as p:
        wait_until(
            lambda: "ready." in p.output() or (p.proc.poll() is not None and _raise(p)),
            timeout=60,
            what="the Celery worker to be ready",
        )
        yield p


def _raise(p: Process) -> bool:
    raise AssertionError(f"process exited:\n{p.output()}")
