"""Tests for Modules/wire/channel.py: two SecureChannels joined in memory (h11 style)."""

import pickle
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from Modules.wire.channel import (
    CHUNK_SIZE,
    CLOSED,
    MAX_FRAME,
    NEED_DATA,
    PROLOGUE,
    ClientHello,
    Data,
    Notice,
    SecureChannel,
)
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import FrameDecoder, encode_frame
from Modules.wire.noise import KeyPair
from Tests.support.pairs import (
    SERVER_KEY,
    channel_handshake,
    channel_pair,
    deliver,
    drain,
)


def frames_of(wire):
    """The wire split into whole frames (length prefix included)."""
    decoder = FrameDecoder(MAX_FRAME)
    decoder.receive_data(wire)
    frames = []
    while (payload := decoder.next_event()) is not NEED_DATA:
        frames.append(encode_frame(payload, MAX_FRAME))
    return frames


def payload_of(size):
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def raises_remote(code, call, *args):
    with pytest.raises(RemoteProtocolError) as info:
        call(*args)
    assert info.value.code == code
    return info.value


# --------------------------------------------------------------- handshake


@pytest.mark.parametrize("step", [None, 1, 7])
def test_handshake_at_any_split(step):
    client = SecureChannel("initiator")
    server = SecureChannel("responder", SERVER_KEY)
    assert not client.handshake_complete
    done = channel_handshake(client, server, step)
    assert done.remote_static == SERVER_KEY.public == client.remote_static
    assert done.handshake_hash == server.handshake_hash == client.handshake_hash
    assert client.handshake_complete and server.handshake_complete
    assert deliver(client.send(b"ping"), server, step) == [Data(b"ping")]
    assert deliver(server.send(b"pong"), client, step) == [Data(b"pong")]


def test_prologue_mismatch_fails_handshake():
    client = SecureChannel("initiator", prologue=b"Parley wire protocol 0")
    server = SecureChannel("responder", SERVER_KEY)
    server.receive_data(client.initiate())
    assert server.next_event() == ClientHello()
    client.receive_data(server.accept())
    raises_remote("decrypt_failed", client.next_event)
    assert PROLOGUE.startswith(b"Parley wire protocol 1")


def test_impostor_key_is_visible_to_the_client():
    impostor = KeyPair.generate()
    client = SecureChannel("initiator")
    done = channel_handshake(client, SecureChannel("responder", impostor))
    assert done.remote_static == impostor.public != SERVER_KEY.public


def test_responder_needs_a_static_key():
    with pytest.raises(LocalProtocolError):
        SecureChannel("responder")
    with pytest.raises(LocalProtocolError):
        SecureChannel("server", SERVER_KEY)


def test_handshake_payload_is_refused():
    from Modules.wire.noise import HandshakeState
    hello = HandshakeState("NX", True, PROLOGUE).write_message(b"extra")
    server = SecureChannel("responder", SERVER_KEY)
    server.receive_data(encode_frame(b"\x01" + hello, MAX_FRAME))
    raises_remote("bad_handshake", server.next_event)


# ------------------------------------------------------- payloads, chunks


