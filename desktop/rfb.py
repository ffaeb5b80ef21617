"""An incremental filter for the client→server half of an RFB (VNC) stream.

Why it exists: only a viewer whose user holds the desktop (desktop/control.py) may send it input, and
that must hold against a modified client. noVNC's own view-only switch is a courtesy of the browser;
the trust boundary is the proxy, so the proxy parses what every browser sends and drops every
input-bearing message itself while that viewer is view-only.

``view_only`` can be switched at any moment, between or inside ``feed`` calls (the holder changes while
viewers stay connected). The filter decides once per message, when its header is complete: a message
whose header completes while the filter is view-only is dropped whole, body included, even if the
switch comes before its body does; one whose header completed before is forwarded whole. So a switch
never splits a message and never desynchronises the parser: upstream sees whole messages only.

The filter is fed WebSocket payloads as they arrive; message boundaries and frame boundaries are
unrelated (one frame may hold half a message or ten), so it is a small state machine that keeps only
the header bytes of the message in progress and streams bodies through. Whatever the split of the
input, the concatenated output is the same: whole client messages in their original order, minus the
dropped ones. Because every forwarded message is complete and self-delimiting, the server parses the
forwarded stream exactly as the filter did; a client cannot smuggle a KeyEvent inside a message the
filter believed to be something else.

Sizes (RFC 6143 §7 and the community extensions in rfbproto, as noVNC 1.7 sends them):

====  =========================  ==========================================  ==================
type  message                    size in bytes                               view-only viewer
====  =========================  ==========================================  ==================
0     SetPixelFormat             20                                          forwarded
2     SetEncodings               4 + 4 * count (u16 at offset 2)             forwarded
3     FramebufferUpdateRequest   10                                          forwarded
4     KeyEvent                   8                                           dropped
5     PointerEvent               6; 7 with the ExtendedMouseButtons marker   dropped
6     ClientCutText              8 + |length| (s32 at offset 4; < 0 is the   dropped
                                 extended-clipboard form)
150   EnableContinuousUpdates    10                                          forwarded
248   ClientFence                9 + length (u8 at offset 8, ≤ 64)           forwarded
250   xvp                        4 (power control: shutdown/reboot/reset)    dropped
251   SetDesktopSize             8 + 16 * screens (u8 at offset 6)           dropped
253   gii                        4 + length (u16 at offset 2, endianness in  dropped
                                 bit 7 of byte 1)
255   QEMU: 0 extended KeyEvent  12                                          dropped
255   QEMU: 1 audio              4 (op 0/1 enable/disable), 10 (op 2 format) forwarded
====  =========================  ==========================================  ==================

Anything else (an unknown type, an unknown QEMU sub-type, an over-long cut text or fence payload, a
bad ProtocolVersion, a security type this module cannot follow) raises :class:`RfbProtocolError`: the
stream can no longer be parsed safely, so the viewer is dropped.

The handshake before those messages (RFC 6143 §7.1-7.3), client side only:

* ProtocolVersion: 12 bytes, ``RFB xxx.yyy\\n``.
* Security: for 3.7 and 3.8 the client sends its chosen type, 1 byte. For 3.3 the *server* picks the
  type (a u32 after its own ProtocolVersion), so the filter is given the server's first bytes through
  :meth:`RfbClientFilter.observe_server`. Type 1 (None) adds nothing; type 2 (VNC authentication)
  adds the client's 16-byte DES response. Other types (VeNCrypt, Tight, RA2, …) wrap the stream in
  sub-protocols or encryption that this filter does not follow; they are refused. The workspace agent's
  Xvnc offers only None; VNC authentication is handled for servers that use it.
* ClientInit: 1 byte, the shared flag. A view-only viewer's flag is forced to 1 (shared), and every
  viewer's with ``always_shared`` (the proxy's choice): an exclusive ClientInit would make the server
  disconnect every other viewer.
"""

from __future__ import annotations

import re
import struct
from enum import Enum, auto

MAX_CUT_TEXT = 1 << 20  # ClientCutText payloads over 1 MiB are refused (a paste, not a file transfer)
MAX_FENCE_PAYLOAD = 64  # rfbproto: "length ... must be no more than 64"

PROTOCOL_VERSION_LENGTH = 12
SERVER_HEAD_LENGTH = 16  # server ProtocolVersion (12) + RFB 3.3's u32 security type (4)
VNC_AUTH_RESPONSE_LENGTH = 16

SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2

# Pseudo-encoding a client lists in SetEncodings before it may send 7-byte PointerEvents.
ENCODING_EXTENDED_MOUSE_BUTTONS = -316

