"""Tests for Modules/database/answers.py: what each role's requests are answered.

Against a real database process over its Unix socket: tickets bind only
the account they were issued for (forged, stale and a deleted account's
tickets are refused, and a successor of the same name is not bound by its
predecessor's ticket); a user connection acts as its own user whatever a
request says; a wrong password and an unknown user get the same answer;
no reply carries a hash; a taken name is an outcome, not a failure.

In process (a real writer on real files, one event loop): a busy hasher
and a throttled name are outcomes of Verify and Create, values the login
dialogue takes as they are.
"""

import asyncio
import os
from types import SimpleNamespace

import pytest

from Modules.database import auth, storage
from Modules.database.answers import LoginAnswers
from Modules.database.link import DbError
from Modules.database.monitor import Monitor
from Modules.database.readers import ReaderPool
from Modules.database.writer import SingleWriter
from Tests.support import PASSWORD, running_database, wait_until
from Tests.support.monitor import admin_link, link, login_link, user_link


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
    admin_link(config).call("ReleaseName", username="zed")   # kept back otherwise (issue 13)
    assert login.call("Create", username="zed", password=PASSWORD)["outcome"] == "created"
    with pytest.raises(DbError) as info:
        link(config).call("Bind", ticket=old_ticket)
    assert info.value.code == "bad_ticket"


def test_a_ticket_binds_once_and_is_dead_when_its_session_ends(database):
    _, config = database
    ticket = login_link(config).call("Create", username="alice", password=PASSWORD)["ticket"]
    first = link(config)
    assert first.call("Bind", ticket=ticket)["user"] == "alice"
    with pytest.raises(DbError) as info:                  # while the session lives
        link(config).call("Bind", ticket=ticket)
    assert info.value.code == "bad_ticket"
    first.close()                                         # the user logs out
    wait_until(lambda: refused_bind(config, ticket), message="the ticket to die")


def refused_bind(config, ticket):
    try:
        link(config).call("Bind", ticket=ticket)
    except DbError as error:
        return error.code == "bad_ticket"
    raise AssertionError("a dead session's ticket bound a connection")


def test_a_restarted_monitor_lets_the_running_sessions_bind_once_more(tmp_path):
    with running_database(tmp_path) as (_proc, config):
        ticket = login_link(config).call("Create", username="alice",
                                         password=PASSWORD)["ticket"]
        link(config).call("Bind", ticket=ticket)          # then the monitor "crashes"
        secret = config["ticket_secret"]
    with running_database(tmp_path, ticket_secret=secret,
                          live_tickets=[ticket]) as (_proc, config):
        assert link(config).call("Bind", ticket=ticket)["user"] == "alice"
        with pytest.raises(DbError):
            link(config).call("Bind", ticket=ticket)      # once, not twice


