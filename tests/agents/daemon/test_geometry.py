"""A 1920x1080 desktop, where the declared display (1429x804) differs from the native one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents.daemon.client import AgentClient
from agents.daemon.scaling import to_native
from tests.agents.daemon.conftest import TOKEN, needs_desktop
from tests.support.agent_process import AgentProcess, running_agent

pytestmark = [needs_desktop, pytest.mark.desktop]


@pytest.fixture(scope="module")
def wide_agent() -> Iterator[AgentProcess]:
    with running_agent(token=TOKEN, geometry="1920x1080") as proc:
        yield proc


async def test_declared_size_and_screenshots(wide_agent: AgentProcess) -> None:
    async with AgentClient(wide_agent.ws_url, TOKEN) as client:
        info = await client.info()
        assert info["native"] == {"width": 1920, "height": 1080}
        assert info["declared"] == {"width": 1429, "height": 804}
        result = await client.action({"action": "screenshot", "scaled_width": 1429, "scaled_height": 804})
        assert (result.width, result.height) == (1429, 804)
        zoom = await client.action({"action": "zoom", "region": [0, 0, 1429, 804]})
        assert (zoom.width, zoom.height) == (1429, 804)


@pytest.mark.parametrize("point", [(0, 0), (1428, 803), (714, 402), (333, 777), (1000, 1)])
async def test_click_at_declared_coordinates_hits_the_native_pixel(
    wide_agent: AgentProcess, point: tuple[int, int]
) -> None:
    declared, native = (1429, 804), (1920, 1080)
    async with AgentClient(wide_agent.ws_url, TOKEN) as client:
        await client.action(
            {"action": "left_click", "coordinate": list(point), "scaled_width": 1429, "scaled_height": 804}
        )
        assert wide_agent.mouse_location() == to_native(*point, declared, native)
        position = await client.action(
            {"action": "cursor_position", "scaled_width": 1429, "scaled_height": 804}
        )
        assert position.output == f"X={point[0]},Y={point[1]}"  # mapped back into declared space
        assert position.png is None
