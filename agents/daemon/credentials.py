"""The credential the server presents to a workspace agent.

The server keeps only a hash of an agent's token (to check its heartbeats), so it cannot present the token
itself. At creation it also stores, encrypted, a credential derived from the token: HMAC-SHA256 keyed by the
token. The agent derives the same value from its token and accepts either. A leaked database row gives
neither the token nor (without the server's encryption key) the derived credential.

Imports nothing from Django: the agent uses it too.
"""

from __future__ import annotations

import hashlib
import hmac

_LABEL = b"chatdesk-agent-server-credential-v1"


def server_credential(token: str) -> str:
    """Return the credential derived from ``token`` that the server presents as a Bearer token."""
    return "cds_" + hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def accepts(presented: str, token: str) -> bool:
    """Return True when ``presented`` is ``token`` or its server credential (constant-time compares)."""
    ok_token = hmac.compare_digest(presented.encode(), token.encode())
    ok_derived = hmac.compare_digest(presented.encode(), server_credential(token).encode())
    return ok_token or ok_derived
