"""The workspace tools of root chats (SPEC §11): Anthropic's ``bash`` and text editor, executed by the
chat's workspace agent (``agents/daemon/shell.py``, ``agents/daemon/editor.py``) as the desktop's user.

The desktop app registers them with chats (desktop/apps.py -> chats.tools.workspace), beside the computer
tool; they are offered to a root chat only while it has a connected agent. The model's input is checked
here before anything is sent, and everything that goes wrong — bad input, a command that fails or times
out, an agent that cannot be reached — is a result the model reads: the chat goes on.

``bash`` streams: the agent sends the command's output while it runs, and each piece goes to the chat's
viewers at once as a ``tool_output`` event (chats.events). The call runs on an event loop of its own
thread, so the worker's thread publishes the pieces and watches for a stop meanwhile; an interrupt
(``ToolContext.should_stop``) closes the call's connection, and the agent stops the command (a call runs
only while its caller is connected). Command output and file contents are untrusted input to the model:
they reach it only as tool results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from anthropic.types import ToolBash20250124Param, ToolTextEditor20250728Param
from asgiref.sync import async_to_sync
from django.conf import settings

from agents.daemon import toolspec
from agents.models import WorkspaceAgent
from chatdesk.exceptions import AgentError, AgentNotConnected, AgentUnreachable
from chats.events import publish_tool_output
from chats.models import Chat
from chats.tools.base import Awaiting, Tool, ToolContext, ToolResult, error_result, input_object, text_result
from chats.tools.workspace import WorkspaceTool
from desktop import client

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
# Output streamed to viewers per command, at most: the agent streams only the kept start of the output,
# this is a bound on a misbehaving one.
MAX_STREAMED_CHARS = 2 * toolspec.BASH_MAX_OUTPUT_LIMIT
# A request the agent would refuse for its size (1 MiB frames), refused here with a message for the model.
MAX_REQUEST_CHARS = 900_000
NOT_CONNECTED = "The workspace agent is not connected, so the {what} could not run."
INTERRUPTED = "[The command was interrupted: the chat was stopped.]"
# A tool_use left unanswered by a turn that stopped: it was not run, or its run was cut off (its worker
# died). Running a command or an edit again could do it twice, so the model is told instead.
NOT_RESUMED = (
    "This {what} was not run to its end: the turn stopped before or while it ran, so its effects, if any, "
    "are unknown. Check them, and run it again if it is still needed."
)


def tools_for_workspace(chat: Chat) -> list[Tool]:
    """Return the workspace tools ``chat`` is offered now: both while its agent is connected, else none."""
    agent = _agent(chat)
    if agent is None:
        return []
    return [BashTool(chat), TextEditorTool(chat)]


def _agent(chat: Chat) -> WorkspaceAgent | None:
    """Return the chat's agent, read fresh, when it is connected (heartbeats change it during a turn)."""
    if chat.workspace_agent_id is None:
        return None
    agent = WorkspaceAgent.objects.filter(pk=chat.workspace_agent_id).first()
    return agent if agent is not None and agent.is_connected and agent.url else None


def _agent_failure(what: str, exc: AgentError) -> ToolResult:
    if isinstance(exc, AgentNotConnected):
        return error_result(NOT_CONNECTED.format(what=what))
    if isinstance(exc, AgentUnreachable):
        return error_result(f"The {what} could not run: the workspace agent could not be reached.")
    return error_result(f"The {what} could not run: {exc.message}")


class BashTool(WorkspaceTool):
    """Anthropic's ``bash_20250124``: a persistent shell per chat on its workspace agent."""

    name = toolspec.BASH_TOOL_NAME

    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def definitions(self) -> list[dict[str, Any]]:
        definition: ToolBash20250124Param = {"type": toolspec.BASH_TOOL_TYPE, "name": toolspec.BASH_TOOL_NAME}
        return [dict(definition)]

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        tool_input = input_object(tool_input)
        restart = tool_input.get("restart", False)
        command = tool_input.get("command")
        if not isinstance(restart, bool):
            return error_result("`restart` must be true or false.")
        if not restart:
            if not isinstance(command, str) or not command.strip():
                return error_result("no command provided.")
            if len(command) > toolspec.BASH_MAX_COMMAND_CHARS:
                return error_result(
                    f"The command is {len(command):,} characters long; at most {toolspec.BASH_MAX_COMMAND_CHARS:,} "
                    "are accepted. Write long scripts to a file with the editor, then run the file."
                )
            if "\x00" in command:
                return error_result("The command contains a NUL character.")
        agent = _agent(self.chat)
        if agent is None:
            return error_result(NOT_CONNECTED.format(what="command"))
        timeout = settings.CHATDESK_BASH_TIMEOUT_SECONDS
        params: dict[str, Any] = {
            "session": str(self.chat.pk),
            "timeout": timeout,
            "output_limit": settings.CHATDESK_BASH_OUTPUT_LIMIT,
        }
        if restart:
            params["restart"] = True
        else:
            params["command"] = command

        async def call(on_output: Callable[[str], None]) -> dict[str, Any]:
            async with client.open_agent(agent) as conn:
                return await conn.bash(params, on_output=on_output)

        streamed: list[str] = []
        size = 0

        def show(text: str) -> None:
            nonlocal size
            if size < MAX_STREAMED_CHARS:
                text = text[: MAX_STREAMED_CHARS - size]
                size += len(text)
                streamed.append(text)
                publish_tool_output(self.chat.pk, ctx.tool_use_id, text)

        outcome = StreamingCall(call).wait(on_output=show, should_stop=ctx.should_stop)
        if outcome.stopped:
            text = "".join(streamed)
            return text_result(
                f"{text.rstrip(chr(10))}\n{INTERRUPTED}" if text else INTERRUPTED, is_error=True
            )
        if isinstance(outcome.error, AgentError):
            return _agent_failure("command", outcome.error)
        if outcome.error is not None:
            logger.error("bash call of chat %s failed", self.chat.pk, exc_info=outcome.error)
            return error_result("The command could not run because of an unexpected error.")
        text, is_error = toolspec.describe_bash_result(outcome.result or {}, timeout=timeout)
        return text_result(text, is_error=is_error)

    def resume(self, ctx: ToolContext, tool_input: dict[str, Any], awaiting: Awaiting | None) -> ToolResult:
        """A command a stopped turn left unanswered is never run again (it could run twice)."""
        return error_result(NOT_RESUMED.format(what="command"))


