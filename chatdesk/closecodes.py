"""WebSocket close codes of chatdesk's consumers (SPEC §4): one table for the server and the browser.

A refused or dropped WebSocket is closed with one of these codes and a reason that says why. The
consumers import the constants; the pages' scripts import ``chatdesk/static/chatdesk/js/closecodes.js``,
which is generated from this module and checked against it by tests/chatdesk/test_closecodes.py.
After changing a code, regenerate it::

    .venv/bin/python -m chatdesk.closecodes > chatdesk/static/chatdesk/js/closecodes.js
"""

from __future__ import annotations

import json

BAD_REQUEST = 4400  # a malformed request: a bad ?after_id, an RFB stream that breaks the protocol
NOT_AUTHENTICATED = 4401
FORBIDDEN_ORIGIN = 4403  # a cookie-authenticated WebSocket from an origin that is not ours
NOT_FOUND = 4404  # no such chat, or not the caller's
TOO_SLOW = 4408  # a desktop viewer that stopped reading (CHATDESK_DESKTOP_SLOW_VIEWER_SECONDS)
NO_AGENT = 4409  # the chat has no workspace agent, or it is not connected
AGENT_UNREACHABLE = 4502  # the workspace agent did not answer, or its connection was lost

CLOSE_CODES: dict[str, int] = {
    "BAD_REQUEST": BAD_REQUEST,
    "NOT_AUTHENTICATED": NOT_AUTHENTICATED,
    "FORBIDDEN_ORIGIN": FORBIDDEN_ORIGIN,
    "NOT_FOUND": NOT_FOUND,
    "TOO_SLOW": TOO_SLOW,
    "NO_AGENT": NO_AGENT,
    "AGENT_UNREACHABLE": AGENT_UNREACHABLE,
}

#: Codes after which reconnecting cannot help: a client stops and shows why. After any other close a
#: browser reconnects with backoff (the agent may come back; a slow viewer may catch up).
FINAL = (NOT_AUTHENTICATED, FORBIDDEN_ORIGIN, NOT_FOUND)


def javascript_module() -> str:
    """Return the source of ``closecodes.js``: the same table as an ES module."""
    codes = json.dumps(CLOSE_CODES, indent=2)
    final = ", ".join(f"CLOSE.{name}" for name, code in CLOSE_CODES.items() if code in FINAL)
    return (
        "// WebSocket close codes (SPEC §4). Generated from chatdesk/closecodes.py: do not edit, regenerate with\n"
        "//   .venv/bin/python -m chatdesk.closecodes > chatdesk/static/chatdesk/js/closecodes.js\n\n"
        f"export const CLOSE = Object.freeze({codes});\n\n"
        "// Codes after which reconnecting cannot help.\n"
        f"export const FINAL_CLOSES = new Set([{final}]);\n"
    )


if __name__ == "__main__":
    print(javascript_module(), end="")
