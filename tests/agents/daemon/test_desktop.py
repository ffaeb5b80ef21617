"""The agent driving a real 1280x800 Xvnc desktop through its served API (and AgentClient)."""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image, ImageChops, ImageStat

from agents.daemon.client import AgentClient, AgentRequestError, open_vnc
from tests.agents.daemon.conftest import TOKEN, Xev, XEvent, needs_desktop, wait_until
from tests.support.agent_process import AgentProcess

T = TypeVar("T")

pytestmark = [needs_desktop, pytest.mark.desktop]

SHIFT, CONTROL, BUTTON1 = 0x1, 0x4, 0x100


def image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def distinct_colours(img: Image.Image) -> int:
    return len(img.getcolors(maxcolors=1 << 20) or [])


def action(agent: AgentProcess, **params: Any) -> dict[str, Any]:
    return agent.call("action", params)


def xterm_shown(agent: AgentProcess) -> bool:
    """Return True once an xterm window is mapped (the desktop's panel alone already has many colours)."""
    found = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--class", "xterm"],
        env=agent.x_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(found.stdout.strip())


async def test_screenshot_has_the_display_size_and_shows_a_new_window(agent: AgentProcess) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        shot = await client.screenshot()
        assert (shot.width, shot.height) == (1280, 800)
        assert image(shot.png).size == (1280, 800)
        small = await client.screenshot(640, 400)
        assert image(small.png).size == (640, 400)
        before = distinct_colours(image(shot.png))
        proc = subprocess.Popen(["xterm", "-geometry", "80x24+0+0"], env=agent.x_env())
        try:

            async def window_drawn() -> bool:
                shot = await client.screenshot()
                return distinct_colours(image(shot.png)) > before + 1

            deadline = asyncio.get_running_loop().time() + 10
            while not await window_drawn():
                assert asyncio.get_running_loop().time() < deadline, "xterm never appeared in a screenshot"
                await asyncio.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(5)


def test_info_reports_native_and_declared_size(agent: AgentProcess) -> None:
    info = agent.info()
    assert info["native"] == {"width": 1280, "height": 800}
    assert info["declared"] == {"width": 1280, "height": 800}
    assert info["x_display"].startswith(":")


