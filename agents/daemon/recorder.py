"""Recordings of the desktop: ffmpeg (x11grab) writes a WebM video while a chat works or a person holds control.

The server says when (``recording_start`` / ``recording_stop`` over ``/rpc``, see PROTOCOL.md) and pulls the
finished file in chunks (``recording_read``), then lets it go (``recording_delete``). This module owns the
ffmpeg processes and the files:

* **Format.** WebM, VP8 (libvpx, realtime) in ``yuv420p``: every Chromium plays it (Debian's build may lack
  H.264), and at 1280x800 it costs a few percent of one core while the screen changes (bench/bench_agent.py).
* **Idle stretches are compressed.** ``mpdecimate`` drops frames equal to the previous one and the output has
  a variable frame rate, so an idle minute is a few kilobytes; it keeps one frame every
  ``KEEPALIVE_SECONDS`` so the video lasts as long as the recording did (a player can seek to its end).
  The comparison runs on planar RGB (``format=gbrp``), which is cheaper than converting every grabbed frame
  to YUV; only kept frames are converted and encoded.
* **The video lasts as long as the recording.** Stopping waits (at most a keep-alive period) until a frame
  from the moment of the stop is in the file, so the actions of a turn's last seconds lie inside the video.
* **Real time is kept.** Frames carry their grab time, so second ``t`` of the video is ``started_at + t`` on
  the wall clock (``started_at`` is the first frame's grab time, which ffmpeg prints as the input's
  ``start:``): the server turns an action's start time into an offset into the video.
* **Priority.** ffmpeg runs in the idle scheduling class, so the agent's actions and screenshots come first
  on a busy machine (see ``LOW_PRIORITY``).
* **Boundary.** ffmpeg runs as the desktop's user with its allowlisted environment (``DesktopUser``), like
  every program the backends start, in a session of its own, with a parent-death signal; stopping the agent
  or the recording stops it (SIGINT lets it finish the file; SIGKILL after a grace period).
* **A crash breaks only the recording.** An ffmpeg that exits by itself (killed, the desktop died, the size
  cap) leaves a recording marked incomplete; the file is remuxed so its duration and seek index are right,
  and the agent goes on serving actions.
* **Bounds.** ``max_bytes`` (ffmpeg ``-fs``) and ``max_seconds`` (``-t``) cap each file; at most
  ``MAX_RECORDINGS`` exist at once; files the server never collected are removed after ``KEEP_SECONDS`` and
  all of them when the agent stops.

Imports nothing from Django.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.daemon.actionspec import ActionError
from agents.daemon.backends.base import Desktop, DesktopError
from agents.daemon.backends.xvnc import DIR_PREFIX, OWNER_FILE, parent_death_prefix, process_start_time

log = logging.getLogger(__name__)

CONTENT_TYPE = "video/webm"
SUFFIX = ".webm"
DEFAULT_FPS = 8
MAX_FPS = 30
DEFAULT_MAX_BYTES = 200 * 1024 * 1024
MAX_BYTES_LIMIT = 4 * 1024 * 1024 * 1024
DEFAULT_MAX_SECONDS = 4 * 3600
KEEPALIVE_SECONDS = 2  # a frame at least this often, even when nothing changes
MAX_RECORDINGS = 8
KEEP_SECONDS = 3600  # a finished recording the server did not collect is removed after this
READ_CHUNK_LIMIT = 1024 * 1024
START_TIMEOUT = 10.0
STOP_GRACE = 5.0
REMUX_TIMEOUT = 60.0
THUMBNAIL_WIDTH = 320
STDERR_LINES = 20
# ffmpeg runs in the SCHED_IDLE class (chrt --idle): it takes only CPU nothing else wants, so an action's
# settled screenshot never waits for the encoder. Measured on a loaded 2-core machine (bench_recording.py):
# at nice 10 the p50 of a click's settled screenshot was 124% of the figure without recording; idle, 96%.
# Frames carry their grab time, so a late encode costs smoothness, never timing.
LOW_PRIORITY = ["chrt", "--idle", "0"]
_START_RE = re.compile(r"Input #0, x11grab.*|\s+Duration: .*, start: (?P<start>\d+(?:\.\d+)?)")
_PROGRESS_RE = re.compile(r"^(?P<key>[a-z_]+)=(?P<value>\S*)$")


class RecordingUnavailable(DesktopError):
    """Recording is not possible here (no ffmpeg, no X display) or ffmpeg did not start."""


@dataclass
class Recording:
    """One recording: its ffmpeg process while it runs, its file afterwards."""

    id: str
    path: Path
    fps: int
    process: asyncio.subprocess.Process | None = None
    started_at: float | None = None  # wall clock of the first frame (ffmpeg's input start)
    ended_at: float | None = None
    state: str = "recording"  # recording -> finished | failed
    complete: bool = True
    reason: str = ""
    stopping: bool = False
    out_time: float = 0.0  # the newest frame's time in the video (ffmpeg's -progress out_time_us)
    progressed: asyncio.Event = field(default_factory=asyncio.Event)
    thumbnail_png: bytes | None = None
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES))
    watcher: asyncio.Task[None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def describe(self) -> dict[str, Any]:
        """Return what the server stores about the recording (JSON-safe)."""
        return {
            "id": self.id,
            "state": self.state,
            "complete": self.complete,
            "reason": self.reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_seconds": (
                max(0.0, self.ended_at - self.started_at)
                if self.started_at is not None and self.ended_at is not None
                else None
            ),
            "size_bytes": self.size(),
            "content_type": CONTENT_TYPE,
            "now": time.time(),
        }


def ffmpeg_argv(
    *, display: str, size: tuple[int, int], fps: int, max_bytes: int, max_seconds: int, out: Path
) -> list[str]:
    """Return ffmpeg's command line for one recording of ``display`` into ``out`` (see module docstring)."""
    width, height = size
    return [
        "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "info", "-progress", "pipe:2", "-stats_period", "0.25",
        "-f", "x11grab", "-draw_mouse", "1", "-framerate", str(fps),
        "-video_size", f"{width}x{height}", "-i", display,
        "-t", str(max_seconds),
        "-vf", f"format=gbrp,mpdecimate=max={fps * KEEPALIVE_SECONDS},format=yuv420p",
        "-fps_mode", "vfr",
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-threads", "1",
        "-b:v", "1M", "-crf", "10", "-g", str(fps * 60), "-auto-alt-ref", "0", "-lag-in-frames", "0",
        # Short clusters reach the disk every second: a recorder that crashes still leaves a playable file.
        "-cluster_time_limit", "1000", "-flush_packets", "1", "-fs", str(max_bytes),
        "-f", "webm", "-y", str(out),
    ]  # fmt: skip


