"""The tools a chat's model may call, as a family with one small base class.

- ``base.py``: the base class ``Tool`` and the shapes tools return (leaf: only chats.models below it);
- ``computer_use.py``: where the desktop app registers the computer-use tools (chats never imports it);
- ``spawn.py``, ``wait.py``, ``message.py``, ``close.py``: the sub-agent tools of root chats;
- ``catalog.py``: which tools a chat is offered (``tools_for_chat``) and which answers a tool_use.

This package's ``__init__`` imports nothing, so chats.services can use ``base`` and ``computer_use``
while the sub-agent tools, above services, use chats.services.
"""