def test_typing_into_an_xterm_runs_the_command(
    agent: AgentProcess, xterm: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    target = tmp_path / "typed.txt"
    wait_until(lambda: xterm_shown(agent), what="xterm drawn")
    action(agent, action="left_click", coordinate=[200, 150])  # focus it
    result = action(agent, action="type", text=f"echo ok > {target}")
    assert result["screenshot"]["width"] == 1280 and result["output"] is None
    action(agent, action="key", text="Return")
    wait_until(
        lambda: target.exists() and target.read_text() == "ok\n", what=f"{target} written by the shell"
    )


@pytest.mark.parametrize("point", [(0, 0), (1279, 799), (640, 400), (17, 763)])
def test_click_lands_on_the_intended_pixel(agent: AgentProcess, point: tuple[int, int]) -> None:
    result = action(agent, action="left_click", coordinate=list(point))
    assert result["screenshot"]["width"] == 1280
    assert agent.mouse_location() == point
    assert action(agent, action="cursor_position") == {
        "output": f"X={point[0]},Y={point[1]}",
        "screenshot": None,
    }


def _wait_events(xev: Xev, predicate: Callable[[list[XEvent]], T | None], message: str) -> T:
    return wait_until(lambda: predicate(xev.events()), timeout=10, what=message)


def test_clicks_with_held_modifiers_reach_the_x_server(agent: AgentProcess, xev: Xev) -> None:
    action(agent, action="left_click", coordinate=[500, 400])  # focus the xev window
    xev.clear()
    action(agent, action="left_click", coordinate=[510, 410], text="shift")
    press = _wait_events(xev, lambda ev: [e for e in ev if e.kind == "ButtonPress"], "shift+click")[0]
    assert press.button == 1 and press.root == (510, 410) and press.state & SHIFT
    xev.clear()
    action(agent, action="right_click", coordinate=[520, 420], text="ctrl+shift")
    press = _wait_events(
        xev, lambda ev: [e for e in ev if e.kind == "ButtonPress"], "ctrl+shift right click"
    )[0]
    assert press.button == 3 and press.state & (SHIFT | CONTROL) == SHIFT | CONTROL
    xev.clear()
    action(agent, action="middle_click", coordinate=[530, 430])
    press = _wait_events(xev, lambda ev: [e for e in ev if e.kind == "ButtonPress"], "middle click")[0]
    assert press.button == 2 and press.state & (SHIFT | CONTROL) == 0  # modifiers were released
    for name, count in (("double_click", 2), ("triple_click", 3)):
        xev.clear()
        action(agent, action=name, coordinate=[540, 440])

        def nth_release(ev: list[XEvent], n: int = count) -> list[XEvent]:
            return [e for e in ev if e.kind == "ButtonRelease"][n - 1 : n]

        presses = _wait_events(xev, nth_release, f"{name}")
        assert presses


def test_scroll_sends_wheel_clicks_with_modifiers(agent: AgentProcess, xev: Xev) -> None:
    for direction, button in (("up", 4), ("down", 5), ("left", 6), ("right", 7)):
        xev.clear()
        action(agent, action="scroll", coordinate=[600, 300], scroll_direction=direction, scroll_amount=3)
        presses = _wait_events(
            xev, lambda ev: [e for e in ev if e.kind == "ButtonPress"][2:], f"3 wheel clicks {direction}"
        )
        assert all(e.button == button and e.root == (600, 300) for e in presses)
    xev.clear()
    action(agent, action="scroll", scroll_direction="down", scroll_amount=1, text="ctrl")
    press = _wait_events(xev, lambda ev: [e for e in ev if e.kind == "ButtonPress"], "ctrl+wheel")[0]
    assert press.button == 5 and press.state & CONTROL and press.root == (600, 300)


def test_drag_and_button_down_up(agent: AgentProcess, xev: Xev) -> None:
    xev.clear()
    action(agent, action="left_click_drag", start_coordinate=[200, 200], coordinate=[700, 500])
    events = _wait_events(xev, lambda ev: [e for e in ev if e.kind == "ButtonRelease"] and ev, "drag release")
    press = next(e for e in events if e.kind == "ButtonPress")
    release = next(e for e in events if e.kind == "ButtonRelease")
    assert press.root == (200, 200) and release.root == (700, 500)
    assert any(e.kind == "MotionNotify" and e.state & BUTTON1 for e in events)  # moved while pressed
    xev.clear()
    action(agent, action="mouse_move", coordinate=[300, 300])
    action(agent, action="left_mouse_down")
    action(agent, action="mouse_move", coordinate=[350, 320])
    action(agent, action="left_mouse_up")
    events = _wait_events(xev, lambda ev: [e for e in ev if e.kind == "ButtonRelease"] and ev, "manual drag")
    assert next(e for e in events if e.kind == "ButtonPress").root == (300, 300)
    assert next(e for e in events if e.kind == "ButtonRelease").root == (350, 320)


def test_keys_and_hold_key_reach_the_x_server(agent: AgentProcess, xev: Xev) -> None:
    action(agent, action="left_click", coordinate=[500, 400])  # focus
    xev.clear()
    action(agent, action="key", text="ctrl+A")
    a_press = _wait_events(
        xev, lambda ev: [e for e in ev if e.kind == "KeyPress" and e.keysym == "a"], "ctrl+a"
    )[0]
    assert a_press.state & CONTROL and not a_press.state & SHIFT  # "A" lowercased: no shift
    xev.clear()
    action(agent, action="key", text="Return", repeat=3)
    _wait_events(
        xev, lambda ev: len([e for e in ev if e.kind == "KeyPress" and e.keysym == "Return"]) == 3, "3x"
    )
    xev.clear()
    result = action(agent, action="hold_key", text="shift", duration=1)
    assert result["screenshot"] is not None
    events = _wait_events(
        xev,
        lambda ev: [e for e in ev if e.kind == "KeyRelease" and e.keysym == "Shift_L"] and ev,
        "shift release",
    )
    down = next(e for e in events if e.kind == "KeyPress" and e.keysym == "Shift_L")
    up = [e for e in events if e.kind == "KeyRelease" and e.keysym == "Shift_L"][-1]
    assert 900 <= up.time - down.time <= 3000  # seconds, not milliseconds


def test_zoom_returns_the_requested_region(agent: AgentProcess, xterm: subprocess.Popen[bytes]) -> None:
    import base64

    wait_until(lambda: xterm_shown(agent), what="xterm mapped")

    def full_screenshot() -> Image.Image:
        return image(base64.b64decode(action(agent, action="screenshot")["screenshot"]["png_base64"]))

    # A mapped xterm may still be drawing: compare with a screen that did not change across the zoom.
    for _ in range(20):
        full = full_screenshot()
        result = action(agent, action="zoom", region=[0, 0, 640, 400])
        if ImageChops.difference(full, full_screenshot()).getbbox() is None:
            break
    assert result["output"] is None
    shot = result["screenshot"]
    assert (shot["width"], shot["height"]) == (1280, 800)
    zoomed = image(base64.b64decode(shot["png_base64"])).resize((640, 400), Image.Resampling.BOX)
    same = ImageStat.Stat(ImageChops.difference(zoomed, full.crop((0, 0, 640, 400))).convert("L")).mean[0]
    other = ImageStat.Stat(ImageChops.difference(zoomed, full.crop((640, 400, 1280, 800))).convert("L")).mean[
        0
    ]
    assert same < 8  # the same picture, up to resampling
    assert other > same
    wide = action(agent, action="zoom", region=[100, 100, 200, 150])["screenshot"]
    assert (wide["width"], wide["height"]) == (1280, 640)


async def test_concurrent_clients_never_interleave(agent: AgentProcess, xev: Xev) -> None:
    # Each drag is press, move, move, release in one action: with two clients dragging at once, the X
    # server must see whole drags one after the other, never a press of one inside the other.
    async def drags(x: int) -> None:
        async with AgentClient(agent.ws_url, TOKEN) as client:
            for i in range(6):
                y = 100 + i * 40
                await client.action(
                    {"action": "left_click_drag", "start_coordinate": [x, y], "coordinate": [x + 50, y]}
                )

    xev.clear()
    await asyncio.gather(drags(100), drags(600))
    buttons = _wait_events(
        xev, lambda ev: b if len(b := [e for e in ev if e.button is not None]) == 24 else None, "12 drags"
    )
    for press, release in zip(buttons[::2], buttons[1::2], strict=True):
        assert (press.kind, release.kind) == ("ButtonPress", "ButtonRelease")
        assert press.root is not None and release.root == (press.root[0] + 50, press.root[1])


async def test_pipelined_calls_run_in_order_on_one_connection(agent: AgentProcess) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        calls = []
        for i in range(10):
            calls.append(client.call("action", {"action": "mouse_move", "coordinate": [50 + i, 60]}))
            calls.append(client.call("action", {"action": "cursor_position"}))
        results = await asyncio.gather(*calls)
    assert [r["output"] for r in results[1::2]] == [f"X={50 + i},Y=60" for i in range(10)]


BAD_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"action": "zoomx"}, 'Unknown action "zoomx".'),
    ({"action": "key"}, 'Missing "text" for the "key" action.'),
    (
        {"action": "scroll", "scroll_direction": "sideways", "scroll_amount": 1},
        'Invalid scroll direction "sideways"',
    ),
    (
        {"action": "left_click", "coordinate": [2000, 5]},
        '"coordinate" [2000, 5] is outside the 1280x800 display',
    ),
    ({"action": "mouse_move", "coordinate": ["a", 5]}, '"coordinate" must be a pair of whole numbers'),
    ({"action": "type", "text": "x" * 10_001}, '"text" is 10001 characters long'),
    ({"action": "key", "text": "ctrl+nope"}, 'Unknown key name: "nope".'),
    (
        {"action": "left_mouse_up", "coordinate": [5, 5]},
        'The "left_mouse_up" action does not accept "coordinate"',
    ),
]


