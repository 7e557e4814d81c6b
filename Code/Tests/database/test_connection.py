"""Tests for Modules/database/connection.py: phases, tables, and what is accepted when.

A real database process (forkserver child, real SQLite files in a temporary
dir) is driven over its Unix socket with `DbLink`, the same client the
login and user processes use. Every request outside a phase's table is
refused and the connection closed; a once-only request is refused the
second time; a request that fails validation is refused and changes
nothing. The phase is decided when a request is accepted, and requests
pipelined behind a phase change wait for it: the exact case of a
pipelined Bind, Hello, Exists, and every pair of phase-changing requests,
are checked here. Subscriptions push the stored backlog, then new
messages, in commit order.
"""

import os
import signal
import subprocess
import socket

import pytest

from Modules import operations
from Modules.database.connection import MAX_HELD
from Modules.database.link import DbError, DbUnavailable, Push, Reply
from Tests.support import WAIT, running_database
from Tests.support.monitor import link, login_link, ticket_for, user_link

LOGIN_ONLY = [op.name for op in operations.for_role("login")]
USER_ONLY = [op.name for op in operations.for_role("user")]
ANY_FIELDS = {"username": "alice", "password": "x" * 8, "ticket": "x", "role": "login",
              "ids": [1], "id": 1, "to": "bob", "subject": "s", "body": "b",
              "client_id": "c", "confirm": True}


def assert_refused_and_closed(db, op, **fields):
    with pytest.raises(DbError) as info:
        db.call(op, **fields)
    assert info.value.code == "refused"
    with pytest.raises(DbUnavailable):
        db.call(op, **fields)


def pipelined(db, requests):
    """Send every (op, fields) in one write; the replies in order, and whether
    the monitor closed the connection before answering them all."""
    for op, fields in requests:
        db.send_request(op, now=False, **fields)
    db.flush()
    answered = sum(1 for op, _ in requests if operations.get(op).replies)   # not an Ack
    replies = []
    while len(replies) < answered:
        try:
            event = db.read_event()
        except DbUnavailable:
            return replies, True
        if isinstance(event, Reply):
            replies.append(event)
    return replies, False


def closed(db, wait=WAIT):
    """Whether the monitor closes the connection within `wait` seconds.

    A connection it keeps stays silent (nothing is owed on it). Asserting
    "closed" waits long, and returns as soon as it is; asserting "open" may
    wait briefly: a slow machine can only make a closing connection look
    open there, never an open one look closed.
    """
    db.sock.settimeout(wait)
    try:
        return db.sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# -- the tables -----------------------------------------------------------------

@pytest.mark.parametrize("op", LOGIN_ONLY + USER_ONLY)
def test_a_new_connection_may_only_say_hello_or_bind(database, op):
    assert_refused_and_closed(link(database[1]), op, **ANY_FIELDS)


@pytest.mark.parametrize("op", USER_ONLY + ["Bind", "Hello"])
def test_a_login_connection_may_only_ask_exists_verify_create(database, op):
    assert_refused_and_closed(login_link(database[1]), op, **ANY_FIELDS)


@pytest.mark.parametrize("op", LOGIN_ONLY + ["Hello", "Bind"])
def test_a_user_connection_may_not_log_in_again(database, op):
    db = user_link(database[1], "alice")
    assert_refused_and_closed(db, op, **ANY_FIELDS)


def test_subscribe_is_accepted_once(database):
    db = user_link(database[1], "alice")
    assert db.call("Subscribe")["backlog"] == 0
    with pytest.raises(DbError) as info:
        db.call("Subscribe")
    assert info.value.code == "refused" and "once" in info.value.reason
    assert closed(db)


def test_a_request_that_fails_validation_is_refused_and_changes_nothing(database):
    db = user_link(database[1], "alice")
    with pytest.raises(DbError) as info:
        db.call("Inbox", limit=operations.INBOX_PAGE_MAX + 1)
    assert info.value.code == "bad_request" and str(operations.INBOX_PAGE_MAX) in \
        info.value.reason
    with pytest.raises(DbError) as info:
        db.call("DeleteAccount", confirm=False)
    assert info.value.code == "bad_request"
    assert db.call("Inbox")["messages"] == []        # still bound, still served
    fresh = link(database[1])
    with pytest.raises(DbError):
        fresh.call("Hello", role="user")               # not accepted: still "new"
    assert fresh.call("Hello", role="login") == {"rid": 2, "ok": True}


