"""Turns protocol packets into bytes and back: a JSON and a compact binary form.

A `Packet` is the standardized object of the protocol: an operation name
(`op`, 1 to 32 ASCII letters) and its `data` (a dict). Values inside `data`
belong to one domain: None, bool, int (signed 64-bit), float (finite), str
(anything UTF-8 can encode, so no lone surrogates), list, and dict with str
keys, nested at most 32 containers deep (`data` itself is depth 1). Values
must be of exactly these types; subclasses (IntEnum, OrderedDict, ...) are
refused, except that a tuple is accepted where a list is and comes back as a
list. Both serializers round-trip every packet of the domain exactly: types
are kept (True is not 1, 1 is not 1.0, -0.0 keeps its sign) and so is the
key order of every dict.

Talks to nothing: pure functions of bytes and values, no I/O. The
connection objects in `Modules/wire/protocol.py` and the processes' Unix-socket
clients pick a serializer with `get_serializer(name)`.

How it fails:
* `dumps` raises `LocalProtocolError(code="unserializable")` for anything
  outside the domain (a bug on our side).
* `loads` raises `RemoteProtocolError(code="bad_encoding")` for any
  malformed input whatsoever, and nothing else (passing it something that
  is not bytes-like is our bug: `LocalProtocolError(code="not_bytes")`). It
  never allocates according to a declared length before checking that the
  bytes are really there. Duplicate dict keys are rejected by both forms.
* `get_serializer` raises `RemoteProtocolError(code="unsupported_serializer")`.
Error reasons never quote the values being encoded or decoded.

JSON form: the UTF-8 text of `{"op":...,"data":{...}}`, compact separators,
non-ASCII characters written as themselves (control characters are escaped
as JSON requires). On input, whitespace is allowed but the text must be
UTF-8 (no BOM), the top level must have exactly the keys "op" and "data",
and NaN/Infinity literals, numbers outside the domain (1e400, 2**63),
duplicate keys and lone-surrogate escapes such as \\uD800 are refused.

Binary form (full description with examples: docs/BINARY_FORMAT.md):

    packet = 0x01 (format version) | u8 n (1..32) | n ASCII letters (op)
             | value (must be a dict) | end of input

Every value starts with a tag byte; multi-byte numbers are big-endian:

    0x00-0x7F  int 0..127 (the tag is the value)
    0x80-0x9F  str, (tag - 0x80) = 0..31 UTF-8 bytes follow
    0xA0-0xAF  list of (tag - 0xA0) = 0..15 values
    0xB0-0xBF  dict of (tag - 0xB0) = 0..15 pairs (str key value, value)
    0xC0 None    0xC1 False    0xC2 True    0xC3 float64 (IEEE 754, 8 bytes)
    0xC4 int8    0xC5 int16    0xC6 int32   0xC7 int64 (two's complement)
    0xC8 str, u8 length    0xC9 str, u16 length    0xCA str, u32 length
    0xCB list, u16 count   0xCC list, u32 count
    0xCD dict, u16 count   0xCE dict, u32 count
    0xCF-0xDF  reserved (invalid)
    0xE0-0xFF  int -32..-1 (tag - 0x100)

Encoders use the shortest form; decoders accept any form that fits.
"""

import json
import re
import struct
from typing import NamedTuple

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError

MAX_DEPTH = 32
MAX_OP_LENGTH = 32
INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1
BINARY_VERSION = 0x01


class Packet(NamedTuple):
    """The standardized object: an operation plus its data."""

    op: str
    data: dict


def _unserializable(reason):
    return LocalProtocolError(reason, code="unserializable")


def _bad(reason):
    return RemoteProtocolError(reason, code="bad_encoding")


def _as_bytes(data):
    """`data` as bytes; anything not bytes-like is a bug on our side."""
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise LocalProtocolError(f"loads needs bytes, not {type(data).__name__}",
                             code="not_bytes")