async def test_bad_input_gets_a_clear_error_and_the_agent_keeps_serving(agent: AgentProcess) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        for params, message in BAD_INPUTS:
            with pytest.raises(AgentRequestError) as info:
                await client.action(params)
            assert info.value.message.startswith(message)
            assert info.value.code == "invalid_request"
        with pytest.raises(AgentRequestError, match="Unknown method: nope"):
            await client.call("nope")
        position = (await client.action({"action": "cursor_position"})).output
        assert position is not None and position.startswith("X=")
    # Garbage on the wire is answered too.
    from websockets.asyncio.client import connect

    async with connect(agent.ws_url + "/rpc", additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        await ws.send("{not json")
        assert "not valid JSON" in await ws.recv()
        await ws.send(b"\x00binary")
        assert "text frames" in await ws.recv()


async def test_vnc_route_relays_rfb_bytes_to_each_viewer(agent: AgentProcess) -> None:
    viewers = [await open_vnc(agent.ws_url, TOKEN, timeout=10) for _ in range(2)]
    try:
        for ws in viewers:
            greeting = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(greeting, bytes) and greeting.startswith(b"RFB 003.00")
            await ws.send(b"RFB 003.008\n")
            security = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(security, bytes)
            assert security[0] >= 1 and 1 in security[1:]  # security type None offered
    finally:
        for ws in viewers:
            await ws.close()


async def test_wait_returns_a_screenshot_after_the_duration(agent: AgentProcess) -> None:
    async with AgentClient(agent.ws_url, TOKEN) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await client.action({"action": "wait", "duration": 1})
        assert loop.time() - start >= 1.0
        assert (result.width, result.height) == (1280, 800) and result.png