@pytest.mark.parametrize("size", [0, 1, 65517, 65518, 65519, 65520, 200 * 1024])
def test_payload_sizes_both_directions(size):
    client, server = channel_pair()
    payload = payload_of(size)
    wire = client.send(payload)
    frames = frames_of(wire)
    assert len(frames) == max(1, -(-size // CHUNK_SIZE))
    assert all(len(frame) <= 4 + MAX_FRAME for frame in frames)
    assert deliver(wire, server) == [Data(payload)]
    assert deliver(server.send(payload), client) == [Data(payload)]


def test_chunk_boundary_is_one_noise_message():
    client, _ = channel_pair()
    assert CHUNK_SIZE == 65518
    assert len(frames_of(client.send(bytes(CHUNK_SIZE)))) == 1
    assert len(frames_of(client.send(bytes(CHUNK_SIZE + 1)))) == 2
    assert len(frames_of(client.send(bytes(2 * CHUNK_SIZE)))) == 2


def test_chunked_payload_byte_at_a_time():
    client, server = channel_pair()
    payload = payload_of(CHUNK_SIZE + 1000)
    assert deliver(client.send(payload) + client.send(b"next"), server, 1) == [
        Data(payload), Data(b"next")]


def test_many_payloads_in_one_read():
    client, server = channel_pair()
    wire = b"".join(client.send(bytes([n]) * n) for n in range(50))
    assert deliver(wire, server) == [Data(bytes([n]) * n) for n in range(50)]


def test_send_accepts_bytearray_and_memoryview():
    client, server = channel_pair()
    wire = client.send(bytearray(b"ab")) + client.send(memoryview(b"cd"))
    assert deliver(wire, server) == [Data(b"ab"), Data(b"cd")]


def test_data_repr_hides_the_payload():
    assert "secret" not in repr(Data(b"secret")) and "6 bytes" in repr(Data(b"secret"))


# ------------------------------------------------------------------ limits


def test_max_payload_exceeded():
    client, server = channel_pair(max_payload=1000)
    assert deliver(client.send(bytes(1000)), server) == [Data(bytes(1000))]
    server.receive_data(client.send(bytes(1001)))
    raises_remote("payload_too_large", server.next_event)
    raises_remote("payload_too_large", server.next_event)  # sticky


def test_max_payload_refused_as_soon_as_exceeded():
    client, server = channel_pair(max_payload=CHUNK_SIZE + 10)
    frames = frames_of(client.send(bytes(200 * 1024)))
    server.receive_data(frames[0])
    assert server.next_event() is NEED_DATA
    server.receive_data(frames[1])  # the other two frames are never needed
    raises_remote("payload_too_large", server.next_event)


def test_nonce_limit_on_send():
    client = SecureChannel("initiator", nonce_limit=3)
    server = SecureChannel("responder", SERVER_KEY)
    channel_handshake(client, server)
    for _ in range(3):
        deliver(client.send(b"x"), server)
    with pytest.raises(LocalProtocolError) as info:
        client.send(b"x")
    assert info.value.code == "nonce_exhausted"


def test_chunked_send_past_the_limit_sends_nothing():
    client = SecureChannel("initiator", nonce_limit=2)
    channel_handshake(client, SecureChannel("responder", SERVER_KEY))
    client.send(b"x")
    with pytest.raises(LocalProtocolError):
        client.send(bytes(CHUNK_SIZE + 1))  # needs nonces 1 and 2


def test_nonce_limit_on_receive():
    client = SecureChannel("initiator")
    server = SecureChannel("responder", SERVER_KEY, nonce_limit=1)
    channel_handshake(client, server)
    deliver(client.send(b"x"), server)
    server.receive_data(client.send(b"y"))
    with pytest.raises(LocalProtocolError) as info:
        server.next_event()
    assert info.value.code == "nonce_exhausted"


def test_default_limit_stops_before_the_counter_wraps():
    client, server = channel_pair()
    client_state, server_state = client.export_state(), server.export_state()
    client_state["send_nonce"] = server_state["recv_nonce"] = 2**64 - 3
    client = SecureChannel.from_state(client_state)
    server = SecureChannel.from_state(server_state)
    assert deliver(client.send(b"last"), server) == [Data(b"last")]
    with pytest.raises(LocalProtocolError) as info:
        client.send(b"one more")
    assert info.value.code == "nonce_exhausted"


# ------------------------------------------------------- attacks on frames


def test_tampered_frame_fails_decryption():
    client, server = channel_pair()
    for position in (5, 6, 20, -1):
        client2, server2 = channel_pair()
        wire = bytearray(client2.send(b"hello world"))
        wire[position] ^= 0x04
        server2.receive_data(bytes(wire))
        raises_remote("decrypt_failed", server2.next_event)
    assert deliver(client.send(b"ok"), server) == [Data(b"ok")]


def test_replayed_frame_fails_decryption():
    client, server = channel_pair()
    frame = client.send(b"pay me")
    assert deliver(frame, server) == [Data(b"pay me")]
    server.receive_data(frame)
    raises_remote("decrypt_failed", server.next_event)


def test_reordered_frames_fail_decryption():
    client, server = channel_pair()
    first, second = client.send(b"one"), client.send(b"two")
    server.receive_data(second + first)
    raises_remote("decrypt_failed", server.next_event)


def test_eof_mid_frame_is_truncation():
    client, server = channel_pair()
    wire = client.send(b"cut short")
    server.receive_data(wire[:-3])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    raises_remote("truncated", server.next_event)


def test_eof_mid_chunked_payload_is_truncation():
    client, server = channel_pair()
    frames = frames_of(client.send(bytes(200 * 1024)))
    server.receive_data(frames[0] + frames[1])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    raises_remote("truncated", server.next_event)


def test_clean_eof_is_closed():
    client, server = channel_pair()
    server.receive_data(client.send(b"bye") + b"")
    server.receive_data(b"")
    assert drain(server) == [Data(b"bye"), CLOSED]
    assert server.next_event() is CLOSED


# ----------------------------------------------------- notices, frame kinds


def test_server_full_notice_before_handshake():
    client = SecureChannel("initiator")
    server = SecureChannel("responder", SERVER_KEY)
    hello = client.initiate()
    client.receive_data(server.notice("server full ✓"))
    client.receive_data(b"")
    assert drain(client) == [Notice("server full ✓"), CLOSED]
    assert deliver(hello, server) == [ClientHello()]
    assert deliver(server.notice("still full"), SecureChannel("initiator")) == [
        Notice("still full")]


def test_notice_after_accept_is_local_error():
    _, server = channel_pair()
    with pytest.raises(LocalProtocolError) as info:
        server.notice("too late")
    assert info.value.code == "illegal_move"


def test_notice_after_handshake_is_illegal_for_the_client():
    client, _ = channel_pair()
    client.receive_data(encode_frame(b"\x03late", MAX_FRAME))
    error = raises_remote("illegal_move", client.next_event)
    assert "initiator" in error.reason and "OPEN" in error.reason
    assert "notice" in error.reason


def test_client_sending_a_notice_is_illegal():
    server = SecureChannel("responder", SERVER_KEY)
    server.receive_data(encode_frame(b"\x03hello", MAX_FRAME))
    error = raises_remote("illegal_move", server.next_event)
    assert "responder" in error.reason and "START" in error.reason
    with pytest.raises(LocalProtocolError):
        SecureChannel("initiator").notice("clients cannot")


def test_transport_before_handshake_is_illegal():
    server = SecureChannel("responder", SERVER_KEY)
    server.receive_data(encode_frame(b"\x02" + bytes(40), MAX_FRAME))
    error = raises_remote("illegal_move", server.next_event)
    assert "transport" in error.reason


def test_unknown_frame_kind_is_named():
    client, server = channel_pair()
    server.receive_data(encode_frame(b"\x07abc", MAX_FRAME))
    error = raises_remote("illegal_move", server.next_event)
    assert "0x07" in error.reason and "responder" in error.reason


def test_second_client_hello_is_illegal():
    client = SecureChannel("initiator")
    server = SecureChannel("responder", SERVER_KEY)
    hello = client.initiate()
    server.receive_data(hello + hello)
    assert server.next_event() == ClientHello()
    raises_remote("illegal_move", server.next_event)


def test_empty_frame_is_refused():
    server = SecureChannel("responder", SERVER_KEY)
    server.receive_data(encode_frame(b"", MAX_FRAME))
    raises_remote("bad_frame", server.next_event)


def test_oversize_frame_is_refused():
    client, _ = channel_pair()
    client.receive_data((MAX_FRAME + 1).to_bytes(4, "big"))
    raises_remote("frame_too_large", client.next_event)


@pytest.mark.parametrize("role, call", [
    ("initiator", "accept"), ("responder", "initiate"), ("initiator", "send"),
    ("responder", "send"), ("responder", "accept"), ("responder", "export_state"),
])
def test_moves_out_of_order_are_local_errors(role, call):
    channel = SecureChannel(role, SERVER_KEY if role == "responder" else None)
    args = (b"x",) if call == "send" else ()
    with pytest.raises(LocalProtocolError):
        getattr(channel, call)(*args)
    with pytest.raises(LocalProtocolError):  # sticky
        channel.next_event()


def test_initiate_twice_is_local_error():
    client = SecureChannel("initiator")
    client.initiate()
    with pytest.raises(LocalProtocolError):
        client.initiate()


def test_remote_errors_stick():
    client, server = channel_pair()
    server.receive_data(encode_frame(b"\x09", MAX_FRAME))
    raises_remote("illegal_move", server.next_event)
    with pytest.raises(RemoteProtocolError):
        server.send(b"anything")
    with pytest.raises(RemoteProtocolError):
        server.receive_data(b"more")


# ------------------------------------------------------------- hand-off


# ------------------------------------------------------------ batch frames


def batch_frame(sender, body):
    """A transport frame with the batch flag and a hand-made body."""
    return sender._transport_frame(b"\x02", body)


def test_send_many_puts_small_payloads_in_one_frame():
    client, server = channel_pair()
    payloads = [b"one", b"two", payload_of(300), b"four"]
    wire = client.send_many(payloads)
    assert len(frames_of(wire)) == 1
    assert deliver(wire, server) == [Data(p) for p in payloads]
    assert server._recv_cipher.n == 1


def test_send_many_splits_at_one_noise_message_and_chunks_large_payloads():
    client, server = channel_pair()
    payloads = [payload_of(40000), payload_of(40000), payload_of(200 * 1024), b"tail"]
    wire = client.send_many(payloads)
    assert len(frames_of(wire)) == 1 + 1 + 4 + 1
    assert deliver(wire, server, step=5000) == [Data(p) for p in payloads]


def test_batch_items_are_returned_one_by_one_and_survive_export():
    client, server = channel_pair()
    server.receive_data(client.send_many([b"a", b"b", b"c"]))
    assert server.next_event() == Data(b"a")
    moved = exchange_through_pickle(server)
    assert drain(moved) == [Data(b"b"), Data(b"c")]


@pytest.mark.parametrize("body, code", [
    (b"", "bad_batch"),                                  # no item at all
    (b"\x00\x00\x00", "bad_batch"),                     # truncated length
    (b"\x00\x00\x00\x00", "bad_batch"),                 # empty item
    (b"\x00\x00\x00\x09abc", "bad_batch"),              # item longer than the frame
    (b"\x00\x00\x00\x01a\x00\x00", "bad_batch"),        # trailing bytes
])
def test_malformed_batch_frames_are_remote_errors(body, code):
    client, server = channel_pair()
    raises_remote(code, deliver, batch_frame(client, body), server)


def test_batch_items_obey_the_payload_limit():
    client, server = channel_pair(max_payload=100)
    raises_remote("payload_too_large", deliver,
                  client.send_many([b"small", payload_of(101)]), server)


def test_a_batch_inside_a_chunked_payload_is_refused():
    client, server = channel_pair()
    first_chunk = frames_of(client.send(payload_of(100000)))[0]
    client._send_cipher.set_nonce(1)   # the batch takes the second chunk's place
    raises_remote("bad_chunk", deliver,
                  first_chunk + batch_frame(client, b"\x00\x00\x00\x01a"), server)


def exchange_through_pickle(channel):
    state = channel.export_state()
    assert all(isinstance(value, (bytes, int, str, type(None)))
               for value in state.values())
    return SecureChannel.from_state(pickle.loads(pickle.dumps(state)))


def test_export_mid_stream_continues_both_ways():
    client, server = channel_pair()
    for n in range(5):
        deliver(client.send(b"c%d" % n), server)
        deliver(server.send(b"s%d" % n), client)
    pending_frames = frames_of(client.send(b"in flight") + client.send(bytes(70000)))
    server.receive_data(pending_frames[0] + pending_frames[1] + pending_frames[2][:9])
    moved = exchange_through_pickle(server)
    assert moved.handshake_hash == client.handshake_hash and moved.handshake_complete
    assert drain(moved) == [Data(b"in flight")]
    assert deliver(pending_frames[2][9:], moved) == [Data(bytes(70000))]
    assert deliver(moved.send(b"from new process"), client) == [Data(b"from new process")]
    client = exchange_through_pickle(client)
    assert deliver(client.send(b"both moved"), moved) == [Data(b"both moved")]
    assert deliver(moved.send(b"reply"), client) == [Data(b"reply")]


def test_export_keeps_partial_reassembly_and_nonces():
    client, server = channel_pair()
    frames = frames_of(client.send(payload_of(200 * 1024)))
    server.receive_data(frames[0] + frames[1])
    assert server.next_event() is NEED_DATA
    state = server.export_state()
    assert state["recv_nonce"] == 2 and state["send_nonce"] == 0
    assert len(state["partial"]) == 2 * CHUNK_SIZE and state["pending"] == b""
    moved = SecureChannel.from_state(state)
    assert deliver(frames[2] + frames[3], moved) == [Data(payload_of(200 * 1024))]


def test_exported_channel_is_retired():
    client, server = channel_pair()
    server.export_state()
    for call, args in ((server.send, (b"x",)), (server.next_event, ()),
                       (server.export_state, ())):
        with pytest.raises(LocalProtocolError) as info:
            call(*args)
        assert info.value.code == "exported"


def test_replay_across_the_hand_off_still_fails():
    client, server = channel_pair()
    frame = client.send(b"once")
    deliver(frame, server)
    moved = SecureChannel.from_state(server.export_state())
    moved.receive_data(frame)
    raises_remote("decrypt_failed", moved.next_event)


def test_bad_exported_state_is_refused():
    client, _ = channel_pair()
    good = client.export_state()
    for broken in ({}, {**good, "send_key": b"short"}, {**good, "role": "x"},
                   {**good, "recv_nonce": -1}, {**good, "format": "v0"}, "state"):
        with pytest.raises(LocalProtocolError):
            SecureChannel.from_state(broken)


def test_export_after_eof_is_refused():
    client, server = channel_pair()
    server.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        server.export_state()


# ------------------------------------------------------- garbage property


def feed_garbage(server, data):
    server.receive_data(data)
    drain(server)
    server.receive_data(b"")
    drain(server)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_garbage_bytes_raise_only_remote_errors(data):
    server = SecureChannel("responder", SERVER_KEY)
    try:
        feed_garbage(server, data)
    except RemoteProtocolError:
        pass


frame_strategy = st.tuples(st.sampled_from([0, 1, 2, 3, 4, 255]),
                           st.binary(max_size=120))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(frame_strategy, max_size=5), st.binary(max_size=8))
def test_garbage_frames_raise_only_remote_errors(after_hello, frames, tail):
    client = SecureChannel("initiator")
    server = SecureChannel("responder", SERVER_KEY)
    if after_hello:
        deliver(client.initiate(), server)
        server.accept()
    wire = b"".join(encode_frame(bytes([kind]) + body, MAX_FRAME) for kind, body in frames)
    try:
        feed_garbage(server, wire + tail)
    except RemoteProtocolError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frame_strategy, max_size=4), st.binary(max_size=8))
