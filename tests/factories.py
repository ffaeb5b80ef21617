from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from agents.models import WorkspaceAgent
from chats.models import Chat, ChatMessage


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests-1")


class WorkspaceAgentFactory(factory.django.DjangoModelFactory[WorkspaceAgent]):
    class Meta:
        model = WorkspaceAgent
        skip_postgeneration_save = True

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"agent{n}")

    @factory.post_generation
    def token(self: WorkspaceAgent, create: bool, extracted: str | None, **kwargs: object) -> None:
        """The raw token is kept on the instance as ``raw_token`` so tests can act as the agent."""
        self.raw_token = self.assign_new_token()
        if create:
            self.save()


def agent_token(agent: WorkspaceAgent) -> str:
    """Return the raw token WorkspaceAgentFactory gave ``agent``, so a test can act as the agent."""
    token: str = vars(agent)["raw_token"]  # set by WorkspaceAgentFactory.token, not a model field
    return token


class ChatFactory(factory.django.DjangoModelFactory[Chat]):
    class Meta:
        model = Chat

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Chat {n}")
    model = "claude-sonnet-5-5"
    status = Chat.Status.WAITING
    # A paused chat always has a reason (a check constraint); pass paused_reason for another one.
    paused_reason = factory.LazyAttribute(
        lambda chat: Chat.PausedReason.INTERRUPTED if chat.status == Chat.Status.PAUSED else None
    )


class ChatMessageFactory(factory.django.DjangoModelFactory[ChatMessage]):
    class Meta:
        model = ChatMessage

    chat = factory.SubFactory(ChatFactory)
    role = ChatMessage.Role.USER
    content = factory.LazyFunction(lambda: [{"type": "text", "text": "hello"}])
