"""The codec of the Unix sockets between the server's processes: msgpack.

What travels between a login or user process (or the admin tool) and the
database process is a `Packet(op, data)`, as on the wire to clients, but
encoded with msgpack (a maintained C implementation) rather than with the
notebook's own binary serializer (`Modules/wire/serializers.py`, written
in Python), which clients keep using unchanged. Measured on the relay's
hot packets (PERFORMANCE.md section 13): a Send request, its Reply and a
one-message Push cost 64 µs of Python to encode and decode with the
binary serializer, 12 µs with msgpack.

One packet is the msgpack array `[op, data]`: `op` a str of 1 to 32 ASCII
letters, `data` a map with str keys; values of the serializers' domain
(None, bool, signed 64-bit int, finite float, str, list, dict with str
keys, at most 32 containers deep). Framing stays the 4-byte length prefix
of `Modules/wire/framing.py`, so an oversize frame is refused from its
prefix, before its body is buffered.

Two ways to decode, for the two directions:

* `loads_request(frame)`: what the database process reads from the other
  processes, which it does not trust. As strict as the binary
  serializer: anything malformed, truncated, trailing, of a type outside
  the domain (bytes, msgpack extension types, timestamps, non-str keys,
  ints beyond 64-bit, NaN or infinite floats), nested deeper than 32, or
  with a duplicate key raises `RemoteProtocolError(code="bad_encoding")`
  (the caller closes that connection only). The common request, whose
  values are scalars or lists of scalars, is checked in one pass over
  its values; anything holding a map is decoded a second time, slowly,
  to find duplicate keys at every level.
* `loads_reply(frame)`: what the other processes read from the database
  process, which made it (it holds every secret already): malformed
  input still raises `RemoteProtocolError(code="bad_encoding")`, and the
  shape `[op, data]` is checked, but the values are not walked.

`dumps(packet)` raises `LocalProtocolError(code="unserializable")` for a
type msgpack cannot encode, an int beyond 64 bits or a str with a lone
surrogate (our bug); it does not walk the values either: every packet it
encodes is read back by one of the two functions above. Error reasons
never quote the values. Talks to nothing; no I/O.
"""

import threading

import msgpack

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.serializers import (
    INT64_MAX,
    INT64_MIN,
    Packet,
    domain_violation,
    is_valid_op,
)

_unpackb = msgpack.unpackb
_new_packet = tuple.__new__   # Packet(op, data) without the Python-level __new__
_DECODE_FAILURES = (ValueError, TypeError, OverflowError, RecursionError, MemoryError)
_ENCODE_FAILURES = (TypeError, ValueError, OverflowError)
_KNOWN_OPS = set()            # op strings already found valid (a few dozen at most)
_MAP_HEADERS = {0xDE: 2, 0xDF: 4}   # map16, map32: bytes of their count
_local = threading.local()    # one Packer per thread: a Packer keeps a buffer


def _bad(reason):
    return RemoteProtocolError(reason, code="bad_encoding")


def _packer():
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, datetime=False)
    return packer


def dumps(packet):
    """The bytes of `packet` (an (op, data) pair); LocalProtocolError if it cannot be."""
    op, data = packet
    if type(op) is not str or (op not in _KNOWN_OPS and not _known_op(op)):
        raise LocalProtocolError("op must be 1 to 32 ASCII letters", code="unserializable")
    if type(data) is not dict:
        raise LocalProtocolError("packet data must be a dict", code="unserializable")
    try:
        return _packer().pack((op, data))
    except _ENCODE_FAILURES as error:
        raise LocalProtocolError(f"not serializable ({type(error).__name__})",
                                 code="unserializable") from None


def _known_op(op):
    if not is_valid_op(op):
        return False
    if len(_KNOWN_OPS) < 256:
        _KNOWN_OPS.add(op)
    return True


def _unpack(frame):
    try:
        return _unpackb(frame, strict_map_key=True, raw=False, timestamp=0)
    except _DECODE_FAILURES as error:
        reason = "str is not valid UTF-8" if isinstance(error, UnicodeDecodeError) \
            else "malformed msgpack packet"
        raise _bad(reason) from None


def _packet(obj):
    """The (op, data) of a decoded `[op, data]`, its shape checked (not its values)."""
    if type(obj) is not list or len(obj) != 2:
        raise _bad("a packet is the array [op, data]")
    op, data = obj
    if type(op) is not str or (op not in _KNOWN_OPS and not _known_op(op)):
        raise _bad("op must be 1 to 32 ASCII letters")
    if type(data) is not dict:
        raise _bad("packet data must be a map")
    return op, data


def loads_reply(frame):
    """A Packet from the database process: malformed input is refused, values trusted."""
    return _new_packet(Packet, _packet(_unpack(frame)))


def loads_request(frame):
    """A Packet from a process the database does not trust, checked as strictly as
    the binary serializer checks: RemoteProtocolError(bad_encoding) otherwise."""
    op, data = _packet(_unpack(frame))
    if not _plain_map(data) or len(data) != _data_map_count(frame, op):
        _check_slowly(frame, data)
    return _new_packet(Packet, (op, data))


def _plain_map(data):
    """True if every key is a str and every value a domain scalar or a list of
    them; False if a map or anything unusual needs the slow path. Raises for an
    int beyond 64 bits or a float that is not finite."""
    for key, value in data.items():
        kind = type(value)
        if type(key) is not str:
            return False
        if kind is str:
            continue
        if kind is int:
            if INT64_MIN <= value <= INT64_MAX:
                continue
            raise _bad("int out of 64-bit range")
        if kind is bool or value is None:
            continue
        if kind is list:
            if not _scalars(value):
                return False
        elif not _scalar(value, kind):
            return False
    return True


def _scalars(values):
    for value in values:
        kind = type(value)
        if not (kind is str or kind is bool or value is None or _scalar(value, kind)):
            return False
    return True


def _scalar(value, kind):
    """An int or a float of the domain (raises if out of it); False for other kinds."""
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _bad("int out of 64-bit range")
        return True
    if kind is float:
        if value - value != 0.0:
            raise _bad("float is not finite")
        return True
    return False


def _data_map_count(frame, op):
    """How many pairs the data map's header declares (a duplicate key makes the
    decoded dict shorter), or -1 if the header is not where the shortest form puts it."""
    pos = 2 + len(op) if len(op) < 32 else 3 + len(op)   # fixarray 2, the op as str
    tag = frame[pos]
    if tag & 0xF0 == 0x80 and frame[0] == 0x92:           # fixmap: 0 to 15 pairs
        return tag & 0x0F
    if frame[0] != 0x92:
        return -1
    size = _MAP_HEADERS.get(tag)
    return -1 if size is None else int.from_bytes(frame[pos + 1:pos + 1 + size], "big")


def _unique_pairs(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _check_slowly(frame, data):
    """Nested maps or an unusual header: look for duplicate keys at every level
    and walk the whole domain (key and value types, ranges, depth)."""
    try:
        msgpack.unpackb(frame, strict_map_key=True, raw=False, timestamp=0,
                        object_pairs_hook=_unique_pairs)
    except ValueError:
        raise _bad("duplicate map key") from None
    reason = domain_violation(data, 1, (list,))
    if reason is not None:
        raise _bad(reason)
