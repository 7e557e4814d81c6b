"""Tests for Modules/database/file_records.py: the rows of files between people.

On real SQLite files (the `db` fixture): an upload refused for no account,
a block, its size or the sender's quota (and what counts in the quota); a
finished upload offered as an ordinary message with both copies, the
name shown harmlessly in its subject; a full mailbox bouncing the offer;
who sees which row in the list and who may download, each only while
they keep their copy of the offer; the recipient's last chunk marking it
downloaded; a decline bouncing to the sender with the note, only by the
recipient, once; abandoned uploads leaving no row.
"""

import os

import pytest

from Modules.database import blocks, file_records, filestore, mailbox, storage
from Modules.database.file_records import FileLimits

NOW = 1_800_000_000.0
KEY = os.urandom(32)
SHA = "ab" * 32
LIMITS = FileLimits(max_bytes=1000, quota_bytes=1500)


def make(db, *names):
    for name in names:
        storage.create_account(db, name, "hash", NOW)


def begin(db, sender="alice", to="bob", size=100, name="a.txt", note=None):
    return file_records.begin_upload(db, KEY, sender, to, name, size, SHA, note, NOW, LIMITS)


def offered(db, **kwargs):
    outcome, file_id, _key = begin(db, **kwargs)
    assert outcome == "ok"
    return file_records.finish_upload(db, file_id, NOW + 1)


def test_an_upload_is_refused_before_it_starts_for_what_the_server_knows(db):
    make(db, "alice", "bob")
    assert begin(db, to="nobody")[0] == "no_account"
    assert begin(db, size=1001)[0] == "too_large"
    outcome, file_id, key = begin(db, size=1000)
    assert outcome == "ok" and len(key) == 32
    assert file_records.stored_bytes(db, "alice") == 1000     # an upload in progress counts
    assert begin(db, size=501)[0] == "quota"
    assert begin(db, size=500)[0] == "ok"
    assert file_records.stored_bytes(db, "bob") == 0
    wrapped = db.execute("SELECT wrapped_key FROM msg.files WHERE id = ?",
                         (file_id,)).fetchone()[0]
    assert filestore.unwrap_key(KEY, file_id, wrapped) == key
    blocks.block(db, "bob", "alice", NOW)
    assert begin(db, size=1)[0] == "blocked"
    with pytest.raises(storage.NoSuchAccount):
        begin(db, sender="ghost")


def test_an_uploading_file_is_invisible_and_an_abandoned_one_leaves_no_row(db):
    make(db, "alice", "bob")
    _, file_id, _ = begin(db)
    assert file_records.list_files(db, "bob") == file_records.list_files(db, "alice") == []
    assert file_records.file_for_download(db, "alice", file_id) is None
    assert file_records.abandon_upload(db, file_id) and not file_records.abandon_upload(
        db, file_id)
    _, again, _ = begin(db)
    assert file_records.uploading_ids(db) == {again}
    assert file_records.abandon_upload(db, again)
    assert db.execute("SELECT COUNT(*) FROM msg.files").fetchone() == (0,)


def test_the_same_file_offered_again_resumes_its_upload_and_another_does_not(db):
    make(db, "alice", "bob")
    outcome, file_id, key = begin(db, size=10)
    assert outcome == "ok"
    assert begin(db, size=10) == ("resume", file_id, key)           # same name, size, hash
    assert begin(db, size=11)[0] == "ok"                           # another file
    assert file_records.finish_upload(db, file_id, NOW)["file"] == file_id
    assert begin(db, size=10)[0] == "ok"       # finished: the same file again is a new one


def test_a_finished_upload_is_offered_as_a_message_with_both_copies(db):
    make(db, "alice", "bob")
    result = offered(db, name="../x\x1b[2J\ny.txt", note="See page 2")
    (recipient, message), = result["deliveries"]
    assert recipient == "bob" and message["kind"] == "message"
    assert message["subject"] == "File: ../x?[2J?y.txt"
    assert "See page 2" in message["body"] and SHA in message["body"]
    assert f"download {result['file']}" in message["body"]
    assert [m["id"] for m in mailbox.sent(db, "alice", None, 10)[0]] == [result["id"]]
    row, = file_records.list_files(db, "bob")
    assert (row["direction"], row["state"], row["message_id"], row["name"]) == (
        "received", "offered", result["id"], "../x\x1b[2J\ny.txt")
    assert "wrapped_key" not in row
    assert file_records.list_files(db, "alice")[0]["direction"] == "sent"


