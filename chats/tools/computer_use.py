"""The registration point for computer use: what chats needs from the app that owns the desktop.

chats runs computer-use chats but knows nothing of desktops. The app that does (``desktop``) registers,
from its ``AppConfig.ready()``:

- ``tools(chat)``: the tools a computer-use chat's model is offered (the computer tool);
- ``system_prompt(task)``: the system prompt of a new computer-use child given its task.

So the dependency between the apps runs one way, desktop -> chats (tests/test_layering.py fails when
a chats module imports desktop). Without a registration (no app provides desktops), root chats are not
offered the sub-agent tools, and spawning a computer-use child raises ImproperlyConfigured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from chats.models import Chat
from chats.tools.base import Tool

__all__ = ["ComputerUse", "computer_use", "computer_use_registered", "register_computer_use"]


@dataclass(frozen=True)
class ComputerUse:
    """What computer use needs from the app that owns the desktop."""

    tools: Callable[[Chat], list[Tool]]
    system_prompt: Callable[[str], str]


_registered: list[ComputerUse] = []


def register_computer_use(provider: ComputerUse) -> None:
    """Make ``provider`` the computer use of every chat (called once, from an AppConfig.ready())."""
    _registered[:] = [provider]


def computer_use_registered() -> bool:
    return bool(_registered)


def computer_use() -> ComputerUse:
    """Return the registered computer use. Raise ImproperlyConfigured when no app registered one."""
    if not _registered:
        raise ImproperlyConfigured(
            "No app registered computer use (chats.tools.computer_use); is 'desktop' in INSTALLED_APPS?"
        )
    return _registered[0]
