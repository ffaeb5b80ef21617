"""Stored chat messages <-> Anthropic Messages API messages.

Stored messages use roles user / assistant / tool / system and content parts (text, tool_use,
tool_result, image with a ``file_id``, summary). The API knows only user and assistant turns that
alternate, with every tool_use answered by a tool_result at the start of the next user turn, and images as
base64.

Images are loaded from storage only here, only for the screenshots still sent (older ones become a short
text: chats.engine.request.prune_screenshots), and never kept in message JSON.

Compaction (chats/engine/compaction.py) stores a ``system`` message with one ``summary`` part
``{"type": "summary", "text", "through_id"}``: the model-written summary of every message up to
``through_id`` (in the order the model saw them). Requests then start with the summary, as a user turn,
followed by the messages after ``through_id``; the replaced messages stay stored and shown.

:class:`History` keeps a turn's history between its steps: each step reads only the messages stored since
the previous one (a chat's messages are numbered under its row lock, so a newer message never has a
smaller id than one already read; messages are never edited) and loads only screenshots it has not
loaded yet.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from chats.engine.request import PIXELS_PER_TOKEN, estimate_tokens, prune_screenshots
from chats.models import ChatFile, ChatMessage
from chats.tools.base import ImageFile

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Part = dict[str, Any]

NOT_RUN_TEXT = "This tool call was not run."
MISSING_IMAGE_TEXT = "[image no longer available]"
SUMMARY_HEADING = "Summary of the earlier part of this conversation, which it replaces:"
#: Sent (not stored) when a resumed request would end with the model's own interrupted answer.
RESUMED_TEXT = "(The person resumed the conversation after an interruption. Continue where you left off.)"
#: Counted for a screenshot whose size is unknown.
UNKNOWN_IMAGE_TOKENS = 1600


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


def summary_part(message: ChatMessage) -> Part | None:
    """Return the message's summary part (a compaction), or None."""
    if message.role != ChatMessage.Role.SYSTEM:
        return None
    return next((p for p in message.content if isinstance(p, dict) and p.get("type") == "summary"), None)


def apply_summary(ordered: list[ChatMessage]) -> list[ChatMessage]:
    """Return the context-ordered ``ordered`` as the model sees it: the newest summary, then what follows it.

    Messages up to the summary's ``through_id`` (in context order) are replaced by the summary message.
    """
    summaries = [m for m in ordered if summary_part(m) is not None]
    if not summaries:
        return ordered
    summary = max(summaries, key=lambda m: m.id)
    part = summary_part(summary) or {}
    through = part.get("through_id")
    position = next((i for i, m in enumerate(ordered) if m.id == through), None)
    if position is None:
        kept = [m for m in ordered if isinstance(through, int) and m.id > through]
    else:
        kept = ordered[position + 1 :]
    return [summary, *(m for m in kept if m is not summary and summary_part(m) is None)]


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
    if kind == "summary":
        return {"type": "text", "text": f"{SUMMARY_HEADING}\n\n{part.get('text') or ''}"}
    return None


def api_turns(messages: Iterable[ChatMessage]) -> list[Message]:
    """Return the API ``messages`` for a chat's stored history, images still as ``file_id`` blocks.

    Consecutive user-side messages (user and tool) merge into one user turn with its tool_results first;
    a tool_use left without a result (a turn that stopped) gets an error result, so the request is valid
    whatever state the history is in; system messages are not sent, except a compaction's summary, which
    opens the conversation as a user turn.
    """
    turns: list[Message] = []
    for message in apply_summary(context_order(messages)):
        if message.role == ChatMessage.Role.SYSTEM and summary_part(message) is None:
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
    return turns


def build_api_messages(
    messages: Iterable[ChatMessage], *, keep_screenshots: int, prune_batch: int = 1
) -> list[Message]:
    """Return the API ``messages`` for a chat's stored history (see :func:`api_turns`), images loaded."""
    pruned = prune_screenshots(api_turns(messages), keep_screenshots, prune_batch)
    return _resolve_images(pruned, {})


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


def _image_file_ids(turns: list[Message]) -> list[str]:
    file_ids: list[str] = []
    for turn in turns:
        for block in turn["content"]:
            if block.get("type") == "image" and "file_id" in block:
                file_ids.append(block["file_id"])
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                file_ids.extend(
                    item["file_id"]
                    for item in block["content"]
                    if item.get("type") == "image" and "file_id" in item
                )
    return file_ids


