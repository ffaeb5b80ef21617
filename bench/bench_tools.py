"""Benchmark of the workspace tools, end to end: a real agent, daphne, a Celery worker, Redis, PostgreSQL,
and the fake Anthropic server answering instantly.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/bench_tools.py

Figures:
- bash round trip for ``true``: from the model's tool_use being saved (its assistant message) to the
  tool result being saved, through the engine, a fresh connection to the agent and its shell (the first
  call of the chat, which starts the shell, is left out);
- output -> stream client: a command prints the time, ten times a second; how long after each line was
  printed it reaches a client of the chat's stream WebSocket (through daphne).

Prints a table (figure, target, pass/fail); always exits 0. Uses its own Celery queue and channel prefix
on the configured database and Redis (it creates a user `bench`).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = uuid.uuid4().hex[:8]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")
os.environ["CHATDESK_CELERY_QUEUE"] = f"chatdesk-bench-{RUN}"
os.environ["CHATDESK_CHANNELS_PREFIX"] = f"chatdesk-bench-{RUN}"
os.environ["ANTHROPIC_API_KEY"] = ""

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from agents.daemon.credentials import server_credential  # noqa: E402
from agents.models import WorkspaceAgent  # noqa: E402
from chatdesk.crypto import encrypt_secret, hash_token  # noqa: E402
from chatdesk.services import api_token_create  # noqa: E402
from chats import services  # noqa: E402
from chats.models import Chat, ChatMessage, ChatProvider  # noqa: E402
from tests.support.agent_process import running_agent  # noqa: E402
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, reply, text, tool_use  # noqa: E402
from tests.support.processes import running_daphne, running_worker, wait_until  # noqa: E402

SAMPLES = 30
LINES = 30
AGENT_TOKEN = f"cda_bench_{RUN}_{uuid.uuid4().hex}"


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    if not os.environ.get("REDIS_URL"):
        print("REDIS_URL is not set: the figures are meant for Redis.")
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    _, token = api_token_create(user=user, name=f"bench-{RUN}")
    rows: list[tuple[str, str, str, bool]] = []
    tmp = Path(tempfile.mkdtemp(prefix="chatdesk-bench-"))
    with FakeAnthropic() as fake, running_agent(token=AGENT_TOKEN) as agent_process:
        provider, _ = ChatProvider.objects.get_or_create(provider="anthropic")
        provider.base_url, provider.enabled = fake.base_url, True
        provider.set_api_key("bench-key")
        provider.save()
        agent = WorkspaceAgent.objects.create(
            owner=user,
            name=f"bench-workspace-{RUN}",
            token_hash=hash_token(AGENT_TOKEN),
            token_prefix=AGENT_TOKEN[:10],
            server_credential_encrypted=encrypt_secret(server_credential(AGENT_TOKEN)),
            url=agent_process.ws_url,
            display_width=1280,
            display_height=800,
            last_seen=timezone.now(),
        )
        env = {
            "CHATDESK_CHANNELS_PREFIX": os.environ["CHATDESK_CHANNELS_PREFIX"],
            "ANTHROPIC_API_KEY": "",
            "CHATDESK_AGENT_TIMEOUT_SECONDS": "3600",  # no heartbeats here: the row stays `connected`
        }
        try:
            with running_daphne(tmp, env=env) as daphne, running_worker(tmp, name="t1", env=env):
                rows.append(bench_bash_round_trip(user, agent, fake))
                rows.append(bench_output_to_client(user, agent, fake, daphne.ws_url, token))
        finally:
            agent.delete()
    print()
    print(f"{'figure':<48} {'value':>12} {'target':>12}  result")
    for name, value, target, ok in rows:
        print(f"{name:<48} {value:>12} {target:>12}  {'pass' if ok else 'FAIL'}")
    return 0


def wait_idle(chat: Chat, timeout: float = 120) -> Chat:
    def idle() -> Chat | None:
        chat.refresh_from_db()
        return chat if chat.status in ("waiting", "error", "paused") else None

    return wait_until(idle, timeout=timeout, interval=0.02, what="the chat to be idle")


def steps(request: RecordedRequest) -> int:
    return sum(1 for m in request.json["messages"] if m["role"] == "assistant")


def bench_bash_round_trip(
    user: Any, agent: WorkspaceAgent, fake: FakeAnthropic
) -> tuple[str, str, str, bool]:
    fake.handle_with(
        lambda request: (
            reply(tool_use("bash", {"command": "true"})) if steps(request) <= SAMPLES else reply(text("done"))
        )
    )
    chat = services.chat_create(owner=user, message="run true, many times", workspace_agent=agent)
    chat = wait_idle(chat)
    if chat.status != "waiting":
        return (
            "bash `true`: tool_use -> result saved (p50)",
            f"error: {chat.last_error[:30]}",
            "<= 50 ms",
            False,
        )
    messages = list(chat.messages.order_by("id"))
    latencies = []
    for before, after in itertools.pairwise(messages):
        if before.role == ChatMessage.Role.ASSISTANT and after.role == ChatMessage.Role.TOOL:
            assert not after.content[0]["is_error"], after.content
            latencies.append((after.created_at - before.created_at).total_seconds() * 1000)
    latencies = latencies[1:]  # the first call starts the chat's shell
    value = p50(latencies)
    return ("bash `true`: tool_use -> result saved (p50)", f"{value:.1f} ms", "<= 50 ms", value <= 50)


def bench_output_to_client(
    user: Any, agent: WorkspaceAgent, fake: FakeAnthropic, ws_url: str, token: str
) -> tuple[str, str, str, bool]:
    command = f"for i in $(seq {LINES}); do date +%s.%N; sleep 0.1; done"
    fake.handle_with(
        lambda request: (
            reply(tool_use("bash", {"command": command})) if steps(request) == 0 else reply(text("ok"))
        )
    )
    chat = services.chat_create(owner=user, title="output", workspace_agent=agent)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"}
    with connect(f"{ws_url}/api/experimental/chats/{chat.pk}/stream", additional_headers=headers) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "status"
        services.chat_send_message(chat=chat, content="print the time")
        deadline = time.monotonic() + 60
        while len(latencies) < LINES and time.monotonic() < deadline:
            event = json.loads(ws.recv(timeout=30))
            now = time.time()
            if event["type"] == "tool_output":
                latencies += [(now - float(line)) * 1000 for line in event["output"].split()]
    wait_idle(chat)
    value = p50(latencies)
    ok = value <= 100 and len(latencies) == LINES
    return ("command output -> stream client (p50)", f"{value:.1f} ms", "<= 100 ms", ok)


if __name__ == "__main__":
    sys.exit(main())
