"""Messaging through the user process over real TCP, with a real database.

Delivery at login and live, acknowledgement, order, bounces, the inbox,
read/unread, deletion of messages and of an account, idempotent sends and
bad requests; `--idle-timeout` ending an idle session with a notice while
an active one goes on. Clients are `RawClient`s so the tests see every
packet.
"""

import os
import re
import signal
import time

from Modules.server import login_process, user_process
from Modules.wire import channel
from Modules.wire.framing import CLOSED, NEED_DATA, FrameDecoder
from Modules.wire.serializers import Packet
from Tests.support import WAIT, next_message, request, send, session, wait_until
from Tests.support.pairs import user_session


def test_live_push_and_offline_delivery_in_order(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    first = send(alice, "bob", "live", "one")
    assert first.op == "Result" and not first.data["bounced"]
    pushed = next_message(bob)
    assert (pushed["id"], pushed["from"], pushed["body"]) == (first.data["id"], "alice", "one")
    bob.send("Ack", ids=[pushed["id"]])
    bob.close()
    ids = [send(alice, "bob", f"offline {i}", f"body {i}").data["id"] for i in range(5)]
    bob, backlog = session(server, "bob", create=False)
    assert [m["id"] for m in backlog] == ids          # acceptance order, acked one not again
    assert [m["subject"] for m in backlog] == [f"offline {i}" for i in range(5)]


def test_unacknowledged_messages_come_again_acknowledged_ones_do_not(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    one, two = (send(alice, "bob", body=b).data["id"] for b in ("x", "y"))
    assert [next_message(bob)["id"], next_message(bob)["id"]] == [one, two]
    bob.send("Ack", ids=[one])
    request(bob, "Inbox")   # a round trip: the Ack has been processed
    bob.close()
    _, backlog = session(server, "bob", create=False)
    assert [m["id"] for m in backlog] == [two]


def test_bounce_for_unknown_recipient(server):
    alice, _ = session(server, "alice")
    result = send(alice, "nobody", "Lost", "Where am I?")
    assert result.data["bounced"] is True and "nobody" in result.data["note"]
    bounce = request.pushed[0].data
    assert bounce["kind"] == "bounce" and bounce["to"] == "alice"
    assert bounce["original_to"] == "nobody" and bounce["body"] == "Where am I?"


def test_inbox_read_unread_and_delete(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    ids = [send(alice, "bob", f"s{i}").data["id"] for i in range(3)]
    inbox = request(bob, "Inbox").data["messages"]
    assert [e["id"] for e in inbox] == ids[::-1]                  # newest first
    assert all(e["unread"] for e in inbox) and inbox[0]["from"] == "alice"
    read = request(bob, "Read", id=ids[1]).data["message"]
    assert read["subject"] == "s1" and read["read"] is True
    inbox = {e["id"]: e["unread"] for e in request(bob, "Inbox").data["messages"]}
    assert inbox == {ids[0]: True, ids[1]: False, ids[2]: True}
    deleted = request(bob, "Delete", ids=[ids[0], 999999]).data
    assert deleted == {"rid": deleted["rid"], "deleted": [ids[0]], "missing": [999999]}
    assert [e["id"] for e in request(bob, "Inbox").data["messages"]] == [ids[2], ids[1]]


def test_nobody_reads_or_deletes_what_is_not_theirs(server):
    alice, _ = session(server, "alice")
    session(server, "bob")
    eve, _ = session(server, "eve")
    message_id = send(alice, "bob", "private", "secret body").data["id"]
    assert request(eve, "Read", id=message_id).data["code"] == "not_found"
    assert request(eve, "Delete", ids=[message_id]).data["deleted"] == []
    assert request(eve, "Inbox").data["messages"] == []


def test_a_retried_send_is_stored_once(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    first = send(alice, "bob", client_id="retry-1")
    again = send(alice, "bob", client_id="retry-1")
    assert again.data["duplicate"] is True and again.data["id"] == first.data["id"]
    assert len(request(bob, "Inbox").data["messages"]) == 1


def test_bad_requests_get_errors_and_the_session_goes_on(server):
    alice, _ = session(server, "alice")
    too_big = send(alice, "bob", body="x" * (64 * 1024 + 1))
    assert too_big.op == "Error" and too_big.data["code"] == "too_large"
    bad_name = send(alice, "not a name!")
    assert bad_name.op == "Error" and "username" in bad_name.data["reason"]
    wrong_type = request(alice, "Read", id="seven")
    assert wrong_type.op == "Error" and wrong_type.data["code"] == "bad_request"
    unconfirmed = request(alice, "DeleteAccount", confirm=False)
    assert unconfirmed.op == "Error"
    assert request(alice, "Inbox").op == "Result"


def test_delete_account_returns_unread_messages_to_each_sender(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    carol, _ = session(server, "carol")
    read_id = send(alice, "carol", "read me").data["id"]
    send(alice, "carol", "unread from alice")
    send(bob, "carol", "unread from bob")
    request(carol, "Read", id=read_id)
    result = request(carol, "DeleteAccount", confirm=True)
    assert result.op == "Result" and result.data["bounced"] == 2
    prompt = carol.next_event()                      # back to the login dialogue
    assert prompt.op == "Login" and prompt.data["prompt"] == "username"
    for client, subject in ((alice, "unread from alice"), (bob, "unread from bob")):
        bounce = next_message(client)
        assert bounce["kind"] == "bounce" and bounce["subject"] == subject
        assert "deleted before this message was read" in bounce["note"]
    carol.send("Login", username="carol")              # the name is free again
    assert carol.next_event().data["prompt"] == "new_password"


def test_deleting_an_account_ends_its_other_sessions(server):
    first, _ = session(server, "dora")
    second, _ = session(server, "dora", create=False)
    request(first, "DeleteAccount", confirm=True)
    event = second.next_event()
    assert event.op == "System" and event.data["event"] == "account_deleted"
    assert second.next_event() is CLOSED


def test_logout_says_goodbye(server):
    alice, _ = session(server, "alice")
    alice.send("Logout")
    assert alice.next_event().data["event"] == "goodbye"
    assert alice.next_event() is CLOSED


def test_sigterm_during_a_flood_of_pushes_keeps_every_frame_valid(server):
    """The SIGTERM handler only sets a flag: it never encrypts in the middle of a
    send, so every frame up to the close decrypts, the shutdown notice among
    them (pushes already committed may still follow it while requests finish)."""
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    (bob_pid,) = server.pids_titled("parley: user bob")
    alice.write(b"".join(alice.conn.send(Packet("Send", {
        "rid": 1000 + i, "to": "bob", "subject": f"flood {i}", "body": "x" * 2000,
        "client_id": f"flood-{i}"})) for i in range(300)))
    events = [bob.next_event() for _ in range(20)]          # the flood is under way
    os.kill(bob_pid, signal.SIGTERM)
    while events[-1] is not CLOSED:
        events.append(bob.next_event())   # a reused nonce would raise here
    packets = [e for e in events if e is not CLOSED]
    assert all(p.op in ("Message", "System") for p in packets)
    assert any(p.op == "System" and p.data["event"] == "shutdown" for p in packets)


class _Recorder:
    """Stands for a session: records whether a signal handler called into it."""

    shutdown_requested = False

    def __init__(self):
        self.calls = []

    def shutdown(self):
        self.calls.append("shutdown")


def _deliver_sigterm_to(install, session):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        install(session)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_sigterm_handlers_only_set_a_flag():
    """Neither process's handler may encrypt or raise (it could interrupt a send)."""
    def install_login_handler(session):
        signal.signal(signal.SIGTERM, login_process._on_sigterm(session))

    for install in (user_process.install_sigterm_flag, install_login_handler):
        recorder = _Recorder()
        _deliver_sigterm_to(install, recorder)
        assert recorder.shutdown_requested is True and recorder.calls == []


def test_pipelined_requests_are_answered_in_fewer_frames_than_packets(server):
    """A client that pipelines gets its answers batched: several packets per
    encrypted frame (the `batch` feature of the Version exchange)."""
    alice, _ = session(server, "alice")
    session(server, "bob")[0].close()
    received = bytearray()
    feed = alice.conn.receive_data
    alice.conn.receive_data = lambda data: (received.extend(data), feed(data))
    burst = range(1001, 1021)
    for rid in burst:
        alice.conn.queue(Packet("Send", {"rid": rid, "to": "bob", "subject": "s",
                                         "body": "b", "client_id": f"burst-{rid}"}))
    alice.write(alice.conn.flush())            # all 20 in one encrypted frame
    answered = set()
    while answered != set(burst):
        event = alice.next_event()
        assert event.op == "Result", event
        answered.add(event.data["rid"])
    decoder = FrameDecoder(channel.MAX_FRAME)
    decoder.receive_data(bytes(received))
    frames = 0
    while decoder.next_event() is not NEED_DATA:
        frames += 1
    assert frames < len(burst)


def test_a_session_that_can_send_no_more_closes_instead_of_hanging():
    """Encoding fails once the send nonces are used up: the session ends (the
    daemon then closes the connection) rather than silently dropping output."""
    _client, session = user_session("binary")
    try:
        channel_ = session.conn.channel
        channel_._send_cipher.set_nonce(channel_.nonce_limit)
        session._send(Packet("System", {"event": "note", "message": "one more"}))
        session._encode_queued()
        assert session.state == user_process.CLOSING
    finally:
        session.selector.close()


def test_an_idle_session_is_told_why_and_closed_while_an_active_one_goes_on(make_server):
    server = make_server("--idle-timeout", "2")
    idle, _ = session(server, "idle")
    busy, _ = session(server, "busy")
    (idle_pid,) = server.pids_titled("parley: user idle")
    deadline = time.monotonic() + WAIT
    while idle_pid in server.processes():            # busy keeps talking meanwhile
        assert time.monotonic() < deadline, "the idle session was never ended"
        answer = request(busy, "Inbox")
        assert answer.op == "Result" or answer.data["code"] == "rate_limited", answer
    events = idle.events_until(lambda event: False)
    assert events[-1] is CLOSED
    (notice,) = events[:-1]
    assert (notice.op, notice.data["event"]) == ("System", "idle_timeout")
    assert "2 seconds" in notice.data["message"]
    assert request(busy, "Inbox").op == "Result"      # the active session was not ended
    wait_until(lambda: "idle for 2 s; ending the session" in server.log(),
               message="the reason in the log")


def _nice(pid, thread=None):
    from Tests.support.processes import proc_stat
    return int(proc_stat(pid, thread)[16])


def test_a_session_that_moves_a_file_gives_way_to_messages(server):
    """Its user process, and the database's file thread, run at a lower priority;
    a session that only sends messages, and the database's event loop, do not."""
    from Tests.support.files import raw_upload

    mover, _ = session(server, "mover")
    talker, _ = session(server, "talker")
    send(talker, "mover")
    (mover_pid,) = server.pids_titled("parley: user mover")
    (talker_pid,) = server.pids_titled("parley: user talker")
    (database,) = server.pids_titled("parley: database")
    assert _nice(mover_pid) == 0
    assert raw_upload(mover, "talker", "a.bin", b"x" * 1000).op == "Result"
    wait_until(lambda: _nice(mover_pid) == 10, message="the mover's process niced")
    assert _nice(talker_pid) == 0 and _nice(database) == 0
    (thread,) = re.findall(r"file I/O thread (\d+) runs at nice", server.log())
    assert _nice(database, thread) == 10 and _nice(database, database) == 0
