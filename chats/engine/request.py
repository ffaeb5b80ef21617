"""Shaping the request payload sent to the model: screenshot pruning and prompt-caching breakpoints.

Pure functions over API-shaped data (``{"role", "content": [blocks]}`` messages, system blocks, tool
definitions). They never mutate their inputs: the turn engine builds the payload from stored messages
and must be able to build it again, identically, on a retry.

Why the shapes are what they are (SPEC §10). Anthropic caches the prefix of a request (tools -> system ->
messages) that ends at a ``cache_control`` breakpoint, and a later request reads it when its own prefix is
byte-identical up to there (a lookup checks each breakpoint and up to 20 blocks before it). So:

- Screenshots leave the request in batches: between ``keep`` and ``keep + batch - 1`` images are sent, and
  when there would be ``keep + batch``, the oldest ``batch`` become a short text at once. Between two
  batches nothing before the newest step changes, so each request reads the previous one from the cache
  and writes only its new step. Pruning one image per step (``batch=1``) would change the prefix near its
  start on every step and turn every request into a cache write.
- Breakpoints: the end of the system prompt (it covers the tools too), the end of the newest user turn
  (this request's prefix, read by the next one), the end of the previous user turn (the previous
  request's, in case the newest step added more than 20 blocks), and the block just before the oldest
  screenshot still sent (the part a batch prune leaves unchanged, so a prune step still reads it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_CACHE_BREAKPOINTS",
    "OMITTED_SCREENSHOT_TEXT",
    "add_cache_breakpoints",
    "estimate_tokens",
    "images_to_drop",
    "prune_screenshots",
]

OMITTED_SCREENSHOT_TEXT = "[older screenshot omitted]"
#: The API accepts at most four ``cache_control`` breakpoints per request.
MAX_CACHE_BREAKPOINTS = 4
_EPHEMERAL = {"type": "ephemeral"}
#: Rough token counts for estimates (compaction thresholds): ~4 characters a token, images by area.
CHARS_PER_TOKEN = 4
PIXELS_PER_TOKEN = 750

Message = dict[str, Any]
Block = dict[str, Any]


def _omitted() -> Block:
    return {"type": "text", "text": OMITTED_SCREENSHOT_TEXT}


def images_to_drop(total: int, keep: int, batch: int = 1) -> int:
    """Return how many of ``total`` images (oldest first) leave the request.

    None while there are fewer than ``keep + batch``; then a multiple of ``batch``, so that between
    ``keep`` and ``keep + batch - 1`` remain. ``batch=1`` keeps exactly the newest ``keep``.
    """
    if keep < 0:
        raise ValueError("keep must be zero or more")
    if batch < 1:
        raise ValueError("batch must be at least 1")
    excess = total - keep
    return (excess // batch) * batch if excess > 0 else 0


def _image_slots(messages: list[Message]) -> list[tuple[list[Any], int]]:
    """Return (container, index) of every image block, oldest first (top level or inside a tool_result)."""
    slots: list[tuple[list[Any], int]] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for index, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "image":
                slots.append((content, index))
            elif block.get("type") == "tool_result" and isinstance(block.get("content"), list):
                inner = block["content"]
                slots.extend(
                    (inner, i)
                    for i, item in enumerate(inner)
                    if isinstance(item, dict) and item.get("type") == "image"
                )
    return slots


def json_copy(value: Any) -> Any:
    """Return a copy of JSON-like ``value`` (request messages, tools): its dicts and lists are new, its
    strings and numbers shared. ``copy.deepcopy`` does the same for these values with a memo of every
    object it meets: several times slower on a long computer-use history."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


def prune_screenshots(messages: list[Message], keep: int, batch: int = 1) -> list[Message]:
    """Return a copy of ``messages`` where the oldest images are replaced by a short text, in batches.

    See :func:`images_to_drop` for how many go. Replaced images, top-level or inside a ``tool_result``,
    become a short text block, so the model still sees that a screenshot was there and every
    ``tool_result`` keeps its ``tool_use_id`` and a non-empty content. Screenshots are the bulk of a
    computer-use conversation; re-sending all of them would exhaust the context window within a few
    dozen steps.
    """
    pruned = json_copy(messages)
    slots = _image_slots(pruned)
    for container, index in slots[: images_to_drop(len(slots), keep, batch)]:
        container[index] = _omitted()
    return pruned


