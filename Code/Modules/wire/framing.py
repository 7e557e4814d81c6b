"""Length-prefixed framing, sans-IO: 4-byte big-endian length, then payload.

Used on every Parley byte stream: under the Noise channel on TCP, and
directly on the Unix sockets between the server's processes.

`FrameDecoder` is fed bytes with `receive_data()` and hands out whole
payloads with `next_event()`. It raises `RemoteProtocolError` when a length
prefix exceeds the limit (as soon as the four prefix bytes are in, so an
oversize frame is refused before its body is buffered) or when the stream
ends in the middle of a frame. Errors are sticky: once raised, every later
call raises the same error. No sockets here.
"""

import struct

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError

_LENGTH = struct.Struct(">I")
PREFIX_SIZE = _LENGTH.size


class _Sentinel:
    """A named singleton, compared with `is`."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")


def encode_frame(payload, max_frame_size):
    """The bytes of one frame carrying `payload`."""
    return frame_prefix(payload, max_frame_size) + payload


def frame_prefix(payload, max_frame_size):
    """The 4 bytes that go before `payload` (for a writer that appends both to its
    buffer rather than copying them into one frame first)."""
    if len(payload) > max_frame_size:
        raise LocalProtocolError(
            f"frame of {len(payload)} bytes exceeds the limit of {max_frame_size}",
            code="frame_too_large",
        )
    return _LENGTH.pack(len(payload))


class FrameDecoder:
    """Splits a byte stream into frame payloads."""

    def __init__(self, max_frame_size):
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._eof = False
        self._error = None

    def receive_data(self, data):
        """Add bytes from the peer; `b""` means the stream ended."""
        self._check_error()
        if self._eof and data:
            raise LocalProtocolError("data received after end of stream")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self):
        """The next whole payload, `NEED_DATA`, or `CLOSED` at a clean end."""
        self._check_error()
        if len(self._buffer) >= PREFIX_SIZE:
            return self._take_frame()
        if self._eof:
            return self._end_of_stream()
        return NEED_DATA

    def pending(self):
        """Bytes received but not yet returned as a frame (for a hand-off)."""
        return bytes(self._buffer)

    @property
    def buffered(self):
        """How many bytes are waiting in the buffer."""
        return len(self._buffer)

    def _take_frame(self):
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > self.max_frame_size:
            self._fail(f"frame of {length} bytes exceeds the limit of "
                       f"{self.max_frame_size}", "frame_too_large")
        end = PREFIX_SIZE + length
        if len(self._buffer) < end:
            return self._end_of_stream() if self._eof else NEED_DATA
        payload = bytes(self._buffer[PREFIX_SIZE:end])
        del self._buffer[:end]
        return payload

    def _end_of_stream(self):
        if self._buffer:
            self._fail("connection closed in the middle of a frame", "truncated")
        return CLOSED

    def _fail(self, reason, code):
        self._error = RemoteProtocolError(reason, code=code)
        raise self._error

    def _check_error(self):
        if self._error is not None:
            raise self._error
