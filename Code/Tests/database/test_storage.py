"""Tests for Modules/database/storage.py on real SQLite files.

Every storage call runs the way the database process runs it: BEGIN, a
SAVEPOINT around the one operation (rolled back alone if it raises), then
COMMIT. Crash images are taken by copying the data directory (with its
-wal and -shm files) while the connection is still open.
"""

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from Modules.database import mailbox, storage
from Modules.database.storage import (
    AccountExists,
    NoSuchAccount,
    StorageError,
    close_databases,
    open_databases,
)
from Tests.support.storage import T0, make_users
from Tests.support.storage import run_committed as run
from Tests.support.storage import send_stored as send

# -- accounts ----------------------------------------------------------------

def test_create_exists_and_duplicate(db):
    account_id = run(db, storage.create_account, "alice", "$argon2id$h1", T0)
    assert storage.user_exists(db, "alice") and not storage.user_exists(db, "bob")
    with pytest.raises(AccountExists):
        run(db, storage.create_account, "alice", "$argon2id$h2", T0)
    assert storage.password_hash(db, "alice") == "$argon2id$h1"
    info = storage.account(db, "alice")
    assert info["id"] == account_id and info["state"] == "active"
    assert info["created_at"] == T0 and info["undelivered"] == 0
    with pytest.raises(AccountExists):
        run(db, storage.create_account, "parley", "$argon2id$h", T0)
    assert storage.account(db, "nobody") is None


def test_ids_never_reused_and_deleting_name_is_taken(db):
    first = run(db, storage.create_account, "alice", "h", T0)
    run(db, storage.mark_deleting, "alice")
    with pytest.raises(AccountExists):
        run(db, storage.create_account, "alice", "h", T0)
    assert storage.password_hash(db, "alice") is None
    assert not storage.user_exists(db, "alice")
    assert storage.account(db, "alice")["state"] == "deleting"
    for step in (storage.remove_password, storage.remove_account):
        run(db, step, "alice")
    assert run(db, storage.create_account, "alice", "h", T0) > first


def test_set_password_hash(db):
    make_users(db, "alice")
    run(db, storage.set_password_hash, "alice", "$argon2id$new", T0 + 5)
    assert storage.password_hash(db, "alice") == "$argon2id$new"
    with pytest.raises(NoSuchAccount):
        run(db, storage.set_password_hash, "bob", "h", T0)


# -- messages ----------------------------------------------------------------

def test_store_undelivered_and_mark_delivered(db):
    make_users(db, "alice", "bob", "carol")
    results = [send(db, "alice", "bob", f"c{i}", subject=f"s{i}") for i in range(3)]
    for_carol = send(db, "alice", "carol")
    first = results[0]
    assert first["duplicate"] is False and first["bounced"] is False
    [(to, message)] = first["deliveries"]
    assert to == "bob"
    assert message == {"id": first["id"], "from": "alice", "to": "bob", "subject": "s0",
                       "body": "secret body", "sent_at": T0 + 1, "kind": "message",
                       "read": False}
    pending = storage.undelivered(db, "bob")
    assert [m["id"] for m in pending] == [r["id"] for r in results]
    assert storage.undelivered(db, "bob", after_id=first["id"], limit=1)[0]["subject"] == "s1"
    assert storage.account(db, "bob")["undelivered"] == 3
    ids = [results[0]["id"], results[1]["id"], for_carol["id"], 10**9]
    assert run(db, storage.mark_delivered, "bob", ids, T0 + 2) == 2
    assert run(db, storage.mark_delivered, "bob", ids, T0 + 3) == 0
    assert [m["subject"] for m in storage.undelivered(db, "bob")] == ["s2"]
    assert storage.account(db, "bob")["undelivered"] == 1
    assert storage.account(db, "carol")["undelivered"] == 1
    stats = storage.account(db, "alice")["statistics"]
    assert stats["messages_sent"] == 4
    assert storage.account(db, "bob")["statistics"]["messages_received"] == 3
    assert storage.check_consistency(db) == []


