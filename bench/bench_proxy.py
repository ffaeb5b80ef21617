"""Benchmark the desktop proxy against websockify in front of the same VNC server.

    DATABASE_URL=postgres://… REDIS_URL=redis://… .venv/bin/python bench/bench_proxy.py [--seconds 5]

Path measured: client ⇄ daphne (chatdesk's DesktopProxyConsumer) ⇄ chatdesk-agent ⇄ Xvnc, against
client ⇄ websockify ⇄ Xvnc (the agent's unix socket). The script creates a throw-away user, agent and
chat (deleted at the end), starts daphne and a real agent itself, and prints one table:

* throughput: a client that keeps two non-incremental raw FramebufferUpdateRequests for the whole
  screen in flight and counts the bytes received for N seconds (MB/s; target >= 300), and as a ratio
  to websockify;
  with the CPU each process used meanwhile (this client included: all of them share the machine),
  as % of one core and as ms of CPU per MB delivered;
* latency: a 1x1 non-incremental FramebufferUpdateRequest → its update, round trip p50/p95, and the
  p50 the proxy adds over websockify;
* memory per idle viewer: daphne's RSS with 0 and with 50 idle (handshaken) viewers;
* memory for a slow viewer: one that keeps asking for full frames and reads none (a 16 KiB receive
  buffer); daphne's and the agent's RSS growth at their peak, against what the viewer asked for;
* 50 concurrent viewers: each asks for a full frame at the same moment; any error is a failure.

Exit status is 0 even when a target is missed: this reports, CI decides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatdesk.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.utils import timezone  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from agents.daemon.credentials import server_credential  # noqa: E402
from agents.models import WorkspaceAgent  # noqa: E402
from chatdesk.crypto import encrypt_secret, hash_token  # noqa: E402
from chatdesk.services import api_token_create  # noqa: E402
from chats.models import Chat  # noqa: E402
from tests.support.agent_process import running_agent  # noqa: E402
from tests.support.processes import free_port, running_daphne, wait_until  # noqa: E402

GEOMETRY = (1280, 800)
VIEWERS = 50


# -- a minimal RFB client ------------------------------------------------------------------------------


class Viewer:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer = bytearray()
        self.bpp = 32
        self.width = self.height = 0
        self.received = 0

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self.ws.recv(decode=False)
            self.received += len(data)
            self.buffer += data
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def skip(self, n: int) -> None:
        """Consume n bytes without keeping them (pixel data)."""
        while n:
            if self.buffer:
                take = min(n, len(self.buffer))
                del self.buffer[:take]
                n -= take
                continue
            data = await self.ws.recv(decode=False)
            self.received += len(data)
            self.buffer += data

    async def handshake(self) -> None:
        assert await self.read(12) == b"RFB 003.008\n"
        await self.ws.send(b"RFB 003.008\n")
        (count,) = await self.read(1)
        types = await self.read(count)
        assert 1 in types, f"no None security: {list(types)}"
        await self.ws.send(b"\x01")
        assert await self.read(4) == b"\0\0\0\0"
        await self.ws.send(b"\x01")
        self.width, self.height = struct.unpack(">HH", await self.read(4))
        self.bpp = (await self.read(16))[0]
        (name_length,) = struct.unpack(">I", await self.read(4))
        await self.read(name_length)
        await self.ws.send(struct.pack(">BBHi", 2, 0, 1, 0))  # raw only: the heaviest, steadiest stream

    async def request(self, w: int | None = None, h: int | None = None) -> None:
        await self.ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, w or self.width, h or self.height))

    async def read_update(self) -> int:
        while True:
            (kind,) = await self.read(1)
            if kind == 0:
                break
            if kind == 2:
                continue
            raise RuntimeError(f"unexpected server message {kind}")
        _, rects = struct.unpack(">BH", await self.read(3))
        total = 0
        for _ in range(rects):
            _x, _y, w, h, encoding = struct.unpack(">HHHHi", await self.read(12))
            if encoding != 0:
                raise RuntimeError(f"unexpected encoding {encoding}")
            size = w * h * self.bpp // 8
            await self.skip(size)
            total += size
        return total


def open_ws(url: str, token: str | None, **kwargs: Any) -> connect:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(
        url,
        additional_headers=headers,
        compression=None,
        max_size=None,
        open_timeout=30,
        ping_interval=None,
        **kwargs,
    )


async def throughput(url: str, token: str | None, seconds: float) -> float:
    """Return MB/s of raw full-frame updates with two requests in flight."""
    async with open_ws(url, token) as ws:
        viewer = Viewer(ws)
        await viewer.handshake()
        await viewer.request()
        await viewer.read_update()  # warm-up
        await viewer.request()
        await viewer.request()
        start = time.perf_counter()
        payload = 0
        while time.perf_counter() - start < seconds:
            payload += await viewer.read_update()
            await viewer.request()
        elapsed = time.perf_counter() - start
        await viewer.read_update()
        return payload / elapsed / 1e6


async def latency(url: str, token: str | None, rounds: int) -> list[float]:
    """Return round-trip times (ms) of a 1x1 update request → its update."""
    async with open_ws(url, token) as ws:
        viewer = Viewer(ws)
        await viewer.handshake()
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            await viewer.request(1, 1)
            await viewer.read_update()
            samples.append((time.perf_counter() - start) * 1000)
        return samples[10:]  # drop warm-up


def cpu_seconds(pid: int) -> float:
    """Return the CPU time of ``pid`` and its reaped children (websockify serves each client in a child)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def timed_throughput(
    url: str, token: str | None, seconds: float, pids: list[int]
) -> tuple[float, list[float]]:
    """Return (MB/s, CPU % of each of ``pids`` during the run, then of this client)."""
    before, start = [cpu_seconds(p) for p in pids], time.perf_counter()
    client_before = time.process_time()
    mbs = await throughput(url, token, seconds)
    elapsed = time.perf_counter() - start
    client = 100 * (time.process_time() - client_before) / elapsed
    await asyncio.sleep(0.5)  # let websockify reap the child that served us
    return mbs, [*(100 * (cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before, strict=True)), client]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def viewers_memory_and_concurrency(url: str, token: str, pid: int) -> tuple[float, int, int]:
    """Return (KiB per idle viewer, viewers that got a full frame concurrently, errors)."""
    await asyncio.sleep(1)
    base = rss_kib(pid)
    async with contextlib.AsyncExitStack() as stack:
        viewers = []
        errors = 0
        for _ in range(VIEWERS):
            # One at a time: Xvnc black-lists a peer with too many unauthenticated connections at once.
            try:
                ws = await stack.enter_async_context(open_ws(url, token))
                viewer = Viewer(ws)
                await viewer.handshake()
                viewers.append(viewer)
            except Exception as exc:
                errors += 1
                print(f"viewer failed to connect: {exc!r}", file=sys.stderr)
        await asyncio.sleep(2)
        per_viewer = (rss_kib(pid) - base) / max(1, len(viewers))

        async def full_frame(viewer: Viewer) -> bool:
            await viewer.request()
            return (
                await asyncio.wait_for(viewer.read_update(), 60)
                == viewer.width * viewer.height * viewer.bpp // 8
            )

        results = await asyncio.gather(*(full_frame(v) for v in viewers), return_exceptions=True)
        ok = sum(1 for r in results if r is True)
        errors += len(results) - ok
        return per_viewer, ok, errors