def is_valid_op(op):
    """True if `op` is a str of 1 to 32 ASCII letters."""
    return (type(op) is str and 0 < len(op) <= MAX_OP_LENGTH
            and op.isascii() and op.isalpha())


def _check_packet(packet):
    """The (op, data) of a packet given to dumps, or LocalProtocolError."""
    try:
        op, data = packet
    except (TypeError, ValueError):
        raise _unserializable("a packet is an (op, data) pair") from None
    if not is_valid_op(op):
        raise _unserializable("op must be 1 to 32 ASCII letters")
    if type(data) is not dict:
        raise _unserializable("packet data must be a dict")
    return op, data


def domain_violation(container, depth, sequence_types=(list, tuple)):
    """Why `container` (nested at `depth`) is outside the domain, or None.

    Checks types, the int range, float finiteness, str keys and nesting;
    it does not look inside strings (UTF-8 encoding catches surrogates).
    """
    if depth > MAX_DEPTH:
        return f"nesting deeper than {MAX_DEPTH}"
    if type(container) is dict:
        if any(type(key) is not str for key in container):
            return "dict keys must be str"
        container = container.values()
    for item in container:
        reason = _item_violation(item, depth, sequence_types)
        if reason is not None:
            return reason
    return None


def _item_violation(item, depth, sequence_types):
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return None
    if kind is int:
        return None if INT64_MIN <= item <= INT64_MAX else "int out of 64-bit range"
    if kind is float:
        return None if item - item == 0.0 else "float is not finite"
    if kind is dict or kind in sequence_types:
        return domain_violation(item, depth + 1, sequence_types)
    return f"type {kind.__name__} is not serializable"


class Serializer:
    """Base of the serializers: `name`, `dumps(packet)` and `loads(bytes)`."""

    name = "abstract"

    def dumps(self, packet):
        """The bytes of `packet`; LocalProtocolError if outside the domain."""
        raise NotImplementedError

    def loads(self, data):
        """The Packet in `data`; RemoteProtocolError(bad_encoding) if malformed."""
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


# ---------------------------------------------------------------- JSON

def _unique_object(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _bad("duplicate key in a JSON object")
    return result


def _reject_constant(name):
    raise _bad("NaN and Infinity are not allowed")


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                 allow_nan=False, check_circular=False)
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object,
                                 parse_constant=_reject_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_FAILURES = (ValueError, RecursionError, MemoryError, TypeError, OverflowError)


class JsonSerializer(Serializer):
    """UTF-8 JSON text `{"op":...,"data":{...}}`."""

    name = "json"

    def dumps(self, packet):
        op, data = _check_packet(packet)
        reason = domain_violation(data, 1)
        if reason is not None:
            raise _unserializable(reason)
        try:
            return _JSON_ENCODER.encode({"op": op, "data": data}).encode()
        except UnicodeEncodeError:
            raise _unserializable("str is not valid Unicode (lone surrogate)") from None

    def loads(self, data):
        raw = _as_bytes(data)
        try:
            text = raw.decode()
            obj = _JSON_DECODER.decode(text)
        except _JSON_FAILURES as error:
            raise _bad(f"malformed JSON packet ({type(error).__name__})") from None
        packet = _json_packet(obj)
        if _SURROGATE_ESCAPE.search(text):
            _reject_lone_surrogates(packet.data)
        return packet


def _json_packet(obj):
    """The Packet in a decoded JSON document, checked against the domain."""
    if type(obj) is not dict or len(obj) != 2 or "op" not in obj or "data" not in obj:
        raise _bad('a JSON packet is an object with exactly "op" and "data"')
    op, data = obj["op"], obj["data"]
    if not is_valid_op(op):
        raise _bad("op must be 1 to 32 ASCII letters")
    if type(data) is not dict:
        raise _bad("packet data must be an object")
    reason = domain_violation(data, 1, (list,))
    if reason is not None:
        raise _bad(reason)
    return Packet(op, data)