def test_client_id_makes_sending_idempotent(db):
    make_users(db, "alice", "bob")
    first = send(db, "alice", "bob", "same")
    again = send(db, "alice", "bob", "same", body="different")
    assert again == {"id": first["id"], "duplicate": True, "bounced": False,
                     "deliveries": []}
    assert len(storage.undelivered(db, "bob")) == 1
    assert send(db, "bob", "alice", "same")["duplicate"] is False  # per sender
    bounced = send(db, "alice", "ghost", "lost")
    repeat = send(db, "alice", "ghost", "lost")
    assert repeat["duplicate"] and repeat["bounced"] and repeat["deliveries"] == []
    assert repeat["id"] == bounced["id"] and repeat["note"] == bounced["note"]
    assert send(db, "alice", "bob", None)["id"] != send(db, "alice", "bob", None)["id"]
    assert storage.check_consistency(db) == []


def test_unknown_recipient_bounces_to_sender(db):
    make_users(db, "alice")
    result = send(db, "alice", "ghost", "c1", subject="hello?")
    note = "No user named 'ghost' exists on this server."
    assert result["bounced"] and result["note"] == note
    [(to, bounce)] = result["deliveries"]
    assert to == "alice"
    assert bounce == {"id": result["id"], "from": "parley", "to": "alice",
                      "subject": "hello?", "body": "secret body", "sent_at": T0 + 1,
                      "kind": "bounce", "read": False, "note": note,
                      "original_to": "ghost"}
    assert storage.undelivered(db, "alice") == [bounce]
    assert storage.account(db, "alice")["undelivered"] == 1
    assert send(db, "alice", "parley")["bounced"]
    assert storage.check_consistency(db) == []


def test_inactive_sender_is_refused_and_nothing_stored(db):
    make_users(db, "alice", "bob")
    with pytest.raises(NoSuchAccount):
        send(db, "ghost", "bob")
    run(db, storage.mark_deleting, "alice")
    with pytest.raises(NoSuchAccount):
        send(db, "alice", "bob")
    assert storage.undelivered(db, "bob") == []
    assert send(db, "bob", "alice")["bounced"]  # alice is being deleted


def test_inbox_pages_newest_first(db):
    make_users(db, "alice", "bob")
    ids = [send(db, "alice", "bob", subject=f"s{i}")["id"] for i in range(5)]
    send(db, "bob", "alice")
    page, more = storage.inbox(db, "bob", limit=2)
    assert [e["id"] for e in page] == [ids[4], ids[3]] and more
    assert page[0] == {"id": ids[4], "from": "alice", "subject": "s4",
                       "sent_at": T0 + 1, "kind": "message", "unread": True}
    page, more = storage.inbox(db, "bob", before_id=ids[3], limit=2)
    assert [e["id"] for e in page] == [ids[2], ids[1]] and more
    page, more = storage.inbox(db, "bob", before_id=ids[1], limit=2)
    assert [e["id"] for e in page] == [ids[0]] and not more
    send(db, "bob", "ghost")
    bounce_entry = storage.inbox(db, "bob")[0][0]
    assert bounce_entry["kind"] == "bounce" and "ghost" in bounce_entry["note"]


def test_read_marks_read_and_never_reveals_others(db):
    make_users(db, "alice", "bob", "eve")
    message_id = send(db, "alice", "bob")["id"]
    assert run(db, storage.read_message, "eve", message_id, T0 + 2) is None
    assert run(db, storage.read_message, "bob", 10**9, T0 + 2) is None
    assert storage.unread_count(db, "bob") == 1
    message = run(db, storage.read_message, "bob", message_id, T0 + 3)
    assert message["read"] is True and message["body"] == "secret body"
    assert storage.unread_count(db, "bob") == 0
    assert storage.undelivered(db, "bob") == []
    assert storage.account(db, "bob")["undelivered"] == 0
    assert storage.inbox(db, "bob")[0][0]["unread"] is False
    assert run(db, storage.read_message, "bob", message_id, T0 + 4)["read"] is True
    assert storage.check_consistency(db) == []


def test_delete_messages(db):
    make_users(db, "alice", "bob")
    ids = [send(db, "alice", "bob")["id"] for _ in range(3)]
    alices = send(db, "bob", "alice")["id"]
    run(db, storage.mark_delivered, "bob", [ids[0]], T0 + 2)
    deleted, missing = run(db, storage.delete_messages, "bob",
                           [ids[0], ids[1], alices, ids[1], 10**9])
    # bob's sent copy of `alices` goes too; alice's copy of it stays, and so do
    # alice's sent copies of the two bob deleted
    assert deleted == [ids[0], ids[1], alices] and missing == [10**9]
    assert [m["id"] for m in storage.undelivered(db, "bob")] == [ids[2]]
    assert storage.account(db, "bob")["undelivered"] == 1
    assert storage.unread_count(db, "bob") == 1
    assert storage.unread_count(db, "alice") == 1
    assert [m["id"] for m in storage.undelivered(db, "alice")] == [alices]
    assert [m["id"] for m in mailbox.sent(db, "alice")[0]] == ids[::-1]
    assert mailbox.sent(db, "bob") == ([], False)
    assert storage.check_consistency(db) == []


