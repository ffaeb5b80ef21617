"""`make run`: the web server, a Celery worker (with the periodic sweep) and a local workspace agent.

Ctrl+C (or SIGTERM) stops all three; the agent stops its desktop with it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.models import WorkspaceAgent
from chatdesk.serving import daphne_argv

LOCAL_AGENT_NAME = "local desktop"
AGENT_LISTEN = "127.0.0.1:7420"


class Command(BaseCommand):
    help = "Run daphne, a Celery worker and a local chatdesk-agent until Ctrl+C."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-agent", action="store_true", help="Do not start a local workspace agent.")

    def handle(self, *args: Any, port: int, host: str, no_agent: bool, **options: Any) -> None:
        admin = self.ensure_admin()
        bin_dir = os.path.dirname(sys.executable)
        commands: list[tuple[str, list[str], dict[str, str] | None]] = [
            ("web", daphne_argv(host=host, port=port), None),
            (
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "chatdesk",
                    "worker",
                    "-B",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(os.environ.get("CELERY_CONCURRENCY", "2")),
                    "--schedule",
                    str(settings.VAR_DIR / "celerybeat-schedule"),
                ],
                None,
            ),
        ]
        if not no_agent:
            if shutil.which("Xvnc") is None:
                self.stderr.write(
                    "Xvnc is not installed: starting without a local desktop (run as root once)."
                )
            else:
                token = self.local_agent_token(admin)
                # The agent heartbeats over loopback even when the web server listens on every interface.
                loopback = host in ("0.0.0.0", "::")  # noqa: S104 (a comparison, not a bind)
                server = f"http://{'127.0.0.1' if loopback else host}:{port}"
                argv = [os.path.join(bin_dir, "chatdesk-agent"), "--server", server, "--listen", AGENT_LISTEN]
                # The token goes in the environment, not argv: every local user can read argv in `ps`.
                agent_env = {**os.environ, "CHATDESK_AGENT_TOKEN": token}
                commands.append(("agent", argv, agent_env))
        self.supervise(commands, port=port, host=host)

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
        self, commands: list[tuple[str, list[str], dict[str, str] | None]], *, port: int, host: str
    ) -> None:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, argv, env in commands:
                procs[name] = subprocess.Popen(argv, env=env, start_new_session=True)
            self.stdout.write(
                self.style.SUCCESS(f"chatdesk is running on http://{host}:{port}/  (Ctrl+C stops it)")
            )
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise CommandError(f"{name} exited with code {proc.returncode}; stopping.")
                time.sleep(0.5)
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            self.stdout.write("Stopped.")
