"""Tests for Modules/wire/protocol.py: a client and a server Connection joined in memory.

h11 style: each side's output bytes are fed to the other's receive_data (whole,
or one byte at a time) and the events are checked. Covers the whole life of a
connection (Noise handshake, the Version exchange in JSON and then the chosen
serializer, the login prompts and answers, Welcome, session traffic, the
server's Login after SESSION, Logout and end of stream), the transition table
(every move not in TRANSITIONS, sent or received, is a sticky error naming
role, state and operation), schema checks (BadPacket, not fatal),
choose_version / version_offer, export_state / from_state, the payload limit
raised after Welcome, and a Hypothesis check that garbage only ever raises the
two protocol error types.
"""

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from Modules.wire import protocol
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import encode_frame
from Modules.wire.protocol import (
    CLOSED,
    NEED_DATA,
    PRE_LOGIN_MAX_PAYLOAD,
    SESSION_MAX_PAYLOAD,
    TRANSITIONS,
    BadPacket,
    Connection,
    choose_version,
    version_offer,
)
from Modules.wire.serializers import BINARY, JSON, Packet
from Tests.support.pairs import (
    SERVER_KEY,
    connection_pair,
    deliver,
    exchange,
    handshake,
    log_in,
    negotiate,
    one,
)

STATES = ("HANDSHAKE", "VERSION", "OFFERED", "LOGIN", "SESSION")
ALL_OPS = sorted({op for _, op in protocol.SCHEMAS} | {"Bogus"})
LIVE_STATES = ("VERSION", "OFFERED", "LOGIN", "SESSION")


# ----------------------------------------------------------------- helpers


def tap(conn):
    """Record every decrypted payload `conn`'s channel hands up (the raw packets)."""
    payloads = []
    original = conn.channel.next_event

    def next_event():
        event = original()
        payload = getattr(event, "payload", None)
        if payload is not None:
            payloads.append(bytes(payload))
        return event

    conn.channel.next_event = next_event
    return payloads


def serializer_in(conn):
    """The serializer `conn` reads with in its current state."""
    return JSON if conn.state in ("VERSION", "OFFERED") else conn.serializer


def raw_packet(sender, receiver, op, **data):
    """`sender` sends `op` past its own table (straight to its channel)."""
    return sender.channel.send(serializer_in(receiver).dumps(Packet(op, data)))


def send_request(client, server, rid=1, body="hello"):
    return exchange(client, server, "Send", rid=rid, to="bob", subject="hi", body=body,
                    client_id=f"c{rid}")


def sample_packet(op):
    """A schema-valid Packet for `op` (from either role's schema)."""
    values = {protocol._STR: "x", protocol._INT: 1, protocol._BOOL: True,
              protocol._LIST: [], protocol._DICT: {}, protocol._NUM: 1.5}
    fields = {}
    for (_, name), schema in protocol.SCHEMAS.items():
        if name == op:
            fields.update({field: values[kind] for field, (kind, _) in schema.items()})
    return Packet(op, fields)


# -------------------------------------------------------------- whole life


@pytest.mark.parametrize("step", [None, 1])
@pytest.mark.parametrize("serializers", [("binary", "json"), ("json",)])
def test_whole_life(step, serializers):
    client, server = Connection.client(), Connection.server(SERVER_KEY)
    assert client.state == server.state == "HANDSHAKE"
    handshake(client, server, step)
    chosen = negotiate(client, server, serializers, step)
    assert chosen == serializers[0]
    assert client.serializer.name == server.serializer.name == chosen
    log_in(client, server, step)

    request = exchange(client, server, "Send", step, rid=7, to="bob", subject="hi",
                       body="héllo ✓", client_id="abc-1")
    assert request == Packet("Send", {"rid": 7, "to": "bob", "subject": "hi",
                                      "body": "héllo ✓", "client_id": "abc-1"})
    result = exchange(server, client, "Result", step, rid=7, id=42)
    assert result == Packet("Result", {"rid": 7, "id": 42})
    message = exchange(server, client, "Message", step, id=43, to="alice", subject="yo",
                       body="b", sent_at=1700000000.5, kind="message", read=False,
                       **{"from": "bob"})
    assert message.op == "Message" and message.data["sent_at"] == 1700000000.5
    assert exchange(client, server, "Ack", step, ids=[43]) == Packet("Ack", {"ids": [43]})
    for op, data in [("Inbox", {"rid": 8, "limit": 10}), ("Read", {"rid": 9, "id": 43}),
                     ("Delete", {"rid": 10, "ids": [43]})]:
        assert exchange(client, server, op, step, **data) == Packet(op, data)
    system = exchange(server, client, "System", step, event="shutdown", message="bye soon")
    assert system.op == "System"
    assert exchange(client, server, "Logout", step, rid=11).op == "Logout"
    assert exchange(server, client, "Result", step, rid=11).data == {"rid": 11}
    assert client.state == server.state == "SESSION"

    assert deliver(b"", client) == [CLOSED]
    assert deliver(b"", server) == [CLOSED]
    assert client.state == server.state == "CLOSED"


