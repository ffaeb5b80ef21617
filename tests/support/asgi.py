"""Helpers for talking to the ASGI application in-process (Channels' communicators)."""

from __future__ import annotations


def bearer(raw: str) -> list[tuple[bytes, bytes]]:
    """ASGI headers presenting the API token ``raw``."""
    return [(b"authorization", f"Bearer {raw}".encode())]
