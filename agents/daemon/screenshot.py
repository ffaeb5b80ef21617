"""Screen capture straight from the X server, settling, and PNG encoding.

Captures are read in-process over the X11 protocol (a core ``GetImage`` on the root window), with
a small asyncio client written against the X11 wire format instead of Xlib/mss: Xlib's default
I/O-error handler calls ``exit()`` when the X server goes away, and a desktop that dies under us
must be restarted, not take the agent down with it. The client speaks only the three requests it
needs (connection setup, ``GetImage``, ``QueryPointer``) and never blocks the event loop.

A *settled* screenshot is taken after an action: captures are grabbed a short interval apart until
two consecutive ones are byte-identical, bounded by a maximum wait. If the screen still equals
the capture from before the action, it must stay unchanged for a short quiet period, so an
application that reacts a few milliseconds late is not photographed before it draws.
"""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from PIL import Image

PNG_COMPRESS_LEVEL = 1  # fastest zlib level: screenshots are latency-bound, not size-bound


class XProtocolError(Exception):
    """The X server refused a connection or answered a request with an error."""


@dataclass(frozen=True)
class Capture:
    """One raw capture: ``data`` is ``width * height`` pixels in Pillow raw ``mode``."""

    width: int
    height: int
    data: bytes
    mode: str = "BGRX"

    def image(self) -> Image.Image:
        """Return the capture as an RGB Pillow image (sharing no state with the capture)."""
        if self.mode == "PNG":
            with Image.open(io.BytesIO(self.data)) as img:
                return img.convert("RGB")
        return Image.frombuffer("RGB", (self.width, self.height), self.data, "raw", self.mode, 0, 1)


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