def test_account_deleted_goes_back_to_login():
    client, server = connection_pair("SESSION")
    assert exchange(client, server, "DeleteAccount", rid=1, confirm=True).op == "DeleteAccount"
    exchange(server, client, "Result", rid=1)
    prompt = exchange(server, client, "Login", prompt="username", message="Account deleted.")
    assert prompt.data["prompt"] == "username"
    assert client.state == server.state == "LOGIN"
    # an Ack sent before the client saw the prompt is still legal (and ignored)
    assert exchange(client, server, "Ack", ids=[1]) == Packet("Ack", {"ids": [1]})
    assert client.state == server.state == "LOGIN"
    assert exchange(client, server, "Login", username="carol").data == {"username": "carol"}
    exchange(server, client, "Welcome", user="carol", created=True)
    assert client.state == server.state == "SESSION"


@pytest.mark.parametrize("op", ["Inbox", "Send", "Logout", "DeleteAccount"])
def test_session_requests_are_illegal_after_going_back_to_login(op):
    client, server = connection_pair("SESSION")
    exchange(server, client, "Login", prompt="username", message="Account deleted.")
    with pytest.raises(LocalProtocolError) as info:
        client.send(sample_packet(op))
    check_names(info.value, "client", "LOGIN", op)
    server.receive_data(raw_packet(client, server, op, **sample_packet(op).data))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    check_names(info.value, "client", "LOGIN", op)


def test_server_may_send_system_and_error_in_every_live_state():
    for state in LIVE_STATES:
        client, server = connection_pair(state)
        assert exchange(server, client, "System", event="e", message="m").op == "System"
        error = exchange(server, client, "Error", code="c", reason="r", fatal=False)
        assert error.op == "Error"
        assert client.state == server.state == state


def test_notice_before_accept_reaches_the_client():
    client, server = Connection.client(), Connection.server(SERVER_KEY)
    event = one(deliver(server.notice("server full"), client))
    assert event.text == "server full"


# ------------------------------------------------------------- serializers


def test_version_packets_are_json_then_the_chosen_serializer_is_used():
    client, server = Connection.client(), Connection.server(SERVER_KEY)
    seen_by_server, seen_by_client = tap(server), tap(client)
    handshake(client, server)
    assert negotiate(client, server, ("binary", "json")) == "binary"
    log_in(client, server)
    send_request(client, server)

    offer, *after_offer = seen_by_server
    reply, *after_reply = seen_by_client
    assert JSON.loads(offer) == version_offer(("binary", "json"))
    assert JSON.loads(reply).data["serializer"] == "binary"
    assert after_offer and after_reply
    for payload in after_offer + after_reply:
        assert payload[:1] == b"\x01"          # the binary format's version byte
        BINARY.loads(payload)
    assert BINARY.loads(after_offer[-1]).op == "Send"


def test_json_chosen_means_json_after_version():
    client, server = Connection.client(), Connection.server(SERVER_KEY)
    seen_by_server = tap(server)
    handshake(client, server)
    assert negotiate(client, server, ("json",)) == "json"
    log_in(client, server)
    assert all(JSON.loads(payload) for payload in seen_by_server)
    assert JSON.loads(seen_by_server[-1]).data == {"password": "hunter22"}


def test_server_preference_wins_over_client_order():
    offer = version_offer(("json", "binary"))
    assert choose_version(offer).data["serializer"] == "binary"
    assert choose_version(version_offer(("json",))).data["serializer"] == "json"


def test_version_offer_shape():
    offer = version_offer()
    assert offer.op == "Version"
    assert offer.data["versions"] == [protocol.PROTOCOL_VERSION]
    assert offer.data["serializers"] == ["binary", "json"]
    assert protocol.schema_problem("client", offer) is None


