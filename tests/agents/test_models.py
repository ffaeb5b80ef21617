from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.utils import timezone

from agents.daemon.credentials import accepts, server_credential
from agents.models import WorkspaceAgent
from tests.factories import WorkspaceAgentFactory, agent_token

pytestmark = pytest.mark.django_db


def _stored_row(agent: WorkspaceAgent) -> tuple[str, ...]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM agents_workspaceagent WHERE id = %s", [agent.pk])
        return tuple(str(value) for value in cursor.fetchone())


def test_agent_token_is_stored_only_as_its_sha256(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    raw = agent_token(agent)
    assert raw.startswith("cda_")
    row = _stored_row(agent)
    assert not any(raw in column for column in row)
    assert hashlib.sha256(raw.encode()).hexdigest() in row
    assert WorkspaceAgent.objects.for_raw_token(raw) == agent
    assert WorkspaceAgent.objects.for_raw_token(raw + "x") is None


def test_server_credential_is_encrypted_and_matches_the_agents_derivation(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    expected = server_credential(agent_token(agent))
    row = _stored_row(agent)
    assert not any(expected in column for column in row)
    fresh = WorkspaceAgent.objects.get(pk=agent.pk)
    assert fresh.get_server_credential() == expected
    # What the daemon checks the server's calls against.
    assert accepts(fresh.get_server_credential(), agent_token(agent))
    assert not accepts(fresh.get_server_credential(), agent_token(WorkspaceAgentFactory.create(owner=user)))


def test_agent_never_seen_is_disconnected(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user)
    assert agent.status == WorkspaceAgent.Status.DISCONNECTED
    assert not WorkspaceAgent.objects.connected().filter(pk=agent.pk).exists()


@override_settings(CHATDESK_AGENT_TIMEOUT_SECONDS=30)
def test_agent_status_follows_its_last_heartbeat(user) -> None:
    recent = WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now() - timedelta(seconds=5))
    stale = WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now() - timedelta(seconds=45))
    assert recent.status == WorkspaceAgent.Status.CONNECTED
    assert recent.is_connected
    assert stale.status == WorkspaceAgent.Status.DISCONNECTED
    assert not stale.is_connected
    assert list(WorkspaceAgent.objects.connected()) == [recent]


def test_agent_timeout_setting_decides_when_an_agent_counts_as_gone(user) -> None:
    agent = WorkspaceAgentFactory.create(owner=user, last_seen=timezone.now() - timedelta(seconds=45))
    with override_settings(CHATDESK_AGENT_TIMEOUT_SECONDS=60):
        assert agent.status == WorkspaceAgent.Status.CONNECTED
        assert WorkspaceAgent.objects.connected().filter(pk=agent.pk).exists()
    with override_settings(CHATDESK_AGENT_TIMEOUT_SECONDS=30):
        assert agent.status == WorkspaceAgent.Status.DISCONNECTED
        assert not WorkspaceAgent.objects.connected().filter(pk=agent.pk).exists()


def test_agent_names_are_unique_per_owner(user, other_user) -> None:
    WorkspaceAgentFactory.create(owner=user, name="laptop")
    WorkspaceAgentFactory.create(owner=other_user, name="laptop")
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkspaceAgentFactory.create(owner=user, name="laptop")