def test_a_full_mailbox_bounces_the_offer_and_the_file_is_not_kept(db):
    make(db, "alice", "bob")
    _, file_id, _ = begin(db)
    full = mailbox.Limits(messages=0, bytes=0)
    result = file_records.finish_upload(db, file_id, NOW, full)
    assert result["bounced"] and "full" in result["note"]
    assert file_records.file_for_download(db, "bob", file_id) is None
    assert file_records.stored_bytes(db, "alice") == 0


def test_only_the_recipient_and_the_sender_may_download(db):
    make(db, "alice", "bob", "carol")
    file_id = offered(db)["file"]
    assert file_records.file_for_download(db, "bob", file_id)["size"] == 100
    assert file_records.file_for_download(db, "alice", file_id) is not None
    assert file_records.file_for_download(db, "carol", file_id) is None
    assert not file_records.mark_downloaded(db, "alice", file_id, NOW)   # not the recipient
    assert file_records.mark_downloaded(db, "bob", file_id, NOW)
    assert not file_records.mark_downloaded(db, "bob", file_id, NOW)
    assert file_records.list_files(db, "alice")[0]["state"] == "downloaded"
    assert file_records.list_files(db, "carol") == []


def test_a_decline_bounces_to_the_sender_once_and_only_the_recipient_may(db):
    make(db, "alice", "bob", "carol")
    file_id = offered(db, name="plan.txt")["file"]
    assert file_records.decline(db, "carol", file_id, None, NOW) is None
    assert file_records.decline(db, "alice", file_id, None, NOW) is None
    (sender, bounce), = file_records.decline(db, "bob", file_id, "No thanks", NOW)
    assert sender == "alice" and bounce["kind"] == "bounce" and bounce["from"] == "parley"
    assert bounce["note"] == "bob declined the file 'plan.txt'. Their note: No thanks"
    assert bounce["original_to"] == "bob"
    assert file_records.decline(db, "bob", file_id, None, NOW) is None
    assert file_records.list_files(db, "bob") == []
    row, = file_records.list_files(db, "alice")
    assert row["state"] == "declined" and row["stored"] is False
    assert file_records.stored_bytes(db, "alice") == 0 and file_id not in \
        file_records.stored_ids(db)
    assert storage.unread_count(db, "alice") == 1


def test_account_deletion_returns_files_never_downloaded_and_only_those(db):
    make(db, "alice", "bob", "carol")
    waiting = offered(db, name="plan.txt")["file"]
    fetched = offered(db, name="done.txt")["file"]
    assert file_records.mark_downloaded(db, "bob", fetched, NOW)
    mine = offered(db, sender="bob", to="carol", name="mine.txt")["file"]
    deliveries, ids = file_records.return_undownloaded(db, "bob", NOW)
    assert ids == [waiting] and [sender for sender, _ in deliveries] == ["alice"]
    assert deliveries[0][1]["note"] == ("The account 'bob' was deleted before the file "
                                        "'plan.txt' was downloaded.")
    assert file_records.return_undownloaded(db, "bob", NOW) == ([], [])   # again: nothing
    assert waiting not in file_records.stored_ids(db)
    assert {fetched, mine} <= set(file_records.stored_ids(db))   # carol may still fetch


def test_the_offer_is_the_handle_each_side_loses_the_file_with_their_copy(db):
    make(db, "alice", "bob")
    sent = offered(db)
    file_id = sent["file"]
    file_records.mark_downloaded(db, "bob", file_id, NOW)
    storage.delete_messages(db, "alice", [sent["id"]])          # the sender's copy
    assert file_records.file_for_download(db, "alice", file_id) is None
    assert file_records.list_files(db, "alice") == []
    assert file_records.file_for_download(db, "bob", file_id) is not None
    other = offered(db)
    storage.delete_messages(db, "bob", [sent["id"], other["id"]])   # the recipient's
    assert file_records.file_for_download(db, "bob", file_id) is None
    assert file_records.list_files(db, "bob") == []
    assert file_records.decline(db, "bob", other["file"], None, NOW) is None
    assert [row["id"] for row in file_records.list_files(db, "alice")] == [other["file"]]


def test_display_names_are_one_line_and_cut():
    assert file_records.display_name("a\tb\u202ec d") == "a?b?c d"
    assert len(file_records.display_name("x" * 500)) == file_records.SUBJECT_NAME_MAX