def test_prune_sent_ids(db):
    make_users(db, "alice", "bob")
    run(db, storage.store_message, "alice", "bob", "s", "b", "old", T0)
    run(db, storage.store_message, "alice", "bob", "s", "b", "new", T0 + 100)
    assert run(db, storage.prune_sent_ids, T0 + 50) == 1
    assert send(db, "alice", "bob", "old")["duplicate"] is False
    assert send(db, "alice", "bob", "new")["duplicate"] is True


# -- account deletion --------------------------------------------------------

DELETION_STEPS = [
    lambda db, name: storage.mark_deleting(db, name),
    lambda db, name: storage.bounce_and_clear_inbox(db, name, T0 + 50),
    lambda db, name: storage.remove_password(db, name),
    lambda db, name: storage.remove_account(db, name),
]


def delete_account(db, name, steps=DELETION_STEPS):
    return [run(db, step, name) for step in steps]


def populate_for_deletion(db):
    """carol's inbox: read, delivered-unread, undelivered, from a gone sender, a bounce."""
    make_users(db, "alice", "bob", "carol", "dave")
    first = send(db, "alice", "carol", subject="read one")["id"]
    send(db, "alice", "carol", subject="for alice")
    run(db, storage.mark_delivered, "carol", [first + 1], T0 + 2)
    run(db, storage.read_message, "carol", first, T0 + 3)
    send(db, "bob", "carol", subject="for bob")
    send(db, "dave", "carol", subject="dave's")
    send(db, "carol", "ghost", "carol-1", subject="carol's bounce")
    send(db, "carol", "alice", subject="stays with alice")
    delete_account(db, "dave")


def assert_carol_deleted_cleanly(db):
    assert storage.account(db, "carol") is None
    assert storage.accounts_being_deleted(db) == []
    assert storage.check_consistency(db) == []
    note = "The account 'carol' was deleted before this message was read."
    for name, subject in (("alice", "for alice"), ("bob", "for bob")):
        bounces = [m for m in storage.undelivered(db, name) if m["kind"] == "bounce"]
        assert len(bounces) == 1, name
        assert bounces[0]["subject"] == subject and bounces[0]["from"] == "parley"
        assert bounces[0]["note"] == note and bounces[0]["original_to"] == "carol"
    assert [m["subject"] for m in storage.undelivered(db, "alice")
            if m["kind"] == "message"] == ["stays with alice"]
    count = db.execute("SELECT COUNT(*) FROM msg.messages WHERE recipient_copy "
                       "AND recipient IN ('carol', 'dave')").fetchone()[0]
    assert count == 0
    assert mailbox.sent(db, "carol") == ([], False)    # her sent copies went with her
    assert db.execute("SELECT COUNT(*) FROM msg.messages WHERE sender = 'carol' "
                      "AND sender_copy").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM msg.sent_ids WHERE sender = 'carol'"
                      ).fetchone()[0] == 0


def test_whole_deletion_sequence(db):
    populate_for_deletion(db)
    assert storage.check_consistency(db) == []
    marked, deliveries, password_gone, account_gone = delete_account(db, "carol")
    assert marked and password_gone and account_gone
    assert sorted((to, m["subject"]) for to, m in deliveries) == [
        ("alice", "for alice"), ("bob", "for bob")]
    assert_carol_deleted_cleanly(db)
    again = delete_account(db, "carol")  # every step once more: harmless
    assert again == [False, [], False, False]
    assert_carol_deleted_cleanly(db)


def test_deletion_refuses_to_clear_an_active_account(db):
    make_users(db, "alice", "bob")
    send(db, "alice", "bob")
    with pytest.raises(StorageError):
        run(db, storage.bounce_and_clear_inbox, "bob", T0)
    with pytest.raises(StorageError):
        run(db, storage.remove_password, "bob")
    assert run(db, storage.remove_account, "bob") is False
    assert len(storage.undelivered(db, "bob")) == 1
    assert storage.check_consistency(db) == []