MSG_SET_PIXEL_FORMAT = 0
MSG_SET_ENCODINGS = 2
MSG_FRAMEBUFFER_UPDATE_REQUEST = 3
MSG_KEY_EVENT = 4
MSG_POINTER_EVENT = 5
MSG_CLIENT_CUT_TEXT = 6
MSG_ENABLE_CONTINUOUS_UPDATES = 150
MSG_CLIENT_FENCE = 248
MSG_XVP = 250
MSG_SET_DESKTOP_SIZE = 251
MSG_GII = 253
MSG_QEMU = 255

QEMU_EXTENDED_KEY_EVENT = 0
QEMU_AUDIO = 1

# Messages a view-only viewer may not send: they move the pointer, type, paste, or change the
# machine or the shared desktop (power control, desktop size).
INPUT_MESSAGES = frozenset(
    {MSG_KEY_EVENT, MSG_POINTER_EVENT, MSG_CLIENT_CUT_TEXT, MSG_XVP, MSG_SET_DESKTOP_SIZE, MSG_GII}
)

_VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n")


class RfbProtocolError(ValueError):
    """The client's RFB stream is malformed or uses something the filter cannot follow.

    ``str(exc)`` is a short reason safe to show to the viewer (it holds no stream content beyond
    message type numbers).
    """


class _Phase(Enum):
    VERSION = auto()
    SECURITY = auto()
    VNC_AUTH = auto()
    CLIENT_INIT = auto()
    MESSAGES = auto()