def _load_sources(
    file_ids: list[str], sizes: dict[str, tuple[int, int] | None] | None = None
) -> dict[str, Part]:
    """Return base64 image sources for ``file_ids`` (missing files are left out); note their sizes in
    ``sizes`` when given."""
    sources: dict[str, Part] = {}
    for chat_file in ChatFile.objects.filter(pk__in=file_ids):
        if sizes is not None:
            sizes[str(chat_file.pk)] = (
                (chat_file.width, chat_file.height) if chat_file.width and chat_file.height else None
            )
        try:
            with chat_file.file.open("rb") as fh:
                data = fh.read()
        except OSError:
            logger.warning("Chat file %s is missing from storage.", chat_file.pk)
            continue
        sources[str(chat_file.pk)] = _base64_source(data, chat_file.content_type or "image/png")
    return sources


def _base64_source(data: bytes, media_type: str) -> Part:
    """Return an API image source holding ``data``."""
    return {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode("ascii")}


def _resolve_images(turns: list[Message], sources: dict[str, Part]) -> list[Message]:
    """Replace ``{"type": "image", "file_id"}`` blocks by base64 image blocks, loading only the missing.

    ``sources`` is a cache of already loaded images (updated in place).
    """
    missing = [file_id for file_id in _image_file_ids(turns) if file_id not in sources]
    if missing:
        sources.update(_load_sources(missing))

    def resolve(block: Part) -> Part:
        if block.get("type") != "image" or "file_id" not in block:
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


class History:
    """One chat's history across the steps of a turn, read incrementally (see the module docstring)."""

    def __init__(self, chat_id: UUID | str, *, keep_screenshots: int, prune_batch: int) -> None:
        self.chat_id = chat_id
        self.keep_screenshots = keep_screenshots
        self.prune_batch = prune_batch
        self.messages: list[ChatMessage] = []
        self.last_id = 0
        self._sources: dict[str, Part] = {}
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def refresh(self) -> list[ChatMessage]:
        """Read the messages stored since the last refresh; return them."""
        new = list(ChatMessage.objects.filter(chat_id=self.chat_id, id__gt=self.last_id).order_by("id"))
        if new:
            self.messages.extend(new)
            self.last_id = new[-1].id
        return new

    def turns(self) -> list[Message]:
        """Return the API messages to send, screenshots pruned but still as ``file_id`` blocks; the
        screenshots they need are loaded (once: the next steps reuse them) with their sizes."""
        turns = prune_screenshots(api_turns(self.messages), self.keep_screenshots, self.prune_batch)
        wanted = _image_file_ids(turns)
        missing = [file_id for file_id in wanted if file_id not in self._sources]
        if missing:
            self._sources.update(_load_sources(missing, self._sizes))
        kept = set(wanted)
        self._sources = {k: v for k, v in self._sources.items() if k in kept}
        return turns

    def remember(self, images: dict[str, ImageFile]) -> None:
        """Keep images a tool just stored (by file id) for the next request: not read back from storage."""
        for file_id, image in images.items():
            self._sources[file_id] = _base64_source(image.png, "image/png")
            self._sizes[file_id] = (image.width, image.height) if image.width and image.height else None

    def resolve(self, turns: list[Message]) -> list[Message]:
        """Return ``turns`` with their images as base64 blocks (loaded by :meth:`turns`)."""
        return _resolve_images(turns, self._sources)

    def image_tokens(self, block: Part) -> int:
        """Return the estimated tokens of an image block by its stored size (width x height / 750)."""
        file_id = block.get("file_id")
        if not isinstance(file_id, str):
            return UNKNOWN_IMAGE_TOKENS
        if file_id not in self._sizes:
            row = ChatFile.objects.filter(pk=file_id).values_list("width", "height").first()
            self._sizes[file_id] = (row[0], row[1]) if row and row[0] and row[1] else None
        size = self._sizes[file_id]
        return math.ceil(size[0] * size[1] / PIXELS_PER_TOKEN) if size else UNKNOWN_IMAGE_TOKENS

    def estimate(self, turns: list[Message], *, system: Any, tools: Any) -> int:
        """Return the estimated input tokens of a request made of ``system``, ``tools`` and ``turns``."""
        return (
            estimate_tokens(system or "")
            + estimate_tokens(tools or [])
            + estimate_tokens(turns, image_tokens=self.image_tokens)
        )