class XConnection:
    """A minimal asyncio X11 client for one display (unix socket, MIT-MAGIC-COOKIE-1 auth).

    Replies are received straight into a preallocated buffer with ``sock_recv_into``: a full
    screen is several megabytes, and going through a StreamReader would copy it chunk by chunk.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()  # one request in flight: replies then arrive in order
        self.root = 0
        self.width = 0
        self.height = 0
        self.depth = 0
        self.bits_per_pixel = 0

    @classmethod
    async def open(cls, display: str, cookie: bytes | None, *, time_limit: float = 5.0) -> XConnection:
        """Connect to ``display`` (":N") and complete the setup handshake.

        Raise XProtocolError when the server refuses us, OSError when it cannot be reached.
        """
        number = display.lstrip(":").split(".")[0]
        path = f"/tmp/.X11-unix/X{number}"  # noqa: S108 - the X11 convention, not a temp file
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = cls(sock)
        try:
            await asyncio.wait_for(conn._loop.sock_connect(sock, path), time_limit)
            await asyncio.wait_for(conn._setup(cookie), time_limit)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _recv_exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        received = 0
        while received < size:
            n = await self._loop.sock_recv_into(self._sock, view[received:])
            if n == 0:
                raise ConnectionResetError("X server closed the connection")
            received += n
        return buffer

    async def _setup(self, cookie: bytes | None) -> None:
        name = b"MIT-MAGIC-COOKIE-1" if cookie else b""
        data = cookie or b""
        request = struct.pack("<BxHHHHxx", 0x6C, 11, 0, len(name), len(data))
        request += name + b"\0" * _pad(len(name)) + data + b"\0" * _pad(len(data))
        await self._loop.sock_sendall(self._sock, request)
        head = await self._recv_exactly(8)
        status, reason_len, _major, _minor, extra_units = struct.unpack("<BBHHH", head)
        body = bytes(await self._recv_exactly(extra_units * 4))
        if status != 1:
            reason = body[:reason_len] if status == 0 else body
            raise XProtocolError(
                f"X server refused the connection: {reason.decode(errors='replace').strip()}"
            )
        (vendor_len,) = struct.unpack_from("<H", body, 16)
        n_screens, n_formats, image_byte_order = struct.unpack_from("<BBB", body, 20)
        offset = 32 + vendor_len + _pad(vendor_len)
        formats = {}
        for i in range(n_formats):
            depth, bpp, _scanline_pad = struct.unpack_from("<BBB", body, offset + 8 * i)
            formats[depth] = bpp
        offset += 8 * n_formats
        if n_screens < 1:
            raise XProtocolError("X server has no screen.")
        self.root = struct.unpack_from("<I", body, offset)[0]
        self.width, self.height = struct.unpack_from("<HH", body, offset + 20)
        self.depth = body[offset + 38]
        self.bits_per_pixel = formats.get(self.depth, 0)
        if self.bits_per_pixel != 32 or image_byte_order != 0:
            raise XProtocolError(
                f"Unsupported X visual: depth {self.depth}, {self.bits_per_pixel} bits per pixel; run the "
                "desktop at depth 24."
            )

    async def _request(self, payload: bytes) -> tuple[bytes, bytearray]:
        """Send one request; return its reply's 32-byte header and extra data."""
        async with self._lock:
            await self._loop.sock_sendall(self._sock, payload)
            while True:
                head = bytes(await self._recv_exactly(32))
                kind = head[0]
                if kind == 0:
                    raise XProtocolError(f"X error {head[1]} for request {head[10]}.")
                if kind == 1:
                    (extra_units,) = struct.unpack_from("<I", head, 4)
                    extra = await self._recv_exactly(extra_units * 4) if extra_units else bytearray()
                    return head, extra
                # An event (we select none, but the protocol allows them): skip it.

    async def get_image(
        self, x: int = 0, y: int = 0, width: int | None = None, height: int | None = None
    ) -> Capture:
        """Return the root window's pixels (BGRX) in the given rectangle (default: all of it)."""
        w = self.width if width is None else width
        h = self.height if height is None else height
        _head, data = await self._request(
            struct.pack("<BBHIhhHHI", 73, 2, 5, self.root, x, y, w, h, 0xFFFFFFFF)
        )
        if len(data) > w * h * 4:
            del data[w * h * 4 :]
        return Capture(width=w, height=h, data=bytes(data), mode="BGRX")

    async def query_pointer(self) -> tuple[int, int, int]:
        """Return the pointer's root position and its key/button mask (Shift=1, Control=4, Button1=256, …)."""
        head, _extra = await self._request(struct.pack("<BxHI", 38, 2, self.root))
        root_x, root_y, _win_x, _win_y, mask = struct.unpack_from("<hhhhH", head, 16)
        return root_x, root_y, mask

    async def intern_atom(self, name: str, *, only_if_exists: bool = True) -> int:
        """Return the atom named ``name`` (0 when it does not exist and ``only_if_exists``)."""
        encoded = name.encode()
        units = 2 + (len(encoded) + _pad(len(encoded))) // 4
        head, _extra = await self._request(
            struct.pack("<BBHHxx", 16, int(only_if_exists), units, len(encoded))
            + encoded
            + b"\0" * _pad(len(encoded))
        )
        return int(struct.unpack_from("<I", head, 8)[0])

    async def root_property_window(self, atom: int) -> int | None:
        """Return the WINDOW value of the root window's property ``atom``, or None when it is unset."""
        # GetProperty(delete=False, window=root, property=atom, type=WINDOW(33), offset 0, length 1)
        head, extra = await self._request(struct.pack("<BBHIIIII", 20, 0, 6, self.root, atom, 33, 0, 1))
        fmt, (value_len,) = head[1], struct.unpack_from("<I", head, 16)
        if fmt != 32 or value_len < 1 or len(extra) < 4:
            return None
        return int(struct.unpack_from("<I", extra, 0)[0])

    async def root_property_cardinals(self, atom: int, *, count: int = 64) -> list[int]:
        """Return the first ``count`` CARDINAL values of the root window's property ``atom`` ([] when unset)."""
        # GetProperty(delete=False, window=root, property=atom, type=CARDINAL(6), offset 0, length count)
        head, extra = await self._request(struct.pack("<BBHIIIII", 20, 0, 6, self.root, atom, 6, 0, count))
        fmt, (value_len,) = head[1], struct.unpack_from("<I", head, 16)
        if fmt != 32 or value_len < 1:
            return []
        return list(struct.unpack_from(f"<{value_len}I", extra, 0))

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()


Grab = Callable[[], Awaitable[Capture]]


@dataclass(frozen=True)
class SettleConfig:
    """How to decide that the screen has settled after an action (seconds)."""

    interval: float = 0.025
    quiet: float = 0.1
    timeout: float = 1.5


async def settled_grab(grab: Grab, *, before: Capture | None, config: SettleConfig) -> Capture:
    """Grab until two consecutive captures are equal, at most ``config.timeout`` seconds.

    When the screen still equals ``before`` (the capture from before the action), it must also stay
    so for ``config.quiet`` seconds, to give a slow application time to react. Return the last capture.
    """
    start = time.monotonic()
    previous = await grab()
    while True:
        await asyncio.sleep(config.interval)
        current = await grab()
        elapsed = time.monotonic() - start
        if current.data == previous.data:
            unchanged = before is not None and current.data == before.data
            if not unchanged or elapsed >= config.quiet:
                return current
        if elapsed >= config.timeout:
            return current
        previous = current


def encode_png(
    capture: Capture, size: tuple[int, int] | None = None, crop: tuple[int, int, int, int] | None = None
) -> bytes:
    """Return ``capture`` (optionally cropped to native (x0, y0, x1, y1)) as PNG bytes at ``size``.

    Downscaling uses a box-aware bicubic filter so text stays legible to the model.
    """
    img = capture.image()
    if crop is not None:
        img = img.crop(crop)
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


def fit_within(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """Return the largest size with the aspect ratio of width x height that fits in ``box``."""
    scale = min(box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))
