"""chatdesk's daphne (chatdesk/serving.py) and the ASGI body limit, through a real server and in-process."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from channels.testing import HttpCommunicator
from django.contrib.auth.models import User
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from chatdesk.asgi import application
from chatdesk.serving import daphne_argv
from chats.models import Chat
from tests.chats.conftest import worker_env
from tests.support.processes import Daphne, running_daphne

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 1024 * 1024
CHATS = "/api/experimental/chats"


@pytest.fixture
def daphne(tmp_path: Path) -> Any:
    with running_daphne(tmp_path, env=worker_env()) as server:
        yield server


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """Read one HTTP response (headers + Content-Length body) from ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), json.loads(body or b"{}")


def test_the_served_argv_is_chatdesks_daphne() -> None:
    assert daphne_argv(host="127.0.0.1", port=1)[1:3] == ["-m", "chatdesk.serving"]


def test_a_declared_oversized_body_is_refused_before_it_is_sent(daphne: Daphne) -> None:
    with socket.create_connection(("127.0.0.1", daphne.port)) as sock:
        sock.sendall(
            f"POST {CHATS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {400 * 1024 * 1024}\r\n\r\n".encode()
        )
        status, body = read_response(sock)  # no byte of the 400 MiB was sent
    assert status == 413
    assert "limit is 1048576 bytes" in body["detail"]


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(daphne: Daphne) -> None:
    before = rss_kib(daphne.proc.pid)
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", daphne.port)) as sock:
        sock.sendall(
            f"POST {CHATS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
            assert sent < 200 * 1024 * 1024, "the server kept reading without answering"
        status, body = read_response(sock)
    assert status == 413 and "limit is 1048576 bytes" in body["detail"]
    # Refused on the way: the server answered long before the client would have finished, and kept none of it.
    assert rss_kib(daphne.proc.pid) - before < 30 * 1024


def test_a_chunked_body_within_the_limit_is_read(daphne: Daphne, api_token: str) -> None:
    payload = json.dumps({"title": "Sent in chunks"}).encode()
    with socket.create_connection(("127.0.0.1", daphne.port)) as sock:
        sock.sendall(
            f"POST {CHATS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {api_token}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (payload[:7], payload[7:]))
            + b"0\r\n\r\n"
        )
        status, body = read_response(sock)
    assert status == 201, body
    assert body["title"] == "Sent in chunks"  # was "New Chat": the body was read as empty


@pytest.mark.parametrize(
    ("path", "authenticated", "code", "reason"),
    [
        ("/api/experimental/chats/not-a-uuid/stream", True, 4404, "No such chat."),
        ("/api/experimental/chats/00000000-0000-0000-0000-000000000000/stream", True, 4404, "No such chat."),
        ("/api/experimental/chats/not-a-uuid/desktop", True, 4404, "No such chat."),
        ("/api/experimental/chats/not-a-uuid/stream", False, 4401, "Not authenticated."),
        ("/api/experimental/nothing-here", True, 4404, "No such WebSocket endpoint."),
    ],
)
def test_refusals_close_with_their_code_and_reason_under_daphne(
    daphne: Daphne, api_token: str, path: str, authenticated: bool, code: int, reason: str
) -> None:
    headers = {"Authorization": f"Bearer {api_token}"} if authenticated else {"Origin": daphne.url}
    with connect(f"{daphne.ws_url}{path}", additional_headers=headers, open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)


def test_a_text_frame_that_is_not_json_leaves_the_stream_open(
    daphne: Daphne, user: User, api_token: str
) -> None:
    chat = Chat.objects.create(owner=user, title="t", model="m")
    url = f"{daphne.ws_url}/api/experimental/chats/{chat.pk}/stream"
    with connect(url, additional_headers={"Authorization": f"Bearer {api_token}"}, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "status"
        ws.send("this is not JSON {")
        ws.send(b"\x00\x01 nor this")
        with pytest.raises(TimeoutError):  # still open: no close frame
            ws.recv(timeout=2)
        ws.ping().wait(5)
    assert "Traceback" not in daphne.output()


async def test_the_asgi_limit_stops_reading_once_past_the_limit() -> None:
    """Any ASGI server: the application answers 413 without reading the rest of a streamed body."""
    communicator = HttpCommunicator(
        application, "POST", CHATS, body=b"", headers=[(b"content-type", b"application/json")]
    )
    # HttpCommunicator sends its body in one message; feed a streamed one by hand instead.
    communicator.scope["headers"] = [
        (b"content-type", b"application/json"),
        (b"transfer-encoding", b"chunked"),
    ]
    chunk = b"x" * (256 * 1024)
    for _ in range(5):
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": True})
    start = await communicator.receive_output(5)
    assert start["status"] == 413
    body = await communicator.receive_output(5)
    assert "limit is 1048576 bytes" in json.loads(body["body"])["detail"]
    await communicator.wait()
