"""A redis-server of a test's own, on a free loopback port, that the test may stop and start again.

Fault tests use it instead of the machine's shared Redis (which other test runs and engineers use and
which must never be stopped). Nothing is persisted: a restarted server starts empty, as a Redis without
persistence (or a replacement instance) does in production.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.agent_process import free_port
from tests.support.waiting import wait_until


@dataclass
class RedisServer:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir),
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        wait_until(self.answers, timeout=15, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait until the port refuses connections."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """A private redis-server for the duration of the block (stopped at the end, whatever happened)."""
    if shutil.which("redis-server") is None:
        raise AssertionError("redis-server is not installed (make test installs it with the other services).")
    server = RedisServer(port=free_port(), workdir=workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
