"""Tests for Modules/wire/serializers.py: exact round trips, the domain's edges, fuzzing.

Round trips are compared with `strict_equal`, because in Python
1 == 1.0 == True and 0.0 == -0.0 while the serializers must keep them apart.
"""

import enum
import json
import math
import re
import string
import tracemalloc
from collections import OrderedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.serializers import (
    BINARY,
    INT64_MAX,
    INT64_MIN,
    JSON,
    SERIALIZERS,
    Packet,
    get_serializer,
)

BOTH = [JSON, BINARY]
TYPICAL = Packet("Message", {
    "id": 12, "from": "alice", "to": "bob", "subject": "Lunch",
    "body": "At noon?", "sent_at": 1763690000.123, "kind": "message",
})
HEADER = b"\x01\x04Ping"   # a binary packet with op "Ping", data follows


# ---------------------------------------------------------------- helpers

def strict_equal(a, b):
    """Equal with identical types everywhere, float signs and key order."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is list:
        return len(a) == len(b) and all(map(strict_equal, a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    return a == b


def assert_same_packet(got, expected):
    assert type(got) is Packet
    assert type(got.op) is str and got.op == expected.op
    assert strict_equal(got.data, expected.data), (got, expected)


def round_trip(serializer, packet):
    encoded = serializer.dumps(packet)
    assert type(encoded) is bytes
    return serializer.loads(encoded)


def depth(value):
    """Containers nested in `value`, counting itself (a scalar is 0)."""
    if type(value) is dict:
        return 1 + max(map(depth, value.values()), default=0)
    if type(value) in (list, tuple):
        return 1 + max(map(depth, value), default=0)
    return 0


def nested(levels, leaf=1):
    """A dict-and-list chain `levels` containers deep, the data dict included."""
    value = leaf
    for level in range(levels - 1):
        value = [value] if level % 2 else {"k": value}
    return {"k": value}


def assert_bad_encoding(serializer, data):
    with pytest.raises(RemoteProtocolError) as info:
        serializer.loads(data)
    assert info.value.code == "bad_encoding"


def assert_loads_contract(serializer, data):
    """loads either raises bad_encoding or returns a packet of the domain."""
    try:
        packet = serializer.loads(data)
    except RemoteProtocolError as error:
        assert error.code == "bad_encoding"
        return
    for other in BOTH:   # a result outside the domain would make dumps fail
        assert_same_packet(round_trip(other, packet), packet)


def assert_unserializable(serializer, packet):
    with pytest.raises(LocalProtocolError) as info:
        serializer.dumps(packet)
    assert info.value.code == "unserializable"


def test_strict_equal_tells_apart_what_python_confuses():
    assert not strict_equal(1, True)
    assert not strict_equal(1, 1.0)
    assert not strict_equal(0.0, -0.0)
    assert not strict_equal({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not strict_equal([1], (1,))
    assert strict_equal({"a": [1, 2.5, None, "x"]}, {"a": [1, 2.5, None, "x"]})


# ---------------------------------------------------------------- strategies

texts = st.text(st.characters(codec="utf-8"), max_size=40)
scalars = (st.none() | st.booleans() | st.integers(INT64_MIN, INT64_MAX)
           | st.floats(allow_nan=False, allow_infinity=False) | texts)
values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=6)
                      | st.dictionaries(texts, children, max_size=6)),
    max_leaves=40,
)
ops = st.text(string.ascii_letters, min_size=1, max_size=32)
packets = st.builds(
    Packet, ops,
    st.dictionaries(texts, values, max_size=8).filter(lambda d: depth(d) <= 32),
)
serializers = st.sampled_from(BOTH)


# ---------------------------------------------------------------- round trips

@given(serializers, packets)
def test_every_packet_of_the_domain_round_trips_exactly(serializer, packet):
    assert_same_packet(round_trip(serializer, packet), packet)


@given(packets)
def test_the_two_forms_agree(packet):
    through_json = JSON.loads(JSON.dumps(packet))
    assert_same_packet(BINARY.loads(BINARY.dumps(through_json)), packet)


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
@pytest.mark.parametrize("data", [
    {"t": True, "f": False, "one": 1, "zero": 0, "onef": 1.0, "zerof": 0.0},
    {"neg": -0.0, "list": [-0.0, 0.0, 0, False]},
    {"tiny": 5e-324, "huge": 1.7976931348623157e308, "third": 1 / 3, "neg": -1.5},
    {"s": "héllo 日本語 😀🎉 \U0010ffff \u2028 \ufeff", "nul": "a\x00b\x00",
     "ctl": "\x01\x1f\x7f", "😀": "emoji key", "": "empty key"},
    {"s": "", "l": [], "d": {}, "nested": [[], {}, [[]], {"e": {}}]},
    {"b": 1, "a": 2, "c": {"z": 0, "y": 1, "x": 2}},
    {},
])
def test_specific_values_round_trip(serializer, data):
    assert_same_packet(round_trip(serializer, Packet("Check", data)), Packet("Check", data))


INT_EDGES = [0, 1, 127, 128, -1, -32, -33, -128, -129, 255, 256, 32767, 32768,
             -32768, -32769, 65535, 65536, 2 ** 31 - 1, 2 ** 31, -2 ** 31,
             -2 ** 31 - 1, 2 ** 32, INT64_MAX, INT64_MIN]


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_int_edges_round_trip(serializer):
    packet = Packet("Ints", {str(n): n for n in INT_EDGES})
    assert_same_packet(round_trip(serializer, packet), packet)


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
@pytest.mark.parametrize("size", [0, 15, 16, 31, 32, 255, 256, 65535, 65536])
def test_sizes_at_every_length_boundary(serializer, size):
    data = {"s": "x" * size, "u": "é" * size, "l": list(range(size % 200)) * (size // 200 + 1),
            "d": {str(i): i for i in range(size)}}
    data["l"] = data["l"][:size]
    packet = Packet("Sizes", data)
    assert_same_packet(round_trip(serializer, packet), packet)


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_op_edges(serializer):
    for op in ["A", "z" * 32, "Message", "VersionReply"]:
        assert round_trip(serializer, Packet(op, {})).op == op


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_tuples_become_lists(serializer):
    got = round_trip(serializer, Packet("Tuples", {"t": (1, (2, "x"), ())}))
    assert strict_equal(got.data, {"t": [1, [2, "x"], []]})


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_depth_32_is_allowed(serializer):
    data = nested(32)
    assert depth(data) == 32
    assert_same_packet(round_trip(serializer, Packet("Deep", data)), Packet("Deep", data))


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_depth_33_is_refused_both_ways(serializer):
    data = nested(33)
    assert depth(data) == 33
    assert_unserializable(serializer, Packet("Deep", data))
    inner = serializer.dumps(Packet("Deep", nested(32)))
    if serializer is JSON:   # wrap the innermost 1 in one more list
        too_deep = inner.replace(b":1}", b":[1]}")
    else:                    # the innermost value 0x01 becomes the list [1]
        too_deep = inner[:-1] + b"\xa1\x01"
    assert too_deep != inner
    assert_bad_encoding(serializer, too_deep)


def test_loads_accepts_bytearray_and_memoryview_but_not_str():
    for serializer in BOTH:
        encoded = serializer.dumps(TYPICAL)
        assert_same_packet(serializer.loads(bytearray(encoded)), TYPICAL)
        assert_same_packet(serializer.loads(memoryview(encoded)), TYPICAL)
        with pytest.raises(LocalProtocolError):
            serializer.loads(encoded.decode("latin-1"))


# ---------------------------------------------------------------- dumps refuses

class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def stable_id(value):
    """repr, without the address an object's repr carries: every xdist worker
    must collect the same test names."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


