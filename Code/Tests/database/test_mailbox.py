"""One's own mail beyond the inbox, in storage: sent copies (and the state of a file
one offers), conversations, search, dropping copies, mailbox limits; and that nobody
reaches another person's copies."""

import pytest

from Modules.database import file_records, mailbox, storage
from Tests.support.storage import T0, make_users
from Tests.support.storage import run_committed as run
from Tests.support.storage import send_stored as send


def ids(page):
    return [entry["id"] for entry in page[0]]


def test_the_sender_keeps_a_copy_that_says_whether_it_was_delivered_and_read(db):
    make_users(db, "alice", "bob")
    first, second = send(db, "alice", "bob")["id"], send(db, "alice", "bob")["id"]
    run(db, storage.mark_delivered, "bob", [first, second], T0 + 2, [second])
    entries, more = mailbox.sent(db, "alice")
    assert [(e["id"], e["to"], e["delivered"], e["read"]) for e in entries] == [
        (second, "bob", True, True), (first, "bob", True, False)]
    assert not more and mailbox.sent(db, "bob") == ([], False)
    copy = run(db, storage.read_message, "alice", first, T0 + 3)    # alice's copy
    assert copy["delivered"] and not copy["read"]
    assert storage.inbox(db, "bob")[0][1]["unread"]                 # alice reading changed nothing


def test_a_sent_message_that_offers_a_file_says_which_and_its_state(db):
    make_users(db, "alice", "bob")
    plain = send(db, "alice", "bob")["id"]
    _, file_id, _ = run(db, file_records.begin_upload, b"k" * 32, "alice", "bob", "a.txt", 5,
                        "ab" * 32, None, T0, file_records.FileLimits())
    offer = run(db, file_records.finish_upload, file_id, T0)["id"]
    run(db, file_records.decline, "bob", file_id, None, T0)
    entries = {entry["id"]: entry for entry in mailbox.sent(db, "alice")[0]}
    assert entries[offer]["file"] == {"id": file_id, "state": "declined"}
    assert "file" not in entries[plain]
    assert mailbox.sent(db, "bob")[0] == []        # bob's copy of the offer is no sent copy


def test_an_ack_marks_read_only_what_it_names_in_read_and_only_the_recipients(db):
    make_users(db, "alice", "bob")
    message = send(db, "alice", "bob")["id"]
    run(db, storage.mark_delivered, "alice", [message], T0 + 2, [message])   # not hers
    assert storage.unread_count(db, "bob") == 1
    run(db, storage.mark_delivered, "bob", [message], T0 + 2)
    assert storage.unread_count(db, "bob") == 1                   # delivered, not read
    run(db, storage.mark_delivered, "bob", [message], T0 + 3, [message])
    assert storage.unread_count(db, "bob") == 0


def test_unread_lists_only_the_unread(db):
    make_users(db, "alice", "bob")
    message_ids = [send(db, "alice", "bob")["id"] for _ in range(3)]
    run(db, storage.read_message, "bob", message_ids[1], T0 + 2)
    assert ids(storage.inbox(db, "bob", unread_only=True)) == [message_ids[2], message_ids[0]]


def test_history_is_both_directions_with_one_person_and_pages_back(db):
    make_users(db, "alice", "bob", "carol")
    a1 = send(db, "alice", "bob")["id"]
    send(db, "carol", "alice")
    b1 = send(db, "bob", "alice")["id"]
    a2 = send(db, "alice", "bob")["id"]
    assert ids(mailbox.history(db, "alice", "bob")) == [a2, b1, a1]
    assert ids(mailbox.history(db, "bob", "alice")) == [a2, b1, a1]
    page = mailbox.history(db, "alice", "bob", before_id=a2, limit=1)
    assert ids(page) == [b1] and page[1] is True
    assert ids(mailbox.history(db, "alice", "bob", before_id=a1)) == []
    entry = mailbox.history(db, "alice", "bob")[0][0]
    assert entry["from"] == "alice" and "delivered" in entry and "unread" not in entry


def test_history_shows_only_ones_own_copies_and_nothing_of_others(db):
    make_users(db, "alice", "bob", "carol")
    a1 = send(db, "alice", "bob")["id"]
    b1 = send(db, "bob", "alice")["id"]
    run(db, storage.delete_messages, "alice", [a1])          # alice's sent copy
    assert ids(mailbox.history(db, "alice", "bob")) == [b1]
    assert ids(mailbox.history(db, "bob", "alice")) == [b1, a1]  # bob's copies stay
    assert mailbox.history(db, "carol", "bob") == ([], False)
    assert mailbox.history(db, "carol", "alice") == ([], False)


def test_a_new_account_of_a_deleted_name_does_not_inherit_the_old_conversation(db):
    make_users(db, "alice", "bob")
    old = send(db, "alice", "bob")["id"]
    run(db, storage.mark_deleting, "bob")
    run(db, storage.bounce_and_clear_inbox, "bob", T0 + 5)
    run(db, storage.remove_password, "bob")
    run(db, storage.remove_account, "bob")
    assert ids(mailbox.history(db, "alice", "bob")) == [old]       # no bob now: the old one
    run(db, storage.create_account, "bob", "$argon2id$fake$bob2", T0 + 10)
    assert mailbox.history(db, "alice", "bob") == ([], False)
    assert ids(mailbox.sent(db, "alice")) == [old]                 # still her sent copy


