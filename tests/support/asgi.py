"""Helpers for talking to the ASGI application in-process (Channels' communicators)."""

from __future__ import annotations


def bearer(raw: str) -> list[tuple[bytes, bytes]]:
    """ASGI headers presenting the API token ``raw``."""
    return [(b"authorization", f"Bearer {raw}".encode())]


def same_origin(host: str = "localhost:8000", scheme: str = "http") -> list[tuple[bytes, bytes]]:
    """ASGI headers of a browser on our own page: a Host header and the Origin that matches it."""
    return [(b"host", host.encode()), (b"origin", f"{scheme}://{host}".encode())]