async def slow_viewer_memory(
    url: str, token: str, pids: list[int], seconds: float
) -> tuple[float, list[float]]:
    """Return (MB of full frames asked for, peak RSS growth in MiB of each of ``pids``) for a viewer
    that asks for a full frame every 50 ms for ``seconds`` and reads none of them."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # no autotuning: a really slow reader
    sock.connect((host, int(port)))
    sock.setblocking(False)
    async with open_ws(url, token, sock=sock, max_queue=1, close_timeout=1) as ws:
        viewer = Viewer(ws)
        await viewer.handshake()
        await asyncio.sleep(1)
        base = [rss_kib(pid) for pid in pids]
        peak = list(base)
        asked = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            await viewer.request()
            asked += viewer.width * viewer.height * viewer.bpp // 8
            await asyncio.sleep(0.05)
            peak = [max(p, rss_kib(pid)) for p, pid in zip(peak, pids, strict=True)]
    return asked / 1e6, [(p - b) / 1024 for p, b in zip(peak, base, strict=True)]


@contextlib.contextmanager
def websockify(unix_socket: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    binary = Path(sys.executable).parent / "websockify"
    argv = [str(binary), f"127.0.0.1:{port}", f"--unix-target={unix_socket}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
            return False

        wait_until(up, timeout=15, what="websockify")
        yield f"ws://127.0.0.1:{port}/", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def create_rows(agent_token: str) -> tuple[Chat, WorkspaceAgent, str]:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=f"bench-{secrets.token_hex(4)}")
    _, api_token = api_token_create(user=user, name="bench")
    agent = WorkspaceAgent.objects.create(
        owner=user,
        name="bench",
        token_hash=hash_token(agent_token),
        token_prefix=agent_token[:10],
        server_credential_encrypted=encrypt_secret(server_credential(agent_token)),
        last_seen=timezone.now(),
    )
    chat = Chat.objects.create(owner=user, workspace_agent=agent, title="bench")
    return chat, agent, api_token


def per_mb(cpu_percents: list[float], mbs: float) -> str:
    """Return CPU ms per MB delivered, from CPU % of one core at ``mbs`` MB/s."""
    return " / ".join(f"{10 * c / mbs:.2f}" for c in cpu_percents)


def row(name: str, value: str, target: str, ok: bool | None) -> tuple[str, str, str, str]:
    return name, value, target, "-" if ok is None else ("pass" if ok else "FAIL")


async def measure(
    args: argparse.Namespace, proxy_url: str, ws_url: str, token: str, pids: dict[str, int]
) -> list[tuple[str, str, str, str]]:
    rows = []
    # Alternate the two paths so machine noise hits both alike; keep the best of the runs.
    proxy_runs, direct_runs = [], []
    for _ in range(args.runs):
        direct_runs.append(
            await timed_throughput(ws_url, None, args.seconds, [pids["websockify"], pids["xvnc"]])
        )
        proxy_runs.append(
            await timed_throughput(
                proxy_url, token, args.seconds, [pids["daphne"], pids["agent"], pids["xvnc"]]
            )
        )
    (d_mbs, d_cpu), (p_mbs, p_cpu) = max(direct_runs), max(proxy_runs)
    cores = os.cpu_count() or 1
    for path, processes, mbs, cpu in (
        ("websockify", "websockify / Xvnc / client", d_mbs, d_cpu),
        ("proxy", "daphne / agent / Xvnc / client", p_mbs, p_cpu),
    ):
        rows.append(row(f"throughput {path} (MB/s)", f"{mbs:.0f}", "", None))
        rows.append(row(f"  CPU % {processes}", " / ".join(f"{c:.0f}" for c in cpu), f"{cores} cores", None))
        rows.append(row(f"  CPU ms/MB {processes}", per_mb(cpu, mbs), "", None))
    rows.append(row("throughput proxy (MB/s)", f"{p_mbs:.0f}", ">= 300", p_mbs >= 300))
    # Issue #15 traded the 0.70 ratio for public APIs: the target is what a viewer needs (a 30 fps
    # full-screen raw 1280x800 stream is ~120 MB/s), with room to spare.
    rows.append(row("throughput ratio proxy/websockify", f"{p_mbs / d_mbs:.2f}", "", None))

    direct = await latency(ws_url, None, args.rounds)
    proxied = await latency(proxy_url, token, args.rounds)

    def pct(samples: list[float], q: float) -> float:
        return statistics.quantiles(samples, n=100)[int(q) - 1]

    d50, d95 = statistics.median(direct), pct(direct, 95)
    p50, p95 = statistics.median(proxied), pct(proxied, 95)
    rows.append(row("latency websockify p50 / p95 (ms)", f"{d50:.2f} / {d95:.2f}", "", None))
    rows.append(row("latency proxy p50 / p95 (ms)", f"{p50:.2f} / {p95:.2f}", "", None))
    rows.append(row("latency added p50 (ms)", f"{p50 - d50:.2f}", "<= 2.00", p50 - d50 <= 2.0))
    rows.append(row("latency ratio p50 proxy/websockify", f"{p50 / d50:.2f}", "", None))

    asked, (daphne_growth, agent_growth) = await slow_viewer_memory(
        proxy_url, token, [pids["daphne"], pids["agent"]], args.slow_seconds
    )
    rows.append(
        row(
            f"slow viewer: asked {asked:.0f} MB; RSS growth daphne / agent (MiB)",
            f"{daphne_growth:.1f} / {agent_growth:.1f}",
            "<= 16 each",
            max(daphne_growth, agent_growth) <= 16,
        )
    )

    per_viewer, ok, errors = await viewers_memory_and_concurrency(proxy_url, token, pids["daphne"])
    rows.append(row("daphne RSS per idle viewer (KiB)", f"{per_viewer:.0f}", "<= 1024", per_viewer <= 1024))
    rows.append(
        row(
            f"{VIEWERS} concurrent viewers: full frames / errors",
            f"{ok} / {errors}",
            f"{VIEWERS} / 0",
            ok == VIEWERS and errors == 0,
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each throughput run")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per path (best kept)")
    parser.add_argument("--rounds", type=int, default=400, help="latency round trips per path")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="how long the slow viewer asks")
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    agent_token = f"cda_{secrets.token_urlsafe(24)}"
    chat, workspace_agent, api_token = create_rows(agent_token)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="chatdesk-bench-") as tmp,
            running_daphne(Path(tmp)) as daphne,
        ):
            with running_agent(token=agent_token, geometry=f"{GEOMETRY[0]}x{GEOMETRY[1]}") as agent:
                info = agent.info()
                WorkspaceAgent.objects.filter(pk=workspace_agent.pk).update(
                    url=agent.ws_url, last_seen=timezone.now() + timedelta(hours=1)
                )
                rfb_socket = str(Path(info["xauthority"]).parent / "rfb.sock")
                proxy_url = f"{daphne.ws_url}/api/experimental/chats/{chat.pk}/desktop"
                xvnc = [
                    int(p)
                    for p in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
                    if Path(f"/proc/{p}/comm").read_text().strip() == "Xvnc"
                ]
                with websockify(rfb_socket) as (ws_url, websockify_pid):
                    pids = {
                        "daphne": daphne.proc.pid,
                        "agent": agent.pid,
                        "xvnc": xvnc[0],
                        "websockify": websockify_pid,
                    }
                    rows = asyncio.run(measure(args, proxy_url, ws_url, api_token, pids))
    finally:
        owner = chat.owner
        chat.delete()
        WorkspaceAgent.objects.filter(owner=owner).delete()
        owner.delete()

    widths = [max(len(r[i]) for r in [("figure", "value", "target", "result"), *rows]) for i in range(4)]
    print()
    for r in [("figure", "value", "target", "result"), tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