# -- the phase is decided on acceptance -----------------------------------------------

def test_a_pipelined_bind_hello_exists_ends_bound_and_refuses_the_hello(database):
    _, config = database
    db = link(config)
    replies, was_closed = pipelined(db, [("Bind", {"ticket": ticket_for(config, "alice")}),
                                         ("Hello", {"role": "login", "peer": "x"}),
                                         ("Exists", {"username": "alice"})])
    assert [reply.ok for reply in replies] == [True, False]
    assert replies[0].data["user"] == "alice"
    assert replies[1].data["code"] == "refused" and "Hello" in replies[1].data["reason"]
    assert was_closed or closed(db)            # the Exists is never answered


def test_a_pipelined_bind_and_subscribe_are_answered_in_order(database):
    _, config = database
    db = link(config)
    replies, was_closed = pipelined(db, [("Bind", {"ticket": ticket_for(config, "alice")}),
                                         ("Subscribe", {})])
    assert [(r.ok, sorted(set(r.data) - {"rid", "ok"})) for r in replies] == [
        (True, ["user"]), (True, ["backlog"])]
    assert not was_closed and not closed(db, wait=0.5)


def test_a_refused_bind_with_a_subscribe_behind_it_closes_and_subscribes_nobody(database):
    """What a user process sends as it starts (Bind and Subscribe in one write),
    with a stale ticket: the Bind is refused, the held Subscribe is never
    answered, and the connection closes."""
    _, config = database
    db = link(config)
    replies, was_closed = pipelined(db, [("Bind", {"ticket": "1:alice:" + "0" * 64}),
                                         ("Subscribe", {})])
    assert replies and replies[0].data["code"] == "bad_ticket"
    assert len(replies) == 1 and (was_closed or closed(db))


# Every ordered pair of phase-changing requests, pipelined after what makes the
# first one legal. Only Bind then DeleteAccount is a legal sequence; after any
# other first request the second is outside the new phase's table.
PHASE_CHANGES = ("Hello", "Bind", "DeleteAccount")
LEGAL_PAIRS = {("Bind", "DeleteAccount")}


@pytest.mark.parametrize("second", PHASE_CHANGES)
@pytest.mark.parametrize("first", PHASE_CHANGES)
def test_every_pair_of_phase_changes_pipelined(database, first, second):
    _, config = database
    db = link(config)
    fields = {"Hello": {"role": "login", "peer": "x"},
              "Bind": {"ticket": ticket_for(config, "alice")},
              "DeleteAccount": {"confirm": True}}
    before = [("Bind", fields["Bind"])] if first == "DeleteAccount" else []
    replies, was_closed = pipelined(db, before + [(first, fields[first]),
                                                  (second, fields[second])])
    replies = replies[len(before):]
    assert replies and replies[0].ok, replies            # the first is always answered
    if (first, second) in LEGAL_PAIRS:
        assert len(replies) == 2 and replies[1].ok and not was_closed, replies
        assert replies[1].data["deleted"] is True
    else:
        assert len(replies) == 2 and replies[1].data["code"] == "refused", replies
        assert was_closed or closed(db)


def test_requests_held_behind_a_phase_change_are_capped(database):
    _, config = database
    db = link(config)
    requests = [("Bind", {"ticket": ticket_for(config, "alice")})]
    requests += [("Inbox", {})] * (MAX_HELD + 1)
    replies, was_closed = pipelined(db, requests)
    assert was_closed and len(replies) <= 1 + MAX_HELD


# -- reads beside the writer ----------------------------------------------------------