@pytest.mark.parametrize("versions", [[], [2], [0, 2, 3]])
def test_choose_version_refuses_unknown_versions(versions):
    offer = Packet("Version", {"versions": versions, "serializers": ["json"]})
    reply = choose_version(offer)
    assert reply.op == "Error"
    assert reply.data["code"] == "unsupported_version" and reply.data["fatal"] is True
    assert protocol.schema_problem("server", reply) is None


@pytest.mark.parametrize("versions", [[True], [1.0]])
def test_choose_version_does_not_take_bool_or_float_for_version_1(versions):
    reply = choose_version(Packet("Version", {"versions": versions, "serializers": ["json"]}))
    assert reply.op == "Error" and reply.data["code"] == "unsupported_version"


@pytest.mark.parametrize("serializers", [[], ["xml"], ["JSON", 7, None]])
def test_choose_version_refuses_without_common_serializer(serializers):
    offer = Packet("Version", {"versions": [1], "serializers": serializers})
    reply = choose_version(offer)
    assert reply.op == "Error"
    assert reply.data["code"] == "unsupported_serializer" and reply.data["fatal"] is True


def test_fatal_version_error_reaches_the_client():
    client, server = connection_pair("OFFERED")
    reply = choose_version(Packet("Version", {"versions": [9], "serializers": ["json"]}))
    event = one(deliver(server.send(reply), client))
    assert event == reply
    assert client.state == "OFFERED"


def test_client_refuses_a_serializer_it_did_not_offer():
    client, server = connection_pair("OFFERED")
    client.receive_data(raw_packet(server, client, "Version", version=1, serializer="xml"))
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code == "unsupported_serializer"


def test_server_sending_an_unknown_serializer_is_a_local_error():
    _, server = connection_pair("OFFERED")
    with pytest.raises(LocalProtocolError):
        server.send(Packet("Version", {"version": 1, "serializer": "xml"}))


# ---------------------------------------------------------- illegal moves


def illegal(role, state):
    return [op for op in ALL_OPS if (role, state, op) not in TRANSITIONS]


def check_names(error, role, state, op):
    text = str(error)
    assert role in text and state in text and repr(op) in text
    assert error.code == "illegal_move"


@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize("state", STATES)
def test_sending_a_move_not_in_the_table_is_a_local_error(role, state):
    for op in illegal(role, state):
        pair = dict(zip(("client", "server"), connection_pair(state)))
        conn = pair[role]
        with pytest.raises(LocalProtocolError) as info:
            conn.send(sample_packet(op))
        check_names(info.value, role, state, op)


@pytest.mark.parametrize("role", ["client", "server"])
@pytest.mark.parametrize("state", LIVE_STATES)
def test_receiving_a_move_not_in_the_table_is_a_remote_error(role, state):
    peer_role = "server" if role == "client" else "client"
    for op in illegal(peer_role, state):
        pair = dict(zip(("client", "server"), connection_pair(state)))
        conn, peer = pair[role], pair[peer_role]
        conn.receive_data(raw_packet(peer, conn, op, **sample_packet(op).data))
        with pytest.raises(RemoteProtocolError) as info:
            conn.next_event()
        check_names(info.value, peer_role, state, op)
        assert conn.state == "ERROR"


def test_remote_error_sticks():
    client, server = connection_pair("LOGIN")
    server.receive_data(raw_packet(client, server, "Send", rid=1, to="b", subject="",
                                   body="", client_id="x"))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    first = info.value
    for call, args in [(server.next_event, ()), (server.receive_data, (b"x",)),
                       (server.send, (Packet("Login", {"prompt": "p", "message": "m"}),)),
                       (server.export_state, ())]:
        with pytest.raises(RemoteProtocolError) as again:
            call(*args)
        assert again.value is first


def test_local_error_sticks():
    client, server = connection_pair("LOGIN")
    with pytest.raises(LocalProtocolError) as info:
        client.send(Packet("Welcome", {"user": "a", "created": False}))
    first = info.value
    assert client.state == "ERROR"
    for call, args in [(client.send, (Packet("Login", {"username": "alice"}),)),
                       (client.next_event, ()), (client.receive_data, (b"",)),
                       (client.export_state, ())]:
        with pytest.raises(LocalProtocolError) as again:
            call(*args)
        assert again.value is first


