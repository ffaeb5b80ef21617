"""Secrets at rest survive a key rotation: the new key first, the old ones still decrypt, and
``reencrypt_secrets`` moves everything to the new key."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from agents.models import WorkspaceAgent
from chatdesk.crypto import DecryptionError, decrypt_secret, encrypt_secret
from chatdesk.exceptions import AgentCredentialUnreadable
from chats.models import ChatProvider
from tests.factories import WorkspaceAgentFactory

pytestmark = pytest.mark.django_db


def provider_with_key(key: str) -> ChatProvider:
    provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC, display_name=key)
    provider.set_api_key(key)
    provider.save()
    return provider


def test_the_first_key_encrypts_and_every_key_decrypts() -> None:
    with override_settings(CHATDESK_ENCRYPTION_KEY=["old-key"]):
        old = encrypt_secret("sk-old")
    with override_settings(CHATDESK_ENCRYPTION_KEY=["new-key", "old-key"]):
        assert decrypt_secret(old) == "sk-old"
        new = encrypt_secret("sk-new")
    with override_settings(CHATDESK_ENCRYPTION_KEY=["new-key"]):
        assert decrypt_secret(new) == "sk-new"
        with pytest.raises(DecryptionError):
            decrypt_secret(old)


def test_a_new_secret_key_with_the_old_one_in_fallbacks_still_decrypts() -> None:
    with override_settings(CHATDESK_ENCRYPTION_KEY=[], SECRET_KEY="old-secret-key-" + "x" * 40):
        stored = encrypt_secret("sk-kept")
    with override_settings(
        CHATDESK_ENCRYPTION_KEY=[],
        SECRET_KEY="new-secret-key-" + "y" * 40,
        SECRET_KEY_FALLBACKS=["old-secret-key-" + "x" * 40],
    ):
        assert decrypt_secret(stored) == "sk-kept"
    with override_settings(CHATDESK_ENCRYPTION_KEY=[], SECRET_KEY="new-secret-key-" + "y" * 40):
        with pytest.raises(DecryptionError) as info:
            decrypt_secret(stored)
    assert info.value.status_code == 503  # the server's fault, never the request's


def test_reencrypt_secrets_moves_every_stored_secret_to_the_first_key() -> None:
    with override_settings(CHATDESK_ENCRYPTION_KEY=["old-key"]):
        provider = provider_with_key("sk-ant-rotated")
        agent = WorkspaceAgentFactory.create()
        credential = agent.get_server_credential()
    with override_settings(CHATDESK_ENCRYPTION_KEY=["new-key", "old-key"]):
        out = io.StringIO()
        call_command("reencrypt_secrets", stdout=out)
        assert "Re-encrypted 2 secret(s)" in out.getvalue()
    with override_settings(CHATDESK_ENCRYPTION_KEY=["new-key"]):  # the old key is gone now
        assert ChatProvider.objects.get(pk=provider.pk).get_api_key() == "sk-ant-rotated"
        assert WorkspaceAgent.objects.get(pk=agent.pk).get_server_credential() == credential


def test_reencrypt_secrets_reports_what_no_key_decrypts_and_leaves_it() -> None:
    with override_settings(CHATDESK_ENCRYPTION_KEY=["lost-key"]):
        lost = provider_with_key("sk-lost")
    with override_settings(CHATDESK_ENCRYPTION_KEY=["current-key"]):
        kept = WorkspaceAgentFactory.create()
        credential = kept.get_server_credential()
        before = ChatProvider.objects.get(pk=lost.pk).api_key_encrypted
        with pytest.raises(
            CommandError, match=rf"1 secret\(s\) could not be decrypted.*chats.ChatProvider {lost.pk}"
        ):
            call_command("reencrypt_secrets", stdout=io.StringIO())
        assert ChatProvider.objects.get(pk=lost.pk).api_key_encrypted == before
        assert WorkspaceAgent.objects.get(pk=kept.pk).get_server_credential() == credential


def test_an_agent_credential_the_keys_cannot_decrypt_is_an_agent_error_of_503() -> None:
    with override_settings(CHATDESK_ENCRYPTION_KEY=["lost-key"]):
        agent = WorkspaceAgentFactory.create()
    with pytest.raises(AgentCredentialUnreadable) as info:
        WorkspaceAgent.objects.get(pk=agent.pk).get_server_credential()
    assert info.value.status_code == 503