def test_a_read_pipelined_after_a_write_sees_that_write(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    sent = alice.call("Send", to="bob", subject="s", body="b", client_id="c1")["id"]
    replies, _ = pipelined(bob, [("Delete", {"ids": [sent]}), ("Inbox", {})])
    assert replies[0].data["deleted"] == [sent]
    assert replies[1].data["messages"] == []            # the read waited for the delete


def test_a_read_after_an_ack_is_answered_only_once_the_ack_is_on_disk(tmp_path):
    """RELIABILITY C14 through the readers: kill the database the moment the Inbox
    is answered, and the Ack sent before it must have been stored."""
    with running_database(tmp_path) as (proc, config):
        alice, bob = user_link(config, "alice"), user_link(config, "bob")
        sent = alice.call("Send", to="bob", subject="s", body="b", client_id="c1")["id"]
        replies, _ = pipelined(bob, [("Ack", {"ids": [sent]}), ("Inbox", {})])
        assert replies[0].data["messages"][0]["id"] == sent     # the Inbox's answer
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(WAIT)
        secret = config["ticket_secret"]
    with running_database(tmp_path, ticket_secret=secret) as (_proc, config):
        assert user_link(config, "bob").call("Subscribe")["backlog"] == 0


def test_a_read_after_an_ack_that_could_not_be_stored_is_refused(database):
    """RELIABILITY C30: an answer after an Ack tells the client the Ack is kept
    (C14), so when its commit fails (a full disk here; PostgreSQL gone on several
    servers) the read must be refused, and the message stays undelivered."""
    proc, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    sent = alice.call("Send", to="bob", subject="s", body="b", client_id="c1")["id"]
    limit = ["prlimit", "--pid", str(proc.pid)]
    subprocess.run(limit + ["--fsize=4096:unlimited"], check=True)   # writes past 4 KiB fail
    try:
        replies, _ = pipelined(bob, [("Ack", {"ids": [sent]}), ("Inbox", {})])
    finally:
        subprocess.run(limit + ["--fsize=unlimited:unlimited"], check=True)
    assert not replies[0].ok and replies[0].data["code"] == "unavailable", replies
    assert bob.call("Inbox")["messages"][0]["id"] == sent           # the next read: fine
    assert user_link(config, "bob").call("Subscribe")["backlog"] == 1   # not delivered


def test_reads_beyond_the_budget_are_rate_limited_with_a_wait(tmp_path):
    with running_database(tmp_path, read_budget={"rate": 0.01, "burst": 2}) as (_, config):
        bob = user_link(config, "bob")
        assert bob.call("Inbox", limit=200)["messages"] == []    # each costs at least 1
        assert bob.call("Inbox", limit=200)["messages"] == []
        with pytest.raises(DbError) as info:
            bob.call("Inbox", limit=200)
        assert info.value.code == "rate_limited" and "try again in" in info.value.reason
        alice = user_link(config, "alice")                # another user is not limited
        assert alice.call("Inbox", limit=200)["messages"] == []



def test_reads_pipelined_together_cannot_all_pass_on_one_balance(tmp_path):
    """Each read reserves its page when it is let through, not when answered."""
    with running_database(tmp_path, read_budget={"rate": 0.01, "burst": 300}) as (_, config):
        alice, bob = user_link(config, "alice"), user_link(config, "bob")
        sends = [("Send", {"to": "bob", "subject": "s", "body": "b", "client_id": f"c{n}"})
                 for n in range(400)]                # full pages: nothing is given back
        assert all(r.ok for r in pipelined(alice, sends)[0])
        replies, closed_early = pipelined(bob, [("Inbox", {"limit": 200})] * 6)
        assert not closed_early
        refused = [r.data["code"] for r in replies if not r.ok]
        assert refused == ["rate_limited"] * 4, replies      # 300 -> 100 -> -100: refused

# -- subscriptions --------------------------------------------------------------

def test_subscribe_pushes_backlog_then_live_in_order(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    stored = [alice.call("Send", to="bob", subject=f"s{i}", body="b", client_id=f"c{i}")["id"]
              for i in range(3)]
    rid = bob.send_request("Subscribe")
    pushed = []
    while True:
        event = bob.read_event()
        if isinstance(event, Push):
            pushed += [m["id"] for m in event.messages]
        elif event.rid == rid:
            break
    assert pushed == stored
    live = alice.call("Send", to="bob", subject="live", body="b", client_id="c9")["id"]
    assert [m["id"] for m in bob.read_event().messages] == [live]


def test_an_ack_is_not_answered_and_is_stored_before_the_next_reply(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    sent = alice.call("Send", to="bob", subject="s", body="b", client_id="c1")["id"]
    bob.send_request("Ack", ids=[sent])
    subscribe_rid = bob.send_request("Subscribe")
    reply = bob.read_event()
    assert reply.rid == subscribe_rid        # nothing answered the Ack
    assert reply.data["backlog"] == 0        # and it was stored first
