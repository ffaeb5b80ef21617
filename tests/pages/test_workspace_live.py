"""The chat page shows a running command's output under its call as it is printed (``tool_output``
events), and the command's result in its place once it ends: a real daphne, worker and agent."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from agents.models import WorkspaceAgent
from chats.models import Chat
from tests.factories import UserFactory, WorkspaceAgentFactory, agent_token
from tests.pages.conftest import chat_status, login, screenshot, start_chat
from tests.support.agent_process import AgentProcess, running_agent
from tests.support.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, reply, tool_use
from tests.support.processes import Daphne, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.desktop, pytest.mark.django_db(transaction=True)]

COMMAND = "for i in 1 2 3 4; do echo line $i; sleep 0.6; done"


@contextlib.contextmanager
def connected_agent(server: Daphne, row: WorkspaceAgent) -> Iterator[AgentProcess]:
    """Run a real agent with ``row``'s token, heartbeating to ``server``; return once it is connected."""
    with running_agent(token=agent_token(row), server_url=server.url) as agent:
        wait_until(
            lambda: WorkspaceAgent.objects.get(pk=row.pk).is_connected,
            timeout=20,
            what="the agent's heartbeat",
        )
        yield agent


def test_a_commands_output_shows_under_its_call_while_it_runs(
    page: Page, server: Daphne, fake: FakeAnthropic, artifacts_dir: Path
) -> None:
    def model(request: RecordedRequest) -> Reply:
        if not request.tool_results():
            return reply("Counting in the workspace.", tool_use("bash", {"command": COMMAND}))
        return reply("Counted to four.")

    fake.handle_with(model)
    alice = UserFactory.create(username="alice")
    row = WorkspaceAgentFactory.create(owner=alice, name="workstation")
    with connected_agent(server, row):
        login(page, "alice")
        chat = start_chat(page, "Count to four, slowly, in a shell.")
        assert chat.workspace_agent_id == row.pk
        call = page.locator(".tool").filter(has_text="bash")
        live = call.locator(".tool-live")
        expect(live).to_contain_text("line 1", timeout=20_000)
        # Seen while the command still runs: the turn has not ended, the last line is not printed yet.
        assert chat_status(chat) == Chat.Status.RUNNING
        assert "line 4" not in live.inner_text()
        screenshot(page, artifacts_dir, "chat-bash-output-live")

        result = call.locator(".tool-result-text")
        expect(result).to_have_text("line 1\nline 2\nline 3\nline 4", timeout=20_000)
        expect(call.locator(".tool-live")).to_have_count(0)  # the result took the live output's place
        expect(page.locator(".msg--assistant").last).to_contain_text("Counted to four.", timeout=20_000)