def test_version_twice_is_illegal():
    client, server = connection_pair("LOGIN")
    with pytest.raises(LocalProtocolError):
        client.send(version_offer())


# -------------------------------------------------------------- bad packets


@pytest.mark.parametrize("data, field", [
    ({"to": "bob", "subject": "s", "body": "b", "client_id": "c"}, "rid"),
    ({"rid": True, "to": "bob", "subject": "s", "body": "b", "client_id": "c"}, "rid"),
    ({"rid": "1", "to": "bob", "subject": "s", "body": "b", "client_id": "c"}, "rid"),
    ({"rid": 1.0, "to": "bob", "subject": "s", "body": "b", "client_id": "c"}, "rid"),
    ({"rid": 1, "to": None, "subject": "s", "body": "b", "client_id": "c"}, "to"),
    ({"rid": 1, "to": "bob", "subject": "s", "client_id": "c"}, "body"),
])
def test_bad_packet_is_not_fatal(data, field):
    client, server = connection_pair("SESSION")
    event = exchange(client, server, "Send", **data)
    assert isinstance(event, BadPacket)
    assert event.op == "Send" and event.rid == data.get("rid")
    assert f"'{field}'" in event.reason
    assert server.state == "SESSION"
    assert send_request(client, server, rid=2).data["rid"] == 2
    assert exchange(server, client, "Result", rid=2).op == "Result"


@pytest.mark.parametrize("op, data, field", [
    ("Welcome", {"user": "alice", "created": 1}, "created"),
    ("Login", {"prompt": "username"}, "message"),
    ("Login", {"prompt": "password", "message": "m", "attempts_left": False},
     "attempts_left"),
])
def test_bad_packet_from_the_server_in_login(op, data, field):
    client, server = connection_pair("LOGIN")
    event = exchange(server, client, op, **data)
    assert isinstance(event, BadPacket) and f"'{field}'" in event.reason


def test_bad_packet_optional_field_of_wrong_type():
    client, server = connection_pair("SESSION")
    event = exchange(client, server, "Inbox", rid=1, limit="ten")
    assert isinstance(event, BadPacket) and "'limit'" in event.reason
    assert exchange(client, server, "Inbox", rid=2, limit=10, extra="ignored").op == "Inbox"


def test_bad_packet_changes_no_state():
    client, server = connection_pair("LOGIN")
    client.receive_data(raw_packet(server, client, "Welcome", user="alice"))
    event = client.next_event()
    assert isinstance(event, BadPacket) and "'created'" in event.reason
    assert client.state == "LOGIN"
    exchange(server, client, "Welcome", user="alice", created=False)
    assert client.state == "SESSION"

    client, server = connection_pair("VERSION")
    server.receive_data(raw_packet(client, server, "Version", versions=[1],
                                   serializers="json"))
    event = server.next_event()
    assert isinstance(event, BadPacket) and "'serializers'" in event.reason
    assert server.state == "VERSION"
    assert exchange(client, server, "Version", **version_offer().data).op == "Version"
    assert server.state == "OFFERED"


def test_bad_version_choice_keeps_the_client_waiting():
    client, server = connection_pair("OFFERED")
    client.receive_data(raw_packet(server, client, "Version", version=1))
    event = client.next_event()
    assert isinstance(event, BadPacket) and "'serializer'" in event.reason
    assert client.state == "OFFERED" and client.serializer is JSON


def test_bool_is_not_a_number_for_sent_at():
    client, server = connection_pair("SESSION")
    event = exchange(server, client, "Message", id=1, to="alice", subject="s", body="b",
                     sent_at=True, kind="message", **{"from": "bob"})
    assert isinstance(event, BadPacket) and "'sent_at'" in event.reason


# ---------------------------------------------------------------- farewell


def broken_by_peer(state):
    """A pair whose server just refused an illegal move from the client."""
    client, server = connection_pair(state)
    server.receive_data(raw_packet(client, server, "Welcome", user="x", created=True))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    return client, server


@pytest.mark.parametrize("state", LIVE_STATES)
def test_farewell_tells_the_peer_why(state):
    client, server = broken_by_peer(state)
    goodbye = Packet("Error", {"code": "illegal_move", "reason": "no", "fatal": True})
    assert one(deliver(server.farewell(goodbye), client)) == goodbye
    with pytest.raises(RemoteProtocolError):      # the connection is still dead
        server.send(Packet("System", {"event": "e", "message": "m"}))


