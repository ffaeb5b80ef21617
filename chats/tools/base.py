"""The small base class every chat tool builds on, and the shapes tools return.

A tool turns one ``tool_use`` block written by the model into content parts stored in a ``tool`` message
(text, or ``{"type": "image", "file_id"}`` for screenshots). The model's input is untrusted: a tool
validates it and answers bad input with an error result the model can read, never with an exception
that would end the turn. Tool output (child reports, screen content) is untrusted input to the model in
turn; it is returned as data (JSON or images), never merged into the system prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypedDict

from chats.models import Chat


class Awaiting(TypedDict):
    """What a parent suspended in ``wait_agent`` waits for (stored in ``Chat.awaiting``)."""

    tool_use_id: str
    chat_id: str
    deadline: str  # ISO 8601


def _never() -> bool:
    return False


@dataclass
class ToolContext:
    """What a tool may use: the chat whose turn runs it, and the tool_use being answered (id, name, and
    the id of the assistant message that holds it, when known).

    ``should_stop`` says whether the turn must stop (the chat was interrupted, or the turn lost its lease);
    a tool that runs for long (a ``bash`` command) polls it and stops its work early.
    """

    chat: Chat
    tool_use_id: str
    name: str = ""
    should_stop: Callable[[], bool] = field(default=_never)
    message_id: int | None = None  # the assistant message holding the tool_use, when the engine knows it


class ImageFile(NamedTuple):
    """An image a tool stored as a ChatFile, as the tool has it: PNG bytes and size in pixels."""

    png: bytes
    width: int | None
    height: int | None


@dataclass
class ToolResult:
    """The outcome of one tool_use.

    ``content`` holds stored-shape parts. ``suspend`` asks the engine to end the turn without answering
    (``wait_agent``): the answer is produced when the turn resumes. ``pause`` (a ``Chat.PausedReason``)
    asks the engine to pause the chat for that reason *instead of* acting (a person holds the desktop:
    ``taken_over``; an approval is pending: ``awaiting_approval``): nothing ran, and the tool_use is run
    again on resume; ``unblocked``, when given, says whether that reason is already gone (the approval was
    decided, the desktop handed back, between the tool's check and the pause), and the engine then queues
    the chat's turn at once instead of leaving it paused for good. ``pause_after`` pauses the chat *after*
    this result is recorded (``request_human_help``: ``needs_help``). ``record``, for an acting tool,
    stores what the action left (the computer tool's screenshot file and audit entry) in the transaction
    that records the result, with the chat's row locked (chats/engine/journal.py): one commit per action.
    ``images``: the images of ``content`` the tool has at hand, by file id (the computer tool's
    screenshot), so the engine sends them with the next request without reading them back from storage.
    """

    content: list[dict[str, Any]] = field(default_factory=list)
    is_error: bool = False
    suspend: Awaiting | None = None
    pause: str | None = None
    unblocked: Callable[[], bool] | None = None
    pause_after: str | None = None
    record: Callable[[], None] | None = None
    images: dict[str, ImageFile] = field(default_factory=dict)


def text_result(text: str, *, is_error: bool = False) -> ToolResult:
    return ToolResult(content=[{"type": "text", "text": text}], is_error=is_error)


def json_result(data: dict[str, Any], *, is_error: bool = False) -> ToolResult:
    return text_result(json.dumps(data, ensure_ascii=False), is_error=is_error)


def error_result(message: str) -> ToolResult:
    return text_result(message, is_error=True)


class Tool:
    """One tool offered to the model.

    Subclasses set ``name``, ``description`` and ``input_schema`` (JSON schema) and implement :meth:`run`.
    A tool that declares itself differently (the computer toolset) overrides :meth:`definitions` and
    :meth:`handles`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    input_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    #: True for a tool whose every effect is in the database: it runs in one transaction with its journal
    #: entry (chats/engine/journal.py), so it happens exactly once or not at all. False for a tool that
    #: acts outside (the desktop, a shell): it is journaled ``started`` before it acts.
    atomic: ClassVar[bool] = False

    def definitions(self) -> list[dict[str, Any]]:
        """Return the ``tools[]`` entries that declare this tool to the API."""
        return [{"name": self.name, "description": self.description, "input_schema": self.input_schema}]

    def betas(self) -> list[str]:
        """Return the beta headers this tool needs (none for plain tools)."""
        return []

    def handles(self, block: dict[str, Any]) -> bool:
        """Return True when ``block`` (a tool_use) is a call of this tool."""
        return block.get("name") == self.name and not block.get("toolset_name")

    def pause_reason(self) -> str | None:
        """Return why the chat must pause before its model is called at all (a ``Chat.PausedReason``:
        a person holds the desktop this tool acts on), or None. Checked when a turn starts."""
        return None

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        raise NotImplementedError

    def turn_ended(self) -> None:
        """Called once when the turn that offered this tool ends, however it ends (a tool that started
        something for the turn stops it here: the computer tool's recording). Must not raise."""
        return None

    def resume(self, ctx: ToolContext, tool_input: dict[str, Any], awaiting: Awaiting | None) -> ToolResult:
        """Return the answer of a tool_use left unanswered by a suspended or stopped turn.

        Only called for a tool_use that never started (the journal answers the others: a result stored
        already, or an unknown outcome), so by default it is simply run.
        """
        return self.run(ctx, tool_input)


def input_object(tool_input: object) -> dict[str, Any]:
    """Return the tool input as a dict (the API promises an object; a broken stream might not)."""
    return tool_input if isinstance(tool_input, dict) else {}
