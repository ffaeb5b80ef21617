from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import current_app
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from chatdesk.celery import app as celery_app
from chatdesk.services import api_token_create
from tests.factories import UserFactory


@pytest.fixture(scope="session", autouse=True)
def isolated_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Give this test run its own Celery queue, channel-layer prefix and media folder.

    Redis is shared with anything else on the machine; a leftover task from an earlier run must never
    reach this run's workers.
    """
    run = uuid.uuid4().hex[:8]
    settings.CELERY_TASK_DEFAULT_QUEUE = f"chatdesk-test-{run}"
    celery_app.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if settings.REDIS_URL:
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"chatdesk-test-{run}"
    settings.MEDIA_ROOT = str(tmp_path_factory.mktemp("media"))
    yield


@pytest.fixture(autouse=True)
def our_celery_app_stays_current() -> Iterator[None]:
    """A test that builds a Celery app of its own (to read a beat schedule) must not leave it current:
    every turn queued afterwards would go to that app's default broker, and no worker would run it."""
    yield
    if current_app._get_current_object() is not celery_app:
        celery_app.set_current()
        pytest.fail("This test left another Celery app current; build it with set_as_current=False.")


@pytest.fixture(autouse=True)
def channel_layer_per_event_loop(request: pytest.FixtureRequest) -> None:
    """Give each async test (an event loop of its own) a fresh channel layer. channels_redis binds a layer's
    receive lock to the loop that last held it: a consumer of an earlier test's loop that received an event
    just before that loop closed leaves the lock held there, and the next loop's consumers fail on it."""
    if settings.REDIS_URL and inspect.iscoroutinefunction(request.function):
        channel_layers.set(DEFAULT_CHANNEL_LAYER, channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))


@pytest.fixture
def user(db: None) -> User:
    return UserFactory.create(username="alice")


@pytest.fixture
def other_user(db: None) -> User:
    return UserFactory.create(username="mallory")


@pytest.fixture
def api_token(user: User) -> str:
    _, raw = api_token_create(user=user, name="tests")
    return raw


@pytest.fixture
def api(api_token: str) -> APIClient:
    """A DRF client authenticated as ``user`` with a Bearer token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    return client


@pytest.fixture
def other_api(other_user: User) -> APIClient:
    _, raw = api_token_create(user=other_user, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