class TextEditorTool(WorkspaceTool):
    """Anthropic's ``text_editor_20250728`` (``str_replace_based_edit_tool``), on the workspace agent."""

    name = toolspec.EDITOR_TOOL_NAME

    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    def definitions(self) -> list[dict[str, Any]]:
        definition: ToolTextEditor20250728Param = {
            "type": toolspec.EDITOR_TOOL_TYPE,
            "name": toolspec.EDITOR_TOOL_NAME,
            "max_characters": settings.CHATDESK_EDITOR_MAX_CHARACTERS,
        }
        return [dict(definition)]

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        tool_input = input_object(tool_input)
        if len(json.dumps(tool_input)) > MAX_REQUEST_CHARS:
            return error_result(
                f"The input is too large for one call (at most {MAX_REQUEST_CHARS:,} characters): create the "
                "file in parts, or write it with bash."
            )
        agent = _agent(self.chat)
        if agent is None:
            return error_result(NOT_CONNECTED.format(what="editor command"))
        max_characters = settings.CHATDESK_EDITOR_MAX_CHARACTERS

        async def call() -> dict[str, Any]:
            async with client.open_agent(agent) as conn:
                return await conn.edit(tool_input, max_characters=max_characters)

        try:
            result = async_to_sync(call)()
        except AgentError as exc:
            return _agent_failure("editor command", exc)
        return text_result(str(result.get("output") or ""), is_error=bool(result.get("is_error")))

    def resume(self, ctx: ToolContext, tool_input: dict[str, Any], awaiting: Awaiting | None) -> ToolResult:
        """An edit a stopped turn left unanswered is never made again (an insert could be made twice)."""
        return error_result(NOT_RESUMED.format(what="editor command"))


class Outcome:
    """How a :class:`StreamingCall` ended: its ``result``, an ``error``, or ``stopped`` by the caller."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.stopped = False


class StreamingCall:
    """Run one agent call that streams on an event loop of its own thread (see the module docstring)."""

    def __init__(self, call: Callable[[Callable[[str], None]], Coroutine[Any, Any, dict[str, Any]]]) -> None:
        self._call = call
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="workspace-call", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._ready.set()
        try:
            result = await self._call(lambda text: self._events.put(("output", text)))
        except asyncio.CancelledError:
            self._events.put(("stopped", None))
        except BaseException as exc:  # handed to the waiting thread, which decides what it means
            self._events.put(("error", exc))
        else:
            self._events.put(("done", result))

    def _cancel(self) -> None:
        if self._loop is not None and self._task is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: the call has ended
                self._loop.call_soon_threadsafe(self._task.cancel)

    def wait(self, *, on_output: Callable[[str], None], should_stop: Callable[[], bool]) -> Outcome:
        """Start the call and return how it ended; ``on_output`` gets each piece of output (on this
        thread), and the call is cancelled once ``should_stop()`` says so."""
        self._thread.start()
        self._ready.wait()
        outcome = Outcome()
        cancelled = ended = False
        try:
            while not ended:
                try:
                    kind, value = self._events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    kind, value = "", None
                if kind == "output":
                    on_output(value)
                elif kind == "done":
                    outcome.result, ended = value, True
                elif kind == "error":
                    outcome.error, ended = value, True
                elif kind == "stopped":
                    outcome.stopped, ended = True, True
                if not ended and not cancelled and should_stop():
                    cancelled = True
                    self._cancel()
        finally:
            if not ended:  # this thread is leaving (a time limit): the agent must not run on for nobody
                self._cancel()
        self._thread.join(timeout=5)
        return outcome


__all__ = ["BashTool", "StreamingCall", "TextEditorTool", "tools_for_workspace"]