def test_no_farewell_without_a_peer_error():
    client, server = connection_pair("SESSION")
    goodbye = Packet("Error", {"code": "c", "reason": "r", "fatal": True})
    with pytest.raises(LocalProtocolError):
        server.farewell(goodbye)
    with pytest.raises(LocalProtocolError):
        server.send(Packet("Welcome", {"user": "a", "created": True}))
    with pytest.raises(LocalProtocolError):
        server.farewell(goodbye)


def test_no_farewell_after_a_failed_handshake():
    _, server = connection_pair("HANDSHAKE")
    server.receive_data(encode_frame(b"\x02garbage", 1 << 16))
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.farewell(Packet("Error", {"code": "c", "reason": "r", "fatal": True}))


# ------------------------------------------------------------ export state


def test_export_mid_session_continues_both_ways():
    client, server = connection_pair("SESSION")
    state = pickle.loads(pickle.dumps(server.export_state()))
    assert state["role"] == "server" and state["state"] == "SESSION"
    assert state["serializer"] == "binary"
    moved = Connection.from_state(state)
    assert moved.state == "SESSION" and moved.serializer is BINARY
    assert send_request(client, moved, rid=5).data["rid"] == 5
    assert exchange(moved, client, "Result", rid=5).data == {"rid": 5}

    client_state = pickle.loads(pickle.dumps(client.export_state()))
    client2 = Connection.from_state(client_state)
    assert send_request(client2, moved, rid=6).data["rid"] == 6
    assert exchange(moved, client2, "Result", rid=6).data == {"rid": 6}


def test_export_carries_buffered_bytes():
    client, server = connection_pair("SESSION")
    wire = client.send(Packet("Inbox", {"rid": 3}))
    server.receive_data(wire[:10])
    moved = Connection.from_state(pickle.loads(pickle.dumps(server.export_state())))
    assert deliver(wire[10:], moved) == [Packet("Inbox", {"rid": 3})]


def test_export_keeps_the_json_serializer_and_login_state():
    client, server = connection_pair("LOGIN", serializers=("json",))
    moved = Connection.from_state(pickle.loads(pickle.dumps(server.export_state())))
    assert moved.state == "LOGIN" and moved.serializer is JSON
    assert exchange(client, moved, "Login", username="bob").data == {"username": "bob"}


def test_exported_connection_is_retired():
    client, server = connection_pair("SESSION")
    server.export_state()
    with pytest.raises(LocalProtocolError):
        server.send(Packet("Result", {"rid": 1}))


# ------------------------------------------------------------- payload cap


def big_body():
    return "x" * (100 * 1024)


def test_large_payload_refused_before_login():
    client, server = connection_pair("LOGIN")
    assert server.channel.max_payload == PRE_LOGIN_MAX_PAYLOAD
    server.receive_data(client.send(Packet("Login", {"username": big_body()})))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "payload_too_large"


def test_large_payload_accepted_after_welcome():
    client, server = connection_pair("SESSION")
    assert server.channel.max_payload == SESSION_MAX_PAYLOAD
    event = send_request(client, server, body=big_body())
    assert event.data["body"] == big_body()
    big = exchange(server, client, "Result", rid=1, note=big_body())
    assert big.data["note"] == big_body()


def test_session_cap_is_still_a_cap():
    client, server = connection_pair("SESSION")
    server.receive_data(client.send(Packet("Send", {
        "rid": 1, "to": "bob", "subject": "s", "client_id": "c",
        "body": "x" * SESSION_MAX_PAYLOAD})))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "payload_too_large"


def test_raised_cap_survives_export():
    client, server = connection_pair("SESSION")
    moved = Connection.from_state(server.export_state())
    assert send_request(client, moved, body=big_body()).data["body"] == big_body()


# ------------------------------------------------------------- hypothesis


def drain_safely(conn):
    """Drain events; let only the two protocol error types escape."""
    for _ in range(1000):
        event = conn.next_event()
        if event is NEED_DATA or event is CLOSED:
            return


def feed(conn, data, eof):
    try:
        conn.receive_data(data)
        drain_safely(conn)
        if eof:
            conn.receive_data(b"")
            drain_safely(conn)
    except (LocalProtocolError, RemoteProtocolError):
        pass


def _values():
    scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=8)


