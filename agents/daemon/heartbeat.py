"""Heartbeats: tell the chatdesk server, every few seconds, where this agent is and how big its display is.

The server marks the agent ``connected`` while heartbeats arrive, and ``disconnected`` once none came
for CHATDESK_AGENT_TIMEOUT_SECONDS (default 8, so a dead agent shows within 10 s at the default
interval of 3 s); an agent that stops cleanly says so (``heartbeat_stopping``) and shows at once. The
server may be down or restarting; the loop then backs off exponentially (capped) and logs one short
line per attempt — never the token, which only ever travels in the Authorization header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx2 as httpx  # httpx's successor, which the anthropic SDK also uses

log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/experimental/workspace-agents/heartbeat"
DEFAULT_INTERVAL = 3.0
MAX_BACKOFF = 30.0
STOPPING_TIMEOUT = 2.0


def heartbeat_url(server: str) -> str:
    """Return the heartbeat endpoint for a server base URL."""
    return server.rstrip("/") + HEARTBEAT_PATH


async def heartbeat_loop(
    *,
    server: str,
    token: str,
    advertise_url: str,
    display: Callable[[], tuple[int, int]],
    interval: float = DEFAULT_INTERVAL,
    max_backoff: float = MAX_BACKOFF,
    request_timeout: float = 10.0,
) -> None:
    """POST a heartbeat every ``interval`` seconds until cancelled.

    After the n-th consecutive failure the next attempt waits min(min(interval, 1) * 2**(n-1),
    max_backoff): the first retry is quick, a long outage costs little.
    """
    url = heartbeat_url(server)
    failures = 0
    announced = False
    first_retry = min(interval, 1.0)
    async with httpx.AsyncClient(timeout=request_timeout, follow_redirects=False) as client:
        while True:
            width, height = display()
            body = {"url": advertise_url, "display": {"width": width, "height": height}}
            problem: str | None
            try:
                response = await client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
                if response.status_code < 300:
                    problem = None
                elif response.status_code in (401, 403):
                    problem = f"server refused the agent token (HTTP {response.status_code})"
                elif response.status_code == 400:
                    problem = f"server refused the heartbeat: {_detail(response)}"
                else:
                    problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if problem is None:
                if failures or not announced:
                    log.info("heartbeat to %s ok", url)
                announced = True
                failures = 0
                delay = interval
            else:
                failures += 1
                delay = min(first_retry * 2 ** (failures - 1), max_backoff)
                log.warning("heartbeat to %s failed (%s); retrying in %.1fs", url, problem, delay)
            await asyncio.sleep(delay)


async def heartbeat_stopping(*, server: str, token: str, advertise_url: str) -> None:
    """Tell the server this agent is stopping, so it shows ``disconnected`` at once (best effort)."""
    body = {"url": advertise_url, "display": {"width": 1, "height": 1}, "stopping": True}
    try:
        async with httpx.AsyncClient(timeout=STOPPING_TIMEOUT, follow_redirects=False) as client:
            await client.post(heartbeat_url(server), json=body, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        log.info("could not tell the server that the agent stops (%s)", type(exc).__name__)


def _detail(response: httpx.Response) -> str:
    """Return the server's explanation of a refusal, on one short line."""
    try:
        text = str(response.json())
    except ValueError:
        text = response.text
    return " ".join(text.split())[:300]
