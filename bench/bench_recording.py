"""Benchmark of desktop recording (agents/daemon/recorder.py) on a real 1280x800 desktop with an xterm open.

Run from the repository root:  python bench/bench_recording.py [-n 80] [--idle-seconds 30]

Measures, with the agent's real ffmpeg:
- the recorder's CPU (ffmpeg's user+system time / wall time, % of one core) while a scripted sequence of
  actions changes the screen (clicks, typing and scrolling in the xterm), and while the screen is idle;
- action -> settled screenshot p50 with and without a recording running, side by side in one run
  (alternating blocks, so a change in the machine's load hits both alike);
- the size of an idle recording, extrapolated to 10 minutes from its measured rate.
Prints a table with targets; exits 0 even when a target is missed, non-zero only on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from agents.daemon.client import AgentClient
from tests.support.agent_process import running_agent
from tests.support.media import ffmpeg_recorders

TOKEN = "bench-token"
TICKS = os.sysconf("SC_CLK_TCK")
BLOCKS = 8  # alternating blocks of clicks without and with a recording


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class CpuMeter:
    """CPU share of one process over a stretch of wall time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid)
        self.wall = time.monotonic()

    def share(self) -> float:
        return (cpu_seconds(self.pid) - self.cpu) / (time.monotonic() - self.wall)


async def click_block(client: AgentClient, n: int, offset: int) -> list[float]:
    samples = []
    for i in range(n):
        k = offset + i
        start = time.perf_counter()
        result = await client.action(
            {"action": "left_click", "coordinate": [200 + k % 10 * 20, 150 + k % 7 * 15]}
        )
        assert result.png
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def screen_changing_sequence(client: AgentClient, rounds: int) -> None:
    """A scripted sequence of actions that changes the screen: typing, output scrolling, clicks."""
    for i in range(rounds):
        await client.action(
            {"action": "type", "text": f"echo step {i} of the benchmark; ls /usr/bin | head -30\n"}
        )
        await client.action({"action": "left_click", "coordinate": [300 + i % 5 * 40, 200]})
        await client.action({"action": "key", "text": "ctrl+l" if i % 3 == 2 else "Return"})


async def bench(n: int, idle_seconds: float) -> int:
    with running_agent(token=TOKEN, geometry="1280x800") as agent:
        xterm = subprocess.Popen(["xterm", "-geometry", "100x40+0+0"], env=agent.x_env())
        try:
            async with AgentClient(agent.ws_url, TOKEN, timeout=30) as client:
                deadline = time.monotonic() + 10
                while True:  # wait until the xterm is on screen
                    shot = await client.screenshot(64, 40)
                    if len(Image.open(BytesIO(shot.png)).getcolors(4096) or []) > 1:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("xterm did not appear")
                    await asyncio.sleep(0.05)
                await client.action({"action": "left_click", "coordinate": [300, 200]})

                # Latency, side by side: blocks alternate between recording and not.
                plain: list[float] = []
                recorded: list[float] = []
                # A recording starts before a turn's first action; measure it running, past its first second.
                block = max(1, n // BLOCKS)
                for round_ in range(BLOCKS):
                    plain += await click_block(client, block, round_ * block)
                    started = await client.call("recording_start", {})
                    await asyncio.sleep(1)
                    recorded += await click_block(client, block, round_ * block)
                    await client.call("recording_stop", {"id": started["id"]})
                    await client.call("recording_delete", {"id": started["id"]})

                # CPU while the screen changes.
                started = await client.call("recording_start", {})
                (pid,) = ffmpeg_recorders(agent.display)
                meter = CpuMeter(pid)
                await screen_changing_sequence(client, 12)
                active_cpu = meter.share()
                active_seconds = time.monotonic() - meter.wall
                stopped = await client.call("recording_stop", {"id": started["id"]})
                active_rate = stopped["size_bytes"] / stopped["duration_seconds"]
                await client.call("recording_delete", {"id": started["id"]})

                # Idle: nothing happens on the screen.
                started = await client.call("recording_start", {})
                (pid,) = ffmpeg_recorders(agent.display)
                await asyncio.sleep(2)  # past the first (key) frame
                meter = CpuMeter(pid)
                await asyncio.sleep(idle_seconds)
                idle_cpu = meter.share()
                stopped = await client.call("recording_stop", {"id": started["id"]})
                await client.call("recording_delete", {"id": started["id"]})
        finally:
            xterm.terminate()
            xterm.wait(5)

    idle_rate = stopped["size_bytes"] / stopped["duration_seconds"]
    ten_minutes_mb = idle_rate * 600 / 1e6
    p50_plain, p50_recorded = statistics.median(plain), statistics.median(recorded)
    ratio = p50_recorded / p50_plain
    rows = [
        ("recorder CPU, screen changing", 100 * active_cpu, 25, "%", f"{active_seconds:.0f} s of actions"),
        ("recorder CPU, idle", 100 * idle_cpu, 3, "%", f"{idle_seconds:.0f} s idle"),
        ("left_click -> screenshot p50, no recording", p50_plain, None, "ms", f"N={len(plain)}"),
        ("left_click -> screenshot p50, recording", p50_recorded, None, "ms", f"N={len(recorded)}"),
        ("  ratio recording / none", 100 * ratio, 110, "%", "side by side"),
        ("idle recording rate", idle_rate / 1000, None, "KB/s", f"{stopped['duration_seconds']:.0f} s file"),
        ("10-minute idle recording (extrapolated)", ten_minutes_mb, 5, "MB", "rate x 600 s"),
        ("active recording rate", active_rate / 1000, None, "KB/s", "while the screen changes"),
    ]
    print("recording benchmark: 1280x800 Xvnc desktop, xterm open, WebM VP8 at the default frame rate\n")
    print(f"{'figure':<44} {'value':>9} {'target':>10}  result  note")
    print("-" * 92)
    for name, value, target, unit, note in rows:
        verdict = "-" if target is None else ("PASS" if value <= target else "MISS")
        target_text = "-" if target is None else f"<= {target} {unit}"
        print(f"{name:<44} {value:>7.1f} {unit:<4} {target_text:>9}  {verdict:<6}  {note}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=80, help="clicks per latency figure (default 80)")
    parser.add_argument(
        "--idle-seconds", type=float, default=30, help="length of the idle stretch (default 30)"
    )
    args = parser.parse_args()
    try:
        return asyncio.run(bench(args.n, args.idle_seconds))
    except Exception as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
