"""Persistent shells for the ``bash`` tool (Anthropic's ``bash_20250124``): one bash per chat, run as the
desktop's user with the desktop's allowlisted environment.

A chat's shell keeps its working directory, variables and functions from one call to the next;
``restart`` replaces it with a fresh one. Shells are keyed by the caller's ``session`` (the server uses
the chat's id); at most :data:`MAX_SESSIONS` are kept, the least recently used idle one is closed first.

How a command runs. A shell is ``bash --noprofile --norc`` reading from a pipe, its stdout and stderr one
pipe back, started through :class:`~agents.daemon.boundary.DesktopUser` (its uid, groups and HOME; the
environment from the allowlist plus the desktop's DISPLAY: never the agent's own). A command never goes
into that pipe as code: it is one single-quoted word, ``eval -- '<command>' </dev/null 2>&1``, so

* an unbalanced quote is a syntax error of that command (status 2), not a shell left waiting for more;
* the command reads /dev/null, never the commands that follow it;
* it runs in the shell itself, so ``cd`` and ``export`` last.

The shell then prints a marker: RS (0x1E), a fresh random nonce, RS, the command's status, a newline.
The nonce is not one word of the command line, so even ``set -x`` cannot echo it; whatever the command
prints before the marker is its output.

Stopping a command (its timeout, an interrupt, its caller leaving) stops what the command started: the
shell's children that were not there before it began, with their descendants, get SIGTERM, then SIGKILL;
the shell lives on with its state (jobs started in the background by earlier commands are left alone).
A command that keeps the shell itself busy (a loop of builtins) cannot be stopped that way; then the
whole shell is killed, and the result says that the next command gets a new one.

Output is capped at ``output_limit`` bytes: the first and the last half of the cap are kept, with a line
saying how much was cut between them. While the command runs, the kept start streams to the caller
(``on_output``), at most one message every :data:`STREAM_INTERVAL` seconds (the first at once).
Output printed between commands (by background jobs) is given to the next command.

Imports nothing from Django.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import math
import os
import re
import secrets
import shlex
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

from agents.daemon import toolspec
from agents.daemon.actionspec import ActionError, clip, is_int
from agents.daemon.backends.xvnc import parent_death_prefix, process_start_time
from agents.daemon.boundary import DesktopUser

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = toolspec.BASH_DEFAULT_TIMEOUT
MAX_TIMEOUT = toolspec.BASH_MAX_TIMEOUT
DEFAULT_OUTPUT_LIMIT = toolspec.BASH_DEFAULT_OUTPUT_LIMIT
MIN_OUTPUT_LIMIT = toolspec.BASH_MIN_OUTPUT_LIMIT
MAX_OUTPUT_LIMIT = toolspec.BASH_MAX_OUTPUT_LIMIT
MAX_COMMAND_CHARS = toolspec.BASH_MAX_COMMAND_CHARS
MAX_SESSIONS = 32
MAX_SESSION_NAME = 200
STREAM_INTERVAL = 0.025
# After SIGTERM, how long the command gets before SIGKILL; after SIGKILL, how long the shell gets to come
# back before it is given up.
STOP_GRACE = 1.0
# When bash exits, how long to wait for the last of its output (a background job may hold the pipe).
EXIT_DRAIN = 0.2
assert 2 * STOP_GRACE + EXIT_DRAIN + 5.0 <= toolspec.BASH_STOP_TIME  # closing a shell waits up to 5 s
READ_CHUNK = 64 * 1024
MAX_CARRY = 64 * 1024  # output of background jobs between commands, kept for the next command
RS = b"\x1e"
# CSI and OSC escape sequences: colours and titles are noise in a transcript.
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")

Notify = Callable[[str], Awaitable[None]]


class BashResult(TypedDict):
    """What one ``bash`` call did (the ``result`` of the RPC method; see PROTOCOL.md)."""

    output: str  # stdout and stderr as printed, with a line where the cap cut it
    exit_code: int | None  # None: the command did not finish (stopped, or its shell was killed)
    timed_out: bool
    truncated: bool
    restarted: bool  # a ``restart`` call: nothing was run
    new_shell: bool  # this call started a new shell (first use, or the last one had exited or was killed)
    shell_exited: bool  # after this call the shell is gone (the command ran ``exit``, or it was killed)


# --- processes ------------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Return the pids of ``pid``'s children (from /proc; empty when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return {int(p) for p in text.split()}
    except FileNotFoundError:
        return set()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan
        return {p for p, parent in _parents().items() if parent == pid}


def _parents() -> dict[int, int]:
    """Return {pid: parent pid} of every process (one /proc scan)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
    return found