BAD_VALUES = [
    b"bytes", bytearray(b"x"), {1, 2}, frozenset(), object(), 1j, float("nan"),
    float("inf"), float("-inf"), 2 ** 63, -2 ** 63 - 1, 10 ** 100, "\ud800",
    "ok \udfff", Colour.RED, Text("x"), OrderedDict(a=1), range(3), Packet("A", {}),
    [1, b"x"], {"k": {"k": float("nan")}}, {"k": {1: "int key"}},
    {"k": {None: 1}}, {"k": {("t",): 1}}, {"\ud800": 1}, nested(40),
]


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
@pytest.mark.parametrize("value", BAD_VALUES, ids=stable_id)
def test_dumps_refuses_values_outside_the_domain(serializer, value):
    assert_unserializable(serializer, Packet("Bad", {"v": value}))


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
@pytest.mark.parametrize("packet", [
    Packet("", {}), Packet("a" * 33, {}), Packet("Läuft", {}), Packet("two words", {}),
    Packet("op1", {}), Packet("op_x", {}), Packet(5, {}), Packet(None, {}),
    Packet(b"Ping", {}), Packet("\ud800", {}), Packet(Text("Ping"), {}),
    Packet("Ping", []), Packet("Ping", None), Packet("Ping", {1: 2}),
    Packet("Ping", OrderedDict()), "Ping", ("Ping",), None, 12,
], ids=repr)
def test_dumps_refuses_bad_packets(serializer, packet):
    assert_unserializable(serializer, packet)


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_dumps_refuses_cycles(serializer):
    loop = []
    loop.append(loop)
    cyclic = {}
    cyclic["self"] = cyclic
    assert_unserializable(serializer, Packet("Loop", {"l": loop}))
    assert_unserializable(serializer, Packet("Loop", cyclic))