class Recorder:
    """The recordings of one desktop (see module docstring)."""

    def __init__(self, desktop: Desktop, *, directory: Path | None = None) -> None:
        self.desktop = desktop
        self._parent = directory
        self._dir: Path | None = None
        self._recordings: dict[str, Recording] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def available() -> bool:
        return shutil.which("ffmpeg") is not None

    def _directory(self) -> Path:
        """Return the private directory the recordings are written to (created on first use).

        It is named like a desktop's directory, with the agent's owner file, so an agent that died without
        stopping leaves nothing: the next one's stale-desktop sweep removes it. It belongs to the desktop's
        user, who runs ffmpeg.
        """
        if self._dir is None or not self._dir.is_dir():
            self._dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}recordings-", dir=self._parent))
            (self._dir / OWNER_FILE).write_text(f"{os.getpid()} {process_start_time(os.getpid())}\n")
            self.desktop.user.give(self._dir)
        return self._dir

    def _get(self, recording_id: object) -> Recording:
        if not isinstance(recording_id, str) or recording_id not in self._recordings:
            raise ActionError("No such recording.")
        return self._recordings[recording_id]

    # -- start -------------------------------------------------------------------------------------

    async def start(
        self, *, fps: object = None, max_bytes: object = None, max_seconds: object = None
    ) -> dict[str, Any]:
        """Start a recording of the running desktop; return its description once the first frame is in.

        Raise ActionError for bad parameters, RecordingUnavailable when ffmpeg cannot record.
        """
        fps_value = _bounded_int("fps", fps, DEFAULT_FPS, 1, MAX_FPS)
        bytes_value = _bounded_int("max_bytes", max_bytes, DEFAULT_MAX_BYTES, 64 * 1024, MAX_BYTES_LIMIT)
        seconds_value = _bounded_int("max_seconds", max_seconds, DEFAULT_MAX_SECONDS, 1, 24 * 3600)
        if not self.available():
            raise RecordingUnavailable("Cannot record the desktop: ffmpeg is not installed.")
        env = self.desktop.program_environment()
        if env is None or self.desktop.x_display is None:
            raise RecordingUnavailable("Cannot record the desktop: it has no X display.")
        async with self._lock:
            self._expire_old()
            if sum(r.state == "recording" for r in self._recordings.values()) >= MAX_RECORDINGS:
                raise RecordingUnavailable("Too many recordings are running.")
            recording_id = secrets.token_urlsafe(12)
            path = self._directory() / f"{recording_id}{SUFFIX}"
            recording = Recording(id=recording_id, path=path, fps=fps_value)
            argv = ffmpeg_argv(
                display=self.desktop.x_display,
                size=self.desktop.native_size,
                fps=fps_value,
                max_bytes=bytes_value,
                max_seconds=seconds_value,
                out=path,
            )
            recording.process = await asyncio.create_subprocess_exec(
                *parent_death_prefix(),
                *(LOW_PRIORITY if shutil.which(LOW_PRIORITY[0]) else []),
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=env,
                **self.desktop.user.spawn_options(),
            )
            self._recordings[recording_id] = recording
            started = asyncio.get_running_loop().create_future()
            recording.watcher = asyncio.create_task(self._watch(recording, started))
        try:
            await asyncio.wait_for(asyncio.shield(started), START_TIMEOUT)
        except TimeoutError:
            pass
        if recording.started_at is None:
            await self._halt(recording, graceful=False)
            self._forget(recording)
            tail = " | ".join(recording.stderr)[-300:]
            log.warning("ffmpeg did not start recording: %s", tail)
            raise RecordingUnavailable("Cannot record the desktop: ffmpeg did not start.")
        log.info("recording %s started (pid %s, %d fps)", recording_id, recording.process.pid, fps_value)
        return recording.describe()

    async def _watch(self, recording: Recording, started: asyncio.Future[None]) -> None:
        """Read ffmpeg's stderr (the first frame's time, then errors) until it exits; then settle the state."""
        proc = recording.process
        assert proc is not None and proc.stderr is not None
        try:
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                progress = _PROGRESS_RE.match(line)
                if progress is not None:
                    if progress["key"] == "out_time_us" and progress["value"].isdigit():
                        recording.out_time = int(progress["value"]) / 1e6
                        recording.progressed.set()
                    continue
                recording.stderr.append(line)
                if recording.started_at is None and (match := _START_RE.match(line)) and match["start"]:
                    recording.started_at = float(match["start"])
                    if not started.done():
                        started.set_result(None)
            code = await proc.wait()
        finally:
            if not started.done():
                started.set_result(None)
        recording.ended_at = recording.ended_at or time.time()
        # ffmpeg ends with 255 when a signal (our SIGINT) interrupted it, after writing the file's end.
        if recording.stopping and code in (0, 255):
            recording.state = "finished"
        else:
            recording.complete = False
            recording.reason = _exit_reason(recording, code)
            recording.state = "failed" if recording.size() == 0 else "finished"
            if recording.started_at is not None:
                log.warning("recording %s ended early: %s", recording.id, recording.reason)
                if recording.size() > 0 and not await self._remux(recording):
                    recording.state = "failed"  # not even one whole frame reached the file
        recording.finished.set()

    async def _remux(self, recording: Recording) -> bool:
        """Rewrite a file ffmpeg did not finish (no duration, no seek index) so a browser can play and seek it.

        Return False when nothing playable could be read from it.
        """
        fixed = recording.path.with_suffix(".fixed" + SUFFIX)
        env = self.desktop.user.environment()
        try:
            proc = await asyncio.create_subprocess_exec(
                "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
                "-i", str(recording.path), "-c", "copy", "-y", str(fixed),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True,
                **self.desktop.user.spawn_options(),
            )  # fmt: skip
            try:
                code = await asyncio.wait_for(proc.wait(), REMUX_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return False
            if code == 0 and fixed.exists() and fixed.stat().st_size > 0:
                os.replace(fixed, recording.path)
                return True
            return False
        except OSError as exc:
            log.warning("could not remux recording %s: %s", recording.id, exc)
            return False
        finally:
            with contextlib.suppress(OSError):
                fixed.unlink()

    # -- stop, read, delete --------------------------------------------------------------------------

    async def stop(self, recording_id: object, *, thumbnail: Any = None) -> dict[str, Any]:
        """Stop a recording (idempotent) and return its description, with a PNG ``thumbnail_base64`` of the
        screen as it ends when ``thumbnail`` (an async callable returning PNG bytes) is given."""
        recording = self._get(recording_id)
        if recording.state == "recording" and not recording.stopping:
            await self._wait_for_frame_at(recording, time.time())
            if thumbnail is not None:
                with contextlib.suppress(DesktopError, OSError, ValueError):
                    recording.thumbnail_png = await thumbnail()
            await self._halt(recording, graceful=True)
        await recording.finished.wait()
        result = recording.describe()
        if recording.thumbnail_png:
            result["thumbnail_base64"] = base64.b64encode(recording.thumbnail_png).decode("ascii")
        return result

    async def _wait_for_frame_at(self, recording: Recording, moment: float) -> None:
        """Wait (at most a keep-alive period) until the video has a frame from ``moment`` on.

        Frames equal to the previous one are dropped, so without this the video would end at the last
        change: the actions of a turn's last seconds would lie past its end, where no player can seek.
        """
        if recording.started_at is None:
            return
        target = moment - recording.started_at - 0.05
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEEPALIVE_SECONDS + 1.0
        while recording.out_time < target and recording.state == "recording":
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            recording.progressed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recording.progressed.wait(), remaining)

    async def _halt(self, recording: Recording, *, graceful: bool) -> None:
        """Stop ffmpeg: SIGINT (it finishes the file), SIGKILL to its session after the grace period."""
        proc = recording.process
        recording.stopping = True
        recording.ended_at = recording.ended_at or time.time()
        if proc is None or proc.returncode is not None:
            return
        if graceful:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
        if proc.returncode is None:
            log.warning("ffmpeg (recording %s) did not stop; killing it", recording.id)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if recording.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await recording.watcher

    def read(self, recording_id: object, offset: object, length: object) -> dict[str, Any]:
        """Return up to ``length`` bytes of a finished recording from ``offset``: ``{data_base64, eof, size}``."""
        recording = self._get(recording_id)
        if recording.state == "recording":
            raise ActionError("The recording is still running; stop it first.")
        start = _bounded_int("offset", offset, 0, 0, MAX_BYTES_LIMIT)
        count = _bounded_int("length", length, READ_CHUNK_LIMIT, 1, READ_CHUNK_LIMIT)
        size = recording.size()
        data = b""
        if start < size:
            with recording.path.open("rb") as file:
                file.seek(start)
                data = file.read(count)
        return {
            "data_base64": base64.b64encode(data).decode("ascii"),
            "eof": start + len(data) >= size,
            "size": size,
        }

    async def delete(self, recording_id: object) -> dict[str, Any]:
        """Stop (when still running) and remove a recording and its file."""
        recording = self._get(recording_id)
        await self._halt(recording, graceful=False)
        await recording.finished.wait()
        self._forget(recording)
        return {"id": recording.id, "deleted": True}

    def _forget(self, recording: Recording) -> None:
        self._recordings.pop(recording.id, None)
        with contextlib.suppress(OSError):
            recording.path.unlink()

    def _expire_old(self) -> None:
        cutoff = time.time() - KEEP_SECONDS
        for recording in list(self._recordings.values()):
            if recording.state != "recording" and (recording.ended_at or 0) < cutoff:
                self._forget(recording)

    def running(self) -> list[str]:
        """Return the ids of the recordings whose ffmpeg is running."""
        return [r.id for r in self._recordings.values() if r.state == "recording"]

    async def close(self) -> None:
        """Stop every recording and remove every file (the agent stops): no ffmpeg is left behind."""
        for recording in list(self._recordings.values()):
            await self._halt(recording, graceful=False)
        self._recordings.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _bounded_int(name: str, value: object, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ActionError(f'"{name}" must be an integer between {low} and {high}.')
    return value


def _exit_reason(recording: Recording, code: int) -> str:
    """Return why ffmpeg ended by itself, in words a person reading the chat understands."""
    text = " ".join(recording.stderr)
    if code < 0:
        return f"the recorder was stopped by signal {-code}"
    if "I/O error" in text or "Connection refused" in text or "Cannot open display" in text:
        return "the desktop went away"
    if code == 0:
        return "the recording reached its size or length limit"
    return f"the recorder failed (exit {code})"
