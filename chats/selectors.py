from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from chats.models import Chat, ChatFile, ChatModelConfig

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def chat_for_user(*, user: User, chat_id: object) -> Chat:
    """Return the user's chat. Raise Http404 for a chat that is not theirs, as for one that does not exist."""
    return get_object_or_404(Chat.objects.select_related("workspace_agent"), pk=chat_id, owner=user)


def chat_approval_policy(chat: Chat) -> str:
    """Return the approval policy ``chat`` follows: its root's (a root's own). A child that holds its root
    row (loaded with it: ``select_related("root")``, or assigned by chat_lock_tree_rows and the engine at
    each step) reads it there; otherwise it is read now. (``is_cached``: Django's related descriptor,
    pinned with Django, tests/chats/test_models.py checks it.)"""
    if chat.parent_id is None:
        return chat.approval_policy
    if Chat.root.is_cached(chat):
        return chat.root.approval_policy
    policy = Chat.objects.filter(pk=chat.root_id).values_list("approval_policy", flat=True).first()
    return policy or Chat.ApprovalPolicy.OFF


def chats_for_user(*, user: User) -> QuerySet[Chat]:
    return Chat.objects.filter(owner=user).order_by("-updated_at", "-created_at")


def chat_file_for_user(*, user: User, chat_id: object, file_id: object) -> ChatFile:
    return get_object_or_404(ChatFile, pk=file_id, chat_id=chat_id, chat__owner=user)


def chat_model_config(chat: Chat) -> ChatModelConfig | None:
    """Return the chat's model config, or the config for its model name, or None."""
    config = chat.model_config
    if config is None or config.model != chat.model:
        config = ChatModelConfig.objects.filter(model=chat.model).first()
    return config


def chat_model_options(chat: Chat) -> dict[str, Any]:
    """Return the options of the chat's model config (or of the config for its model name)."""
    config = chat_model_config(chat)
    return dict(config.options or {}) if config is not None else {}
