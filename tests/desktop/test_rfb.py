"""The view-only RFB filter (desktop/rfb.py): sizes, drops, handshake variants, arbitrary splits."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desktop.rfb import MAX_CUT_TEXT, RfbClientFilter, RfbProtocolError

HANDSHAKE_38 = b"RFB 003.008\n" + b"\x01" + b"\x01"  # version, security None, ClientInit shared


def set_pixel_format() -> bytes:
    return (
        b"\x00\x00\x00\x00"
        + bytes([32, 24, 0, 1])
        + struct.pack(">HHH", 255, 255, 255)
        + bytes([16, 8, 0, 0, 0, 0])
    )


def set_encodings(*encodings: int) -> bytes:
    return struct.pack(">BBH", 2, 0, len(encodings)) + b"".join(struct.pack(">i", e) for e in encodings)


def fb_request(incremental: int = 1, w: int = 1024, h: int = 768) -> bytes:
    return struct.pack(">BBHHHH", 3, incremental, 0, 0, w, h)


def key_event(keysym: int = 0x61, down: int = 1) -> bytes:
    return struct.pack(">BBHI", 4, down, 0, keysym)


def pointer_event(x: int = 10, y: int = 20, mask: int = 0) -> bytes:
    return struct.pack(">BBHH", 5, mask, x, y)


def extended_pointer_event(x: int = 10, y: int = 20, high: int = 1) -> bytes:
    return struct.pack(">BBHHB", 5, 0x80, x, y, high)


def cut_text(text: bytes, *, extended: bool = False) -> bytes:
    length = -len(text) if extended else len(text)
    return struct.pack(">B3xi", 6, length) + text


def continuous_updates(enable: int = 1) -> bytes:
    return struct.pack(">BBHHHH", 150, enable, 0, 0, 1024, 768)


def client_fence(payload: bytes = b"abc") -> bytes:
    return struct.pack(">B3xIB", 248, 0x80000001, len(payload)) + payload


def xvp(op: int = 2) -> bytes:
    return bytes([250, 0, 1, op])


def set_desktop_size(screens: int = 1) -> bytes:
    return struct.pack(">BBHHBB", 251, 0, 800, 600, screens, 0) + b"\x00" * 16 * screens


def qemu_key(keysym: int = 0x61) -> bytes:
    return struct.pack(">BBHII", 255, 0, 1, keysym, 30)


def qemu_audio(op: int) -> bytes:
    return struct.pack(">BBH", 255, 1, op) + (b"\x03\x02\x00\x00\xac\x44" if op == 2 else b"")


def gii(payload: bytes = b"\x00" * 8, *, big_endian: bool = True) -> bytes:
    fmt = ">BBH" if big_endian else "<BBH"
    return struct.pack(fmt, 253, 0x80 if big_endian else 0, len(payload)) + payload


FORWARDED = [
    set_pixel_format(),
    set_encodings(0, 1, 7, -223, -239),
    fb_request(0),
    fb_request(1),
    continuous_updates(),
    client_fence(b""),
    client_fence(b"x" * 64),
    qemu_audio(0),
    qemu_audio(1),
    qemu_audio(2),
]
DROPPED = [
    key_event(),
    pointer_event(),
    cut_text(b"secret paste"),
    cut_text(b"\x00\x00\x00\x01", extended=True),
    xvp(),
    set_desktop_size(2),
    qemu_key(),
    gii(),
    gii(b"\x01\x02", big_endian=False),
]


def run(filter_: RfbClientFilter, chunks: list[bytes]) -> bytes:
    return b"".join(filter_.feed(chunk) for chunk in chunks)


def test_view_only_drops_input_and_forwards_the_rest_intact() -> None:
    stream = [HANDSHAKE_38]
    expected = [HANDSHAKE_38]
    for forwarded, dropped in zip(FORWARDED, DROPPED * 2, strict=False):
        stream += [forwarded, dropped]
        expected.append(forwarded)
    out = run(RfbClientFilter(view_only=True), [b"".join(stream)])
    assert out == b"".join(expected)


@pytest.mark.parametrize("message", DROPPED, ids=lambda m: f"type{m[0]}")
def test_each_input_message_is_dropped(message: bytes) -> None:
    filt = RfbClientFilter(view_only=True)
    out = run(filt, [HANDSHAKE_38 + message + fb_request()])
    assert out == HANDSHAKE_38 + fb_request()
    assert filt.dropped_messages == 1


@pytest.mark.parametrize("message", FORWARDED, ids=lambda m: f"type{m[0]}-{len(m)}")
def test_each_other_message_is_forwarded(message: bytes) -> None:
    out = run(RfbClientFilter(view_only=True), [HANDSHAKE_38 + message + key_event() + fb_request()])
    assert out == HANDSHAKE_38 + message + fb_request()


def test_controlling_filter_forwards_everything() -> None:
    stream = HANDSHAKE_38 + b"".join(FORWARDED + DROPPED)
    assert run(RfbClientFilter(view_only=False), [stream]) == stream


def test_view_only_client_init_is_forced_shared() -> None:
    out = run(RfbClientFilter(view_only=True), [b"RFB 003.008\n\x01\x00" + fb_request()])
    assert out == b"RFB 003.008\n\x01\x01" + fb_request()


def test_vnc_auth_response_is_forwarded_whole() -> None:
    response = bytes(range(16))
    stream = b"RFB 003.008\n\x02" + response + b"\x01" + pointer_event() + fb_request()
    filt = RfbClientFilter(view_only=True)
    assert run(filt, [stream]) == b"RFB 003.008\n\x02" + response + b"\x01" + fb_request()
    assert filt.security_type == 2


def test_rfb_33_uses_the_security_type_the_server_chose() -> None:
    filt = RfbClientFilter(view_only=True)
    assert filt.feed(b"RFB 003.003\n") == b"RFB 003.003\n"
    filt.observe_server(b"RFB 003.003\n")
    filt.observe_server(struct.pack(">I", 1))
    assert not filt.needs_server_bytes
    assert filt.feed(b"\x00" + key_event() + fb_request()) == b"\x01" + fb_request()


def test_rfb_33_with_vnc_auth() -> None:
    filt = RfbClientFilter(view_only=True)
    filt.observe_server(b"RFB 003.003\n\x00\x00\x00\x02")
    response = b"r" * 16
    out = filt.feed(b"RFB 003.003\n" + response + b"\x01" + pointer_event() + fb_request())
    assert out == b"RFB 003.003\n" + response + b"\x01" + fb_request()


def test_rfb_33_client_speaking_before_the_server_chose_is_malformed() -> None:
    filt = RfbClientFilter(view_only=True)
    filt.feed(b"RFB 003.003\n")
    with pytest.raises(RfbProtocolError, match="before the server"):
        filt.feed(b"\x01")


def test_extended_mouse_buttons_pointer_event_is_seven_bytes_once_negotiated() -> None:
    filt = RfbClientFilter(view_only=True)
    stream = HANDSHAKE_38 + set_encodings(0, -316) + extended_pointer_event() + pointer_event() + fb_request()
    assert run(filt, [stream]) == HANDSHAKE_38 + set_encodings(0, -316) + fb_request()
    assert filt.dropped_messages == 2


def test_without_negotiation_a_marked_pointer_event_is_six_bytes() -> None:
    # Not negotiated: the server reads 6 bytes too, so the filter must agree with it.
    event = struct.pack(">BBHH", 5, 0x81, 1, 2)
    out = run(RfbClientFilter(view_only=True), [HANDSHAKE_38 + event + fb_request()])
    assert out == HANDSHAKE_38 + fb_request()


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"RFB 003.008\r", "ProtocolVersion"),
        (b"HTTP/1.1 200", "ProtocolVersion"),
        (b"RFB 004.000\n", "ProtocolVersion"),
        (b"RFB 003.008\n\x13", "unsupported security type 19"),
        (b"RFB 003.008\n\x10", "unsupported security type 16"),
        (HANDSHAKE_38 + b"\x07", "unknown client message type 7"),
        (HANDSHAKE_38 + b"\x01", "unknown client message type 1"),
        (HANDSHAKE_38 + b"\xff\x05", "unknown QEMU message sub-type 5"),
        (HANDSHAKE_38 + b"\xff\x01\x00\x09", "unknown QEMU audio operation 9"),
        (HANDSHAKE_38 + struct.pack(">B3xi", 6, MAX_CUT_TEXT + 1), "ClientCutText too long"),
        (HANDSHAKE_38 + struct.pack(">B3xi", 6, -(MAX_CUT_TEXT + 1)), "ClientCutText too long"),
        (HANDSHAKE_38 + struct.pack(">B3xIB", 248, 0, 65), "ClientFence payload too long"),
    ],
)
def test_malformed_streams_are_refused(stream: bytes, reason: str) -> None:
    filt = RfbClientFilter(view_only=True)
    with pytest.raises(RfbProtocolError, match=reason):
        for i in range(len(stream)):  # byte by byte: the error comes as soon as it is knowable
            filt.feed(stream[i : i + 1])


def test_largest_cut_text_is_streamed_not_buffered() -> None:
    filt = RfbClientFilter(view_only=False)
    payload = b"p" * MAX_CUT_TEXT
    out = filt.feed(HANDSHAKE_38 + struct.pack(">B3xi", 6, len(payload)) + payload[:1000])
    assert out.endswith(payload[:1000])
    assert len(filt._header) == 0  # the body is not held while it is forwarded


# -- property: any split of a valid stream gives the same output -------------------------------------

FORWARDED_ALL = [*FORWARDED, set_encodings(*range(40))]
message_strategy = st.sampled_from(FORWARDED_ALL + DROPPED + [cut_text(b"z" * 300)])


@st.composite
def streams_and_splits(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    handshake = draw(
        st.sampled_from(
            [
                HANDSHAKE_38,
                b"RFB 003.007\n\x01\x00",
                b"RFB 003.008\n\x02" + b"k" * 16 + b"\x00",
                b"RFB 003.889\n\x01\x01",
            ]
        )
    )
    stream = handshake + b"".join(draw(st.lists(message_strategy, max_size=30)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=40)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return stream, chunks


@settings(max_examples=300, deadline=None)
@given(streams_and_splits(), st.booleans())
def test_any_split_gives_the_same_output(data: tuple[bytes, list[bytes]], view_only: bool) -> None:
    stream, chunks = data
    whole = RfbClientFilter(view_only=view_only).feed(stream)
    split = run(RfbClientFilter(view_only=view_only), chunks)
    assert split == whole
    if not view_only:
        assert whole == stream


@settings(max_examples=300, deadline=None)
@given(st.lists(message_strategy, max_size=30), st.data())
def test_view_only_output_is_exactly_the_non_input_messages(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = HANDSHAKE_38 + b"".join(messages)
    cut = data.draw(st.integers(0, len(stream)))
    filt = RfbClientFilter(view_only=True)
    out = filt.feed(stream[:cut]) + filt.feed(stream[cut:])
    expected = HANDSHAKE_38 + b"".join(m for m in messages if m in FORWARDED_ALL)
    assert out == expected
    # What the server receives re-parses to the same thing: nothing to smuggle.
    assert RfbClientFilter(view_only=True).feed(out) == out


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_after_the_handshake_never_crashes_differently(garbage: bytes) -> None:
    """Random bytes either parse (then re-parse identically) or raise RfbProtocolError, nothing else."""
    filt = RfbClientFilter(view_only=True)
    try:
        out = filt.feed(HANDSHAKE_38 + garbage)
    except RfbProtocolError:
        return
    assert RfbClientFilter(view_only=True).feed(out) == out


# -- switching view_only mid-stream (the holder changes while the viewer stays connected) -------------

INPUT_HEADER_LENGTH = {6: 8, 251: 8, 253: 4}  # the rest of the input messages are all header


def test_a_switch_inside_a_header_decides_by_the_mode_when_the_header_completes() -> None:
    filt = RfbClientFilter(view_only=False)
    assert filt.feed(HANDSHAKE_38 + key_event()[:3]) == HANDSHAKE_38
    filt.view_only = True  # the viewer loses control in the middle of a KeyEvent
    assert filt.feed(key_event()[3:] + fb_request()) == fb_request()  # dropped whole, still in step
    filt.view_only = False  # and gets it back in the middle of a PointerEvent
    assert filt.feed(pointer_event()[:2]) == b""
    assert filt.feed(pointer_event()[2:] + key_event()) == pointer_event() + key_event()
    assert filt.dropped_messages == 1


def test_a_switch_inside_a_body_keeps_the_decision_made_at_its_header() -> None:
    paste = cut_text(b"a paste of some length")
    for before, after in ((False, True), (True, False)):
        filt = RfbClientFilter(view_only=before)
        out = filt.feed(HANDSHAKE_38 + paste[:12])
        filt.view_only = after
        out += filt.feed(paste[12:] + key_event() + fb_request())
        kept_paste = paste if not before else b""
        kept_key = key_event() if not after else b""
        assert out == HANDSHAKE_38 + kept_paste + kept_key + fb_request()


@settings(max_examples=300, deadline=None)
@given(st.lists(message_strategy, max_size=30), st.data())
def test_switching_at_any_point_forwards_whole_messages_only(
    messages: list[bytes], data: st.DataObject
) -> None:
    """Whatever the switches, each input message is kept or dropped whole by the mode in force when its
    header completed, every other message is kept, and what goes upstream re-parses identically."""
    stream = HANDSHAKE_38 + b"".join(messages)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=20))))
    modes = data.draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    bounds = [0, *cuts, len(stream)]
    filt = RfbClientFilter(view_only=modes[0], always_shared=True)
    out = b""
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        filt.view_only = modes[i]
        out += filt.feed(stream[start:end])

    def view_only_at(position: int) -> bool:
        return modes[sum(1 for cut in cuts if cut <= position)]

    expected = HANDSHAKE_38
    offset = len(HANDSHAKE_38)
    for message in messages:
        header_end = offset + INPUT_HEADER_LENGTH.get(message[0], len(message)) - 1
        if message in FORWARDED_ALL or not view_only_at(header_end):
            expected += message
        offset += len(message)
    assert out == expected
    assert RfbClientFilter(view_only=False).feed(out) == out