def _reject_lone_surrogates(data):
    """A \\uD800-style escape may have left a lone surrogate in a str."""
    try:
        _JSON_ENCODER.encode(data).encode()
    except UnicodeEncodeError:
        raise _bad("lone surrogate escape in a JSON string") from None


# ---------------------------------------------------------------- binary

_TAG_U8 = struct.Struct(">BB").pack
_TAG_U16 = struct.Struct(">BH").pack
_TAG_U32 = struct.Struct(">BI").pack
_TAG_I8 = struct.Struct(">Bb").pack
_TAG_I16 = struct.Struct(">Bh").pack
_TAG_I32 = struct.Struct(">Bi").pack
_TAG_I64 = struct.Struct(">Bq").pack
_TAG_F64 = struct.Struct(">Bd").pack
_UNPACK_U16 = struct.Struct(">H").unpack_from
_UNPACK_U32 = struct.Struct(">I").unpack_from
_UNPACK_I16 = struct.Struct(">h").unpack_from
_UNPACK_I32 = struct.Struct(">i").unpack_from
_UNPACK_I64 = struct.Struct(">q").unpack_from
_UNPACK_F64 = struct.Struct(">d").unpack_from
_CONSTANTS = {None: b"\xc0", False: b"\xc1", True: b"\xc2"}
_OP_CACHE_LIMIT = 256


def _encode_str(value, out):
    raw = value.encode()
    size = len(raw)
    if size < 0x20:
        out.append(0x80 | size)
    elif size < 0x100:
        out += _TAG_U8(0xC8, size)
    elif size < 0x10000:
        out += _TAG_U16(0xC9, size)
    else:
        out += _TAG_U32(0xCA, size)
    out += raw


def _encode_int(value, out):
    if 0 <= value < 0x80:
        out.append(value)
    elif -0x20 <= value < 0:
        out.append(value + 0x100)
    elif -0x80 <= value < 0x80:
        out += _TAG_I8(0xC4, value)
    elif -0x8000 <= value < 0x8000:
        out += _TAG_I16(0xC5, value)
    elif -0x80000000 <= value < 0x80000000:
        out += _TAG_I32(0xC6, value)
    elif INT64_MIN <= value <= INT64_MAX:
        out += _TAG_I64(0xC7, value)
    else:
        raise _unserializable("int out of 64-bit range")


def _encode_float(value, out):
    if value - value != 0.0:
        raise _unserializable("float is not finite")
    out += _TAG_F64(0xC3, value)


def _encode_count(count, out, small_base, tag16):
    if count < 0x10:
        out.append(small_base | count)
    elif count < 0x10000:
        out += _TAG_U16(tag16, count)
    else:
        out += _TAG_U32(tag16 + 1, count)


def _encode_dict(value, out, depth):
    if depth > MAX_DEPTH:
        raise _unserializable(f"nesting deeper than {MAX_DEPTH}")
    _encode_count(len(value), out, 0xB0, 0xCD)
    for key, item in value.items():
        if type(key) is not str:
            raise _unserializable("dict keys must be str")
        if key.isascii() and len(key) < 0x20:
            out.append(0x80 | len(key))
            out += key.encode()
        else:
            _encode_str(key, out)
        kind = type(item)
        if kind is str:
            raw = item.encode()
            if len(raw) < 0x20:
                out.append(0x80 | len(raw))
                out += raw
            else:
                _encode_str(item, out)
        elif kind is int:
            _encode_int(item, out)
        else:
            _ENCODERS.get(kind, _encode_unsupported)(item, out, depth)


def _encode_list(value, out, depth):
    if depth > MAX_DEPTH:
        raise _unserializable(f"nesting deeper than {MAX_DEPTH}")
    _encode_count(len(value), out, 0xA0, 0xCB)
    encoders = _ENCODERS
    for item in value:
        encoders.get(type(item), _encode_unsupported)(item, out, depth)


def _encode_unsupported(value, out, depth):
    raise _unserializable(f"type {type(value).__name__} is not serializable")


