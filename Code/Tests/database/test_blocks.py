"""Tests for Modules/database/blocks.py: who refuses whose mail.

On real SQLite files (the `db` fixture): blocking, unblocking and listing,
the refusal note (which never says "block"), what block refuses (an
unknown name, oneself, the server, a full list), and that an account's
blocks go with it both ways. Against a real database process: Block,
Unblock and Blocked act only as the bound user, whatever a request names
(nobody sees or changes another's blocks), and a blocked sender's message
comes back with the note while others' still arrive.
"""

import pytest

from Modules.database import blocks, storage
from Modules.database.link import DbError
from Tests.support.monitor import user_link

NOW = 1_800_000_000.0


def make(db, *names):
    for name in names:
        storage.create_account(db, name, "hash", NOW)


def test_block_unblock_and_the_list(db):
    make(db, "alice", "bob", "carol")
    assert blocks.block(db, "alice", "bob", NOW) == "blocked"
    assert blocks.block(db, "alice", "bob", NOW + 1) == "already"
    assert blocks.block(db, "alice", "carol", NOW + 2) == "blocked"
    assert blocks.blocked_by(db, "alice") == [{"username": "bob", "since": NOW},
                                              {"username": "carol", "since": NOW + 2}]
    assert blocks.blocked_by(db, "bob") == []
    assert blocks.unblock(db, "alice", "bob") is True
    assert blocks.unblock(db, "alice", "bob") is False
    assert [e["username"] for e in blocks.blocked_by(db, "alice")] == ["carol"]


def test_the_note_names_no_block_and_only_the_blocker_refuses(db):
    make(db, "alice", "bob")
    assert blocks.refusal_note(db, "bob", "alice") is None
    blocks.block(db, "alice", "bob", NOW)
    note = blocks.refusal_note(db, "bob", "alice")
    assert note == blocks.BLOCKED_NOTE and "not accepted by the recipient" in note
    assert "block" not in note.lower()
    assert blocks.refusal_note(db, "alice", "bob") is None        # one way only


def test_what_cannot_be_blocked(db, monkeypatch):
    make(db, "alice", "bob")
    assert blocks.block(db, "alice", "nobody", NOW) == "no_account"
    assert blocks.block(db, "alice", "alice", NOW) == "self"
    assert blocks.block(db, "alice", "parley", NOW) == "system"
    monkeypatch.setattr(blocks, "BLOCKS_MAX", 1)
    make(db, "carol")
    assert blocks.block(db, "alice", "bob", NOW) == "blocked"
    assert blocks.block(db, "alice", "carol", NOW) == "full"
    assert blocks.blocked_by(db, "alice") == [{"username": "bob", "since": NOW}]


def test_an_accounts_blocks_go_with_it_both_ways(db):
    make(db, "alice", "bob", "carol")
    blocks.block(db, "alice", "bob", NOW)
    blocks.block(db, "bob", "carol", NOW)
    blocks.block(db, "carol", "alice", NOW)
    for step in (storage.mark_deleting, storage.remove_password):
        step(db, "bob")
    storage.remove_account(db, "bob", NOW)
    assert blocks.blocked_by(db, "alice") == []
    assert blocks.blocked_by(db, "bob") == []
    assert [e["username"] for e in blocks.blocked_by(db, "carol")] == ["alice"]


# -- through a real database process -------------------------------------------------------

def test_a_user_sees_and_changes_only_their_own_blocks(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    user_link(config, "carol")
    assert alice.call("Block", username="carol")["changed"] is True
    # Whatever names a request carries, it acts as the bound user.
    assert bob.call("Blocked", username="alice", owner="alice")["blocked"] == []
    assert bob.call("Unblock", username="carol", owner="alice")["changed"] is False
    assert [e["username"] for e in alice.call("Blocked")["blocked"]] == ["carol"]
    assert alice.call("Block", username="Carol")["changed"] is False     # names fold


def test_refusals_are_one_sentence(database):
    _, config = database
    alice = user_link(config, "alice")
    for name, code, words in (("nobody", "not_found", "no account 'nobody'"),
                              ("alice", "bad_request", "yourself"),
                              ("parley", "bad_request", "cannot be blocked")):
        with pytest.raises(DbError) as refused:
            alice.call("Block", username=name)
        assert refused.value.code == code and words in refused.value.reason
    with pytest.raises(DbError) as refused:
        alice.call("Block", username="no spaces")
    assert refused.value.code == "bad_username"


def test_a_blocked_senders_message_comes_back_not_accepted(database):
    _, config = database
    alice, bob, carol = (user_link(config, name) for name in ("alice", "bob", "carol"))
    alice.call("Block", username="bob")
    sent = bob.call("Send", to="alice", subject="hi", body="there", client_id="b1")
    assert sent["bounced"] is True and sent["note"] == blocks.BLOCKED_NOTE
    assert carol.call("Send", to="alice", subject="hi", body="x",
                      client_id="c1")["bounced"] is False
    alice.call("Unblock", username="bob")
    assert bob.call("Send", to="alice", subject="again", body="y",
                    client_id="b2")["bounced"] is False
    senders = [m["from"] for m in alice.call("Inbox")["messages"]]
    assert senders == ["bob", "carol"]
