"""``chatdesk-agent``: the workspace agent's command line.

Parses flags (each with an environment-variable alternative), then runs the API server and the
heartbeat loop until SIGTERM/SIGINT, and finally stops the desktop so no process is left behind.

The token never appears on a command line (every local user can read those in ``ps``): it comes from
a private file (``--token-file``) or the environment (``CHATDESK_AGENT_TOKEN``). Run as root, the agent
needs ``--desktop-user``: see ``agents.daemon.boundary`` for what that and the rest of the boundary buy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from agents.daemon.backends import BACKENDS, create_desktop, resolve_backend
from agents.daemon.boundary import BoundaryError, DesktopUser, make_undumpable, read_token_file
from agents.daemon.heartbeat import DEFAULT_INTERVAL, heartbeat_loop, heartbeat_stopping
from agents.daemon.server import AgentServer

log = logging.getLogger("chatdesk_agent")

DEFAULT_LISTEN = "127.0.0.1:7420"
DEFAULT_GEOMETRY = "1280x800"

DESCRIPTION = """\
Workspace agent for chatdesk: keeps one Linux desktop (TigerVNC Xvnc + openbox + xdotool, or
portabledesktop) and serves it to the chatdesk server over WebSockets — the VNC stream, computer
actions with settled screenshots, and screenshots — only to callers presenting the agent token.
It heartbeats to the server every few seconds with its URL and display size.
"""

EPILOG = """\
environment variables (used when the matching flag is absent):
  CHATDESK_AGENT_TOKEN_FILE  a file holding the agent token (mode 0600)
  CHATDESK_AGENT_TOKEN     the agent token itself, when there is no token file
  CHATDESK_AGENT_DESKTOP_USER  the user the desktop runs as (required when the agent runs as root)
  CHATDESK_SERVER          the chatdesk server URL
  CHATDESK_AGENT_LISTEN    HOST:PORT to listen on
  CHATDESK_AGENT_GEOMETRY  desktop size WxH
  CHATDESK_AGENT_BACKEND   auto, xvnc or portabledesktop
  CHATDESK_AGENT_ADVERTISE_URL  URL the server should use to reach this agent

The token is never accepted on the command line (any local user can read it in `ps`). Save it once
in a file only you can read, then point the agent at it:

  (umask 077; cat > ~/.chatdesk-agent-token)     # paste the token, then Ctrl+D
  chatdesk-agent --server URL --token-file ~/.chatdesk-agent-token

routes: GET /health (no auth), WebSocket /rpc (JSON calls), WebSocket /vnc (raw RFB bytes);
see agents/daemon/PROTOCOL.md. The desktop starts on first use.
"""


def parse_geometry(value: str) -> tuple[int, int]:
    """Return (width, height) from "WxH"; raise ArgumentTypeError (exit 2) when malformed."""
    try:
        width_text, height_text = value.lower().split("x")
        width, height = int(width_text), int(height_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid geometry {value!r}: expected WxH, e.g. 1280x800") from None
    if not (64 <= width <= 8192 and 64 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"invalid geometry {value!r}: each side must be 64..8192 pixels")
    return width, height


def parse_listen(value: str) -> tuple[str, int]:
    """Return (host, port) from "HOST:PORT" (IPv6 as "[::1]:PORT"); raise ArgumentTypeError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid listen address {value!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}"
        )
    return host.strip("[]"), int(port_text)


