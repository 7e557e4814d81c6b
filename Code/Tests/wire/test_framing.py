"""Tests for Modules/wire/framing.py: frames split and joined at any byte boundary."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame


def drain(decoder):
    frames = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA or event is CLOSED:
            return frames, event
        frames.append(event)


@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(1, 50))
def test_frames_survive_any_split(payloads, step):
    wire = b"".join(encode_frame(p, 1000) for p in payloads)
    decoder = FrameDecoder(1000)
    got = []
    for i in range(0, len(wire), step):
        decoder.receive_data(wire[i:i + step])
        got += drain(decoder)[0]
    decoder.receive_data(b"")
    frames, end = drain(decoder)
    assert got + frames == payloads
    assert end is CLOSED


def test_oversize_prefix_refused_before_body_arrives():
    decoder = FrameDecoder(100)
    decoder.receive_data((101).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code == "frame_too_large"
    with pytest.raises(RemoteProtocolError):  # the error sticks
        decoder.next_event()


def test_eof_mid_frame_is_truncation():
    decoder = FrameDecoder(100)
    decoder.receive_data(encode_frame(b"hello", 100)[:6])
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code == "truncated"


def test_encoding_oversize_is_our_error():
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 11, 10)


def test_pending_returns_unconsumed_bytes():
    decoder = FrameDecoder(100)
    decoder.receive_data(encode_frame(b"a", 100) + b"\x00\x00")
    assert decoder.next_event() == b"a"
    assert decoder.next_event() is NEED_DATA
    assert decoder.pending() == b"\x00\x00"
