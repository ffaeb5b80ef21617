"""Secrets at rest.

Provider API keys are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived by HKDF from
CHATDESK_ENCRYPTION_KEY, or SECRET_KEY when that is unset. Bearer tokens (API tokens, agent tokens) are
high-entropy random strings, so a plain SHA-256 is enough to store them: only the hash is kept.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from chatdesk.exceptions import ChatdeskError


class DecryptionError(ChatdeskError):
    default_message = "A stored secret could not be decrypted; was the encryption key changed?"


@lru_cache(maxsize=4)
def _fernet(master: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"chatdesk", info=b"chatdesk-secrets-v1").derive(
        master.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _master_key() -> str:
    return settings.CHATDESK_ENCRYPTION_KEY or settings.SECRET_KEY


def encrypt_secret(plaintext: str) -> str:
    """Return the Fernet token for ``plaintext`` (ASCII, safe to store in a text column)."""
    return _fernet(_master_key()).encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Return the plaintext of ``token``. Raise DecryptionError when the key does not match."""
    try:
        return _fernet(_master_key()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError() from None


def new_token(prefix: str) -> str:
    """Return a new bearer token such as ``cdk_…`` (prefix names what the token is for)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of ``token``: what is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()
