"""Parked sessions (issue 16), over real TCP with the real daemon and database.

A session idle for `--park-after` seconds loses its user process and keeps its
connection; the client's next request wakes it (nonces go on: the channel
decrypts), a message for it wakes it through the database's `Wake`, exactly
once, and its Ack is kept; presence changes do not wake it and `who` after a
wake is right; a database restart while sessions are parked loses no wake; an
operator's kick and `--idle-timeout` reach a parked session. Clients are
`RawClient`s so the tests see every packet; the process titled `parley: user
NAME` coming and going is the observable sign of parking and waking.
"""

import os
import signal
import time

from Modules.wire.framing import CLOSED
from Tests.support import next_message, request, run_admin, send, session, wait_until

PARK = ("--park-after", "0.5")


def parked(server, name):
    """Wait until `name`'s session has parked: its user process is gone."""
    wait_until(lambda: not server.pids_titled(f"parley: user {name}"),
               message=f"{name}'s session to park")


def restart_database(server):
    """SIGKILL the database process; back when the daemon has started another."""
    (database,) = server.pids_titled("parley: database")
    os.kill(database, signal.SIGKILL)
    wait_until(lambda: [pid for pid in server.pids_titled("parley: database")
                        if pid != database], message="a new database process")


def test_an_idle_session_parks_and_its_next_request_wakes_it(make_server):
    server = make_server(*PARK)
    alice, _ = session(server, "alice")
    (first,) = server.pids_titled("parley: user alice")
    parked(server, "alice")
    assert request(alice, "Inbox").op == "Result"    # woken by the request; nonces go on
    assert server.pids_titled("parley: user alice") not in ([], [first])
    parked(server, "alice")                          # and parks again
    assert request(alice, "Inbox").op == "Result"
    assert "woken (client)" in server.log()


def test_a_message_to_a_parked_recipient_is_delivered_live_once_and_acknowledged(
        make_server):
    server = make_server(*PARK)
    bob, _ = session(server, "bob")
    alice, _ = session(server, "alice")
    parked(server, "bob")
    sent = send(alice, "bob", "while parked", "wake up").data["id"]
    message = next_message(bob)                      # pushed by a woken user process
    assert (message["id"], message["body"]) == (sent, "wake up")
    bob.send("Ack", ids=[sent])
    parked(server, "bob")                            # the Ack taken, nothing unacked left
    answer = request(bob, "Inbox")
    assert answer.op == "Result" and request.pushed == []   # not pushed a second time
    assert "woken (message)" in server.log()
    bob.close()
    _, backlog = session(server, "bob", create=False)
    assert backlog == []                             # the Ack was stored


def test_a_burst_to_many_parked_recipients_arrives_whole_and_once(make_server):
    server = make_server(*PARK)
    names = [f"reader{i}" for i in range(8)]
    recipients = {name: session(server, name)[0] for name in names}
    alice, _ = session(server, "alice")
    for name in names:
        parked(server, name)
    sent = {name: [send(alice, name, body=f"{name} {n}").data["id"] for n in range(3)]
            for name in names}
    for name, client in recipients.items():
        got = []
        while len(got) < 3:
            got.append(next_message(client)["id"])
        client.send("Ack", ids=got)
        assert got == sent[name]
    for name, client in recipients.items():
        parked(server, name)
        assert request(client, "Inbox").op == "Result" and request.pushed == []


def test_presence_does_not_wake_a_parked_session_and_who_is_right_after(make_server):
    server = make_server(*PARK)
    alice, _ = session(server, "alice")
    dave, _ = session(server, "dave")
    parked(server, "alice")
    carol, _ = session(server, "carol")              # comes online: a presence notice
    wait_until(lambda: (request(dave, "Inbox"), "carol" in " ".join(
        dave.__dict__.get("presence", [])))[1], message="dave told carol came")
    assert not server.pids_titled("parley: user alice")   # the notice did not wake alice
    who = request(alice, "Online")                   # woken by her own request
    assert [p["user"] for p in who.data["people"]] == ["alice", "carol", "dave"]
    told = " ".join(alice.__dict__.get("presence", []))   # (dave's may have come before)
    assert "carol" not in told                       # she was never sent carol's notice


def test_a_parked_session_wakes_for_a_message_after_the_database_restarted(make_server):
    server = make_server(*PARK)
    bob, _ = session(server, "bob")
    alice, _ = session(server, "alice")
    parked(server, "bob")
    restart_database(server)

    def sent():
        answer = send(alice, "bob", body="after the restart")
        return answer.data["id"] if answer.op == "Result" else None
    sent_id = wait_until(sent, message="a send after the restart")
    assert next_message(bob)["id"] == sent_id


def test_an_operator_kick_reaches_a_parked_session(make_server):
    server = make_server(*PARK)
    bob, _ = session(server, "bob")
    parked(server, "bob")
    status, _out, err = run_admin(server, "kick", "bob")
    assert status == 0, err
    events = bob.events_until(lambda event: False)
    assert events[-1] is CLOSED
    assert [(e.op, e.data["event"]) for e in events[:-1]] == [("System", "kicked")]


def test_the_idle_timeout_ends_a_parked_session_with_its_notice(make_server):
    server = make_server(*PARK, "--idle-timeout", "2")
    idle, _ = session(server, "idle")
    parked(server, "idle")
    events = idle.events_until(lambda event: False)
    assert events[-1] is CLOSED
    assert [(e.op, e.data["event"]) for e in events[:-1]] == [("System", "idle_timeout")]


def test_admin_sessions_show_a_parked_session_as_parked(make_server):
    server = make_server(*PARK)
    bob, _ = session(server, "bob")
    parked(server, "bob")
    status, out, err = run_admin(server, "who", as_json=True)
    assert status == 0, err
    assert [(s["user"], s.get("parked")) for s in out["sessions"]] == [("bob", True)]
    assert request(bob, "Inbox").op == "Result"      # looking did not end it


def test_a_parked_session_keeps_its_login_time_across_a_database_restart(make_server):
    server = make_server(*PARK)
    bob, _ = session(server, "bob")
    parked(server, "bob")

    def since():
        status, out, _err = run_admin(server, "who", as_json=True)
        return out["sessions"][0]["since"] if status == 0 and out["sessions"] else None
    before = wait_until(since, message="bob in admin who")
    wait_until(lambda: time.time() > before + 2, message="two seconds after bob's login")
    restart_database(server)
    after = wait_until(since, message="bob in admin who after the restart")
    assert abs(after - before) < 1.0       # when bob logged in, not when the database came back


def test_a_parked_session_gets_the_shutdown_goodbye(make_server):
    server = make_server(*PARK)
    bob, _ = session(server, "bob")
    parked(server, "bob")
    assert server.stop() == 0
    events = bob.events_until(lambda event: False)
    assert events[-1] is CLOSED
    assert [(e.op, e.data["event"]) for e in events[:-1]] == [("System", "shutdown")]


def test_a_parked_connection_counts_against_max_clients(make_server):
    from Modules.wire import channel
    from Tests.support import RawClient

    server = make_server(*PARK, "--max-clients", "1")
    bob, _ = session(server, "bob")
    parked(server, "bob")
    second = RawClient(server.port)
    second.write(second.conn.start())
    notice = second.next_event()
    assert isinstance(notice, channel.Notice) and "server full" in notice.text
    assert request(bob, "Inbox").op == "Result"      # the parked one is still served
