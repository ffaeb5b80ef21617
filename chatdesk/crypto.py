"""Secrets at rest.

Provider API keys and agent credentials are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under keys
derived by HKDF from the configured key strings: CHATDESK_ENCRYPTION_KEY (a comma-separated list), or,
when it is unset, SECRET_KEY followed by SECRET_KEY_FALLBACKS. The first key encrypts; every key
decrypts (``MultiFernet``), so keys can be rotated without losing what is stored:

1. put the new key first and keep the old ones after it (``CHATDESK_ENCRYPTION_KEY=new,old``, or a new
   SECRET_KEY with the old one in SECRET_KEY_FALLBACKS), restart;
2. run ``manage.py reencrypt_secrets``: every stored secret is re-encrypted under the new key;
3. drop the old keys.

A stored secret that no key decrypts is a server fault (the keys were changed without keeping the old
one), not bad input: ``DecryptionError`` is a 503 "server misconfigured", logged for the admin.

Bearer tokens (API tokens, agent tokens) are high-entropy random strings, so a plain SHA-256 is enough to
store them: only the hash is kept.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from chatdesk.exceptions import ServerMisconfigured

logger = logging.getLogger(__name__)


class DecryptionError(ServerMisconfigured):
    default_message = (
        "The server cannot decrypt a stored secret: its encryption keys were changed without keeping the "
        "old one. An administrator must fix the server's configuration."
    )


@lru_cache(maxsize=16)
def _fernet(master: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"chatdesk", info=b"chatdesk-secrets-v1").derive(
        master.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def master_keys() -> list[str]:
    """Return the configured key strings, the one that encrypts first (see module docstring)."""
    configured = settings.CHATDESK_ENCRYPTION_KEY
    if isinstance(configured, str):  # a single key, as older settings (and override_settings) give it
        configured = configured.split(",")
    keys = [key.strip() for key in configured if key.strip()]
    return keys or [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]


@lru_cache(maxsize=4)
def _multi(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _multi(tuple(master_keys()))


def encrypt_secret(plaintext: str) -> str:
    """Return the Fernet token for ``plaintext`` under the first key (ASCII, safe in a text column)."""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Return the plaintext of ``token``. Raise DecryptionError (logged) when no key decrypts it."""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        logger.error(
            "a stored secret cannot be decrypted with any configured key "
            "(CHATDESK_ENCRYPTION_KEY / SECRET_KEY / SECRET_KEY_FALLBACKS changed without keeping the old key)"
        )
        raise DecryptionError() from None


def reencrypt_secret(token: str) -> str:
    """Return ``token`` re-encrypted under the first key. Raise DecryptionError when no key decrypts it."""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError() from None


def new_token(prefix: str) -> str:
    """Return a new bearer token such as ``cdk_…`` (prefix names what the token is for)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of ``token``: what is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()
