"""The Anthropic computer tool for computer-use chats, executed on the chat's workspace agent.

The desktop app registers it with chats (desktop/apps.py -> chats.tools.computer_use), so the
dependency runs one way: desktop imports chats, never the reverse.

The model sees the desktop at a *declared* size (long edge <= 1568 px, <= 1.15 MP) computed from the
agent's native display; every action goes to the agent with that size, which maps coordinates to native
pixels and returns a settled screenshot at the declared size. Screenshots are stored as ChatFile rows
and referenced from the tool result; they are untrusted input to the model (the system prompt says so).

Bad input from the model and agent failures become error tool results the model can read: the chat
goes on. A person holding the desktop pauses the chat (``taken_over``) before the action runs; an action
the chat's approval policy gates waits for a person's decision (``awaiting_approval``, chats/approvals.py).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from django.utils import timezone

from agents.daemon import scaling
from agents.models import DesktopHolder, WorkspaceAgent
from chatdesk.exceptions import AgentError, AgentNotConnected, AgentUnreachable
from chats import approvals
from chats.audit import audit_record
from chats.models import Approval, AuditEvent, Chat, ChatFile, ChatMessage, Recording
from chats.selectors import chat_model_options
from chats.services import chat_file_store_png
from chats.tools.base import ImageFile, Tool, ToolContext, ToolResult, error_result
from desktop import client, computer, control, recordings

logger = logging.getLogger(__name__)

DENIED = "A person denied this action"
#: Used until the agent has reported its display in a heartbeat (the agent's default geometry).
FALLBACK_DISPLAY = (1280, 800)


class ComputerTool(Tool):
    """The computer tool in the version the chat's model wants (override: options.computer_tool_version)."""

    name = computer.TOOL_NAME

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        override = chat_model_options(chat).get("computer_tool_version")
        self.version = computer.tool_version_for_model(
            chat.model, override if isinstance(override, str) else None
        )
        agent = chat.workspace_agent
        native = (
            (agent.display_width, agent.display_height)
            if agent is not None and agent.display_width and agent.display_height
            else FALLBACK_DISPLAY
        )
        self.native = native
        self.display = computer.declared_display(*native)
        self.recording: Recording | None = None
        self._recording_tried = False

    def definitions(self) -> list[dict[str, Any]]:
        width, height = self.display
        return computer.tool_definitions(self.version, display_width=width, display_height=height)

    def betas(self) -> list[str]:
        return computer.beta_headers(self.version)

    def handles(self, block: dict[str, Any]) -> bool:
        if self.version == computer.COMPUTER_TOOLSET_20260801:
            return block.get("toolset_name") == computer.TOOL_NAME
        return block.get("name") == computer.TOOL_NAME

    def pause_reason(self) -> str | None:
        """A person holds the chat's desktop: the chat pauses (``taken_over``) until hand-back."""
        agent = self._agent()
        return desktop_pause_reason(agent) if agent is not None else None

    def run(self, ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
        name = ctx.name or computer.TOOL_NAME
        width, height = self.display
        try:
            params = computer.parse_tool_use(
                self.version, name=name, tool_input=tool_input, display_width=width, display_height=height
            )
        except computer.ComputerToolInputError as exc:
            return error_result(f"invalid computer use input: {exc.message}")
        agent = self._agent()
        if agent is None:
            return error_result("This chat has no workspace agent, so the computer cannot be used.")
        reason = desktop_pause_reason(agent)
        if reason is not None:
            return ToolResult(pause=reason, unblocked=self._desktop_free)
        action = params["action"]
        gate = self._approval_gate(ctx, params, tool_input)
        if gate is not None:
            return gate
        try:
            self.chat.workspace_agent = agent
            connected = client.agent_for_chat(self.chat)
            self._start_recording()
            # Already the model's (read fresh above): nothing to change. Else take it, unless a person did.
            if agent.desktop_holder != DesktopHolder.MODEL and not control.control_model_acquire(
                agent=agent, chat=self.chat
            ):
                return ToolResult(pause=Chat.PausedReason.TAKEN_OVER, unblocked=self._desktop_free)
            started_at = timezone.now()
            result = client.run_action_sync(connected, params)
        except AgentNotConnected:
            return error_result(f'action "{action}" failed: the workspace agent is not connected.')
        except AgentUnreachable:
            return error_result(f'action "{action}" failed: the workspace agent could not be reached.')
        except AgentError as exc:
            return error_result(f'action "{action}" failed: {exc.message}')
        content: list[dict[str, Any]] = []
        if result.output:
            content.append({"type": "text", "text": result.output.replace("\x00", "")})
        png = result.png
        file_id = uuid.uuid4() if png else None
        if file_id is not None:
            content.append({"type": "image", "file_id": str(file_id)})
        if not content:
            content.append({"type": "text", "text": f'action "{action}" performed'})

        def record() -> None:
            """Store the screenshot and the audit entry with the result (journal_finish: the chat is locked)."""
            if png and file_id is not None:
                chat_file_store_png(
                    chat=self.chat,
                    png=png,
                    width=result.width,
                    height=result.height,
                    file_id=file_id,
                    chat_locked=True,
                )
            self._audit_action(ctx, params, tool_input, started_at)

        images = {str(file_id): ImageFile(png, result.width, result.height)} if png and file_id else {}
        return ToolResult(content=content, record=record, images=images)

    def _desktop_free(self) -> bool:
        agent = self._agent()
        return agent is not None and desktop_pause_reason(agent) is None

    def _approval_gate(
        self, ctx: ToolContext, params: dict[str, Any], tool_input: dict[str, Any]
    ) -> ToolResult | None:
        """Return None when the action may run now; else what the turn does instead (SPEC §8 "Approvals").

        A gated action without a decision asks for one (an approval with a marked screenshot) and pauses the
        chat (``awaiting_approval``: no worker is held); the decision queues the turn again, which comes back
        here: approved runs the action (once: the journal), denied or expired answers the model with an
        error and the person's note.
        """
        action = str(params["action"])
        if not approvals.approval_required(chat=self.chat, action=action):
            return None
        approval = approvals.approval_for(chat=self.chat, tool_use_id=ctx.tool_use_id)
        if approval is None:
            approval = approvals.approval_create(
                chat=self.chat,
                tool_use_id=ctx.tool_use_id,
                action=action,
                tool_input=tool_input,
                screenshot=self._approval_screenshot(params),
            )
        if approval.state == Approval.State.APPROVED:
            return None
        if approval.state == Approval.State.PENDING:
            pk = approval.pk
            return ToolResult(
                pause=Chat.PausedReason.AWAITING_APPROVAL,
                unblocked=lambda: (
                    Approval.objects.filter(pk=pk).exclude(state=Approval.State.PENDING).exists()
                ),
            )
        note = approval.note.strip()
        return error_result(f"{DENIED}: {note}" if note else f"{DENIED}.")

    def _approval_screenshot(self, params: dict[str, Any]) -> ChatFile | None:
        """Return the desktop now as the model sees it, the action's target point marked (None when the agent
        cannot take one: the approval is still asked, without a picture)."""
        try:
            connected = client.agent_for_chat(self.chat)
            shot = async_to_sync(client.screenshot)(connected, int(params["scaled_width"]))
        except (AgentNotConnected, AgentUnreachable, AgentError):
            logger.warning("No screenshot for an approval in chat %s.", self.chat.pk, exc_info=True)
            return None
        coordinate = params.get("coordinate")
        point = (
            (int(coordinate[0]), int(coordinate[1]))
            if isinstance(coordinate, list | tuple) and len(coordinate) == 2
            else None
        )
        png = approvals.approval_mark_target(shot.png, point)
        return chat_file_store_png(chat=self.chat, png=png, width=shot.width, height=shot.height)

    def turn_ended(self) -> None:
        """The turn is over: stop its recording (the file is then fetched by a task); the model no longer
        holds the desktop unless another computer-use chat on it is busy."""
        agent = self._agent()
        if agent is not None:
            control.control_model_release(agent=agent, chat=self.chat)
        if self.recording is not None:
            recordings.recording_stop(recording_id=self.recording.pk)
            self.recording = None

    def _start_recording(self) -> None:
        """Start recording the desktop at the turn's first action (once a turn: a failure is not retried)."""
        if not self._recording_tried:
            self._recording_tried = True
            self.recording = recordings.recording_start(chat=self.chat, kind=Recording.Kind.MODEL)

    def _audit_action(
        self, ctx: ToolContext, params: dict[str, Any], tool_input: dict[str, Any], started_at: Any
    ) -> None:
        """Keep the action in the chat's audit log (SPEC §8), with its start time and native coordinate:
        recordings' timelines are built from it (chats/timeline.py)."""
        coordinate = params.get("coordinate")
        native = None
        if isinstance(coordinate, list | tuple) and len(coordinate) == 2:
            declared = (int(params["scaled_width"]), int(params["scaled_height"]))
            native = list(scaling.to_native(int(coordinate[0]), int(coordinate[1]), declared, self.native))
        audit_record(
            chat=self.chat,
            kind=AuditEvent.Kind.ACTION,
            actor=AuditEvent.Actor.MODEL,
            at=started_at,
            data={
                "tool_use_id": ctx.tool_use_id,
                "message_id": ctx.message_id or _assistant_message_id(self.chat, ctx.tool_use_id),
                "action": params["action"],
                "input": tool_input,
                "coordinate": native,
            },
        )

    def _agent(self) -> WorkspaceAgent | None:
        """Return the chat's agent read fresh (take-over and heartbeats change it while the turn runs)."""
        if self.chat.workspace_agent_id is None:
            return None
        return WorkspaceAgent.objects.filter(pk=self.chat.workspace_agent_id).first()


def _assistant_message_id(chat: Chat, tool_use_id: str) -> int | None:
    """Return the id of the assistant message that holds the tool_use ``tool_use_id`` (one of the newest)."""
    newest = chat.messages.filter(role=ChatMessage.Role.ASSISTANT).order_by("-id")[:5]
    for message in newest:
        if any(isinstance(p, dict) and p.get("id") == tool_use_id for p in message.content):
            return message.id
    return None


def desktop_pause_reason(agent: WorkspaceAgent) -> str | None:
    """Return why a computer-use chat on ``agent``'s desktop may not act now, or None when it may."""
    return Chat.PausedReason.TAKEN_OVER if agent.desktop_holder == DesktopHolder.PERSON else None