# ---------------------------------------------------------------- loads refuses

@pytest.mark.parametrize("text", [
    b"", b" ", b"[]", b"1", b'"x"', b"null", b"{}", b'{"op":"Ping"}',
    b'{"data":{}}', b'{"op":"Ping","data":[]}', b'{"op":"Ping","data":null}',
    b'{"op":5,"data":{}}', b'{"op":"","data":{}}', b'{"op":"Ping1","data":{}}',
    b'{"op":"Ping","data":{},"x":1}', b'{"op":"Ping","op":"Pong","data":{}}',
    b'{"op":"Ping","data":{"a":1,"a":2}}', b'{"op":"Ping","data":{"a":[{"b":1,"b":1}]}}',
    b'{"op":"Ping","data":{"x":NaN}}', b'{"op":"Ping","data":{"x":Infinity}}',
    b'{"op":"Ping","data":{"x":-Infinity}}', b'{"op":"Ping","data":{"x":1e400}}',
    b'{"op":"Ping","data":{"x":9223372036854775808}}',
    b'{"op":"Ping","data":{"x":-9223372036854775809}}',
    b'{"op":"Ping","data":{"x":' + b"9" * 5000 + b"}}",
    b'{"op":"Ping","data":{"x":"\xff"}}', b'{"op":"Ping","data":{"x":"\xed\xa0\x80"}}',
    b'{"op":"Ping","data":{"x":"\\ud800"}}', b'{"op":"Ping","data":{"\\udc00":1}}',
    b'{"op":"Ping","data":{"x":"\\ude00\\ud83d"}}',
    b'\xef\xbb\xbf{"op":"Ping","data":{}}', '{"op":"Ping","data":{}}'.encode("utf-16"),
    b'{"op":"Ping","data":{}} x', b'{"op":"Ping","data":{}}{}', b'{"op":"Ping",',
    b"[" * 100000, b'{"op":"Ping","data":' + b'{"a":' * 100000,
], ids=lambda text: repr(text[:40]))
def test_json_loads_refuses(text):
    assert_bad_encoding(JSON, text)


def test_json_accepts_paired_surrogate_escapes_and_whitespace():
    got = JSON.loads(b' { "op" : "Ping" , "data" : {"x": "\\ud83d\\ude00\\u0000"} } ')
    assert_same_packet(got, Packet("Ping", {"x": "😀\x00"}))


