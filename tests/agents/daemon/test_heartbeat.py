"""Heartbeats reach the server, survive it being down at first, and never leak the token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.agents.daemon.conftest import wait_until
from tests.support.agent_process import free_port, running_agent

SECRET = "hb-secret-token-5f2a9c"


class Recorder(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)}
        )
        payload = b'{"status": "connected"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server_port() -> int:
    return free_port()


class RecordingServer(ThreadingHTTPServer):
    """Keeps every heartbeat request it receives, in order."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Recorder)
        self.requests: list[dict[str, Any]] = []


def serve(port: int) -> tuple[RecordingServer, threading.Thread]:
    httpd = RecordingServer(("127.0.0.1", port))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


@pytest.fixture
def late_server(server_port: int) -> Iterator[list[RecordingServer]]:
    holder: list[RecordingServer] = []
    yield holder
    for httpd in holder:
        httpd.shutdown()
        httpd.server_close()


def test_heartbeat_survives_a_server_that_starts_late(
    server_port: int, late_server: list[RecordingServer]
) -> None:
    with running_agent(
        token=SECRET,
        server_url=f"http://127.0.0.1:{server_port}",
        geometry="1366x768",
        extra_args=["--heartbeat-interval", "0.3"],
    ) as agent:
        wait_until(lambda: "heartbeat" in agent.log_text() and "failed" in agent.log_text(), what="a failure")
        httpd, _ = serve(server_port)
        late_server.append(httpd)
        requests = wait_until(lambda: httpd.requests[1:], timeout=15, what="two heartbeats")
        first = httpd.requests[0]
        assert first["path"] == "/api/experimental/workspace-agents/heartbeat"
        assert first["auth"] == f"Bearer {SECRET}"
        assert first["body"] == {"url": agent.ws_url, "display": {"width": 1366, "height": 768}}
        assert requests
        wait_until(
            lambda: "heartbeat to" in agent.log_text() and " ok" in agent.log_text(), what="ok log line"
        )
        log = agent.log_text()
        assert agent.health()["desktop"] == "stopped"  # heartbeats never start the desktop
    assert SECRET not in log


def test_advertise_url_is_sent_as_given(server_port: int, late_server: list[RecordingServer]) -> None:
    httpd, _ = serve(server_port)
    late_server.append(httpd)
    with running_agent(
        token=SECRET,
        server_url=f"http://127.0.0.1:{server_port}/",
        extra_args=["--heartbeat-interval", "5", "--advertise-url", "ws://agent.internal:7420"],
    ):
        wait_until(lambda: httpd.requests, what="a heartbeat")
    assert httpd.requests[0]["body"]["url"] == "ws://agent.internal:7420"