def descendants(roots: set[int]) -> set[int]:
    """Return ``roots`` and every process below them."""
    if not roots:
        return set()
    below: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        below.setdefault(parent, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(below.get(pid, ()))
    return found


def session_members(sid: int, uid: int) -> set[int]:
    """Return the pids of user ``uid`` whose session id is ``sid`` (a shell leads a session of its own).

    The user is checked too: once the shell is gone, its pid (and so a session id) may be another's.
    """
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if (
                    int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[3]) == sid
                    and entry.stat().st_uid == uid
                ):
                    found.add(int(entry.name))
    return found


def signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _identity(pids: set[int]) -> set[tuple[int, str | None]]:
    """Return (pid, start time) pairs: a pid alone may be recycled by the time it is compared."""
    return {(pid, process_start_time(pid)) for pid in pids}


# --- output ---------------------------------------------------------------------------------------


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text) if "\x1b" in text else text


async def process_exited(proc: asyncio.subprocess.Process) -> int:
    """Return ``proc``'s exit status as soon as it exits.

    Not ``proc.wait()``: on Python 3.11 that also waits for the process's pipes to close, which a job it
    left in the background (``sleep 300 & exit``) holds open for as long as it runs. A pidfd becomes
    readable when the process ends; the event loop's child watcher then reaps it and sets ``returncode``.
    """
    if proc.returncode is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except ProcessLookupError:  # reaped already: returncode is being set
        pidfd = None
    if pidfd is not None:
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await ended
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    # The watcher sets returncode from its own thread a moment after the exit: no event to wait for.
    while proc.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return proc.returncode


def _marker_prefix_at_end(data: bytearray, marker: bytes) -> int:
    """Return the length of the longest end of ``data`` that starts ``marker`` (bytes to hold back)."""
    start = data.rfind(marker[:1], max(0, len(data) - len(marker) + 1))
    while start >= 0:
        if marker.startswith(bytes(data[start:])):
            return len(data) - start
        start = data.find(marker[:1], start + 1)
    return 0