@pytest.mark.parametrize("data", [
    b"", b"\x01", b"\x02\x04Ping\xb0", b"{\x04Ping\xb0", b"\x01\x00\xb0",
    b"\x01\x21" + b"a" * 33 + b"\xb0", b"\x01\x04Pin1\xb0", b"\x01\x04Pi g\xb0",
    b"\x01\x04Ping", b"\x01\x04Pin", b"\x01\x04Ping\xa0", b"\x01\x04Ping\x01",
    b"\x01\x04Ping\xc0", b"\x01\x04Ping\xb0\x00", b"\x01\x04Ping\xb0\xb0",
    HEADER + b"\xb1", HEADER + b"\xb1\x81a", HEADER + b"\xb1\x01\x01",
    HEADER + b"\xb1\xc0\x01", HEADER + b"\xb2\x81a\x01\x81a\x02",
    HEADER + b"\xb2\x81a\x01\xc8\x01a\x02", HEADER + b"\xb1\x81a\x82\xff\xfe",
    HEADER + b"\xb1\x81a\x83\xed\xa0\x80", HEADER + b"\xb1\x81a\x82\xc0\x80",
    HEADER + b"\xb1\x81\xff\x01", HEADER + b"\xb1\x81a\xc3\x7f\xf8\x00\x00\x00\x00\x00\x00",
    HEADER + b"\xb1\x81a\xc3\x7f\xf0\x00\x00\x00\x00\x00\x00",
    HEADER + b"\xb1\x81a\xc3\xff\xf0\x00\x00\x00\x00\x00\x00",
    HEADER + b"\xb1\x81a\xc3\x00\x00", HEADER + b"\xb1\x81a\xc7\x00",
    HEADER + b"\xb1\x81a\xc5\x00", HEADER + b"\xb1\x81a\xc9\x00",
    HEADER + b"\xb1\x81a\xa2\x01", HEADER + b"\xb1\x81a" + b"\xa1" * 100000,
] + [HEADER + b"\xb1\x81a" + bytes([tag]) for tag in range(0xCF, 0xE0)],
    ids=lambda data: data[:12].hex())
def test_binary_loads_refuses(data):
    assert_bad_encoding(BINARY, data)


def test_binary_accepts_longer_forms_than_needed():
    got = BINARY.loads(HEADER + b"\xce\x00\x00\x00\x02\xca\x00\x00\x00\x01a"
                       b"\xc7\x00\x00\x00\x00\x00\x00\x00\x05\xc8\x01b\xcc\x00\x00\x00\x01\xc4\xff")
    assert_same_packet(got, Packet("Ping", {"a": 5, "b": [-1]}))


HUGE_DECLARATIONS = [
    HEADER + b"\xce\xff\xff\xff\xff",
    HEADER + b"\xcd\xff\xff\x81a",
    HEADER + b"\xb1\x81a\xcc\xff\xff\xff\xff\x01",
    HEADER + b"\xb1\x81a\xcb\xff\xff",
    HEADER + b"\xb1\x81a\xca\xff\xff\xff\xffab",
    HEADER + b"\xb1\x81a\xc9\xff\xffab",
    HEADER + b"\xb1\xca\xff\xff\xff\xffab",
    HEADER + b"\xb1\x81a" + b"\xa1" * 20 + b"\xcc\x7f\xff\xff\xff",
]


