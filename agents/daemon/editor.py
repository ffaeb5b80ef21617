"""The text editor tool (Anthropic's ``text_editor_20250728``, named ``str_replace_based_edit_tool``),
executed in the workspace as the desktop's user.

Commands, as Anthropic documents them:

* ``view`` — a file's lines, each prefixed with its number (``"3: text"``), all of them or
  ``view_range`` ``[start, end]`` (1-based, inclusive; ``end`` -1 reads to the end); a directory's files
  and directories two levels deep, hidden ones left out. The shown text is cut at ``max_characters``
  (the tool's setting), and the cut is said.
* ``create`` — a new file with ``file_text`` (missing parent directories are made); an existing file is
  not overwritten.
* ``str_replace`` — replace ``old_str``, which must appear exactly once, verbatim (whitespace and
  indentation included), with ``new_str`` (absent: remove it).
* ``insert`` — insert text after line ``insert_line`` (0: at the start). The documentation names the
  text ``new_str``; models send ``insert_text`` (anthropics/anthropic-sdk-python#1155): both are read.

There is no ``undo_edit`` in this version. Paths must be absolute. Errors are results the model reads,
worded as the documentation's "Handle errors" section words them where it does ("Error: File not found",
"Error: No match found for replacement. Please check your text and try again.", "Error: Found 3 matches
for replacement text. Please provide more context to make a unique match.", "Error: Permission denied.
Cannot write to file.").

Acting as the desktop's user: the file system decides what may be read and written, so every command
runs with that user's identity. When the agent runs as that user already, in a thread; when it runs as
root with ``--desktop-user``, in a child forked for the one command, which takes on the user's uid, gid
and groups before it touches a path and exits when done (an exec is not possible: the user may not be
allowed to run the agent's Python). The child stays non-dumpable like the agent, so no desktop program
can read the agent's memory through it.

Imports nothing from Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from agents.daemon import toolspec
from agents.daemon.actionspec import ActionError, is_int
from agents.daemon.boundary import DesktopUser, make_undumpable

TOOL_NAME = toolspec.EDITOR_TOOL_NAME
COMMANDS = ("view", "create", "str_replace", "insert")
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_LISTED = 1_000  # entries of a directory listing
MIN_MAX_CHARACTERS = toolspec.EDITOR_MIN_MAX_CHARACTERS
MAX_MAX_CHARACTERS = toolspec.EDITOR_MAX_MAX_CHARACTERS
SNIPPET_LINES = 4
CHILD_TIMEOUT = toolspec.EDITOR_TIME_LIMIT

FILE_NOT_FOUND = "Error: File not found"
NO_MATCH = "Error: No match found for replacement. Please check your text and try again."
MANY_MATCHES = (
    "Error: Found {count} matches for replacement text. Please provide more context to make a unique match."
)
CANNOT_WRITE = "Error: Permission denied. Cannot write to file."
CANNOT_READ = "Error: Permission denied. Cannot read file."


class EditResult(TypedDict):
    output: str
    is_error: bool


class EditorError(Exception):
    """A command that cannot be done; the message is the tool result the model reads."""


# --- the commands ---------------------------------------------------------------------------------------


def edit(tool_input: object, *, max_characters: int | None = None, home: str = "/") -> EditResult:
    """Run one editor command in this process, as whoever this process is. Never raises."""
    try:
        return {"output": _edit(tool_input, max_characters, home), "is_error": False}
    except EditorError as exc:
        return {"output": str(exc), "is_error": True}


def _edit(tool_input: object, max_characters: int | None, home: str) -> str:
    if not isinstance(tool_input, Mapping):
        raise EditorError("The tool input must be a JSON object.")
    command = tool_input.get("command")
    if command not in COMMANDS:
        raise EditorError(
            f"Unrecognized command {command}. The allowed commands for the {TOOL_NAME} tool are: "
            f"{', '.join(COMMANDS)}"
        )
    path = _path(tool_input.get("path"), home)
    if command == "view":
        return _view(path, tool_input.get("view_range"), max_characters)
    if command == "create":
        file_text = tool_input.get("file_text")
        if not isinstance(file_text, str):
            raise EditorError("Parameter `file_text` is required for command: create")
        return _create(path, file_text)
    if command == "str_replace":
        old_str, new_str = tool_input.get("old_str"), tool_input.get("new_str", "")
        if not isinstance(old_str, str):
            raise EditorError("Parameter `old_str` is required for command: str_replace")
        if new_str is None:
            new_str = ""
        if not isinstance(new_str, str):
            raise EditorError("Parameter `new_str` must be a string.")
        return _str_replace(path, old_str, new_str)
    line = tool_input.get("insert_line")
    text = tool_input.get("insert_text", tool_input.get("new_str"))
    if not is_int(line):
        raise EditorError(
            "Parameter `insert_line` is required for command: insert (a line number; 0 inserts at the start)"
        )
    if not isinstance(text, str):
        raise EditorError("Parameter `insert_text` is required for command: insert")
    return _insert(path, line, text)  # type: ignore[arg-type]


def _path(value: object, home: str) -> str:
    if not isinstance(value, str) or not value:
        raise EditorError("Parameter `path` is required.")
    if "\x00" in value:
        raise EditorError("The path contains a NUL character.")
    if not value.startswith("/"):
        suggestion = os.path.join(home, value)
        raise EditorError(
            f"The path {value} is not an absolute path, it should start with `/`. Maybe you meant {suggestion}?"
        )
    return value


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise EditorError(FILE_NOT_FOUND) from None
    except NotADirectoryError:
        raise EditorError(FILE_NOT_FOUND) from None
    except PermissionError:
        raise EditorError(CANNOT_READ) from None
    except OSError as exc:
        raise EditorError(f"Error: Cannot read {path}: {exc.strerror or exc}.") from None


def _read(path: str) -> str:
    """Return a regular file's text (UTF-8, line endings kept). Raise EditorError for anything else."""
    info = _stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise EditorError(
            f"The path {path} is a directory and only the `view` command can be used on directories"
        )
    if not stat.S_ISREG(info.st_mode):
        raise EditorError(f"Error: {path} is not a regular file.")
    if info.st_size > MAX_FILE_BYTES:
        raise EditorError(
            f"Error: {path} is {info.st_size:,} bytes; the editor works on files up to {MAX_FILE_BYTES:,} bytes. "
            "Use bash (head, sed -n, grep -n) to read parts of it."
        )
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise EditorError(CANNOT_READ) from None
    except OSError as exc:
        raise EditorError(f"Error: Cannot read {path}: {exc.strerror or exc}.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EditorError(
            f"Error: {path} is not a UTF-8 text file; the editor edits text. Use bash to inspect it."
        ) from None


