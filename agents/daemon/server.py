"""The agent's served API: ``GET /health``, the RPC WebSocket ``/rpc`` and the VNC WebSocket ``/vnc``.

Everything rides on one ``websockets`` server. ``process_request`` runs before any handshake: it
answers ``/health`` as plain HTTP, answers unknown paths with 404, and refuses a missing or wrong
``Authorization: Bearer`` token with 401 — before anything else happens, in particular before
the desktop is started. See PROTOCOL.md for the wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agents.daemon import actionspec, credentials, scaling
from agents.daemon.actions import ActionError, ActionRunner
from agents.daemon.backends.base import Desktop, DesktopError
from agents.daemon.editor import Editor
from agents.daemon.recorder import THUMBNAIL_WIDTH, Recorder
from agents.daemon.screenshot import encode_png
from agents.daemon.shell import Shells

log = logging.getLogger(__name__)

RPC_PATH = "/rpc"
VNC_PATH = "/vnc"
HEALTH_PATH = "/health"
Progress = Callable[[dict[str, Any]], Awaitable[None]]
# The biggest legitimate requests are an editor call's file text and a bash command, both written by a
# model within its output tokens (tens of KB); the server refuses a larger one before sending it.
MAX_REQUEST_BYTES = 1 << 20
VNC_CHUNK = 256 * 1024  # per read of the VNC server, and so per frame to the viewer
# Bytes a connection may hold for its socket before send() waits (high-water mark): a few frames, so
# reading the VNC server and writing the viewer overlap instead of taking turns.
VNC_WRITE_LIMIT = 1024 * 1024


def _json_response(connection: ServerConnection, status: HTTPStatus, payload: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(payload) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


def bearer_token_matches(header: str | None, token: str) -> bool:
    """Return True when ``header`` is "Bearer <token>" (constant-time comparison)."""
    if not header or not header.startswith("Bearer "):
        return False
    return credentials.accepts(header[len("Bearer ") :].strip(), token)  # the token or the server credential


async def relay_vnc(ws: ServerConnection, vnc: socket.socket) -> None:
    """Copy raw RFB bytes between the viewer's WebSocket ``ws`` and ``vnc`` until either side ends.

    Both ways go through websockets' public API. VNC server → viewer: each read (up to VNC_CHUNK) is
    sent as one binary frame; ``send`` waits while more than ``write_limit`` bytes wait for the
    viewer's socket, so a slow viewer holds back the reads (bounded buffering).
    """
    loop = asyncio.get_running_loop()

    async def viewer_to_vnc() -> None:
        async for message in ws:
            await loop.sock_sendall(vnc, message if isinstance(message, bytes) else message.encode())

    async def vnc_to_viewer() -> None:
        buffer = bytearray(VNC_CHUNK)
        view = memoryview(buffer)
        while length := await loop.sock_recv_into(vnc, buffer):
            await ws.send(view[:length])  # the frame is serialized (copied) before send() returns

    tasks = [asyncio.create_task(viewer_to_vnc()), asyncio.create_task(vnc_to_viewer())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            side = "viewer" if task is tasks[0] else "VNC server"
            error = None if task.cancelled() else task.exception()
            log.debug(
                "VNC relay ended by the %s side%s", side, f": {error!r}" if error else "", exc_info=error
            )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, OSError):
                await task


class AgentServer:
    """Serves one desktop, and the workspace tools (shells, the editor) as its user, to callers that
    present ``token``."""

    def __init__(
        self,
        *,
        desktop: Desktop,
        token: str,
        runner: ActionRunner | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        if not token:
            raise ValueError("An agent token is required.")
        self.desktop = desktop
        self.runner = runner or ActionRunner(desktop)
        self.recorder = recorder or Recorder(desktop)
        self.shells = Shells(
            user=desktop.user, environment=self._shell_environment, prepare=self._desktop_for_shell
        )
        self.editor = Editor(desktop.user)
        self._token = token
        self._server: Server | None = None

    def _shell_environment(self) -> dict[str, str]:
        """Return a new shell's environment: the desktop's, or without a display the user's allowlisted one."""
        return self.desktop.program_environment() or self.desktop.user.environment()

    async def _desktop_for_shell(self) -> None:
        """Start the desktop before a new shell, so the shell gets its DISPLAY; a shell works without."""
        try:
            await self.runner.ensure_started()
        except DesktopError as exc:
            log.warning("starting a shell without a desktop: %s", exc)

    # -- HTTP side -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Return the unauthenticated status document (no secrets, does not start the desktop)."""
        native = self.desktop.native_size
        declared = scaling.declared_size(*native)
        return {
            "status": "ok",
            "backend": self.desktop.name,
            "desktop": "running" if self.desktop.is_running() else "stopped",
            "display": {"width": native[0], "height": native[1]},
            "declared": {"width": declared[0], "height": declared[1]},
            "x_display": self.desktop.x_display,
        }

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer /health, 404 and 401 before the WebSocket handshake; None lets it proceed."""
        path = request.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            return _json_response(connection, HTTPStatus.OK, self.health())
        if path not in (RPC_PATH, VNC_PATH):
            return _json_response(connection, HTTPStatus.NOT_FOUND, {"detail": "Not found."})
        if not bearer_token_matches(request.headers.get("Authorization"), self._token):
            response = _json_response(
                connection, HTTPStatus.UNAUTHORIZED, {"detail": "Missing or invalid agent token."}
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="chatdesk-agent"'
            return response
        return None

    async def handler(self, connection: ServerConnection) -> None:
        """Route an authenticated WebSocket to its handler."""
        path = connection.request.path.split("?", 1)[0] if connection.request else ""
        if path == VNC_PATH:
            await self._vnc(connection)
        else:
            await self._rpc(connection)

    # -- RPC ---------------------------------------------------------------------------------------

    async def _rpc(self, ws: ServerConnection) -> None:
        """Serve JSON calls on one connection, in the order they arrive (clients may pipeline).

        A call runs only while its caller is there: when the connection closes (the caller gave up,
        or died), the running call is cancelled, so an action never goes on typing for nobody.
        """
        closed = asyncio.ensure_future(ws.wait_closed())
        try:
            async for message in ws:
                call = asyncio.ensure_future(self._answer(message, ws))
                await asyncio.wait((call, closed), return_when=asyncio.FIRST_COMPLETED)
                if not call.done():
                    call.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await call
                    log.info("RPC caller left; its call was cancelled")
                    return
                try:
                    await ws.send(json.dumps(call.result()))
                except ConnectionClosed:
                    return
        finally:
            closed.cancel()

    async def _answer(self, message: str | bytes, ws: ServerConnection | None = None) -> dict[str, Any]:
        """Return the reply to one request frame: its result, or an error the caller can read.

        A call that streams (``bash``) sends ``{"id", "progress"}`` frames on ``ws`` before its reply.
        """
        request_id: Any = None
        try:
            if isinstance(message, bytes):
                raise ActionError("Send requests as text frames containing JSON.")
            try:
                request = json.loads(message)
            except ValueError:
                raise ActionError("Request is not valid JSON.") from None
            if not isinstance(request, dict):
                raise ActionError("Request must be a JSON object.")
            request_id = request.get("id")

            async def progress(payload: dict[str, Any], request_id: Any = request_id) -> None:
                if ws is not None:
                    await ws.send(json.dumps({"id": request_id, "progress": payload}))

            return {
                "id": request_id,
                "result": await self._call(request.get("method"), request.get("params") or {}, progress),
            }
        except ActionError as exc:
            return {"id": request_id, "error": {"code": "invalid_request", "message": exc.message}}
        except DesktopError as exc:
            log.warning("desktop error: %s", exc)
            return {"id": request_id, "error": {"code": "desktop_unavailable", "message": str(exc)}}
        except Exception:
            log.exception("RPC call failed")
            return {"id": request_id, "error": {"code": "internal", "message": "Internal agent error."}}

    async def _call(self, method: object, params: Any, progress: Progress | None = None) -> Any:
        if not isinstance(params, dict):
            raise ActionError('"params" must be a JSON object.')
        if method == "action":
            return await self.runner.action(params)
        if method == "bash":

            async def output(text: str) -> None:
                if progress is not None:
                    await progress({"output": text})

            return await self.shells.bash(params, on_output=output)
        if method == "edit":
            return await self.editor.run(params)
        if method == "screenshot":
            return await self.runner.screenshot(params.get("width"), params.get("height"))
        if method == "info":
            return await self.runner.info()
        if method == "health":
            return self.health()
        if method == "recording_start":
            await self.runner.ensure_started()
            return await self.recorder.start(
                fps=params.get("fps"),
                max_bytes=params.get("max_bytes"),
                max_seconds=params.get("max_seconds"),
            )
        if method == "recording_stop":
            return await self.recorder.stop(params.get("id"), thumbnail=self._thumbnail)
        if method == "recording_read":
            return self.recorder.read(params.get("id"), params.get("offset"), params.get("length"))
        if method == "recording_delete":
            return await self.recorder.delete(params.get("id"))
        raise ActionError(f"Unknown method: {actionspec.clip(method)}")

    async def _thumbnail(self) -> bytes:
        """Return a small PNG of the screen now (a recording's thumbnail: its last frame)."""
        async with self.runner.lock:  # one request at a time on the desktop's X connection
            frame = await self.desktop.grab()
        size = (THUMBNAIL_WIDTH, max(1, round(frame.height * THUMBNAIL_WIDTH / frame.width)))
        return await asyncio.to_thread(encode_png, frame, size)

    # -- VNC ---------------------------------------------------------------------------------------

    async def _vnc(self, ws: ServerConnection) -> None:
        """Copy raw RFB bytes between this viewer and its own connection to the VNC server."""
        try:
            await self.runner.ensure_started()
            vnc = await self.desktop.open_vnc()
        except DesktopError as exc:
            log.warning("VNC viewer refused: %s", exc)
            await ws.close(1011, str(exc)[:120])
            return
        try:
            await relay_vnc(ws, vnc)
        finally:
            vnc.close()
            await ws.close()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> Server:
        """Listen on host:port and return the websockets Server."""
        self._server = await serve(
            self.handler,
            host,
            port,
            process_request=self.process_request,
            compression=None,  # RFB and PNG bytes do not deflate usefully; save the CPU
            max_size=MAX_REQUEST_BYTES,
            max_queue=16,
            write_limit=VNC_WRITE_LIMIT,
            ping_interval=20,
            ping_timeout=20,
            server_header="chatdesk-agent",
        )
        return self._server

    async def close(self) -> None:
        """Stop listening, close every connection, then stop the shells and the desktop."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.recorder.close()
        await self.shells.close_all()
        await self.desktop.stop()