@pytest.mark.parametrize("data", HUGE_DECLARATIONS, ids=lambda data: data[-8:].hex())
def test_huge_declared_lengths_are_refused_without_allocating_them(data):
    """A length or count of billions is refused before anything is built for it:
    peak memory stays small (no clock: the machine may be busy)."""
    tracemalloc.start()
    try:
        assert_bad_encoding(BINARY, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


# ---------------------------------------------------------------- fuzzing

@settings(max_examples=500)
@given(serializers, st.binary(max_size=300))
def test_random_bytes_only_raise_bad_encoding(serializer, data):
    assert_loads_contract(serializer, data)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bodies_after_a_valid_binary_header(body):
    assert_loads_contract(BINARY, HEADER + body)
    assert_loads_contract(BINARY, HEADER + b"\xb3" + body)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(ops | st.text(max_size=5) | st.integers(), any_json, st.booleans())
def test_arbitrary_json_documents_only_raise_bad_encoding(op, data, ascii_only):
    document = json.dumps({"op": op, "data": data}, ensure_ascii=ascii_only)
    assert_loads_contract(JSON, document.encode("utf-8", "surrogatepass"))


@st.composite
def mutations(draw, encoded):
    """`encoded` truncated, with a byte flipped or replaced, or with bytes added."""
    if not encoded:
        return draw(st.binary(min_size=1, max_size=8))
    kind = draw(st.sampled_from(["truncate", "flip", "replace", "insert", "append", "delete"]))
    at = draw(st.integers(0, max(len(encoded) - 1, 0)))
    if kind == "truncate":
        return encoded[:at]
    if kind == "flip":
        return encoded[:at] + bytes([encoded[at] ^ draw(st.integers(1, 255))]) + encoded[at + 1:]
    if kind == "replace":
        return encoded[:at] + draw(st.binary(min_size=1, max_size=4)) + encoded[at + 1:]
    if kind == "insert":
        return encoded[:at] + draw(st.binary(min_size=1, max_size=8)) + encoded[at:]
    if kind == "append":
        return encoded + draw(st.binary(min_size=1, max_size=8))
    return encoded[:at] + encoded[at + draw(st.integers(1, 8)):]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(serializers, packets, st.data())
def test_mutated_encodings_only_raise_bad_encoding(serializer, packet, data):
    encoded = serializer.dumps(packet)
    for _ in range(3):
        encoded = data.draw(mutations(encoded))
        assert_loads_contract(serializer, encoded)


@pytest.mark.parametrize("serializer", BOTH, ids=lambda s: s.name)
def test_every_truncation_of_a_typical_packet_is_bad_encoding(serializer):
    encoded = serializer.dumps(TYPICAL)
    for end in range(len(encoded)):
        assert_bad_encoding(serializer, encoded[:end])


# ---------------------------------------------------------------- format and registry

def test_binary_matches_the_documented_examples():
    assert BINARY.dumps(Packet("Ping", {})).hex() == "010450696e67b0"
    assert BINARY.dumps(Packet("Ping", {"v": [1, [None]], "w": -0.0})).hex() == (
        "0104" "50696e67" "b2" "8176" "a2" "01" "a1c0" "8177" "c38000000000000000")
    assert BINARY.dumps(TYPICAL).hex(" ") == (
        "01 07 4d 65 73 73 61 67 65 b7 82 69 64 0c 84 66 72 6f 6d 85 61 6c 69 63 65"
        " 82 74 6f 83 62 6f 62 87 73 75 62 6a 65 63 74 85 4c 75 6e 63 68 84 62 6f 64"
        " 79 88 41 74 20 6e 6f 6f 6e 3f 87 73 65 6e 74 5f 61 74 c3 41 da 47 f1 84 07"
        " df 3b 84 6b 69 6e 64 87 6d 65 73 73 61 67 65")


def test_json_form_is_compact_utf8():
    encoded = JSON.dumps(Packet("Ping", {"v": [1, 1.0, True, None, -0.0, "é"]}))
    assert encoded == '{"op":"Ping","data":{"v":[1,1.0,true,null,-0.0,"é"]}}'.encode()


def test_binary_is_smaller_than_json_for_a_typical_message():
    assert len(BINARY.dumps(TYPICAL)) < len(JSON.dumps(TYPICAL))


def test_get_serializer():
    assert get_serializer("json") is JSON and JSON.name == "json"
    assert get_serializer("binary") is BINARY and BINARY.name == "binary"
    assert SERIALIZERS == {"json": JSON, "binary": BINARY}
    for name in ["xml", "", "JSON", None, 5, ["json"]]:
        with pytest.raises(RemoteProtocolError) as info:
            get_serializer(name)
        assert info.value.code == "unsupported_serializer"