def _write(path: str, text: str, *, create: bool = False) -> None:
    """Write ``text`` to ``path`` in place (its owner and mode stay); ``create`` requires a new file."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o666)
        with os.fdopen(fd, "wb") as file:
            file.write(text.encode("utf-8"))
    except FileExistsError:
        raise EditorError(
            f"Error: File already exists at: {path}. Cannot overwrite files using command `create`."
        ) from None
    except PermissionError:
        raise EditorError(CANNOT_WRITE) from None
    except OSError as exc:
        raise EditorError(f"Error: Cannot write to {path}: {exc.strerror or exc}.") from None


def lines_of(text: str) -> list[str]:
    """Return ``text``'s lines with their line ends ("a\\nb" and "a\\nb\\n" both have two lines)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def numbered(lines: list[str], first: int) -> str:
    """Return ``lines`` as the tool shows them: ``"<number>: <line>"``, one per line."""
    return "\n".join(f"{first + i}: {line.rstrip(chr(10))}" for i, line in enumerate(lines))


def _view(path: str, view_range: object, max_characters: int | None) -> str:
    info = _stat(path)
    if stat.S_ISDIR(info.st_mode):
        if view_range is not None:
            raise EditorError("The `view_range` parameter is not allowed when `path` points to a directory.")
        return _clip(_listing(path), max_characters, what="listing")
    lines = lines_of(_read(path))
    first = 1
    if view_range is not None:
        if not (isinstance(view_range, list) and len(view_range) == 2 and all(is_int(v) for v in view_range)):
            raise EditorError("Invalid `view_range`. It should be a list of two integers.")
        start, end = view_range
        count = len(lines)
        if not 1 <= start <= max(count, 1):
            raise EditorError(
                f"Invalid `view_range`: {view_range}. Its first element `{start}` should be within the range "
                f"of lines of the file: {[1, count]}"
            )
        if end != -1 and end > count:
            raise EditorError(
                f"Invalid `view_range`: {view_range}. Its second element `{end}` should not be larger than "
                f"the number of lines in the file: `{count}`"
            )
        if end != -1 and end < start:
            raise EditorError(
                f"Invalid `view_range`: {view_range}. Its second element `{end}` should be larger or equal "
                f"than its first `{start}`"
            )
        first = start
        lines = lines[start - 1 : None if end == -1 else end]
    content = "".join(lines)
    if max_characters is not None and len(content) > max_characters:
        shown = lines_of(content[:max_characters])
        return (
            numbered(shown, first)
            + f"\n[… cut: these lines hold {len(content):,} characters and at most {max_characters:,} are shown "
            "(max_characters). View a smaller range of lines with `view_range` to see the rest.]"
        )
    if not lines:
        return "(the file is empty)"
    return numbered(lines, first)