class _Stream:
    """Sends streamed output to ``notify``: the first piece at once, then at most every ``interval``."""

    def __init__(self, notify: Notify | None, interval: float = STREAM_INTERVAL) -> None:
        self.notify = notify
        self.interval = interval
        self._pieces: list[str] = []
        self._last = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    def add(self, text: str) -> None:
        if not text or self.notify is None:
            return
        self._pieces.append(text)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self.notify is not None
        while self._pieces:
            delay = self._last + self.interval - time.monotonic()
            if delay > 0 and not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), delay)
            text = "".join(self._pieces)
            self._pieces.clear()
            self._last = time.monotonic()
            try:
                await self.notify(text)
            except Exception:  # the caller is gone: the final reply cannot reach it either
                log.debug("could not stream shell output", exc_info=True)
                self._pieces.clear()
        self._task = None

    async def finish(self) -> None:
        """Send what is left at once, and return once it is sent."""
        self._hurry.set()
        if self._task is not None:
            await self._task

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class _Command:
    """One command in flight: splits the shell's output into the command's output and its end marker."""

    def __init__(self, marker: bytes, limit: int, stream: _Stream) -> None:
        self.marker = marker
        self.stream = stream
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.pending = bytearray()  # bytes that may still turn out to be the marker
        self.leftover = bytearray()  # bytes after the marker: background output for the next command
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.cut_announced = False
        self.done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.exited = False  # the shell exited (``exit``) or was killed
        self.killed_shell = False

    def feed(self, data: bytes) -> None:
        if self.done.done():
            self.leftover += data
            return
        self.pending += data
        index = self.pending.find(self.marker)
        if index >= 0:
            end = self.pending.find(b"\n", index + len(self.marker))
            self._output(bytes(self.pending[:index]))
            del self.pending[:index]
            if end < 0:
                return  # the status is not complete yet
            end -= index
            status = bytes(self.pending[len(self.marker) : end])
            self.leftover += self.pending[end + 1 :]
            self.pending.clear()
            self.done.set_result(int(status) if status.isdigit() else None)
            return
        hold = _marker_prefix_at_end(self.pending, self.marker)
        if len(self.pending) > hold:
            self._output(bytes(self.pending[: len(self.pending) - hold]))
            del self.pending[: len(self.pending) - hold]

    def end(self, status: int | None, *, exited: bool) -> None:
        """The shell is gone (or was given up): what is pending is output; the command ends with ``status``."""
        if self.done.done():
            return
        self._output(bytes(self.pending))
        self.pending.clear()
        self.exited = exited
        self.done.set_result(status)

    def _output(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            part = data[:room]
            self.head += part
            self.stream.add(strip_ansi(self.decoder.decode(part)))
            data = data[room:]
        if data:
            if not self.cut_announced:
                self.cut_announced = True
                self.stream.add("\n[… output cut here; the end follows when the command finishes …]\n")
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return strip_ansi(bytes(self.head + self.tail).decode(errors="replace"))
        cut = self.total - len(self.head) - len(self.tail)
        return (
            strip_ansi(bytes(self.head).decode(errors="replace"))
            + f"\n[… {cut:,} bytes of output cut: the command printed {self.total:,} bytes, of which the first "
            f"{len(self.head):,} and the last {len(self.tail):,} are shown …]\n"
            + strip_ansi(bytes(self.tail).decode(errors="replace"))
        )


# --- one shell ---------------------------------------------------------------------------------------


class ShellSession:
    """One persistent bash (see the module docstring). One command at a time."""

    def __init__(self, *, user: DesktopUser, environment: Callable[[], dict[str, str]]) -> None:
        self.user = user
        self.environment = environment
        self.lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._command: _Command | None = None
        self._carry = bytearray()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def busy(self) -> bool:
        return self.lock.locked()

    async def _start(self) -> None:
        env = dict(self.environment())
        env["TERM"] = "dumb"  # output goes to a pipe and then to a transcript: no colours, no cursor moves
        self._proc = await asyncio.create_subprocess_exec(
            *parent_death_prefix(),
            "bash",
            "--noprofile",
            "--norc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own session: stopping it finds everything it started
            env=env,
            **self.user.spawn_options(),
        )
        self._carry.clear()
        self._reader = asyncio.create_task(self._read(self._proc))
        self._waiter = asyncio.create_task(self._wait(self._proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(READ_CHUNK):
            if self._command is not None and self._proc is proc:
                self._command.feed(chunk)
            else:
                self._carry += chunk
                if len(self._carry) > MAX_CARRY:
                    del self._carry[: len(self._carry) - MAX_CARRY]

    async def _wait(self, proc: asyncio.subprocess.Process) -> None:
        status = await process_exited(proc)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), EXIT_DRAIN)
        if self._command is not None and self._proc is proc:
            self._command.end(status if status >= 0 else 128 - status, exited=True)

    async def run(
        self, command: str, *, time_limit: float, output_limit: int, on_output: Notify | None
    ) -> BashResult:
        """Run ``command`` and return what it did (see the module docstring).

        Cancelled (the caller left), the command is stopped first, then the cancellation goes on.
        """
        async with self.lock:
            self.last_used = time.monotonic()
            new_shell = not self.alive
            if new_shell:
                await self.close()
                await self._start()
            nonce = secrets.token_hex(16)
            stream = _Stream(on_output)
            cmd = _Command(RS + nonce.encode() + RS, output_limit, stream)
            before = _identity(children(self.pid or 0))
            self._command = cmd
            carried, self._carry = bytes(self._carry), bytearray()
            timed_out = False
            try:
                cmd.feed(carried)
                line = f"eval -- {shlex.quote(command)} </dev/null 2>&1; printf '\\036%s\\036%d\\n' {nonce} \"$?\"\n"
                await self._send(line.encode())
                try:
                    await asyncio.wait_for(asyncio.shield(cmd.done), time_limit)
                except TimeoutError:
                    timed_out = True
                    await self._stop_command(cmd, before)
            except asyncio.CancelledError:
                await asyncio.shield(self._stop_command(cmd, before))
                stream.cancel()
                raise
            finally:
                self._command = None
                self._carry += cmd.leftover
            await stream.finish()
            status = cmd.done.result()
            self.last_used = time.monotonic()
            return {
                "output": cmd.text(),
                "exit_code": None if timed_out or cmd.killed_shell else status,
                "timed_out": timed_out,
                "truncated": cmd.truncated,
                "restarted": False,
                "new_shell": new_shell,
                "shell_exited": not self.alive,
            }

    async def _send(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the shell is gone; _wait ends the command

    async def _stop_command(self, cmd: _Command, before: set[tuple[int, str | None]]) -> None:
        """Stop what the running command started; give up the whole shell when that is not enough."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            started = self._started_by_command(before)
            if not started:
                break
            signal_all(started, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(cmd.done), STOP_GRACE)
                return
        if not cmd.done.done():
            cmd.killed_shell = True
            await self.close()
            cmd.end(None, exited=True)

    def _started_by_command(self, before: set[tuple[int, str | None]]) -> set[int]:
        if not self.alive or self.pid is None:
            return set()
        new = {pid for pid, started in _identity(children(self.pid)) if (pid, started) not in before}
        return descendants(new)

    async def close(self) -> None:
        """Kill the shell and everything it started (its session), and forget it (idempotent).

        A command still running ends at once, as one whose shell was killed.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._command is not None:
            self._command.killed_shell = True
            self._command.end(None, exited=True)
        # Its session outlives it when it exited (`exit`) with jobs in the background: those go too.
        victims = session_members(proc.pid, self.user.uid)
        if proc.returncode is None:
            victims |= descendants({proc.pid}) | {proc.pid}
        signal_all(victims, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(process_exited(proc), 5)
        for task in (self._reader, self._waiter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._reader = self._waiter = None
        if proc.stdin is not None:
            proc.stdin.close()


# --- every chat's shell ---------------------------------------------------------------------------------


class Shells:
    """The shells of one agent, by session (the server's chat id); see the module docstring.

    ``environment`` gives a new shell its environment (the desktop's allowlisted one); ``prepare`` runs
    before a shell starts (the server starts the desktop, so the shell gets its DISPLAY).
    """

    def __init__(
        self,
        *,
        user: DesktopUser,
        environment: Callable[[], dict[str, str]],
        prepare: Callable[[], Awaitable[None]] | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.user = user
        self.environment = environment
        self.prepare = prepare
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, ShellSession] = OrderedDict()

    async def bash(self, params: Mapping[str, Any], on_output: Notify | None = None) -> BashResult:
        """Run one ``bash`` call (params: see PROTOCOL.md). Raise ActionError for a malformed request."""
        name = params.get("session")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_SESSION_NAME:
            raise ActionError(f'"session" must be a string of 1 to {MAX_SESSION_NAME} characters.')
        restart = params.get("restart", False)
        if not isinstance(restart, bool):
            raise ActionError('"restart" must be true or false.')
        timeout = _number(params.get("timeout", DEFAULT_TIMEOUT), "timeout", 0.001, MAX_TIMEOUT)
        limit = params.get("output_limit", DEFAULT_OUTPUT_LIMIT)
        if not is_int(limit) or not MIN_OUTPUT_LIMIT <= limit <= MAX_OUTPUT_LIMIT:
            raise ActionError(
                f'"output_limit" must be a whole number of bytes from {MIN_OUTPUT_LIMIT} to {MAX_OUTPUT_LIMIT}.'
            )
        if restart:
            await self.restart(name)
            return {
                "output": "",
                "exit_code": None,
                "timed_out": False,
                "truncated": False,
                "restarted": True,
                "new_shell": True,
                "shell_exited": False,
            }
        command = params.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ActionError("no command provided.")
        if len(command) > MAX_COMMAND_CHARS:
            raise ActionError(
                f"The command is {len(command):,} characters long; at most {MAX_COMMAND_CHARS:,}."
            )
        if "\x00" in command:
            raise ActionError("The command contains a NUL character.")
        session = await self._session(name)
        return await session.run(
            command, time_limit=float(timeout), output_limit=int(limit), on_output=on_output
        )

    async def restart(self, name: str) -> None:
        """Replace session ``name``'s shell with a new one (killing a command it may be running)."""
        old = self._sessions.pop(name, None)
        if old is not None:
            await old.close()
        session = await self._session(name)  # prepares the desktop for the new shell
        async with session.lock:
            if not session.alive:
                await session._start()

    async def _session(self, name: str) -> ShellSession:
        session = self._sessions.get(name)
        if session is None:
            if self.prepare is not None:
                await self.prepare()
            session = ShellSession(user=self.user, environment=self.environment)
            self._sessions[name] = session
            await self._evict()
        self._sessions.move_to_end(name)
        return session

    async def _evict(self) -> None:
        """Close the least recently used idle shells beyond ``max_sessions``."""
        idle = [name for name, s in self._sessions.items() if not s.busy]
        while len(self._sessions) > self.max_sessions and idle:
            victim = self._sessions.pop(idle.pop(0))
            await victim.close()

    def pids(self) -> dict[str, int]:
        """Return {session: shell pid} of the running shells."""
        return {name: s.pid for name, s in self._sessions.items() if s.alive and s.pid is not None}

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()


def _number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ActionError(
            f'"{name}" must be a number of seconds from {low:g} to {high:g}, got {clip(value)}.'
        )
    return float(value)


__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "DEFAULT_TIMEOUT",
    "MAX_OUTPUT_LIMIT",
    "MAX_TIMEOUT",
    "BashResult",
    "ShellSession",
    "Shells",
]
