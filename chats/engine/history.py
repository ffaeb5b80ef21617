"""Stored chat messages <-> Anthropic Messages API messages.

Stored messages use roles user / assistant / tool / system and content parts (text, tool_use,
tool_result, image with a ``file_id``). The API knows only user and assistant turns that alternate, with
every tool_use answered by a tool_result at the start of the next user turn, and images as base64.

Images are loaded from storage only here, only for the newest ``keep_screenshots`` (older ones become a
short text: chats.engine.request.prune_screenshots), and never kept in message JSON.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from typing import Any

from chats.engine.request import prune_screenshots
from chats.models import ChatFile, ChatMessage

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Part = dict[str, Any]

NOT_RUN_TEXT = "This tool call was not run."
MISSING_IMAGE_TEXT = "[image no longer available]"


def strip_nul(value: Any) -> Any:
    """Return ``value`` with NUL characters removed from every string (PostgreSQL jsonb rejects them)."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [strip_nul(item) for item in value]
    if isinstance(value, dict):
        return {strip_nul(key): strip_nul(item) for key, item in value.items()}
    return value


def context_order(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """Return ``messages`` in the order the model saw them.

    By id, except that an assistant message goes right after the newest message it had seen
    (``context_id``): a user message stored while the model was writing its answer has a smaller id than
    the answer, yet the model has not read it; it belongs after the answer.
    """

    def key(message: ChatMessage) -> tuple[float, int]:
        if message.role == ChatMessage.Role.ASSISTANT and message.context_id is not None:
            return (message.context_id + 0.5, message.id)
        return (float(message.id), message.id)

    return sorted(messages, key=key)


def _api_part(part: Any) -> Part | None:
    """Return the API block for a stored part (images still by ``file_id``), or None to drop it."""
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind == "text":
        text = part.get("text") or ""
        return {"type": "text", "text": text} if text else None
    if kind == "tool_use":
        block = {"type": "tool_use", "id": part["id"], "name": part["name"], "input": part.get("input") or {}}
        if part.get("toolset_name"):
            block["toolset_name"] = part["toolset_name"]
        return block
    if kind == "tool_result":
        inner = [p for p in (_api_part(item) for item in part.get("content") or []) if p is not None]
        block = {"type": "tool_result", "tool_use_id": part["tool_use_id"], "content": inner or ""}
        if part.get("is_error"):
            block["is_error"] = True
        return block
    if kind == "image" and part.get("file_id"):
        return {"type": "image", "file_id": str(part["file_id"])}
    return None


def build_api_messages(messages: Iterable[ChatMessage], *, keep_screenshots: int) -> list[Message]:
    """Return the API ``messages`` for a chat's stored history (see the module docstring).

    Consecutive user-side messages (user and tool) merge into one user turn with its tool_results first;
    a tool_use left without a result (a turn that stopped) gets an error result, so the request is valid
    whatever state the history is in; system messages are not sent.
    """
    turns: list[Message] = []
    for message in context_order(messages):
        if message.role == ChatMessage.Role.SYSTEM:
            continue
        role = "assistant" if message.role == ChatMessage.Role.ASSISTANT else "user"
        parts = [p for p in (_api_part(part) for part in message.content) if p is not None]
        if role == "assistant":
            # A tool_result may only answer a tool_use; text before it keeps the turn readable.
            parts = [p for p in parts if p["type"] in ("text", "tool_use")]
        if not parts:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(parts)
        else:
            turns.append({"role": role, "content": parts})
    _repair_tool_pairs(turns)
    while turns and turns[0]["role"] != "user":
        turns.pop(0)  # the API wants to start with a user turn
    pruned = prune_screenshots(turns, keep_screenshots)
    return _resolve_images(pruned)


def _repair_tool_pairs(turns: list[Message]) -> None:
    """Put tool_results first in each user turn and answer tool_uses that have no result."""
    for index, turn in enumerate(turns):
        if turn["role"] != "assistant":
            if turn["content"]:
                results = [p for p in turn["content"] if p["type"] == "tool_result"]
                others = [p for p in turn["content"] if p["type"] != "tool_result"]
                turn["content"] = results + others
            continue
        wanted = [p["id"] for p in turn["content"] if p["type"] == "tool_use"]
        following = turns[index + 1] if index + 1 < len(turns) else None
        if following is None or following["role"] != "user":
            if not wanted:
                continue
            following = {"role": "user", "content": []}
            turns.insert(index + 1, following)
        answered = {p.get("tool_use_id") for p in following["content"] if p["type"] == "tool_result"}
        # Results that answer nothing here (a stale or duplicated one) would be rejected by the API.
        following["content"] = [
            p for p in following["content"] if p["type"] != "tool_result" or p.get("tool_use_id") in wanted
        ]
        missing = [
            {"type": "tool_result", "tool_use_id": tid, "content": NOT_RUN_TEXT, "is_error": True}
            for tid in wanted
            if tid not in answered
        ]
        following["content"][:0] = missing
    # A user turn made only of dropped results would be empty: give it a placeholder text.
    for turn in turns:
        if not turn["content"]:
            turn["content"] = [{"type": "text", "text": "(no content)"}]


def _resolve_images(turns: list[Message]) -> list[Message]:
    """Replace ``{"type": "image", "file_id"}`` blocks by base64 image blocks, loading only those left."""
    file_ids: list[str] = []
    for turn in turns:
        for block in turn["content"]:
            if block.get("type") == "image":
                file_ids.append(block["file_id"])
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                file_ids.extend(item["file_id"] for item in block["content"] if item.get("type") == "image")
    if not file_ids:
        return turns
    sources: dict[str, Part] = {}
    for chat_file in ChatFile.objects.filter(pk__in=file_ids):
        try:
            with chat_file.file.open("rb") as fh:
                data = fh.read()
        except OSError:
            logger.warning("Chat file %s is missing from storage.", chat_file.pk)
            continue
        sources[str(chat_file.pk)] = {
            "type": "base64",
            "media_type": chat_file.content_type or "image/png",
            "data": base64.b64encode(data).decode("ascii"),
        }

    def resolve(block: Part) -> Part:
        if block.get("type") != "image":
            return block
        source = sources.get(block["file_id"])
        if source is None:
            return {"type": "text", "text": MISSING_IMAGE_TEXT}
        return {"type": "image", "source": source}

    for turn in turns:
        new_content = []
        for block in turn["content"]:
            if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                block = {**block, "content": [resolve(item) for item in block["content"]]}
            new_content.append(resolve(block))
        turn["content"] = new_content
    return turns


def unanswered_tool_uses(messages: list[ChatMessage]) -> list[Part]:
    """Return the tool_use parts of the newest assistant message that no later message answers."""
    ordered = context_order(messages)
    last_index = next(
        (i for i in range(len(ordered) - 1, -1, -1) if ordered[i].role == ChatMessage.Role.ASSISTANT), None
    )
    if last_index is None:
        return []
    uses = [p for p in ordered[last_index].content if isinstance(p, dict) and p.get("type") == "tool_use"]
    answered = {
        p.get("tool_use_id")
        for m in ordered[last_index + 1 :]
        for p in m.content
        if isinstance(p, dict) and p.get("type") == "tool_result"
    }
    return [p for p in uses if p.get("id") not in answered]
