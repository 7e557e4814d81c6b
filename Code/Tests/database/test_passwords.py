"""Tests for Modules/database/passwords.py: a user's own password change.

Against a real database process over its Unix socket: the old password is
checked and the hash replaced (the old one stops working, the new one
works, no reply carries a hash or a password); the account's other
sessions are told `password_changed` and closed while the changing one
goes on; a wrong old password changes nothing and counts in the login
throttle, so guessing it is slowed like a login; a ticket from a login
that passed with the old password before the change does not bind after
it; and a request that names another account still changes only the
bound user's password.

In process: `predates_password_change` and the bounded memory of changes.
"""

from types import SimpleNamespace

import pytest

from Modules.database import auth, passwords
from Modules.database.link import DbError, DbUnavailable, Notice
from Tests.support import PASSWORD
from Tests.support.monitor import link, login_link, user_link

NEW = "a brand new passphrase"


def next_notice(db):
    while not isinstance(event := db.read_event(), Notice):
        pass
    return event


def verifies(config, name, password, peer="127.0.0.1:1"):
    return login_link(config, peer).call("Verify", username=name,
                                         password=password)["outcome"] == "verified"


def test_the_hash_is_replaced_and_only_the_other_sessions_end(database):
    _, config = database
    changing, other, third = (user_link(config, "alice") for _ in range(3))
    bob = user_link(config, "bob")
    reply = changing.call("ChangePassword", old_password=PASSWORD, new_password=NEW)
    assert reply == {"rid": 2, "ok": True, "ended": 2}
    for ended in (other, third):
        notice = next_notice(ended)
        assert notice.event == "password_changed"
        assert "changed in another session" in notice.message
        with pytest.raises(DbUnavailable):
            ended.read_event()                                 # and closed
    assert changing.call("Inbox")["messages"] == []           # this one goes on
    assert bob.call("Inbox")["messages"] == []                # nobody else is touched
    assert not verifies(config, "alice", PASSWORD)
    assert verifies(config, "alice", NEW)
    assert NEW not in str(reply) and PASSWORD not in str(reply)


def test_a_wrong_old_password_changes_nothing_and_is_throttled(database):
    _, config = database
    alice = user_link(config, "alice")
    codes = []
    for _ in range(6):
        with pytest.raises(DbError) as refused:
            alice.call("ChangePassword", old_password="not the password", new_password=NEW)
        codes.append(refused.value.code)
        assert "not the password" not in refused.value.reason
    assert codes[:3] == ["wrong_password"] * 3          # the login throttle's free tries
    assert "throttled" in codes[3:]
    # Nothing changed (checked from another address: this one is throttled for alice).
    assert verifies(config, "alice", PASSWORD, peer="127.0.0.9:1")


def test_the_new_password_must_differ_and_follow_the_rules(database):
    _, config = database
    alice = user_link(config, "alice")
    with pytest.raises(DbError) as refused:
        alice.call("ChangePassword", old_password=PASSWORD, new_password=PASSWORD)
    assert refused.value.code == "bad_request" and "same as the current" in \
        refused.value.reason
    with pytest.raises(DbError) as refused:
        alice.call("ChangePassword", old_password=PASSWORD, new_password="short")
    assert refused.value.code == "bad_password"
    assert verifies(config, "alice", PASSWORD)


def test_a_ticket_from_before_the_change_does_not_bind(database):
    _, config = database
    alice = user_link(config, "alice")
    early = login_link(config).call("Verify", username="alice", password=PASSWORD)["ticket"]
    alice.call("ChangePassword", old_password=PASSWORD, new_password=NEW)
    with pytest.raises(DbError) as refused:
        link(config).call("Bind", ticket=early)
    assert refused.value.code == "bad_ticket"
    fresh = login_link(config).call("Verify", username="alice", password=NEW)["ticket"]
    assert link(config).call("Bind", ticket=fresh)["user"] == "alice"


def test_a_request_naming_another_account_changes_only_ones_own(database):
    _, config = database
    alice = user_link(config, "alice")
    user_link(config, "bob")
    alice.call("ChangePassword", old_password=PASSWORD, new_password=NEW, username="bob")
    assert verifies(config, "bob", PASSWORD)
    assert verifies(config, "alice", NEW)


# -- in process ---------------------------------------------------------------------------

def test_changes_are_remembered_only_as_long_as_a_ticket_could_bind(monkeypatch):
    monitor = SimpleNamespace(password_changes={})
    ticket = auth.Ticket(1, "alice", 1000.0, "n")
    assert not passwords.predates_password_change(monitor, ticket)
    passwords._remember_change(monitor, "alice", 1000.5)
    assert passwords.predates_password_change(monitor, ticket)
    assert not passwords.predates_password_change(monitor, ticket._replace(issued_at=1000.5))
    passwords._remember_change(monitor, "bob", 1000.0 + auth.TICKET_TTL + 1)
    assert list(monitor.password_changes) == ["bob"]      # alice's is too old to matter
    monkeypatch.setattr(passwords, "CHANGES_KEPT", 2)
    for number in range(5):
        passwords._remember_change(monitor, f"u{number}", 2000.0 + number)
    assert list(monitor.password_changes) == ["u3", "u4"]