class RfbClientFilter:
    """Parse a client→server RFB stream incrementally; drop input messages while ``view_only``.

    With ``view_only=False`` the filter still validates the stream but forwards everything. Assigning
    ``view_only`` takes effect from the next message whose header completes (see the module docstring).
    ``dropped_messages`` counts the messages dropped so far.
    """

    def __init__(self, *, view_only: bool = True, always_shared: bool = False) -> None:
        self.view_only = view_only
        self.always_shared = always_shared
        self.phase = _Phase.VERSION
        self.minor_version = 0
        self.security_type: int | None = None
        self.extended_mouse_buttons = False
        self._header = bytearray()  # bytes of the handshake step or message header in progress
        self._body_left = 0  # bytes of the current message's body still to come
        self._forward_body = True
        self._server_head = bytearray()
        self.dropped_messages = 0

    # -- server side ---------------------------------------------------------------------------------

    def observe_server(self, data: bytes) -> None:
        """Record the first bytes the server sent (needed only for RFB 3.3's server-chosen security)."""
        if len(self._server_head) < SERVER_HEAD_LENGTH:
            self._server_head += data[: SERVER_HEAD_LENGTH - len(self._server_head)]

    @property
    def needs_server_bytes(self) -> bool:
        """Return True while :meth:`observe_server` still wants the server's bytes."""
        return len(self._server_head) < SERVER_HEAD_LENGTH and self.phase in (_Phase.VERSION, _Phase.SECURITY)

    # -- client side ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Return the part of ``data`` to forward to the server.

        Raise RfbProtocolError when the stream is malformed; the filter is then unusable.
        """
        out: list[bytes | memoryview] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._body_left:
                take = min(self._body_left, end - pos)
                if self._forward_body:
                    out.append(view[pos : pos + take])
                self._body_left -= take
                pos += take
                continue
            self._header.append(view[pos])
            pos += 1
            self._step(out)
        return b"".join(out)

    def _step(self, out: list[bytes | memoryview]) -> None:
        """Act on ``self._header`` once it holds a whole handshake step or message header."""
        header = self._header
        if self.phase is _Phase.MESSAGES:
            length, body = self._message_size(header)
            if length is None:
                return  # need more header bytes
            forward = not (self.view_only and self._is_input(header))
            if forward:
                out.append(bytes(header))
            else:
                self.dropped_messages += 1
            self._forward_body = forward
            self._body_left = body
            header.clear()
            return
        if self.phase is _Phase.VERSION:
            if len(header) < PROTOCOL_VERSION_LENGTH:
                return
            match = _VERSION_RE.fullmatch(bytes(header))
            if match is None or match.group(1) != b"003":
                raise RfbProtocolError("bad ProtocolVersion")
            minor = int(match.group(2))
            # RFC 6143 §7.1.1: 3.7 and 3.8 are the real versions; anything else behaves as 3.3
            # (3.889, Apple's, behaves as 3.8).
            self.minor_version = 8 if minor >= 8 else 7 if minor == 7 else 3
            out.append(bytes(header))
            header.clear()
            self.phase = _Phase.SECURITY
            return
        if self.phase is _Phase.SECURITY:
            if self.minor_version == 3:
                # The server chose already; the client says nothing for None, so this first byte
                # belongs to whatever follows the security step.
                self._choose_security(self._server_security_type())
                self._step(out)
                return
            self._choose_security(header[0])
            out.append(bytes(header))
            header.clear()
            return
        if self.phase is _Phase.VNC_AUTH:
            if len(header) < VNC_AUTH_RESPONSE_LENGTH:
                return
            out.append(bytes(header))
            header.clear()
            self.phase = _Phase.CLIENT_INIT
            return
        if self.phase is _Phase.CLIENT_INIT:
            # The shared flag: a view-only viewer must not take the desktop exclusively.
            out.append(b"\x01" if self.view_only or self.always_shared else bytes(header))
            header.clear()
            self.phase = _Phase.MESSAGES
            return
        raise AssertionError(self.phase)  # pragma: no cover

    def _server_security_type(self) -> int:
        if len(self._server_head) < SERVER_HEAD_LENGTH:
            raise RfbProtocolError("client spoke before the server chose a security type")
        (security,) = struct.unpack_from(">I", self._server_head, PROTOCOL_VERSION_LENGTH)
        return int(security)

    def _choose_security(self, security: int) -> None:
        if security == SECURITY_NONE:
            self.phase = _Phase.CLIENT_INIT
        elif security == SECURITY_VNC_AUTH:
            self.phase = _Phase.VNC_AUTH
        else:
            raise RfbProtocolError(f"unsupported security type {security}")
        self.security_type = security

    def _is_input(self, header: bytearray) -> bool:
        kind = header[0]
        if kind == MSG_QEMU:
            return header[1] == QEMU_EXTENDED_KEY_EVENT
        return kind in INPUT_MESSAGES

    def _message_size(self, header: bytearray) -> tuple[int | None, int]:
        """Return (header length, body length) once ``header`` is long enough to know; else (None, 0).

        The header is kept whole (and forwarded in one piece); the body is streamed. Raise
        RfbProtocolError for an unknown or oversized message.
        """
        kind = header[0]
        have = len(header)
        fixed = _FIXED_SIZES.get(kind)
        if fixed is not None:
            return (fixed, 0) if have >= fixed else (None, 0)
        if kind == MSG_POINTER_EVENT:
            size = 7 if self.extended_mouse_buttons and have >= 2 and header[1] & 0x80 else 6
            return (size, 0) if have >= size else (None, 0)
        if kind == MSG_SET_ENCODINGS:
            if have < 4:
                return None, 0
            (count,) = struct.unpack_from(">H", header, 2)
            size = 4 + 4 * count
            if have < size:
                return None, 0  # small (≤ 256 KiB) and needed whole to look for pseudo-encodings
            encodings = struct.unpack_from(f">{count}i", header, 4)
            if ENCODING_EXTENDED_MOUSE_BUTTONS in encodings:
                self.extended_mouse_buttons = True
            return size, 0
        if kind == MSG_CLIENT_CUT_TEXT:
            if have < 8:
                return None, 0
            (length,) = struct.unpack_from(">i", header, 4)
            length = abs(length)  # negative: extended clipboard, same framing
            if length > MAX_CUT_TEXT:
                raise RfbProtocolError("ClientCutText too long")
            return 8, length
        if kind == MSG_CLIENT_FENCE:
            if have < 9:
                return None, 0
            if header[8] > MAX_FENCE_PAYLOAD:
                raise RfbProtocolError("ClientFence payload too long")
            return 9, header[8]
        if kind == MSG_SET_DESKTOP_SIZE:
            if have < 8:
                return None, 0
            return 8, 16 * header[6]
        if kind == MSG_GII:
            if have < 4:
                return None, 0
            big_endian = bool(header[1] & 0x80)
            (length,) = struct.unpack_from(">H" if big_endian else "<H", header, 2)
            return 4, length
        if kind == MSG_QEMU:
            if have < 2:
                return None, 0
            sub = header[1]
            if sub == QEMU_EXTENDED_KEY_EVENT:
                return (12, 0) if have >= 12 else (None, 0)
            if sub == QEMU_AUDIO:
                if have < 4:
                    return None, 0
                (op,) = struct.unpack_from(">H", header, 2)
                if op in (0, 1):
                    return 4, 0
                if op == 2:
                    return (10, 0) if have >= 10 else (None, 0)
                raise RfbProtocolError(f"unknown QEMU audio operation {op}")
            raise RfbProtocolError(f"unknown QEMU message sub-type {sub}")
        raise RfbProtocolError(f"unknown client message type {kind}")


_FIXED_SIZES = {
    MSG_SET_PIXEL_FORMAT: 20,
    MSG_FRAMEBUFFER_UPDATE_REQUEST: 10,
    MSG_KEY_EVENT: 8,
    MSG_ENABLE_CONTINUOUS_UPDATES: 10,
    MSG_XVP: 4,
}
