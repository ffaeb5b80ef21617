"""Connecting to the VNC server's unix socket while its listen backlog is full (several viewers at once)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from agents.daemon.backends.xvnc import connect_unix


def full_listener(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """Return a listener that accepts nothing, and the clients that filled its backlog."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    fillers: list[socket.socket] = []
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            client.connect(str(path))
        except BlockingIOError:
            client.close()
            return listener, fillers
        fillers.append(client)


async def test_a_full_backlog_is_waited_out_and_the_socket_really_connects(tmp_path: Path) -> None:
    listener, fillers = full_listener(tmp_path / "rfb.sock")
    try:

        async def accept_later() -> None:
            await asyncio.sleep(0.2)
            for _ in range(len(fillers) + 1):
                listener.setblocking(False)
                while True:
                    try:
                        conn, _ = listener.accept()
                        conn.close()
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.01)

        acceptor = asyncio.create_task(accept_later())
        sock = await connect_unix(str(tmp_path / "rfb.sock"), time_limit=5)
        # A socket asyncio wrongly believed connected has no peer (its first recv fails with EINVAL).
        assert sock.getpeername() == str(tmp_path / "rfb.sock")
        sock.close()
        await acceptor
    finally:
        listener.close()
        for client in fillers:
            client.close()


async def test_a_backlog_that_stays_full_times_out_clearly(tmp_path: Path) -> None:
    listener, fillers = full_listener(tmp_path / "rfb.sock")
    try:
        with pytest.raises(TimeoutError, match="backlog stayed full"):
            await connect_unix(str(tmp_path / "rfb.sock"), time_limit=0.3)
    finally:
        listener.close()
        for client in fillers:
            client.close()
