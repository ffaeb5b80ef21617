"""How chatdesk's web server is started: one argv for `make run`, the tests and the benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

# SPEC §4: WebSockets are pinged every 15 s (daphne's default is 20 s).
WEBSOCKET_PING_SECONDS = 15


def daphne_argv(*, host: str, port: int, ping_interval: int = WEBSOCKET_PING_SECONDS) -> list[str]:
    """Return the argv that serves chatdesk.asgi with daphne on ``host``:``port``."""
    daphne = Path(sys.executable).parent / "daphne"
    return [
        str(daphne), "-b", host, "-p", str(port),
        "--ping-interval", str(ping_interval),
        "chatdesk.asgi:application",
    ]  # fmt: skip