def _listing(path: str) -> str:
    entries = []
    root = Path(path)
    for depth_one in _visible(root):
        entries.append(depth_one)
        if depth_one.is_dir() and not depth_one.is_symlink():
            entries.extend(_visible(depth_one))
        if len(entries) > MAX_LISTED:
            break
    shown = [f"{p}/" if p.is_dir() else str(p) for p in entries[:MAX_LISTED]]
    more = f"\n[… {len(entries) - MAX_LISTED} more not shown]" if len(entries) > MAX_LISTED else ""
    return (
        f"Here's the files and directories up to 2 levels deep in {path}, excluding hidden items:\n"
        + "\n".join([f"{root}/" if path != "/" else "/", *shown])
        + more
    )


def _visible(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except PermissionError:
        if directory.is_dir():
            return []
        raise EditorError(CANNOT_READ) from None
    except OSError:
        return []


def _clip(text: str, max_characters: int | None, *, what: str) -> str:
    if max_characters is None or len(text) <= max_characters:
        return text
    return (
        text[:max_characters] + f"\n[… the {what} was cut at {max_characters:,} characters (max_characters)]"
    )


def _create(path: str, file_text: str) -> str:
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        try:
            os.makedirs(parent, exist_ok=True)
        except PermissionError:
            raise EditorError(CANNOT_WRITE) from None
        except OSError as exc:
            raise EditorError(
                f"Error: Cannot create the directory {parent}: {exc.strerror or exc}."
            ) from None
    _write(path, file_text, create=True)
    return f"File created successfully at: {path}"


def _snippet(text: str, first_changed: int, changed: int) -> str:
    """Return the changed lines (0-based ``first_changed``, ``changed`` of them) with a few around them."""
    lines = lines_of(text)
    start = max(0, first_changed - SNIPPET_LINES)
    end = min(len(lines), first_changed + changed + SNIPPET_LINES)
    return numbered(lines[start:end], start + 1) if end > start else "(the file is empty)"


def _str_replace(path: str, old_str: str, new_str: str) -> str:
    text = _read(path)
    if not old_str:
        raise EditorError("Parameter `old_str` must not be empty: give the exact text to replace.")
    count = text.count(old_str)
    if count == 0:
        raise EditorError(NO_MATCH)
    if count > 1:
        raise EditorError(MANY_MATCHES.format(count=count))
    at = text.index(old_str)
    updated = text[:at] + new_str + text[at + len(old_str) :]
    _write(path, updated)
    first = text.count("\n", 0, at)
    return (
        "Successfully replaced text at exactly one location.\n\n"
        f"The edited part of {path} now reads:\n{_snippet(updated, first, new_str.count(chr(10)) + 1)}"
    )


def _insert(path: str, insert_line: int, text: str) -> str:
    content = _read(path)
    lines = lines_of(content)
    if not 0 <= insert_line <= len(lines):
        raise EditorError(
            f"Invalid `insert_line` parameter: {insert_line}. It should be within the range of lines of the "
            f"file: {[0, len(lines)]}"
        )
    if insert_line and not lines[insert_line - 1].endswith("\n"):
        lines[insert_line - 1] += "\n"  # the last line had no line end: the new text starts a line of its own
    new_lines = lines_of(text if text.endswith("\n") else text + "\n") if text else []
    updated = "".join(lines[:insert_line] + new_lines + lines[insert_line:])
    _write(path, updated)
    where = f"after line {insert_line}" if insert_line else "at the start of the file"
    return (
        f"Successfully inserted {len(new_lines)} line{'s' if len(new_lines) != 1 else ''} {where}.\n\n"
        f"The edited part of {path} now reads:\n{_snippet(updated, insert_line, len(new_lines))}"
    )


# --- running as the desktop's user ---------------------------------------------------------------------


class Editor:
    """Runs editor commands as ``user`` (see the module docstring)."""

    def __init__(self, user: DesktopUser) -> None:
        self.user = user

    async def run(self, params: Mapping[str, Any]) -> EditResult:
        """Run one ``edit`` call: ``{"input": <the tool input>, "max_characters"?: int}``.

        Raise ActionError for a malformed request (not for a bad tool input: that is an error result).
        """
        max_characters = params.get("max_characters")
        if max_characters is not None and (
            not is_int(max_characters) or not MIN_MAX_CHARACTERS <= max_characters <= MAX_MAX_CHARACTERS
        ):
            raise ActionError(
                f'"max_characters" must be a whole number from {MIN_MAX_CHARACTERS} to {MAX_MAX_CHARACTERS}.'
            )
        tool_input = params.get("input")
        if self.user.switch:
            return await asyncio.to_thread(run_as, self.user, tool_input, max_characters)
        return await asyncio.to_thread(edit, tool_input, max_characters=max_characters, home=self.user.home)


def run_as(user: DesktopUser, tool_input: object, max_characters: int | None) -> EditResult:
    """Run :func:`edit` in a child process forked for it, as ``user``; return its result.

    Called from a worker thread (the fork then copies only that thread). The child does nothing but the
    command: no import, no logging, no exec; it writes its result as JSON to a pipe and exits.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_fd)
            os.setgroups(list(user.groups))
            os.setgid(user.gid)
            os.setuid(user.uid)
            make_undumpable()  # a uid change may reset it from /proc/sys/fs/suid_dumpable
            with contextlib.suppress(OSError):
                os.chdir(user.home)
            payload = json.dumps(edit(tool_input, max_characters=max_characters, home=user.home)).encode()
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view) :]
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    data: bytes | None = None
    try:
        data = _read_all(read_fd, deadline=time.monotonic() + CHILD_TIMEOUT)
    finally:
        os.close(read_fd)
        if data is None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not data:
        return {
            "output": "Error: the editor command did not finish (it timed out or failed); check the file before "
            "trying again.",
            "is_error": True,
        }
    result = json.loads(data)
    return {"output": str(result["output"]), "is_error": bool(result["is_error"])}


def _read_all(fd: int, *, deadline: float) -> bytes | None:
    """Return everything written to ``fd`` until it closes; None when ``deadline`` passes first."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


__all__ = ["COMMANDS", "TOOL_NAME", "EditResult", "Editor", "edit", "lines_of", "numbered", "run_as"]