def parse_url(value: str) -> str:
    """Return an http(s) URL unchanged; raise ArgumentTypeError for anything else."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"invalid server URL {value!r}: expected http(s)://host[:port]")
    return value.rstrip("/")


def parse_positive(value: str) -> float:
    """Return a positive number of seconds; raise ArgumentTypeError."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"invalid interval {value!r}: expected seconds in (0, 3600]")
    return number


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (defaults come from environment variables, then constants)."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="chatdesk-agent",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server",
        type=parse_url,
        default=env("CHATDESK_SERVER"),
        help="chatdesk server base URL, e.g. http://127.0.0.1:8000 (env CHATDESK_SERVER)",
    )
    parser.add_argument(
        "--token-file",
        default=env("CHATDESK_AGENT_TOKEN_FILE"),
        metavar="FILE",
        help="file holding the agent token shown once when the agent was created; it must not be "
        "readable by other users (mode 0600). Without it, env CHATDESK_AGENT_TOKEN is used",
    )
    # Refused with a message saying why (a bare "unrecognized argument" would not).
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument(
        "--desktop-user",
        default=env("CHATDESK_AGENT_DESKTOP_USER"),
        metavar="USER",
        help="unprivileged account the desktop and every program on it run as; required when the agent "
        "runs as root, so those programs cannot read the agent's token (make run creates chatdesk-desktop)",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=env("CHATDESK_AGENT_LISTEN", DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to serve the agent API on (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--geometry",
        type=parse_geometry,
        default=env("CHATDESK_AGENT_GEOMETRY", DEFAULT_GEOMETRY),
        metavar="WxH",
        help=f"native desktop size (default {DEFAULT_GEOMETRY})",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=env("CHATDESK_AGENT_BACKEND", "auto"),
        help="desktop backend: auto = portabledesktop when on PATH, else xvnc (default auto)",
    )
    parser.add_argument(
        "--advertise-url",
        default=env("CHATDESK_AGENT_ADVERTISE_URL"),
        metavar="URL",
        help="URL the server should use to reach this agent (default ws://HOST:PORT from --listen)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=parse_positive,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between heartbeats (default {DEFAULT_INTERVAL:g}; failures back off exponentially "
        "up to 30)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log verbosity on stderr (default INFO)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check arguments; exit 2 with a clear message when they are wrong."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # String defaults from the environment go through the type functions too.
    for name, func in (("listen", parse_listen), ("geometry", parse_geometry)):
        if isinstance(getattr(args, name), str):
            try:
                setattr(args, name, func(getattr(args, name)))
            except argparse.ArgumentTypeError as exc:
                parser.error(str(exc))
    if isinstance(args.server, str) and args.server == os.environ.get("CHATDESK_SERVER"):
        try:
            args.server = parse_url(args.server)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    if not args.server:
        parser.error("the chatdesk server URL is required: --server URL or CHATDESK_SERVER")
    if args.token is not None:
        parser.error(
            "--token is not accepted: every local user can read a command line in `ps`. "
            "Save the token in a file only you can read and pass --token-file FILE "
            "(or set CHATDESK_AGENT_TOKEN)"
        )
    try:
        if args.token_file:
            args.token = read_token_file(args.token_file)
        else:
            args.token = os.environ.get("CHATDESK_AGENT_TOKEN", "").strip()
        if not args.token:
            parser.error("the agent token is required: --token-file FILE or CHATDESK_AGENT_TOKEN")
        args.desktop_user = desktop_user(args.desktop_user)
    except BoundaryError as exc:
        parser.error(str(exc))
    if args.backend not in BACKENDS:
        parser.error(f"invalid backend {args.backend!r}: choose from {', '.join(BACKENDS)}")
    if args.advertise_url is None:
        host, port = args.listen
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        args.advertise_url = f"ws://{f'[{host}]' if ':' in host else host}:{port}"
    return args


def desktop_user(name: str | None) -> DesktopUser:
    """Return the account the desktop runs as. Raise BoundaryError when it cannot be used, and when
    the agent runs as root without one (its desktop's programs would be root and could read the token)."""
    if name:
        return DesktopUser.named(name)
    if os.geteuid() == 0:
        raise BoundaryError(
            "chatdesk-agent runs as root: give --desktop-user USER, an unprivileged account the desktop "
            "runs as, so programs on the desktop cannot read the agent's token "
            "(e.g. `useradd --system --create-home chatdesk-desktop`; make run creates it)"
        )
    return DesktopUser.current()


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status."""
    desktop = create_desktop(args.backend, args.geometry, user=args.desktop_user)
    await desktop.sweep_stale()
    server = AgentServer(desktop=desktop, token=args.token)
    host, port = args.listen
    try:
        listening = await server.start(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    bound = next(iter(listening.sockets)).getsockname()
    log.info(
        "chatdesk-agent listening on %s:%d (backend %s, geometry %dx%d, advertised as %s, desktop user %s)",
        bound[0], bound[1], desktop.name, *args.geometry, args.advertise_url, args.desktop_user.name,
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heartbeat = asyncio.create_task(
        heartbeat_loop(
            server=args.server,
            token=args.token,
            advertise_url=args.advertise_url,
            display=lambda: desktop.native_size,
            interval=args.heartbeat_interval,
        )
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        # Tell the server at once (it would notice a missing heartbeat only after its timeout).
        await heartbeat_stopping(server=args.server, token=args.token, advertise_url=args.advertise_url)
        await server.close()
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chatdesk-agent`` console script."""
    args = parse_args(argv)
    # Desktop programs get an allowlisted environment anyway; drop the token from ours too, and keep
    # this process's /proc files and memory from its own user (see agents.daemon.boundary).
    os.environ.pop("CHATDESK_AGENT_TOKEN", None)
    undumpable = make_undumpable()
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s chatdesk-agent %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    log.debug("backend %s resolved to %s", args.backend, resolve_backend(args.backend))
    if not undumpable:
        log.warning("could not mark the agent non-dumpable: its own user may read its memory")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