def add_cache_breakpoints(
    system: list[Block] | str | None,
    tools: list[dict[str, Any]] | None,
    messages: list[Message],
) -> tuple[list[Block] | str | None, list[dict[str, Any]], list[Message]]:
    """Return copies of ``(system, tools, messages)`` with prompt-caching breakpoints set.

    Breakpoints (``cache_control: {"type": "ephemeral"}``, at most four; see the module docstring): the last
    system block (else the last tool definition), the last block of the newest user turn, the block
    before the oldest image still sent (once older ones were pruned), and the last block of the previous
    user turn. Any ``cache_control`` already present in the messages is removed first. A string
    ``system`` or message content becomes one text block so it can carry a breakpoint.
    """
    new_system: list[Block] | str | None
    if isinstance(system, str):
        new_system = [{"type": "text", "text": system}] if system else system
    else:
        new_system = json_copy(system) if system else system
    new_tools = json_copy(tools) if tools else []
    new_messages = json_copy(messages)
    for message in new_messages:
        _strip_cache_control(message)
        if isinstance(message.get("content"), str) and message["content"]:
            message["content"] = [{"type": "text", "text": message["content"]}]

    used = 0
    if isinstance(new_system, list) and new_system:
        new_system[-1]["cache_control"] = dict(_EPHEMERAL)
        used = 1
    elif new_tools:
        new_tools[-1]["cache_control"] = dict(_EPHEMERAL)
        used = 1

    user_turns = [m for m in new_messages if m.get("role") == "user" and _blocks(m)]
    wanted: list[Block] = []
    if user_turns:
        wanted.append(_blocks(user_turns[-1])[-1])
    boundary = _prune_boundary(new_messages)
    if boundary is not None:
        wanted.append(boundary)
    if len(user_turns) > 1:
        wanted.append(_blocks(user_turns[-2])[-1])
    marked: list[Block] = []
    for block in wanted:
        if used >= MAX_CACHE_BREAKPOINTS:
            break
        if any(block is other for other in marked):
            continue
        block["cache_control"] = dict(_EPHEMERAL)
        marked.append(block)
        used += 1
    return new_system, new_tools, new_messages


def _blocks(message: Message) -> list[Block]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _contains_image(block: Block) -> bool:
    if block.get("type") == "image":
        return True
    inner = block.get("content")
    return (
        block.get("type") == "tool_result"
        and isinstance(inner, list)
        and any(isinstance(item, dict) and item.get("type") == "image" for item in inner)
    )


def _is_omitted(block: Block) -> bool:
    if block.get("type") == "text" and block.get("text") == OMITTED_SCREENSHOT_TEXT:
        return True
    inner = block.get("content")
    return (
        block.get("type") == "tool_result"
        and isinstance(inner, list)
        and any(isinstance(item, dict) and item.get("text") == OMITTED_SCREENSHOT_TEXT for item in inner)
    )


def _prune_boundary(messages: list[Message]) -> Block | None:
    """Return the block just before the oldest block with an image, when screenshots before it were pruned."""
    previous: Block | None = None
    pruned_before = False
    for message in messages:
        for block in _blocks(message):
            if _contains_image(block):
                return previous if pruned_before else None
            pruned_before = pruned_before or _is_omitted(block)
            previous = block
    return None


def _strip_cache_control(message: Message) -> None:
    for block in _blocks(message):
        block.pop("cache_control", None)
        if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
            for item in block["content"]:
                if isinstance(item, dict):
                    item.pop("cache_control", None)


def estimate_tokens(value: Any, *, image_tokens: Callable[[Block], int] | None = None) -> int:
    """Return a rough token count of API-shaped data: text at ~4 characters a token, images by area.

    Images are counted by ``image_tokens(block)`` when given (the engine knows each stored screenshot's
    size), else by a ``width``/``height`` on the block, else as a large image (1,600 tokens). Good enough
    to decide when to compact; the provider's count is the one that is billed.
    """
    if isinstance(value, str):
        return math.ceil(len(value) / CHARS_PER_TOKEN)
    if isinstance(value, list):
        return sum(estimate_tokens(item, image_tokens=image_tokens) for item in value)
    if not isinstance(value, dict):
        return math.ceil(len(json.dumps(value)) / CHARS_PER_TOKEN)
    kind = value.get("type")
    if kind == "image":
        if image_tokens is not None:
            return image_tokens(value)
        width, height = value.get("width"), value.get("height")
        if isinstance(width, int) and isinstance(height, int):
            return math.ceil(width * height / PIXELS_PER_TOKEN)
        return 1600
    if kind == "text":
        return math.ceil(len(str(value.get("text") or "")) / CHARS_PER_TOKEN)
    if kind == "tool_result":
        return estimate_tokens(value.get("content") or "", image_tokens=image_tokens)
    if "content" in value and "role" in value:
        return estimate_tokens(value["content"], image_tokens=image_tokens)
    return math.ceil(len(json.dumps(value, separators=(",", ":"))) / CHARS_PER_TOKEN)
