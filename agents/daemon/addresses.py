"""Which addresses the server may dial when it calls a workspace agent (CHATDESK_AGENT_URL_ALLOW).

An agent tells the server its URL in every heartbeat, so whoever holds an agent token chooses where the
server connects: without a rule that is a blind SSRF (the server's network position, its credential
for the agent, and whatever the answer reveals). The rule is a list of entries:

* an IP network or address (``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``): the URL's host must
  *resolve* to an address in it;
* a host name (``agents.example.com``, or ``.example.com`` for every name under it): the URL's host
  is that name, and whatever it resolves to is trusted.

The check is made on the resolved address at connect time, and the connection goes to that very address
(``resolve_allowed``), so a DNS answer that changes between the check and the connection (DNS
rebinding) cannot send it elsewhere. The default allows loopback and the private ranges; link-local
addresses (cloud metadata services at 169.254.169.254) are not in it.

Imports nothing from Django: the agent client uses it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_AGENT_URL_ALLOW = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


class AddressNotAllowed(Exception):
    """The host is not allowed, or resolves to no allowed address. The message names the host and its
    addresses: for logs and for the agent's owner, never for chat users."""


@dataclass(frozen=True)
class AddressAllowlist:
    networks: tuple[IPNetwork, ...]
    hosts: tuple[str, ...]  # lower case; a leading "." matches every name under it

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AddressAllowlist:
        """Return the allowlist of ``entries``. Raise ValueError naming a malformed entry."""
        networks: list[IPNetwork] = []
        hosts: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False))
                continue
            except ValueError:
                pass
            name = entry.removeprefix("*")
            labels = name.removeprefix(".").split(".")
            if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
                raise ValueError(f"{raw!r} is neither an IP network (10.0.0.0/8) nor a host name")
            hosts.append(name)
        return cls(networks=tuple(networks), hosts=tuple(hosts))

    def allows_host(self, host: str) -> bool:
        """Return True when the host name ``host`` is allowed by a host-name entry."""
        host = host.lower().rstrip(".")
        return any(host == entry or (entry.startswith(".") and host.endswith(entry)) for entry in self.hosts)

    def allows_address(self, address: IPAddress) -> bool:
        """Return True when ``address`` is in an allowed network (IPv4-mapped IPv6 counts as IPv4)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def _address(sockaddr_host: str) -> IPAddress:
    return ipaddress.ip_address(sockaddr_host.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")


def _choose(host: str, port: int, infos: list[tuple[Any, ...]], allow: AddressAllowlist) -> str:
    addresses = [_address(str(info[4][0])) for info in infos]
    trusted_name = allow.allows_host(host)
    for address in addresses:
        if trusted_name or allow.allows_address(address):
            return str(address)
    shown = ", ".join(sorted({str(a) for a in addresses})) or "nothing"
    raise AddressNotAllowed(f"{host}:{port} resolves to {shown}, outside CHATDESK_AGENT_URL_ALLOW")


async def resolve_allowed(host: str, port: int, allow: AddressAllowlist) -> str:
    """Return the first address of ``host`` the allowlist allows, to connect to that address.

    Raise AddressNotAllowed (also when the name does not resolve).
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise AddressNotAllowed(f"{host} does not resolve") from None
    return _choose(host, port, infos, allow)


def check_allowed(host: str, port: int, allow: AddressAllowlist) -> None:
    """Raise AddressNotAllowed unless ``host`` is allowed by name or resolves to an allowed address.

    Synchronous, for the heartbeat's early check; connections check again with :func:`resolve_allowed`.
    """
    if allow.allows_host(host):
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise AddressNotAllowed(f"{host} does not resolve") from None
    _choose(host, port, infos, allow)
