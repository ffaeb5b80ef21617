"""CHATDESK_AGENT_URL_ALLOW in the agent client: the address is checked once resolved, and the connection
goes to that checked address (so a second DNS answer cannot send it elsewhere)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request

from agents.daemon.addresses import AddressAllowlist, AddressNotAllowed, check_allowed, resolve_allowed
from agents.daemon.client import AgentAddressNotAllowed, AgentClient, AgentUnreachable, open_vnc

DEFAULT = AddressAllowlist.parse(["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])


class Recorder:
    """A WebSocket server on 127.0.0.1 only that records the Host header of every handshake."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.server: Server | None = None

    def record(self, connection: ServerConnection, request: Request) -> None:
        self.hosts.append(request.headers["Host"])

    async def handler(self, connection: ServerConnection) -> None:
        await connection.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return next(iter(self.server.sockets)).getsockname()[1]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    recording = Recorder()
    async with serve(recording.handler, "127.0.0.1", 0, process_request=recording.record) as server:
        recording.server = server
        yield recording


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "not a host!", "under_score.example", "", "a..b"])
def test_a_malformed_entry_is_refused(entry: str) -> None:
    if entry == "":
        assert AddressAllowlist.parse([entry]) == AddressAllowlist(networks=(), hosts=())
        return
    with pytest.raises(ValueError, match="neither an IP network"):
        AddressAllowlist.parse([entry])


def test_networks_and_names_match_as_documented() -> None:
    allow = AddressAllowlist.parse(["10.0.0.0/8", "[fd00::]/8", "agents.example.com", ".desks.example.com"])
    assert allow.allows_address(ipaddress.ip_address("10.9.8.7"))
    assert allow.allows_address(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert allow.allows_address(ipaddress.ip_address("fd12::1"))
    assert not allow.allows_address(ipaddress.ip_address("11.0.0.1"))
    assert allow.allows_host("Agents.Example.com.")
    assert allow.allows_host("a.desks.example.com")
    assert not allow.allows_host("desks.example.com.evil.net")
    assert not allow.allows_host("xagents.example.com")
    check_allowed("agents.example.com", 443, allow)  # trusted by name: not even resolved
    with pytest.raises(AddressNotAllowed, match=r"127\.0\.0\.1"):
        check_allowed("127.0.0.1", 80, allow)


async def test_resolution_picks_an_allowed_address_of_the_name() -> None:
    assert await resolve_allowed("localhost", 80, AddressAllowlist.parse(["127.0.0.0/8"])) == "127.0.0.1"
    with pytest.raises(AddressNotAllowed, match="outside CHATDESK_AGENT_URL_ALLOW"):
        await resolve_allowed("localhost", 80, AddressAllowlist.parse(["10.0.0.0/8"]))


async def test_the_client_connects_to_the_checked_address_and_names_the_host(recorder: Recorder) -> None:
    url = f"ws://localhost:{recorder.port}"
    async with AgentClient(url, "t", timeout=5, allow=AddressAllowlist.parse(["127.0.0.1/32"])):
        pass
    assert recorder.hosts == [f"localhost:{recorder.port}"]
    # Only ::1 allowed: the client dials ::1 (where nothing listens), never 127.0.0.1 where the server is.
    with pytest.raises((AgentUnreachable, AgentAddressNotAllowed)):
        async with AgentClient(url, "t", timeout=5, allow=AddressAllowlist.parse(["::1/128"])):
            pass
    assert len(recorder.hosts) == 1


async def test_an_address_outside_the_list_is_never_dialled(recorder: Recorder) -> None:
    allow = AddressAllowlist.parse(["10.0.0.0/8"])
    for url in (f"ws://127.0.0.1:{recorder.port}", f"ws://localhost:{recorder.port}"):
        with pytest.raises(AgentAddressNotAllowed, match="outside CHATDESK_AGENT_URL_ALLOW"):
            async with AgentClient(url, "t", timeout=5, allow=allow):
                pass
        with pytest.raises(AgentAddressNotAllowed):
            await open_vnc(url, "t", timeout=5, allow=allow)
    await asyncio.sleep(0)
    assert recorder.hosts == []