def test_garbage_to_a_waiting_client_raises_only_remote_errors(frames, tail):
    client = SecureChannel("initiator")
    client.initiate()
    wire = b"".join(encode_frame(bytes([kind]) + body, MAX_FRAME) for kind, body in frames)
    try:
        feed_garbage(client, wire + tail)
    except RemoteProtocolError:
        pass


# ------------------------------------------------------------ real socket


def recv_event(sock, channel):
    while (event := channel.next_event()) is NEED_DATA:
        channel.receive_data(sock.recv(65536))
    return event


def serve_one(sock, results):
    server = SecureChannel("responder", SERVER_KEY)
    try:
        assert recv_event(sock, server) == ClientHello()
        sock.sendall(server.accept())
        while isinstance(event := recv_event(sock, server), Data):
            sock.sendall(server.send(event.payload[::-1]))
        results.append(event)
    except Exception as error:  # reported to the main thread
        results.append(error)
    finally:
        sock.close()


def test_real_socket_handshake_and_echo():
    client_sock, server_sock = socket.socketpair()
    client_sock.settimeout(10)
    server_sock.settimeout(10)
    results = []
    thread = threading.Thread(target=serve_one, args=(server_sock, results))
    thread.start()
    try:
        client = SecureChannel("initiator")
        client_sock.sendall(client.initiate())
        done = recv_event(client_sock, client)
        assert done.remote_static == SERVER_KEY.public
        for payload in (b"hello", b"", payload_of(150000)):
            client_sock.sendall(client.send(payload))
            assert recv_event(client_sock, client) == Data(payload[::-1])
        client_sock.shutdown(socket.SHUT_WR)
        assert recv_event(client_sock, client) is CLOSED
    finally:
        client_sock.close()
        thread.join(10)
    assert results == [CLOSED]
