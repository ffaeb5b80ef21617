"""The text editor tool (``text_editor_20250728``) on a real agent, on real files, as the desktop's user:
its commands, and each error the documentation names (agents/daemon/editor.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.daemon.editor import CANNOT_READ, CANNOT_WRITE, FILE_NOT_FOUND, NO_MATCH, edit
from tests.agents.daemon.conftest import needs_desktop
from tests.support.agent_process import AgentProcess, desktop_user

pytestmark = [needs_desktop, pytest.mark.desktop]

PRIMES = "def is_prime(n):\n    if n < 2:\n        return False\n    return all(n % d for d in range(2, n))\n"


def run(agent: AgentProcess, max_characters: int | None = None, **tool_input: Any) -> tuple[str, bool]:
    params: dict[str, Any] = {"input": tool_input}
    if max_characters is not None:
        params["max_characters"] = max_characters
    result = agent.call("edit", params)
    return result["output"], result["is_error"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory of the desktop's user, as its home would be."""
    path = Path(tempfile.mkdtemp(prefix="editor-test-"))
    user = desktop_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_create_view_replace_and_insert_a_file(agent: AgentProcess, workdir: Path) -> None:
    path = workdir / "src" / "primes.py"
    out, err = run(agent, command="create", path=str(path), file_text=PRIMES)
    assert (out, err) == (f"File created successfully at: {path}", False)
    assert path.read_text() == PRIMES
    user = desktop_user()
    if user is not None:  # created as the desktop's user, parent directory included
        uid = pwd.getpwnam(user).pw_uid
        assert path.stat().st_uid == uid and path.parent.stat().st_uid == uid

    out, err = run(agent, command="view", path=str(path))
    assert not err and out == (
        "1: def is_prime(n):\n2:     if n < 2:\n3:         return False\n4:     return all(n % d for d in range(2, n))"
    )
    assert run(agent, command="view", path=str(path), view_range=[2, 3]) == (
        "2:     if n < 2:\n3:         return False",
        False,
    )
    assert run(agent, command="view", path=str(path), view_range=[3, -1])[0].startswith(
        "3:         return False\n4:"
    )

    out, err = run(agent, command="str_replace", path=str(path), old_str="n < 2", new_str="n <= 1")
    assert not err and out.startswith("Successfully replaced text at exactly one location.")
    assert "2:     if n <= 1:" in out  # the edited lines, numbered as view numbers them
    assert path.read_text() == PRIMES.replace("n < 2", "n <= 1")

    # insert: after a line, at the start, at the end; the text as models send it (insert_text) or as the
    # documentation names it (new_str).
    out, err = run(agent, command="insert", path=str(path), insert_line=0, insert_text="import math")
    assert not err and out.startswith("Successfully inserted 1 line at the start of the file.")
    run(agent, command="insert", path=str(path), insert_line=1, new_str="\n")
    run(agent, command="insert", path=str(path), insert_line=6, insert_text="\n# end\n")
    assert path.read_text().splitlines() == [
        "import math",
        "",
        "def is_prime(n):",
        "    if n <= 1:",
        "        return False",
        "    return all(n % d for d in range(2, n))",
        "",
        "# end",
    ]


def test_each_documented_error_is_a_result_the_model_reads(agent: AgentProcess, workdir: Path) -> None:
    path = workdir / "twice.txt"
    path.write_text("spam\neggs\nspam\n")
    missing = str(workdir / "missing.txt")
    assert run(agent, command="view", path=missing) == (FILE_NOT_FOUND, True)
    assert run(agent, command="str_replace", path=missing, old_str="a", new_str="b") == (FILE_NOT_FOUND, True)
    assert run(agent, command="insert", path=missing, insert_line=0, insert_text="x") == (
        FILE_NOT_FOUND,
        True,
    )
    assert run(agent, command="str_replace", path=str(path), old_str="ham", new_str="x") == (NO_MATCH, True)
    assert run(agent, command="str_replace", path=str(path), old_str="spam", new_str="x") == (
        "Error: Found 2 matches for replacement text. Please provide more context to make a unique match.",
        True,
    )
    assert path.read_text() == "spam\neggs\nspam\n"  # nothing was changed by a refused edit
    out, err = run(agent, command="create", path=str(path), file_text="new")
    assert err and "already exists" in out and path.read_text() == "spam\neggs\nspam\n"
    out, err = run(agent, command="undo_edit", path=str(path))
    assert err and out == (
        "Unrecognized command undo_edit. The allowed commands for the str_replace_based_edit_tool tool are: "
        "view, create, str_replace, insert"
    )
    out, err = run(agent, command="view", path="twice.txt")
    assert err and out.startswith("The path twice.txt is not an absolute path, it should start with `/`.")
    out, err = run(agent, command="view", path=str(path), view_range=[3, 9])
    assert err and "Its second element `9`" in out
    out, err = run(agent, command="view", path=str(path), view_range=[0, 1])
    assert err and "Its first element `0` should be within the range of lines of the file: [1, 3]" in out
    out, err = run(agent, command="insert", path=str(path), insert_line=7, insert_text="x")
    assert (
        err
        and out
        == "Invalid `insert_line` parameter: 7. It should be within the range of lines of the file: [0, 3]"
    )
    assert run(agent, command="str_replace", path=str(workdir), old_str="a", new_str="b")[1]
    out, err = run(agent, command="create", path=str(workdir / "nothing.txt"))
    assert err and out == "Parameter `file_text` is required for command: create"


