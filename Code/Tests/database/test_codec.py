"""Tests for Modules/database/codec.py: msgpack on the Unix sockets between processes.

Unit tests of the two decoders on every kind of bad input (garbage,
truncated, trailing bytes, wrong types, out-of-range numbers, over-deep
nesting, duplicate keys), and a real database process refusing such a
frame: it closes only that connection, and says why in its log.
"""

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from Modules.database import codec
from Modules.database.connection import MAX_FRAME
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import encode_frame
from Modules.wire.serializers import MAX_DEPTH, Packet
from Tests.support import WAIT, running_database, wait_until
from Tests.support.monitor import user_link

SEND = Packet("Send", {"rid": 7, "to": "bob", "subject": "Lunch", "body": "At noon?",
                       "client_id": "c-1"})


def packed(*items):
    return msgpack.packb(list(items), use_bin_type=True)


def nested(depth):
    """A data map whose value `a` holds lists nested so that the deepest is at `depth`."""
    value = []
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


def refused(frame):
    with pytest.raises(RemoteProtocolError) as info:
        codec.loads_request(frame)
    assert info.value.code == "bad_encoding"
    return info.value.reason


# -- what is accepted --------------------------------------------------------------

def test_a_request_round_trips_exactly():
    frame = codec.dumps(SEND)
    assert codec.loads_request(frame) == SEND
    assert codec.loads_reply(frame) == SEND
    assert type(codec.loads_request(frame)) is Packet


DOMAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


@given(data=st.dictionaries(st.text(max_size=8), DOMAIN, max_size=6))
def test_every_packet_of_the_domain_round_trips_through_both_decoders(data):
    frame = codec.dumps(Packet("Reply", data))
    assert codec.loads_request(frame) == Packet("Reply", data)
    assert codec.loads_reply(frame) == Packet("Reply", data)


def test_nesting_up_to_the_limit_is_accepted_beyond_it_refused():
    assert codec.loads_request(packed("Send", nested(MAX_DEPTH))).data == nested(MAX_DEPTH)
    assert "nesting" in refused(packed("Send", nested(MAX_DEPTH + 1)))


def test_longer_forms_than_the_shortest_are_accepted():
    data = b"\xdc\x00\x02" + b"\xd9\x04Send" + b"\xde\x00\x01" + b"\xa1a\x01"  # array16, str8, map16
    assert codec.loads_request(data) == Packet("Send", {"a": 1})


# -- what is refused ---------------------------------------------------------------

@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x92", b"\xff" * 40, b"\x00",
                                   b"\xdd\xff\xff\xff\xff", b"\x92\xa4Send\xdf\xff\xff\xff\xff"])
def test_garbage_and_impossible_counts_are_refused(frame):
    refused(frame)
    with pytest.raises(RemoteProtocolError):
        codec.loads_reply(frame)


def test_every_truncation_of_a_request_is_refused():
    frame = codec.dumps(SEND)
    for end in range(len(frame)):
        refused(frame[:end])


def test_trailing_bytes_are_refused():
    refused(codec.dumps(SEND) + b"\xc0")


@pytest.mark.parametrize("obj", [
    {"op": "Send", "data": {}}, ["Send"], ["Send", {}, 1], [1, {}], ["Se nd", {}],
    ["", {}], ["S" * 33, {}], ["Send", []], ["Send", None], [["Send"], {}],
])
def test_anything_but_op_and_a_data_map_is_refused(obj):
    refused(packed(*obj) if isinstance(obj, list) else msgpack.packb(obj))


@pytest.mark.parametrize("value", [
    b"bytes", msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 0), 2 ** 63, 2 ** 64 - 1,
    math.nan, math.inf, -math.inf, [b"x"], [2 ** 63], [math.nan], {"b": b"x"},
])
def test_values_outside_the_domain_are_refused_at_any_level(value):
    refused(packed("Send", {"rid": 1, "a": value}))
    refused(packed("Send", {"rid": 1, "deep": [{"a": value}]}))


def test_keys_that_are_not_str_are_refused():
    refused(packed("Send", {b"rid": 1}))
    refused(packed("Send", {"a": {b"k": 1}}))
    with pytest.raises(RemoteProtocolError):
        codec.loads_request(packed("Send", {1: 1}))


def test_duplicate_keys_are_refused_at_every_level():
    assert "duplicate" in refused(b"\x92\xa4Send\x82\xa3rid\x01\xa3rid\x02")
    assert "duplicate" in refused(b"\x92\xa4Send\x81\xa1a\x91\x82\xa1k\x01\xa1k\x02")
    assert "duplicate" in refused(b"\x92\xd9\x04Send\x82\xa3rid\x01\xa3rid\x02")  # str8 op


def test_deep_nesting_far_beyond_the_limit_is_refused_without_recursing():
    refused(b"\x92\xa4Send\x81\xa1a" + b"\x91" * 100_000 + b"\xc0")
    refused(b"\x92\xa4Send\x81\xa1a" + b"\x81\xa1a" * 100_000 + b"\xc0")


def test_invalid_utf8_is_refused():
    assert "UTF-8" in refused(b"\x92\xa4Send\x81\xa1a\xa2\xff\xfe")
    refused(b"\x92\xa4Send\x81\xa1a\xa3\xed\xa0\x80")   # a lone surrogate, encoded


def test_reasons_never_quote_the_values():
    secret = "hunter2-secret"
    reason = refused(packed("Send", {"password": secret, "x": b"hunter2-secret"}))
    assert secret not in reason


@pytest.mark.parametrize("packet", [Packet("Reply", {"a": {1, 2}}), Packet("Reply", {"a": 2 ** 64}),
                                    Packet("Reply", {"a": "\ud800"}), Packet("Re ply", {}),
                                    Packet("Reply", [])])
def test_dumps_refuses_what_it_cannot_encode(packet):
    with pytest.raises(LocalProtocolError) as info:
        codec.dumps(packet)
    assert info.value.code == "unserializable"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_bad_encoding(frame):
    for loads in (codec.loads_request, codec.loads_reply):
        try:
            packet = loads(frame)
        except RemoteProtocolError as error:
            assert error.code == "bad_encoding"
        else:
            assert type(packet.op) is str and type(packet.data) is dict


# -- the database process ------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    b"\xc1garbage", codec.dumps(SEND)[:-3], packed("Send", {"rid": 1, "to": b"bob"}),
    b"\x92\xa4Send\x82\xa3rid\x01\xa3rid\x02", b"\x92\xa4Send\x81\xa1a" + b"\x91" * 40 + b"\xc0",
    packed("Send", {"rid": 1, "a": msgpack.ExtType(1, b"")}),
])
def test_the_monitor_closes_only_the_connection_that_sent_a_bad_frame(tmp_path, frame):
    log_path = tmp_path / "database.log"
    with running_database(tmp_path, log_path) as (proc, config):
        bad, good = user_link(config, "alice"), user_link(config, "bob")
        bad.sock.sendall(encode_frame(frame, MAX_FRAME))
        assert bad.sock.recv(1) == b""                       # closed, nothing answered
        assert good.call("Inbox")["messages"] == []          # the other one carries on
        assert proc.is_alive()
        wait_until(lambda: "closing" in log_path.read_text(), WAIT)
        assert "Traceback" not in log_path.read_text()
