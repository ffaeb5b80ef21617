"""`make run`: the web server, a Celery worker (with the periodic sweep) and a local workspace agent.

Ctrl+C (or SIGTERM) stops all of them; the agent stops its desktop with it.

The agent is the boundary between the server and a desktop a model drives (SPEC §12), so it starts
without the server's secrets:

* its environment is built from an allowlist (``agents.daemon.boundary.agent_environment``): no
  SECRET_KEY, DATABASE_URL, REDIS_URL, ANTHROPIC_API_KEY or CHATDESK_ADMIN_PASSWORD;
* its token travels in a 0600 file in a 0700 folder under var/ (``--token-file``), never in its argv
  (which every local user can read), and the file is removed when the stack stops;
* run as root, its desktop runs as CHATDESK_AGENT_DESKTOP_USER (default ``chatdesk-desktop``, which
  ``make run`` creates), who can read neither that file nor var/ (made 0700: the database, the secret
  key and the queue live there) nor the processes of the server.

An agent that exits (a crash, SIGKILL, OOM) is started again after a back-off (1 s, doubling up to 30 s,
back to 1 s once it has run for a minute); the web server or the worker exiting stops everything.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.daemon.boundary import agent_environment
from agents.models import WorkspaceAgent
from chatdesk.serving import daphne_argv

LOCAL_AGENT_NAME = "local desktop"
AGENT_LISTEN = "127.0.0.1:7420"
DEFAULT_DESKTOP_USER = "chatdesk-desktop"
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_RESET_AFTER = 60.0  # an agent that ran this long restarts quickly again
STOP_GRACE = 15.0


class AgentSupervisor:
    """Keeps the local agent running: starts it, and starts it again with a back-off when it exits."""

    def __init__(self, argv: list[str], env: dict[str, str], write: Any) -> None:
        self.argv = argv
        self.env = env
        self.write = write
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = RESTART_FIRST_DELAY
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()

    def poll(self) -> None:
        """Notice an exited agent and start it again when its back-off has passed."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                self.start()
            return
        if self.proc is None or self.proc.poll() is None:
            return
        if now - self.started_at >= RESTART_RESET_AFTER:
            self.delay = RESTART_FIRST_DELAY
        self.write(f"agent exited with code {self.proc.returncode}; starting it again in {self.delay:g} s")
        self.restart_at = now + self.delay
        self.delay = min(self.delay * 2, RESTART_MAX_DELAY)