# Every encoder takes (value, out, depth of the enclosing container).
_ENCODERS = {
    str: lambda value, out, depth: _encode_str(value, out),
    int: lambda value, out, depth: _encode_int(value, out),
    float: lambda value, out, depth: _encode_float(value, out),
    bool: lambda value, out, depth: out.extend(_CONSTANTS[value]),
    type(None): lambda value, out, depth: out.extend(b"\xc0"),
    dict: lambda value, out, depth: _encode_dict(value, out, depth + 1),
    list: lambda value, out, depth: _encode_list(value, out, depth + 1),
    tuple: lambda value, out, depth: _encode_list(value, out, depth + 1),
}


def _decode_value(buf, pos, depth):
    """The value whose tag is at `pos` in `buf`, and the position after it."""
    tag = buf[pos]
    if tag < 0x80:
        return tag, pos + 1
    if tag < 0xA0:
        end = pos + tag - 0x7F
        if end > len(buf):
            raise _bad("truncated string")
        return buf[pos + 1:end].decode(), end
    if tag >= 0xE0:
        return tag - 0x100, pos + 1
    return _DECODERS[tag](buf, pos + 1, tag, depth)


def _decode_str(buf, pos, size):
    end = pos + size
    if end > len(buf):
        raise _bad("truncated string")
    return buf[pos:end].decode(), end


def _decode_list(buf, pos, count, depth):
    depth += 1
    if depth > MAX_DEPTH:
        raise _bad(f"nesting deeper than {MAX_DEPTH}")
    if count > len(buf) - pos:
        raise _bad("list count exceeds the bytes present")
    result = []
    append = result.append
    decode = _decode_value
    for _ in range(count):
        item, pos = decode(buf, pos, depth)
        append(item)
    return result, pos


def _decode_dict(buf, pos, count, depth):
    depth += 1
    if depth > MAX_DEPTH:
        raise _bad(f"nesting deeper than {MAX_DEPTH}")
    size = len(buf)
    if count > (size - pos) >> 1:
        raise _bad("dict count exceeds the bytes present")
    result = {}
    decode = _decode_value
    for _ in range(count):
        tag = buf[pos]
        if 0x80 <= tag < 0xA0:
            end = pos + tag - 0x7F
            if end > size:
                raise _bad("truncated string")
            key = buf[pos + 1:end].decode()
            pos = end
        elif 0xC8 <= tag <= 0xCA:
            key, pos = decode(buf, pos, depth)
        else:
            raise _bad("dict key is not a str")
        tag = buf[pos]
        if tag < 0x80:
            result[key] = tag
            pos += 1
        elif tag < 0xA0:
            end = pos + tag - 0x7F
            if end > size:
                raise _bad("truncated string")
            result[key] = buf[pos + 1:end].decode()
            pos = end
        else:
            result[key], pos = decode(buf, pos, depth)
    if len(result) != count:
        raise _bad("duplicate dict key")
    return result, pos


def _decode_float(buf, pos, tag, depth):
    (value,) = _UNPACK_F64(buf, pos)
    if value - value != 0.0:
        raise _bad("float is not finite")
    return value, pos + 8


def _reserved(buf, pos, tag, depth):
    raise _bad(f"reserved tag 0x{tag:02X}")