def test_user_fields_in_requests_are_ignored(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    sent = alice.call("Send", to="bob", subject="s", body="b", client_id="c1",
                      sender="bob", user="bob")
    message = bob.call("Read", id=sent["id"], user="alice")["message"]
    assert message["from"] == "alice"
    carol = user_link(config, "carol")
    with pytest.raises(DbError) as info:
        carol.call("Read", id=sent["id"], user="bob")      # neither sent nor received it
    assert info.value.code == "not_found"
    assert carol.call("Delete", ids=[sent["id"]], user="bob")["deleted"] == []
    assert bob.call("Read", id=sent["id"])["message"]["body"] == "b"


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


def test_a_taken_name_is_an_outcome_with_a_sentence(database):
    _, config = database
    login = login_link(config)
    assert login.call("Create", username="alice", password=PASSWORD)["outcome"] == "created"
    again = login.call("Create", username="Alice", password=PASSWORD)
    assert again["outcome"] == "create_failed" and "taken" in again["reason"]
    assert "ticket" not in again


def test_closed_registration_says_so_at_the_name_and_creates_nothing(tmp_path):
    with running_database(tmp_path, registration={"open": False}) as (_proc, config):
        login = login_link(config)
        missing = login.call("Exists", username="newcomer")
        assert missing["outcome"] == "registration_closed"
        assert "does not take new accounts" in missing["reason"]
        created = login.call("Create", username="newcomer", password=PASSWORD)
        assert created["outcome"] == "create_failed" and "ticket" not in created
        assert login.call("Exists", username="newcomer")["outcome"] == "registration_closed"


def test_new_accounts_are_limited_per_address_and_in_all(tmp_path):
    limits = {"open": True, "per_address": 2, "per_hour": 3}
    with running_database(tmp_path, registration=limits) as (_proc, config):
        here = login_link(config, peer="10.0.0.1:5")
        there = login_link(config, peer="10.0.0.2:5")
        outcomes = [here.call("Create", username=f"here{n}", password=PASSWORD)
                    for n in range(3)]
        assert [o["outcome"] for o in outcomes] == ["created", "created", "create_failed"]
        assert "try again in" in outcomes[2]["reason"]
        assert there.call("Create", username="there0", password=PASSWORD)["outcome"] == \
            "created"                                        # another address may
        full = there.call("Create", username="there1", password=PASSWORD)
        assert full["outcome"] == "create_failed"           # but the server's 3 are made
        assert here.call("Verify", username="here0", password=PASSWORD)["outcome"] == \
            "verified"                                       # logins go on


# -- outcomes of a busy or throttled hasher, in process ---------------------------

@pytest.fixture
def answers(tmp_path):
    """LoginAnswers of one connection on a real writer; the hasher takes no work."""
    loop = asyncio.new_event_loop()
    data_dir = str(tmp_path / "data")
    writer = SingleWriter(loop, lambda: storage.open_databases(data_dir),
                          storage.close_databases)
    writer.start()
    hasher = auth.PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1, workers=1,
                                 max_waiting=0, max_creating=0)   # every hash: Busy
    clock = SimpleNamespace(now=0.0)
    throttle = auth.LoginThrottle(clock=lambda: clock.now)
    monitor = Monitor(writer, hasher, throttle, os.urandom(32))
    monitor.readers = ReaderPool(loop, lambda: storage.open_reader(data_dir),
                                 storage.close_databases, workers=1)
    monitor.readers.start()
    conn = SimpleNamespace(monitor=monitor, peer="127.0.0.1:9", address="127.0.0.1",
                           user=None, owner="address 127.0.0.1", last_write=None,
                           last_write_lazy=False)
    yield LoginAnswers(conn), loop.run_until_complete, throttle
    loop.run_until_complete(asyncio.sleep(0))
    monitor.readers.stop()
    writer.stop()
    hasher.close()
    loop.close()


def test_a_busy_hasher_is_the_outcome_busy_for_verify_and_create(answers):
    login, run, _ = answers
    for answer in (login.create, login.verify):
        reply = run(answer({"username": "alice", "password": PASSWORD}))
        assert reply["outcome"] == "busy" and "try again" in reply["reason"]
        assert reply["retry_after"] >= 1


def test_a_throttled_name_is_the_outcome_throttled_before_any_hashing(answers):
    login, run, throttle = answers
    for _ in range(throttle.free["pair"] + 1):
        throttle.failed("alice", "127.0.0.1")
    reply = run(login.verify({"username": "alice", "password": PASSWORD}))
    assert reply["outcome"] == "throttled" and "try again in 1 second." in reply["reason"]
    assert reply["retry_after"] == 1


def test_a_search_finds_what_was_sent_a_moment_before(database):
    """The text index is filled in batches every 2 s; a Search brings it up to date
    first, so nothing just sent is missing from its answer."""
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    sent = alice.call("Send", to="bob", subject="Quarterly", body="numbers attached",
                      client_id="s1")
    assert [m["id"] for m in bob.call("Search", text="quarterly numbers")["messages"]] == [
        sent["id"]]
    assert [m["id"] for m in alice.call("Search", text="numbers")["messages"]] == [sent["id"]]
    assert user_link(config, "carol").call("Search", text="numbers")["messages"] == []