@pytest.mark.skipif(
    desktop_user() is None, reason="needs root, to have files the desktop's user may not touch"
)
def test_the_editor_has_the_desktop_users_permissions(agent: AgentProcess, workdir: Path) -> None:
    secret = workdir / "root-only.txt"
    secret.write_text("root's secret\n")
    os.chmod(secret, 0o600)  # owned by root: the desktop's user may not read it
    assert run(agent, command="view", path=str(secret)) == (CANNOT_READ, True)
    readable = workdir / "read-only.txt"
    readable.write_text("look, don't touch\n")
    os.chmod(readable, 0o644)
    assert run(agent, command="view", path=str(readable)) == ("1: look, don't touch", False)
    assert run(agent, command="str_replace", path=str(readable), old_str="look", new_str="edit") == (
        CANNOT_WRITE,
        True,
    )
    assert run(agent, command="insert", path=str(readable), insert_line=0, insert_text="x") == (
        CANNOT_WRITE,
        True,
    )
    assert readable.read_text() == "look, don't touch\n"
    assert run(agent, command="create", path="/root/planted.txt", file_text="x")[1]
    assert not Path("/root/planted.txt").exists()


def test_view_respects_max_characters_and_lists_directories(agent: AgentProcess, workdir: Path) -> None:
    path = workdir / "long.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1, 2001)))
    out, err = run(agent, max_characters=200, command="view", path=str(path))
    assert not err and out.startswith("1: line 1\n2: line 2\n")
    shown, note = out.rsplit("\n", 1)
    assert len(shown) < 200 + 4 * 30  # 200 characters of the file, plus the line numbers
    assert "max_characters" in note and "view_range" in note
    assert run(agent, max_characters=200, command="view", path=str(path), view_range=[1999, 2000]) == (
        "1999: line 1999\n2000: line 2000",
        False,
    )

    (workdir / "pkg" / "sub").mkdir(parents=True)
    (workdir / "pkg" / "sub" / "deep.txt").write_text("")
    (workdir / "pkg" / "mod.py").write_text("")
    (workdir / ".hidden").mkdir()
    out, err = run(agent, command="view", path=str(workdir))
    assert not err
    assert out.splitlines() == [
        f"Here's the files and directories up to 2 levels deep in {workdir}, excluding hidden items:",
        f"{workdir}/",
        f"{workdir}/long.txt",
        f"{workdir}/pkg/",
        f"{workdir}/pkg/mod.py",
        f"{workdir}/pkg/sub/",
    ]
    assert run(agent, command="view", path=str(workdir), view_range=[1, 2]) == (
        "The `view_range` parameter is not allowed when `path` points to a directory.",
        True,
    )


# --- the commands' semantics, in this process --------------------------------------------------------


def test_line_numbers_follow_the_files_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("a\nb")  # no line end at the end: still two lines
    assert edit({"command": "view", "path": str(path)}) == {"output": "1: a\n2: b", "is_error": False}
    edit({"command": "insert", "path": str(path), "insert_line": 2, "insert_text": "c"})
    assert path.read_text() == "a\nb\nc\n"
    path.write_text("")
    assert edit({"command": "view", "path": str(path)})["output"] == "(the file is empty)"
    edit({"command": "insert", "path": str(path), "insert_line": 0, "insert_text": "first\nsecond\n"})
    assert path.read_text() == "first\nsecond\n"


def test_str_replace_matches_verbatim_and_keeps_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "Makefile"
    path.write_text("all:\n\techo  two  spaces\r\nend\n")
    assert (
        edit({"command": "str_replace", "path": str(path), "old_str": "echo two spaces", "new_str": "x"})[
            "output"
        ]
        == NO_MATCH
    )
    result = edit(
        {"command": "str_replace", "path": str(path), "old_str": "\techo  two", "new_str": "\tprintf"}
    )
    assert not result["is_error"]
    assert path.read_bytes() == b"all:\n\tprintf  spaces\r\nend\n"  # tabs and CRLF untouched
    result = edit({"command": "str_replace", "path": str(path), "old_str": "end\n"})  # no new_str: removed
    assert not result["is_error"] and path.read_bytes() == b"all:\n\tprintf  spaces\r\n"
    assert edit({"command": "str_replace", "path": str(path), "old_str": ""})["is_error"]


def test_non_text_files_and_bad_input_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "blob"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    assert "not a UTF-8 text file" in edit({"command": "view", "path": str(binary)})["output"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert edit({"command": "view", "path": str(fifo)}) == {
        "output": f"Error: {fifo} is not a regular file.",
        "is_error": True,
    }
    assert edit("view")["is_error"]
    assert edit({"command": "view"})["output"] == "Parameter `path` is required."
    text = tmp_path / "text.txt"
    text.write_text("one\ntwo\n")
    for bad in ([1], [1, "2"], "1:2", [True, 2]):
        assert edit({"command": "view", "path": str(text), "view_range": bad})["output"] == (
            "Invalid `view_range`. It should be a list of two integers."
        )
    assert edit({"command": "view", "path": str(text), "view_range": [2, 1]})["is_error"]
    assert edit({"command": "insert", "path": str(text), "insert_line": "1", "insert_text": "x"})["is_error"]
    assert text.read_text() == "one\ntwo\n"
    suggestion = edit({"command": "view", "path": "notes.txt"}, home="/home/desk")["output"]
    assert suggestion.endswith("Maybe you meant /home/desk/notes.txt?")