def _decoder_table():
    """Decoders for tags 0xA0..0xDF, each taking (buf, pos after tag, tag, depth)."""
    table = [_reserved] * 0x100
    for tag in range(0xA0, 0xB0):
        table[tag] = lambda b, p, t, d: _decode_list(b, p, t - 0xA0, d)
        table[tag + 0x10] = lambda b, p, t, d: _decode_dict(b, p, t - 0xB0, d)
    table[0xC0:0xCF] = [
        lambda b, p, t, d: (None, p),
        lambda b, p, t, d: (False, p),
        lambda b, p, t, d: (True, p),
        _decode_float,
        lambda b, p, t, d: (b[p] - ((b[p] & 0x80) << 1), p + 1),
        lambda b, p, t, d: (_UNPACK_I16(b, p)[0], p + 2),
        lambda b, p, t, d: (_UNPACK_I32(b, p)[0], p + 4),
        lambda b, p, t, d: (_UNPACK_I64(b, p)[0], p + 8),
        lambda b, p, t, d: _decode_str(b, p + 1, b[p]),
        lambda b, p, t, d: _decode_str(b, p + 2, _UNPACK_U16(b, p)[0]),
        lambda b, p, t, d: _decode_str(b, p + 4, _UNPACK_U32(b, p)[0]),
        lambda b, p, t, d: _decode_list(b, p + 2, _UNPACK_U16(b, p)[0], d),
        lambda b, p, t, d: _decode_list(b, p + 4, _UNPACK_U32(b, p)[0], d),
        lambda b, p, t, d: _decode_dict(b, p + 2, _UNPACK_U16(b, p)[0], d),
        lambda b, p, t, d: _decode_dict(b, p + 4, _UNPACK_U32(b, p)[0], d),
    ]
    return table


_DECODERS = _decoder_table()
_new_packet = tuple.__new__   # Packet(op, data) without the Python-level __new__
_VERSION_PREFIX = bytes((BINARY_VERSION,))
_DICT_TAGS = frozenset(range(0xB0, 0xC0)) | {0xCD, 0xCE}
_BINARY_FAILURES = (IndexError, struct.error) + _JSON_FAILURES
_FAILURE_REASONS = {   # what Python raises on malformed input -> the reason we give
    IndexError: "truncated binary packet",
    struct.error: "truncated binary packet",
    UnicodeDecodeError: "str is not valid UTF-8",
}


class BinarySerializer(Serializer):
    """The compact tagged binary form described in the module docstring."""

    name = "binary"

    def __init__(self):
        self._headers = {}   # op -> version byte, length and op bytes
        self._ops = {}       # op bytes seen on input -> op str

    def dumps(self, packet):
        op, data = _check_packet(packet)
        header = self._headers.get(op)
        if header is None:
            header = _VERSION_PREFIX + bytes((len(op),)) + op.encode()
            self._remember(self._headers, op, header)
        out = bytearray(header)
        try:
            _encode_dict(data, out, 1)
        except (UnicodeEncodeError, struct.error, OverflowError):
            raise _unserializable("str is not valid Unicode or is too long") from None
        return bytes(out)

    def loads(self, data):
        buf = _as_bytes(data)
        try:
            return self._decode_packet(buf)
        except _BINARY_FAILURES as error:
            reason = _FAILURE_REASONS.get(type(error), "malformed binary packet")
            raise _bad(reason) from None

    def _decode_packet(self, buf):
        if buf[:1] != _VERSION_PREFIX:
            raise _bad("not a version 1 binary packet")
        end = 2 + buf[1]
        op = self._ops.get(buf[2:end]) or self._decode_op(buf[2:end])
        tag = buf[end]
        if tag not in _DICT_TAGS:
            raise _bad("packet data is not a dict")
        data, pos = _DECODERS[tag](buf, end + 1, tag, 0)
        if pos != len(buf):
            raise _bad("trailing bytes after the packet")
        return _new_packet(Packet, (op, data))

    def _decode_op(self, raw):
        op = raw.decode("ascii") if raw.isalpha() else ""
        if not is_valid_op(op):
            raise _bad("op must be 1 to 32 ASCII letters")
        return self._remember(self._ops, raw, op)

    @staticmethod
    def _remember(cache, key, value):
        if len(cache) < _OP_CACHE_LIMIT:
            cache[key] = value
        return value


JSON = JsonSerializer()
BINARY = BinarySerializer()
SERIALIZERS = {"json": JSON, "binary": BINARY}


def get_serializer(name):
    """The serializer called `name`; RemoteProtocolError if there is none."""
    serializer = SERIALIZERS.get(name) if type(name) is str else None
    if serializer is None:
        raise RemoteProtocolError("unsupported serializer",
                                  code="unsupported_serializer")
    return serializer