def test_search_finds_words_in_subject_and_body_of_ones_own_copies_only(db):
    make_users(db, "alice", "bob", "carol")
    lunch = send(db, "alice", "bob", subject="Lunch", body="At noon, Café Müller?")["id"]
    other = send(db, "carol", "bob", subject="lunch too", body="x")["id"]
    indexed = 0 if getattr(db, "dialect", "") == "postgresql" else 2   # PG's: always current
    assert run(db, mailbox.index_pending) == indexed
    assert ids(mailbox.search(db, "alice", "lunch")) == [lunch]
    assert ids(mailbox.search(db, "bob", "LUNCH")) == [other, lunch]
    assert ids(mailbox.search(db, "bob", "cafe muller")) == [lunch]   # accents, case
    assert ids(mailbox.search(db, "bob", "Café-Müller!")) == [lunch]  # words, not marks
    assert ids(mailbox.search(db, "bob", "noon lunch")) == [lunch]    # every word
    assert mailbox.search(db, "carol", "noon") == ([], False)
    assert mailbox.search(db, "bob", "lunc") == ([], False)           # whole words
    run(db, storage.delete_messages, "bob", [lunch])
    assert ids(mailbox.search(db, "bob", "noon")) == []
    assert ids(mailbox.search(db, "alice", "noon")) == [lunch]


@pytest.mark.parametrize("text", ['"', 'NEAR(a b)', "a OR b*", "body:x", "-x", "^x"])
def test_search_text_is_never_fts_syntax(db, text):
    make_users(db, "alice", "bob")
    send(db, "alice", "bob", subject="a b x", body="body")
    if not any(ch.isalnum() for ch in text):
        with pytest.raises(mailbox.EmptySearch):
            mailbox.search(db, "bob", text)
    else:
        mailbox.search(db, "bob", text)      # no sqlite3.OperationalError


@pytest.mark.sqlite_only           # FTS5's own table
def test_the_row_and_its_index_entry_go_with_the_last_copy(db):
    make_users(db, "alice", "bob")
    message = send(db, "alice", "bob", body="unique words here")["id"]
    run(db, mailbox.index_pending)
    run(db, storage.delete_messages, "bob", [message])
    run(db, storage.delete_messages, "alice", [message])
    assert db.execute("SELECT COUNT(*) FROM msg.messages").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM msg.messages_text WHERE messages_text "
                      "MATCH 'unique'").fetchone()[0] == 0
    assert storage.check_consistency(db) == []


def fts_intact(db):
    db.execute("INSERT INTO msg.messages_text (messages_text) VALUES ('integrity-check')")
    return True


@pytest.mark.sqlite_only           # FTS5's batches
def test_the_index_takes_new_messages_in_batches_and_skips_those_gone_meanwhile(db):
    make_users(db, "alice", "bob")
    kept = send(db, "alice", "bob", body="batch word")["id"]
    gone = send(db, "alice", "bob", body="batch word")["id"]
    assert mailbox.search(db, "bob", "batch") == ([], False)     # not indexed yet
    for owner in ("alice", "bob"):                                # gone before indexing
        run(db, storage.delete_messages, owner, [gone])
    assert run(db, mailbox.index_pending) == 1 and run(db, mailbox.index_pending) == 0
    assert ids(mailbox.search(db, "bob", "batch")) == [kept] and fts_intact(db)
    for owner in ("alice", "bob"):                                # gone after indexing
        run(db, storage.delete_messages, owner, [kept])
    assert mailbox.search(db, "alice", "batch") == ([], False) and fts_intact(db)


def test_a_full_mailbox_bounces_with_a_clear_note_and_keeps_counts(db):
    make_users(db, "alice", "bob")
    limits = mailbox.Limits(messages=2, bytes=10**6)
    for _ in range(2):
        assert not run(db, storage.store_message, "alice", "bob", "s", "b", None, T0,
                       limits)["bounced"]
    result = run(db, storage.store_message, "alice", "bob", "s", "b", "c9", T0, limits)
    assert result["bounced"] and "mailbox of 'bob' is full (2 messages)" in result["note"]
    again = run(db, storage.store_message, "alice", "bob", "s", "b", "c9", T0, limits)
    assert again["duplicate"] and again["note"] == result["note"]
    bounce = [m for m in storage.undelivered(db, "alice") if m["kind"] == "bounce"]
    assert len(bounce) == 1 and bounce[0]["note"] == result["note"]
    first = storage.inbox(db, "bob")[0][0]["id"]
    run(db, storage.delete_messages, "bob", [first])               # room again
    assert not run(db, storage.store_message, "alice", "bob", "s", "b", None, T0,
                   limits)["bounced"]
    big = mailbox.Limits(messages=100, bytes=10)
    assert run(db, storage.store_message, "alice", "bob", "s", "x" * 9, None, T0,
               big)["note"].endswith("full (10 bytes); the message was not delivered.")


def test_mailbox_sizes_are_recomputed_when_they_drift(db):
    make_users(db, "alice", "bob")
    send(db, "alice", "bob", subject="é", body="12345")
    assert db.execute("SELECT stored_messages, stored_bytes FROM users WHERE username = "
                      "'bob'").fetchone() == (1, 7)
    db.execute("UPDATE users SET stored_messages = 9, stored_bytes = 0")
    assert run(db, storage.reconcile_counts) >= 2
    assert db.execute("SELECT username, stored_messages, stored_bytes FROM users "
                      "ORDER BY username").fetchall() == [("alice", 0, 0), ("bob", 1, 7)]


def test_limits_come_from_the_operators_settings():
    assert mailbox.limits_from({}) == mailbox.DEFAULT_LIMITS
    assert mailbox.limits_from({"mailbox_messages": "5", "mailbox_bytes": "junk"}) == \
        mailbox.Limits(messages=5, bytes=mailbox.DEFAULT_LIMITS.bytes)