@pytest.mark.sqlite_only           # copies the files as a crash leaves them
@pytest.mark.parametrize("done", [1, 2, 3, 4])
def test_deletion_survives_a_crash_after_each_step(tmp_path, data_dir, db, done):
    populate_for_deletion(db)
    delete_account(db, "carol", DELETION_STEPS[:done])
    crashed = str(tmp_path / "crashed")
    shutil.copytree(data_dir, crashed)  # the files as a crash would leave them
    assert any(name.endswith("-wal") for name in os.listdir(crashed))
    recovered = open_databases(crashed)
    try:
        for name in storage.accounts_being_deleted(recovered):  # start-up recovery
            delete_account(recovered, name)
        run(recovered, lambda conn: storage.reconcile_counts(conn))
        assert_carol_deleted_cleanly(recovered)
    finally:
        close_databases(recovered)


# -- counts and consistency --------------------------------------------------

def test_reconcile_counts_fixes_tampered_counts(db):
    make_users(db, "alice", "bob", "carol")
    send(db, "alice", "bob")
    send(db, "alice", "bob")
    db.execute("UPDATE users SET undelivered = 7 WHERE username = 'bob'")
    db.execute("UPDATE users SET undelivered = 3 WHERE username = 'carol'")
    assert len(storage.check_consistency(db)) == 2
    assert run(db, lambda conn: storage.reconcile_counts(conn)) == 2
    assert storage.account(db, "bob")["undelivered"] == 2
    assert storage.account(db, "carol")["undelivered"] == 0
    assert storage.check_consistency(db) == []
    assert run(db, lambda conn: storage.reconcile_counts(conn)) == 0


def test_check_consistency_names_each_problem(db):
    make_users(db, "alice", "bob", "carol")
    send(db, "alice", "bob")
    db.execute("UPDATE users SET undelivered = 5 WHERE username = 'alice'")
    db.execute("DELETE FROM users WHERE username = 'bob'")
    db.execute("DELETE FROM pw.passwords WHERE username = 'carol'")
    problems = storage.check_consistency(db)
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "'alice' has an undelivered count of 5 but 0" in text
    assert "1 messages (1 undelivered) are addressed to 'bob'" in text
    assert "password is stored for 'bob', who has no account" in text
    assert "active account 'carol' has no password" in text
    assert "$argon2id" not in text and "secret body" not in text
    run(db, storage.mark_deleting, "carol")  # deleting accounts may lack one
    assert not any("carol" in p for p in storage.check_consistency(db))


# -- random operation sequences keep the counts right ------------------------

NAMES = st.sampled_from(["ann", "ben", "cat", "nobody"])
OPERATIONS = st.one_of(
    st.tuples(st.just("send"), NAMES, NAMES, st.sampled_from([None, "x", "y"])),
    st.tuples(st.just("deliver"), NAMES, st.lists(st.integers(1, 12), max_size=4)),
    st.tuples(st.just("read"), NAMES, st.integers(1, 12)),
    st.tuples(st.just("delete"), NAMES, st.lists(st.integers(1, 12), max_size=4)),
    st.tuples(st.just("remove"), NAMES),
    st.tuples(st.just("create"), NAMES),
)


def apply(db, operation):
    kind, name, *rest = operation
    calls = {
        "send": lambda: send(db, name, rest[0], rest[1]),
        "deliver": lambda: run(db, storage.mark_delivered, name, rest[0], T0 + 9),
        "read": lambda: run(db, storage.read_message, name, rest[0], T0 + 9),
        "delete": lambda: run(db, storage.delete_messages, name, rest[0]),
        "remove": lambda: delete_account(db, name),
        "create": lambda: run(db, storage.create_account, name, "h", T0),
    }
    try:
        calls[kind]()
    except StorageError:
        pass


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=25))
def test_random_operations_stay_consistent(operations):
    with tempfile.TemporaryDirectory() as directory:
        db = open_databases(os.path.join(directory, "data"))
        try:
            make_users(db, "ann", "ben", "cat")
            for operation in operations:
                apply(db, operation)
                assert storage.check_consistency(db) == [], operation
                for name in ("ann", "ben", "cat"):
                    info = storage.account(db, name)
                    if info is not None:
                        assert info["undelivered"] == len(storage.undelivered(db, name))
        finally:
            close_databases(db)
