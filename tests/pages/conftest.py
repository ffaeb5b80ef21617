"""Browser tests: Debian's Chromium driven by Playwright against a real daphne (and, where a test needs
it, a real Celery worker, the fake Anthropic server and a real workspace agent).

Every page a test opens collects the browser's console errors and uncaught exceptions; a test fails
when there were any (``console_errors`` lists them, for tests that expect some).
"""

from __future__ import annotations

import json as jsonlib
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, ViewportSize, sync_playwright

from chats.models import Chat, ChatProvider
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest
from tests.support.processes import Daphne, Process, running_daphne, running_worker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
PASSWORD = "pw-for-tests-1"  # tests.factories.UserFactory's


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module.

    Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls from a thread
    with a running loop. The tests' ORM calls are plain synchronous code, so the check is lifted while
    the browser runs (and only then: other modules keep it).
    """
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


# Package scope: the browser tests' daphne and worker stop when tests/pages is done, so the worker never
# takes another suite's tasks (they share the run's queue), whatever order the suites run in.
@pytest.fixture(scope="package")
def server(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daphne]:
    """One daphne for the session, on the test database (tests use transaction=True)."""
    with running_daphne(tmp_path_factory.mktemp("daphne")) as daphne:
        yield daphne


@dataclass
class ConsoleLog:
    """Console errors and page errors seen by the pages of one test."""

    errors: list[str] = field(default_factory=list)
    # Messages matching one of these are expected (e.g. a WebSocket refused while the server restarts).
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                location = message.location.get("url", "") if message.location else ""
                self.errors.append(f"console.error: {message.text} ({location})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))


@pytest.fixture
def console_errors() -> Iterator[ConsoleLog]:
    log = ConsoleLog()
    yield log
    assert log.unexpected() == [], "the browser reported errors"


@pytest.fixture
def new_page(browser: Browser, server: Daphne, console_errors: ConsoleLog) -> Iterator[Callable[..., Page]]:
    """Return a factory of pages (one browser context each: separate cookies) on ``server``."""
    contexts: list[BrowserContext] = []

    def make(*, viewport: ViewportSize = DESKTOP, base_url: str | None = None) -> Page:
        context = browser.new_context(viewport=viewport, base_url=base_url or server.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        console_errors.watch(page)
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


def login(page: Page, username: str, password: str = PASSWORD) -> None:
    """Log in through the real login form and land on the chat list."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))


def screenshot(page: Page, artifacts_dir: Path, name: str) -> Path:
    path = artifacts_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def http(method: str, url: str, *, token: str, json: Any = None) -> tuple[int, Any]:
    """Call the API as an API client would (Bearer token, no cookies); return (status, parsed body)."""
    data = None if json is None else jsonlib.dumps(json).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (the test's own server)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, jsonlib.loads(body) if body else None


@pytest.fixture(scope="package")
def worker(server: Daphne, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real Celery worker (concurrency 1) for the browser tests."""
    with running_worker(tmp_path_factory.mktemp("worker"), name="pages") as process:
        yield process


@pytest.fixture
def fake(worker: Process) -> Iterator[FakeAnthropic]:
    """The fake Anthropic server, configured as the enabled provider (the worker reads it per turn)."""
    with FakeAnthropic() as fake:
        provider = ChatProvider(provider=ChatProvider.Provider.ANTHROPIC, base_url=fake.base_url)
        provider.set_api_key("sk-ant-test")
        provider.save()
        yield fake


def start_chat(page: Page, message: str) -> Chat:
    page.goto("/")
    page.get_by_label("Message").fill(message)
    page.get_by_role("button", name="Start chat").click()
    page.wait_for_url(re.compile(r"/chats/[0-9a-f-]{36}/$"))
    return Chat.objects.get(pk=page.url.rstrip("/").rsplit("/", 1)[1])


def chat_status(chat: Chat) -> str:
    return Chat.objects.values_list("status", flat=True).get(pk=chat.pk)


def result_json(request: RecordedRequest) -> dict[str, Any] | None:
    """Return the JSON of the first tool result in the request's last message, if any."""
    results = request.tool_results()
    if not results:
        return None
    content = results[0].get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    try:
        data = jsonlib.loads(str(content))
    except ValueError:
        return {"text": content}
    return data if isinstance(data, dict) else {"text": content}
