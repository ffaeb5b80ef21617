"""The workspace tools (SPEC §11) as both sides know them: names, Anthropic tool types, limits, and how
a ``bash`` result reads to the model.

The server declares the tools, reads its settings within these bounds and sets a client deadline from
them; the agent (``shell``, ``editor``) refuses a request outside them. One module, so the two cannot
disagree. Imports nothing of Django nor of the rest of the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Anthropic's client tools, GA: the type the API knows and the name the model calls.
BASH_TOOL_TYPE: Final = "bash_20250124"
BASH_TOOL_NAME: Final = "bash"
EDITOR_TOOL_TYPE: Final = "text_editor_20250728"
EDITOR_TOOL_NAME: Final = "str_replace_based_edit_tool"

#: Seconds a command may run before it is stopped (CHATDESK_BASH_TIMEOUT_SECONDS).
BASH_DEFAULT_TIMEOUT = 120.0
BASH_MAX_TIMEOUT = 3600.0
#: Bytes of a command's output kept for the model (CHATDESK_BASH_OUTPUT_LIMIT).
BASH_DEFAULT_OUTPUT_LIMIT = 30_000
BASH_MIN_OUTPUT_LIMIT = 1_000
BASH_MAX_OUTPUT_LIMIT = 10 * 1024 * 1024
BASH_MAX_COMMAND_CHARS = 100_000
#: The most a command takes past its timeout: the agent stops it, then gives up its shell if it must.
BASH_STOP_TIME = 8.0

#: Characters of a file the editor's ``view`` shows (``max_characters``; CHATDESK_EDITOR_MAX_CHARACTERS).
EDITOR_DEFAULT_MAX_CHARACTERS = 16_000
EDITOR_MIN_MAX_CHARACTERS = 100
EDITOR_MAX_MAX_CHARACTERS = 10_000_000
#: Seconds one editor command may take on the agent (it reads or writes at most one file).
EDITOR_TIME_LIMIT = 30.0

#: What the model reads after ``restart`` (the words of Anthropic's reference implementation).
BASH_RESTARTED_TEXT = "tool has been restarted."


def describe_bash_result(result: Mapping[str, Any], *, timeout: float) -> tuple[str, bool]:
    """Return the text the model reads for a ``bash`` result (``shell.BashResult``), and whether it is an
    error result.

    A command that exits non-zero is an error result (as in the SDK's reference tool); so is one that timed
    out or was stopped. What was stopped, or that the shell is gone, is said in brackets after the output
    (where the output was cut is said inside it).
    """
    if result.get("restarted"):
        return BASH_RESTARTED_TEXT, False
    output = str(result.get("output") or "")
    notes = []
    code = result.get("exit_code")
    if result.get("timed_out"):
        notes.append(f"[The command did not finish within {timeout:g} seconds and was stopped.]")
    elif code is None:
        notes.append("[The command was stopped before it finished.]")
    if result.get("shell_exited"):
        if code is None:
            notes.append(
                "[The shell had to be killed: the next command starts a new shell in the home directory.]"
            )
        else:
            notes.append(f"[The shell exited with status {code}: the next command starts a new shell.]")
    elif code not in (None, 0):
        notes.append(f"[exit code {code}]")
    is_error = bool(result.get("timed_out")) or code != 0
    if not output and not notes:
        return "(no output)", False
    text = output if not notes else (output.rstrip("\n") + "\n" if output else "") + "\n".join(notes)
    return text, is_error