class Command(BaseCommand):
    help = "Run daphne, a Celery worker and a local chatdesk-agent until Ctrl+C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-agent", action="store_true", help="Do not start a local workspace agent.")
        parser.add_argument(
            "--agent-listen",
            default=AGENT_LISTEN,
            help=f"Where the local agent listens (default {AGENT_LISTEN}).",
        )
        parser.add_argument(
            "--desktop-user",
            default=os.environ.get("CHATDESK_AGENT_DESKTOP_USER", DEFAULT_DESKTOP_USER),
            help="Run as root: the user the local desktop runs as (default chatdesk-desktop).",
        )

    def handle(
        self,
        *args: Any,
        port: int,
        host: str,
        no_agent: bool,
        agent_listen: str,
        desktop_user: str,
        **options: Any,
    ) -> None:
        admin = self.ensure_admin()
        # The server's private folder: database, secret key, queue, media, the agent's token file.
        with contextlib.suppress(OSError):
            os.chmod(settings.VAR_DIR, 0o700)
        commands: list[tuple[str, list[str]]] = [
            ("web", daphne_argv(host=host, port=port)),
            (
                "worker",
                [
                    sys.executable, "-m", "celery", "-A", "chatdesk", "worker", "-B", "--loglevel", "INFO",
                    "--concurrency", str(os.environ.get("CELERY_CONCURRENCY", "2")),
                    "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
                ],
            ),
        ]  # fmt: skip
        agent: AgentSupervisor | None = None
        token_dir = settings.VAR_DIR / "agent"
        if not no_agent:
            agent = self.local_agent(
                admin, host=host, port=port, listen=agent_listen, desktop_user=desktop_user
            )
        try:
            self.supervise(commands, agent, port=port, host=host)
        finally:
            shutil.rmtree(token_dir, ignore_errors=True)

    def local_agent(
        self, admin: Any, *, host: str, port: int, listen: str, desktop_user: str
    ) -> AgentSupervisor | None:
        """Return the supervisor of the local agent, or None (with a message) when it cannot run here."""
        if shutil.which("Xvnc") is None:
            self.stderr.write("Xvnc is not installed: starting without a local desktop (run as root once).")
            return None
        argv = [str(Path(sys.executable).parent / "chatdesk-agent")]
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(desktop_user)
            except KeyError:
                self.stderr.write(
                    f"The desktop user {desktop_user!r} does not exist: starting without a local desktop. "
                    f"`make run` creates it (or: useradd --system --create-home {desktop_user})."
                )
                return None
            argv += ["--desktop-user", desktop_user]
        token_file = self.write_token_file(self.local_agent_token(admin))
        # The agent heartbeats over loopback even when the web server listens on every interface.
        loopback = host in ("0.0.0.0", "::")  # noqa: S104 (a comparison, not a bind)
        server = f"http://{'127.0.0.1' if loopback else host}:{port}"
        argv += ["--server", server, "--listen", listen, "--token-file", str(token_file)]
        return AgentSupervisor(argv, agent_environment(os.environ), self.stdout.write)

    def write_token_file(self, token: str) -> Path:
        """Write ``token`` to var/agent/token (folder 0700, file 0600) and return the file's path."""
        folder = settings.VAR_DIR / "agent"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700)
        path = folder / "token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        return path

    def ensure_admin(self) -> Any:
        User = get_user_model()
        admin = User.objects.filter(username="admin").first()
        password = os.environ.get("CHATDESK_ADMIN_PASSWORD")
        if admin is None:
            generated = password is None
            password = password or secrets.token_urlsafe(12)
            admin = User.objects.create_superuser("admin", email="", password=password)
            if generated:
                self.stdout.write(
                    self.style.WARNING(f"Created user admin with password: {password}  (shown once)")
                )
            else:
                self.stdout.write("Created user admin (password from CHATDESK_ADMIN_PASSWORD).")
        elif password is not None and not admin.check_password(password):
            admin.set_password(password)
            admin.save(update_fields=["password"])
        return admin

    @transaction.atomic
    def local_agent_token(self, admin: Any) -> str:
        """Return a fresh token for admin's local agent (created on first run; only hashes are stored)."""
        agent = WorkspaceAgent.objects.filter(owner=admin, name=LOCAL_AGENT_NAME).first()
        if agent is None:
            agent = WorkspaceAgent(owner=admin, name=LOCAL_AGENT_NAME)
        raw = agent.assign_new_token()
        agent.save()
        return raw

    def supervise(
        self, commands: list[tuple[str, list[str]]], agent: AgentSupervisor | None, *, port: int, host: str
    ) -> None:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, argv in commands:
                procs[name] = subprocess.Popen(argv, start_new_session=True)
            if agent is not None:
                agent.start()
            self.stdout.write(
                self.style.SUCCESS(f"chatdesk is running on http://{host}:{port}/  (Ctrl+C stops it)")
            )
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise CommandError(f"{name} exited with code {proc.returncode}; stopping.")
                if agent is not None:
                    agent.poll()
                time.sleep(0.2)
        finally:
            # The agent first, while the server is still up to hear that it stops; then the rest.
            if agent is not None and agent.proc is not None:
                self.terminate([agent.proc])
            self.terminate(list(procs.values()))
            self.stdout.write("Stopped.")

    @staticmethod
    def terminate(running: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM ``running``, wait for them (STOP_GRACE), then SIGKILL the process group of any left."""
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
