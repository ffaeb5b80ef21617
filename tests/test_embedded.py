"""The embedded default: no DATABASE_URL, no REDIS_URL — SQLite under var/ and no server to run.

Everything runs in child processes with a clean environment, so this run's PostgreSQL and Redis
settings cannot leak in.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatdesk.serving import daphne_argv
from tests.support.processes import ROOT, free_port, stop, wait_until

SERVER_VARIABLES = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "MEDIA_ROOT", "CHATDESK_CELERY_QUEUE")


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-var")


@pytest.fixture(scope="module")
def embedded_env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE="chatdesk.settings", CHATDESK_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1"
    )
    return env


@pytest.fixture(scope="module")
def migrated(embedded_env: dict[str, str], var_dir: Path) -> Path:
    result = manage(embedded_env, "migrate", "--no-input")
    assert result.returncode == 0, result.stdout + result.stderr
    return var_dir


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def daphne(embedded_env: dict[str, str], migrated: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = tmp_path / "daphne.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            daphne_argv(host="127.0.0.1", port=port),
            cwd=ROOT, env=embedded_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daphne exited:\n{log.read_text()}")
        try:
            get(f"{base}/accounts/login/", timeout=1)
        except OSError:
            return False
        return True

    try:
        wait_until(up, timeout=30, what="daphne to answer")
        yield base
    finally:
        stop(proc)


def get(url: str, *, timeout: float = 10) -> tuple[int, str]:
    """Return the status and body of a GET (4xx/5xx included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a local test server)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_migrate_uses_sqlite_under_var_and_writes_a_private_secret_key(migrated: Path) -> None:
    assert (migrated / "chatdesk.sqlite3").stat().st_size > 0
    secret = migrated / "secret_key"
    assert len(secret.read_text().strip()) >= 50
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_system_checks_pass(embedded_env: dict[str, str], migrated: Path) -> None:
    result = manage(embedded_env, "check", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_settings_choose_the_embedded_backends(embedded_env: dict[str, str], migrated: Path) -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    result = manage(embedded_env, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == [
        "django.db.backends.sqlite3", "filesystem://", "channels.layers.InMemoryChannelLayer",
    ]  # fmt: skip


def test_the_embedded_worker_looks_for_tasks_often_enough_to_start_turns_at_once(
    embedded_env: dict[str, str], migrated: Path
) -> None:
    """kombu's filesystem transport polls, by default every second: turns waited up to 1 s to start.
    (The latency and the idle CPU it costs are measured by bench/bench_engine.py in both modes.)"""
    code = (
        "from chatdesk.celery import app; c = app.connection_for_read(); "
        "print(type(c.transport).__module__, c.transport.polling_interval)"
    )
    result = manage(embedded_env, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    module, interval = result.stdout.strip().splitlines()[-1].split()
    assert module == "kombu.transport.filesystem"
    assert float(interval) <= 0.1


def test_daphne_serves_the_schema_and_the_login_page(daphne: str) -> None:
    status, body = get(f"{daphne}/api/schema/?format=json")
    assert status == 200
    assert "/api/experimental/chats" in json.loads(body)["paths"]

    status, body = get(f"{daphne}/accounts/login/")
    assert status == 200
    assert 'name="password"' in body
    assert 'name="csrfmiddlewaretoken"' in body

    status, body = get(f"{daphne}/api/experimental/chats")
    assert status == 401
    assert json.loads(body)["detail"]


def test_celery_worker_runs_tasks_over_the_filesystem_transport(
    embedded_env: dict[str, str], migrated: Path, tmp_path: Path
) -> None:
    log = tmp_path / "celery.log"
    with log.open("wb") as fh:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "chatdesk", "worker", "--loglevel", "INFO", "--concurrency", "1",
             "--pool", "solo", "-n", "embedded@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=embedded_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        output = lambda: log.read_text(errors="replace")  # noqa: E731
        wait_until(
            lambda: "ready." in output() or (worker.poll() is not None and _fail(output())),
            timeout=60,
            what="the Celery worker to be ready",
        )
        send = subprocess.run(
            [sys.executable, "-c",
             "from chatdesk.celery import app; app.send_task('celery.accumulate', args=(20, 22))"],
            cwd=ROOT, env=embedded_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert send.returncode == 0, send.stderr
        wait_until(
            lambda: "celery.accumulate" in output() and "succeeded" in output(),
            timeout=30,
            what="the worker to run the task",
        )
        assert "(20, 22)" in output()
    finally:
        stop(worker)


def _fail(output: str) -> bool:
    raise AssertionError(f"the worker exited:\n{output}")