field_names = st.sampled_from(sorted({f for s in protocol.SCHEMAS.values() for f in s}))
random_packets = st.builds(
    Packet, st.sampled_from(ALL_OPS),
    st.dictionaries(field_names | st.text(max_size=5), _values(), max_size=6))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(state=st.sampled_from(STATES), garbage=st.binary(max_size=200), eof=st.booleans(),
       framed=st.booleans())
def test_raw_garbage_raises_only_protocol_errors(state, garbage, eof, framed):
    _, server = connection_pair(state)
    if framed:
        garbage = encode_frame(garbage[:1] + garbage, 1 << 20)
    feed(server, garbage, eof)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.sampled_from(LIVE_STATES), payloads=st.lists(st.binary(max_size=100),
                                                              min_size=1, max_size=3),
       eof=st.booleans())
def test_encrypted_garbage_raises_only_protocol_errors(state, payloads, eof):
    client, server = connection_pair(state)
    feed(server, b"".join(client.channel.send(p) for p in payloads), eof)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.sampled_from(LIVE_STATES), packets=st.lists(random_packets, min_size=1,
                                                             max_size=3))
def test_random_packets_raise_only_protocol_errors(state, packets):
    client, server = connection_pair(state)
    wire = b"".join(client.channel.send(serializer_in(server).dumps(p)) for p in packets)
    try:
        server.receive_data(wire)
        while (event := server.next_event()) is not NEED_DATA:
            assert isinstance(event, (Packet, BadPacket))
    except (LocalProtocolError, RemoteProtocolError):
        assert server.state == "ERROR"


# ------------------------------------------------------------ batching


def frame_count(wire):
    return len(channel_frames(wire))


def channel_frames(wire):
    from Modules.wire.channel import MAX_FRAME
    from Modules.wire.framing import FrameDecoder
    decoder = FrameDecoder(MAX_FRAME)
    decoder.receive_data(wire)
    frames = []
    while (frame := decoder.next_event()) is not NEED_DATA:
        frames.append(frame)
    return frames


def test_batch_is_agreed_when_the_client_offers_it():
    client, server = connection_pair("SESSION")
    assert client.batching and server.batching
    for rid in (1, 2, 3):
        client.queue(Packet("Send", {"rid": rid, "to": "bob", "subject": "s", "body": "b",
                                     "client_id": f"c{rid}"}))
    wire = client.flush()
    assert frame_count(wire) == 1
    assert [p.data["rid"] for p in deliver(wire, server)] == [1, 2, 3]
    for rid in (1, 2, 3):
        server.queue(Packet("Result", {"rid": rid}))
    wire = server.flush()
    assert frame_count(wire) == 1 and server.flush() == b""
    assert [p.data["rid"] for p in deliver(wire, client)] == [1, 2, 3]


def test_no_batch_frames_for_a_client_that_did_not_offer_them():
    client, server = Connection.client(), Connection.server(SERVER_KEY)
    handshake(client, server)
    offer = version_offer()
    del offer.data["features"]
    deliver(client.send(offer), server)
    reply = choose_version(offer)
    assert reply.data["features"] == []
    deliver(server.send(reply), client)
    assert not client.batching and not server.batching
    server.queue(Packet("Login", {"prompt": "username", "message": "Username:"}))
    server.queue(Packet("System", {"event": "note", "message": "hi"}))
    assert frame_count(server.flush()) == 2


def test_batching_survives_the_hand_off_and_export_needs_an_empty_queue():
    client, server = connection_pair("SESSION")
    server.queue(Packet("Result", {"rid": 1}))
    with pytest.raises(LocalProtocolError):
        server.export_state()
    wire = server.flush()
    moved = Connection.from_state(pickle.loads(pickle.dumps(server.export_state())))
    assert moved.batching
    moved.queue(Packet("Result", {"rid": 2}))
    moved.queue(Packet("Result", {"rid": 3}))
    wire += moved.flush()
    assert [p.data["rid"] for p in deliver(wire, client)] == [1, 2, 3]


def test_farewell_carries_what_was_queued_before_it():
    client, server = connection_pair("SESSION")
    server.queue(Packet("Result", {"rid": 7}))
    with pytest.raises(RemoteProtocolError):
        deliver(b"\x00\x00\x00\x02\x02\x00", server)   # a frame that fails to decrypt
    wire = server.farewell(Packet("Error", {"code": "bad", "reason": "r", "fatal": True}))
    events = deliver(wire, client)
    assert [p.op for p in events] == ["Result", "Error"]
