"""Shaping the request payload sent to the model: screenshot pruning and prompt-caching breakpoints.

Pure functions over API-shaped data (``{"role", "content": [blocks]}`` messages, system blocks, tool
definitions). They never mutate their inputs: the turn engine builds the payload from stored messages
and must be able to build it again, identically, on a retry.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "MAX_CACHE_BREAKPOINTS",
    "OMITTED_SCREENSHOT_TEXT",
    "add_cache_breakpoints",
    "prune_screenshots",
]

OMITTED_SCREENSHOT_TEXT = "[older screenshot omitted]"
#: The API accepts at most four ``cache_control`` breakpoints per request.
MAX_CACHE_BREAKPOINTS = 4
_EPHEMERAL = {"type": "ephemeral"}
# The newest user message (this request's prefix) and the one before (the previous request's).
_MESSAGE_BREAKPOINTS = 2

Message = dict[str, Any]
Block = dict[str, Any]


def _omitted() -> Block:
    return {"type": "text", "text": OMITTED_SCREENSHOT_TEXT}


def prune_screenshots(messages: list[Message], keep: int) -> list[Message]:
    """Return a copy of ``messages`` where only the newest ``keep`` images remain.

    Older image blocks, top-level or inside a ``tool_result``, become a short text block, so the model
    still sees that a screenshot was there and every ``tool_result`` keeps its ``tool_use_id`` and a
    non-empty content. Screenshots are the bulk of a computer-use conversation; re-sending all of them
    would exhaust the context window within a few dozen steps.
    """
    if keep < 0:
        raise ValueError("keep must be zero or more")
    pruned = copy.deepcopy(messages)  # base64 strings are shared, not copied: this is cheap
    remaining = keep
    for message in reversed(pruned):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for index in range(len(content) - 1, -1, -1):
            block = content[index]
            if not isinstance(block, dict):
                continue
            if block.get("type") == "image":
                if remaining > 0:
                    remaining -= 1
                else:
                    content[index] = _omitted()
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                inner = block["content"]
                for inner_index in range(len(inner) - 1, -1, -1):
                    item = inner[inner_index]
                    if isinstance(item, dict) and item.get("type") == "image":
                        if remaining > 0:
                            remaining -= 1
                        else:
                            inner[inner_index] = _omitted()
    return pruned


def add_cache_breakpoints(
    system: list[Block] | str | None,
    tools: list[dict[str, Any]] | None,
    messages: list[Message],
) -> tuple[list[Block] | str | None, list[dict[str, Any]], list[Message]]:
    """Return copies of ``(system, tools, messages)`` with prompt-caching breakpoints set.

    Breakpoints (``cache_control: {"type": "ephemeral"}``) go on the last system block, the last tool
    definition, and the last block of the last two user messages (the newest one, where this request's
    prefix ends, and the previous one, where the previous request's cache entry most likely ends). Any
    ``cache_control`` already present in the messages is removed first, so the request never exceeds the
    API's limit of four. A string ``system`` becomes one text block so it can carry a breakpoint.
    """
    new_system: list[Block] | str | None
    if isinstance(system, str):
        new_system = (
            [{"type": "text", "text": system, "cache_control": dict(_EPHEMERAL)}] if system else system
        )
    elif system:
        new_system = copy.deepcopy(system)
        new_system[-1]["cache_control"] = dict(_EPHEMERAL)
    else:
        new_system = system

    new_tools = copy.deepcopy(tools) if tools else []
    if new_tools:
        new_tools[-1]["cache_control"] = dict(_EPHEMERAL)

    new_messages = copy.deepcopy(messages)
    for message in new_messages:
        _strip_cache_control(message)

    used = (1 if new_system and not isinstance(new_system, str) else 0) + (1 if new_tools else 0)
    budget = min(_MESSAGE_BREAKPOINTS, MAX_CACHE_BREAKPOINTS - used)
    for message in reversed(new_messages):
        if budget <= 0:
            break
        if message.get("role") != "user":
            continue
        if _mark_last_block(message):
            budget -= 1
    return new_system, new_tools, new_messages


def _strip_cache_control(message: Message) -> None:
    content = message.get("content")
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        block.pop("cache_control", None)
        if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            for item in block["content"]:
                if isinstance(item, dict):
                    item.pop("cache_control", None)


def _mark_last_block(message: Message) -> bool:
    """Put a breakpoint on the message's last block; return False when it has none to mark."""
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            return False
        message["content"] = [{"type": "text", "text": content, "cache_control": dict(_EPHEMERAL)}]
        return True
    if not isinstance(content, list) or not content or not isinstance(content[-1], dict):
        return False
    content[-1]["cache_control"] = dict(_EPHEMERAL)
    return True
