from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings

from chatdesk.crypto import DecryptionError
from chats.models import Chat, ChatMessage, ChatModelConfig, ChatProvider
from tests.factories import ChatFactory, ChatMessageFactory

pytestmark = pytest.mark.django_db


def test_root_chat_is_its_own_root(user) -> None:
    chat = ChatFactory.create(owner=user)
    chat.refresh_from_db()
    assert chat.root_id == chat.id
    assert chat.is_root


def test_child_and_grandchild_share_the_root_chat(user) -> None:
    root = ChatFactory.create(owner=user)
    child = ChatFactory.create(owner=user, parent=root, mode=Chat.Mode.COMPUTER_USE)
    grandchild = ChatFactory.create(owner=user, parent=child)
    child.refresh_from_db()
    grandchild.refresh_from_db()
    assert child.root_id == root.id
    assert grandchild.root_id == root.id
    assert grandchild.parent_id == child.id
    assert set(root.descendants.exclude(pk=root.pk)) == {child, grandchild}


def test_root_chat_whose_root_is_another_chat_is_refused(user) -> None:
    a = ChatFactory.create(owner=user)
    b = ChatFactory.create(owner=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        Chat.objects.filter(pk=a.pk).update(root=b)


def test_child_chat_that_is_its_own_root_is_refused(user) -> None:
    root = ChatFactory.create(owner=user)
    child = ChatFactory.create(owner=user, parent=root)
    with pytest.raises(IntegrityError), transaction.atomic():
        Chat.objects.filter(pk=child.pk).update(root=child.pk)


def test_deleting_a_root_chat_deletes_its_children(user) -> None:
    root = ChatFactory.create(owner=user)
    child = ChatFactory.create(owner=user, parent=root)
    ChatFactory.create(owner=user, parent=child)
    root.delete()
    assert not Chat.objects.filter(owner=user).exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "sleeping"), ("mode", "browser"), ("status", "")],
)
def test_chat_status_and_mode_outside_their_choices_are_refused(user, field: str, value: str) -> None:
    chat = ChatFactory.create(owner=user)
    with pytest.raises(IntegrityError), transaction.atomic():
        Chat.objects.filter(pk=chat.pk).update(**{field: value})


def test_message_role_outside_its_choices_is_refused(user) -> None:
    message = ChatMessageFactory.create(chat=ChatFactory.create(owner=user))
    with pytest.raises(IntegrityError), transaction.atomic():
        ChatMessage.objects.filter(pk=message.pk).update(role="robot")


def test_message_ids_grow_in_creation_order(user) -> None:
    chat = ChatFactory.create(owner=user)
    ids = [ChatMessageFactory.create(chat=chat).id for _ in range(5)]
    assert ids == sorted(ids)
    assert list(chat.messages.values_list("id", flat=True)) == ids


# Names no migration ships (0007_default_prices adds the Claude family's configs).
def test_only_one_model_config_can_be_the_default() -> None:
    ChatModelConfig.objects.create(model="test-model-a", is_default=True)
    ChatModelConfig.objects.create(model="test-model-b", is_default=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        ChatModelConfig.objects.create(model="test-model-c", is_default=True)


def test_the_same_model_cannot_be_configured_twice() -> None:
    ChatModelConfig.objects.create(model="test-model-a")
    with pytest.raises(IntegrityError), transaction.atomic():
        ChatModelConfig.objects.create(model="test-model-a")


def _stored_provider_row(pk: int) -> tuple[str, ...]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM chats_chatprovider WHERE id = %s", [pk])
        row = cursor.fetchone()
    return tuple(str(value) for value in row)


def test_provider_key_is_encrypted_at_rest_and_round_trips() -> None:
    key = "sk-ant-api03-secret-value-0123456789-WXYZ"
    provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC)
    provider.set_api_key(key)
    provider.save()

    row = _stored_provider_row(provider.pk)
    assert not any(key in column for column in row)
    assert not any("secret-value" in column for column in row)
    assert provider.api_key_last4 == "WXYZ"

    fresh = ChatProvider.objects.get(pk=provider.pk)
    assert fresh.has_api_key
    assert fresh.get_api_key() == key


def test_provider_key_encrypted_twice_gives_different_ciphertexts() -> None:
    provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC)
    provider.set_api_key("sk-same")
    first = provider.api_key_encrypted
    provider.set_api_key("sk-same")
    assert provider.api_key_encrypted != first


def test_provider_key_under_another_encryption_key_fails_clearly() -> None:
    provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC)
    with override_settings(CHATDESK_ENCRYPTION_KEY="first-encryption-key"):
        provider.set_api_key("sk-ant-key")
        provider.save()
    with override_settings(CHATDESK_ENCRYPTION_KEY="another-encryption-key"):
        fresh = ChatProvider.objects.get(pk=provider.pk)
        with pytest.raises(DecryptionError, match="encryption key"):
            fresh.get_api_key()
    with override_settings(CHATDESK_ENCRYPTION_KEY="first-encryption-key"):
        assert ChatProvider.objects.get(pk=provider.pk).get_api_key() == "sk-ant-key"


def test_clearing_the_provider_key_removes_it() -> None:
    provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC)
    provider.set_api_key("sk-ant-key")
    provider.set_api_key("")
    provider.save()
    fresh = ChatProvider.objects.get(pk=provider.pk)
    assert not fresh.has_api_key
    assert fresh.get_api_key() == ""
    assert fresh.api_key_last4 == ""


def test_a_child_reads_its_roots_policy_from_the_root_row_it_holds(user, django_assert_num_queries) -> None:
    """Contract with Django (pinned 5.2): ``Chat.root.is_cached`` tells whether a child holds its root row,
    as chat_approval_policy relies on; the engine and chat_lock_tree_rows give each step's child a fresh one."""
    from chats.selectors import chat_approval_policy

    root = ChatFactory.create(owner=user, approval_policy=Chat.ApprovalPolicy.ALL)
    child = Chat.objects.get(pk=ChatFactory.create(owner=user, parent=root).pk)
    assert not Chat.root.is_cached(child)
    with django_assert_num_queries(1):
        assert chat_approval_policy(child) == Chat.ApprovalPolicy.ALL
    Chat.objects.filter(pk=root.pk).update(approval_policy=Chat.ApprovalPolicy.OFF)
    child.root = Chat.objects.get(pk=root.pk)
    assert Chat.root.is_cached(child)
    with django_assert_num_queries(0):
        assert chat_approval_policy(child) == Chat.ApprovalPolicy.OFF
    joined = Chat.objects.select_related("root").get(pk=child.pk)
    assert Chat.root.is_cached(joined)
