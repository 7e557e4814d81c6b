"""The database process as a monitor: phases, allow tables, binding, shutdown.

A real database process (forkserver child, real SQLite files in a
temporary dir) is driven over its Unix socket with `DbLink`, the same
client the login and user processes use. Every request outside a phase's
allow table is refused and the connection closed; a user connection acts
only as the user its ticket names, whatever the request says.
"""

import multiprocessing
import os
import signal
import subprocess

import pytest

from Modules import operations
from Modules.database import monitor as database_process
from Modules.database.link import DbError, DbLink, DbUnavailable, Push
from Tests.helpers import PASSWORD, database_config

LOGIN_ONLY = [op.name for op in operations.for_role("login")]
USER_ONLY = [op.name for op in operations.for_role("user")]


@pytest.fixture
def database(tmp_path):
    ctx = multiprocessing.get_context("forkserver")
    config = database_config(tmp_path)
    ready = ctx.Event()
    proc = ctx.Process(target=database_process.main, args=(config, ready))
    proc.start()
    assert ready.wait(30)
    yield proc, config
    if proc.is_alive():
        proc.kill()
    proc.join()


def link(config):
    db = DbLink(config["socket_path"])
    db.connect()
    return db


def login_link(config):
    db = link(config)
    db.call("Hello", role="login", peer="127.0.0.1:1")
    return db


def user_link(config, name):
    """A user connection bound to `name` (created if needed)."""
    login = login_link(config)
    if login.call("Exists", username=name)["outcome"] == "exists":
        ticket = login.call("Verify", username=name, password=PASSWORD)["ticket"]
    else:
        ticket = login.call("Create", username=name, password=PASSWORD)["ticket"]
    login.close()
    db = link(config)
    assert db.call("Bind", ticket=ticket) == {"rid": 1, "ok": True, "user": name}
    return db


def assert_refused_and_closed(db, op, **fields):
    with pytest.raises(DbError) as info:
        db.call(op, **fields)
    assert info.value.code == "refused"
    with pytest.raises(DbUnavailable):
        db.call(op, **fields)


@pytest.mark.parametrize("op", LOGIN_ONLY + USER_ONLY)
def test_a_new_connection_may_only_say_hello_or_bind(database, op):
    assert_refused_and_closed(link(database[1]), op, username="alice")


@pytest.mark.parametrize("op", USER_ONLY + ["Bind", "Hello"])
def test_a_login_connection_may_only_ask_exists_verify_create(database, op):
    assert_refused_and_closed(login_link(database[1]), op, ticket="x", role="login")


@pytest.mark.parametrize("op", LOGIN_ONLY + ["Hello", "Bind"])
def test_a_user_connection_may_not_log_in_again(database, op):
    db = user_link(database[1], "alice")
    assert_refused_and_closed(db, op, username="bob", password=PASSWORD, ticket="x")


def test_forged_or_stale_tickets_are_refused(database):
    _, config = database
    for ticket in ("1:alice:" + "0" * 64, "garbage"):
        db = link(config)
        with pytest.raises(DbError) as info:
            db.call("Bind", ticket=ticket)
        assert info.value.code == "bad_ticket"
    with pytest.raises(DbError) as info:
        link(config).call("Bind", ticket=None)
    assert info.value.code == "bad_request"
    user_link(config, "alice").call("DeleteAccount", confirm=True)
    login = login_link(config)
    assert login.call("Exists", username="alice") == {"rid": 2, "ok": True,
                                                      "outcome": "missing"}


def test_a_ticket_from_a_deleted_account_does_not_bind_its_successor(database):
    _, config = database
    login = login_link(config)
    old_ticket = login.call("Create", username="zed", password=PASSWORD)["ticket"]
    bound = link(config)
    bound.call("Bind", ticket=old_ticket)
    bound.call("DeleteAccount", confirm=True)
    login.call("Create", username="zed", password=PASSWORD)
    with pytest.raises(DbError) as info:
        link(config).call("Bind", ticket=old_ticket)
    assert info.value.code == "bad_ticket"


def test_user_fields_in_requests_are_ignored(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    sent = alice.call("Send", to="bob", subject="s", body="b", client_id="c1",
                      sender="bob", user="bob")
    message = bob.call("Read", id=sent["id"], user="alice")["message"]
    assert message["from"] == "alice"
    with pytest.raises(DbError) as info:
        alice.call("Read", id=sent["id"])       # bob's message, not alice's
    assert info.value.code == "not_found"
    assert alice.call("Delete", ids=[sent["id"]])["deleted"] == []


def test_unknown_user_and_wrong_password_look_the_same(database):
    _, config = database
    user_link(config, "alice").close()
    replies = [login_link(config).call("Verify", username=name, password="wrong password")
               for name in ("alice", "nosuchuser")]
    assert replies[0] == replies[1] and replies[0]["outcome"] == "wrong_password"


def test_no_reply_ever_carries_a_hash(database):
    _, config = database
    login = login_link(config)
    replies = [login.call("Create", username="alice", password=PASSWORD),
               login.call("Verify", username="alice", password=PASSWORD)]
    alice = user_link(config, "alice")
    replies.append(alice.call("Subscribe"))
    assert "argon2" not in repr(replies) and PASSWORD not in repr(replies)


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


def test_sigterm_closes_the_databases_cleanly(database):
    proc, config = database
    user_link(config, "alice").call("Send", to="alice", subject="s", body="b", client_id="c")
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    assert proc.exitcode == 0
    wal = os.path.join(config["data_dir"], "messages.db-wal")
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0


def test_a_full_disk_fails_the_write_clearly_and_nothing_half_written_is_kept(database):
    proc, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    alice.call("Send", to="bob", subject="before", body="b", client_id="c1")
    limit = ["prlimit", "--pid", str(proc.pid)]
    subprocess.run(limit + ["--fsize=4096:unlimited"], check=True)   # writes past 4 KiB fail
    try:
        with pytest.raises(DbError) as info:
            alice.call("Send", to="bob", subject="during", body="b", client_id="c2")
        assert info.value.code == "unavailable" and "could not store" in info.value.reason
        assert bob.call("Inbox")["messages"][0]["subject"] == "before"   # still serving
    finally:
        subprocess.run(limit + ["--fsize=unlimited:unlimited"], check=True)
    alice.call("Send", to="bob", subject="after", body="b", client_id="c2")   # same id: retried
    subjects = [m["subject"] for m in bob.call("Inbox")["messages"]]
    assert subjects == ["after", "before"]
    assert proc.is_alive()
