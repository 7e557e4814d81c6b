"""Tests for Modules/database/schema.py on real SQLite files: the three files,
their modes, migrations, and refusing what is not ours.

Files are created mode 0600 in a directory of mode 0700 (a looser directory
is tightened); a foreign SQLite file, a file that is not SQLite, a newer
schema version and a corrupt page are refused and left unchanged; empty or
stamped-but-unmigrated files are migrated; a later migration step runs once,
in its own transaction; tables rebuilt by a migration (messages at version 2,
files at version 5) keep their rows, ids and id sequence.
"""

import os
import sqlite3
import stat

import pytest

from Modules.database import schema as storage_schema
from Modules.database import storage
from Modules.database.storage import (
    StorageError,
    close_databases,
    open_databases,
)
from Tests.support.storage import make_users
from Tests.support.storage import send_stored as send

FILES = ("users.db", "passwords.db", "messages.db")

pytestmark = pytest.mark.sqlite_only    # the SQLite files themselves



def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def snapshot(directory):
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory))}


# -- files, modes, refusals, migrations --------------------------------------

def test_modes_of_directory_files_and_wal(data_dir, db):
    make_users(db, "alice", "bob")
    send(db, "alice", "bob")
    assert mode_of(data_dir) == 0o700
    for name in FILES:
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(data_dir, name + suffix)
            assert os.path.exists(path), path
            assert mode_of(path) == 0o600, path


def test_umask_restored_and_loose_directory_tightened(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    before = os.umask(0o022)
    try:
        close_databases(open_databases(loose))
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
    assert mode_of(loose) == 0o700


def test_reopen_keeps_data_and_versions(data_dir, db):
    make_users(db, "alice", "bob")
    sent = send(db, "alice", "bob")
    close_databases(db)
    again = open_databases(data_dir)
    try:
        assert storage.user_exists(again, "alice")
        assert [m["id"] for m in storage.undelivered(again, "bob")] == [sent["id"]]
        for name, schema in storage_schema.SCHEMAS.items():
            assert storage_schema.schema_version(again, schema) == len(
                storage_schema.MIGRATIONS[name])
            app_id = again.execute(f"PRAGMA {schema}.application_id").fetchone()[0]
            assert app_id == storage_schema.APPLICATION_ID
    finally:
        close_databases(again)


@pytest.mark.parametrize("victim", FILES)
def test_foreign_sqlite_file_refused_and_unchanged(data_dir, victim):
    os.makedirs(data_dir, mode=0o700)
    foreign = sqlite3.connect(os.path.join(data_dir, victim))
    foreign.execute("PRAGMA application_id = 1234")
    foreign.execute("CREATE TABLE precious (x)")
    foreign.execute("INSERT INTO precious VALUES ('keep me')")
    foreign.commit()
    foreign.close()
    before = snapshot(data_dir)
    with pytest.raises(StorageError, match=r"not a Parley database \(application_id 0x000004D2"):
        open_databases(data_dir)
    assert snapshot(data_dir) == before  # nothing changed, nothing created


@pytest.mark.parametrize("garbage", [b"not sqlite", os.urandom(8192),
                                     b"SQLite format 3\x00" + b"\xff" * 10],
                         ids=["text", "random", "sqlite-magic-then-junk"])   # stable ids: xdist
def test_non_sqlite_file_refused_and_unchanged(data_dir, garbage):
    os.makedirs(data_dir, mode=0o700)
    with open(os.path.join(data_dir, "messages.db"), "wb") as handle:
        handle.write(garbage)
    before = snapshot(data_dir)
    with pytest.raises(StorageError, match="not an SQLite database"):
        open_databases(data_dir)
    assert snapshot(data_dir) == before


def test_newer_schema_version_refused_and_unchanged(data_dir, db):
    make_users(db, "alice")
    close_databases(db)
    raw = sqlite3.connect(os.path.join(data_dir, "passwords.db"))
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    before = snapshot(data_dir)
    with pytest.raises(StorageError, match="schema version 99, newer"):
        open_databases(data_dir)
    assert snapshot(data_dir) == before


@pytest.mark.parametrize("page, offset, junk", [
    (2, 8, b"\xde\xad\xbe\xef" * 64),  # SQLite itself finds it malformed
    (3, 0, b"\x0d\x00\x07\x01" * 2),   # only PRAGMA quick_check notices
])
def test_corrupt_file_refused(data_dir, db, page, offset, junk):
    make_users(db, *[f"user{i}" for i in range(200)])
    close_databases(db)
    with open(os.path.join(data_dir, "users.db"), "r+b") as handle:
        handle.seek((page - 1) * 4096 + offset)
        handle.write(junk)
    with pytest.raises(StorageError, match=r"users\.db in .*refusing"):
        open_databases(data_dir)


def test_empty_files_are_initialised_from_version_0(data_dir):
    os.makedirs(data_dir, mode=0o700)
    for name in FILES:
        open(os.path.join(data_dir, name), "wb").close()
    db = open_databases(data_dir)
    try:
        make_users(db, "alice")
        assert storage.user_exists(db, "alice")
        assert storage_schema.schema_version(db, "msg") == len(storage_schema.MIGRATIONS[
            "messages"])
    finally:
        close_databases(db)


def test_stamped_but_unmigrated_file_is_migrated(data_dir):
    """A crash after a new file got its application_id but no tables yet."""
    os.makedirs(data_dir, mode=0o700)
    raw = sqlite3.connect(os.path.join(data_dir, "messages.db"))
    raw.execute(f"PRAGMA application_id = {storage_schema.APPLICATION_ID}")
    raw.close()
    os.chmod(os.path.join(data_dir, "messages.db"), 0o644)
    db = open_databases(data_dir)
    try:
        assert mode_of(os.path.join(data_dir, "messages.db")) == 0o600
        make_users(db, "alice", "bob")
        assert send(db, "alice", "bob")["bounced"] is False
    finally:
        close_databases(db)


def test_later_migration_steps_run_once_in_their_own_transaction(data_dir, db, monkeypatch):
    make_users(db, "alice")
    close_databases(db)
    steps = storage_schema.MIGRATIONS["users"]
    broken = "ALTER TABLE main.users ADD COLUMN colour TEXT; SELECT * FROM nowhere;"
    monkeypatch.setitem(storage_schema.MIGRATIONS, "users", steps + [broken])
    with pytest.raises(StorageError, match=f"schema version {len(steps) + 1} failed"):
        open_databases(data_dir)
    good = "ALTER TABLE main.users ADD COLUMN colour TEXT DEFAULT 'blue';"
    monkeypatch.setitem(storage_schema.MIGRATIONS, "users", steps + [good])
    db = open_databases(data_dir)
    try:
        assert storage_schema.schema_version(db, "main") == len(steps) + 1
        assert db.execute("SELECT colour FROM users").fetchall() == [("blue",)]
    finally:
        close_databases(db)
    db = open_databases(data_dir)  # already there: the step does not run again
    close_databases(db)


def test_version_1_files_migrate_keeping_messages_ids_and_the_id_sequence(data_dir,
                                                                         monkeypatch):
    """The messages table is rebuilt for broadcasts: ids stay, none is used twice."""
    for name in ("users", "messages"):
        monkeypatch.setitem(storage_schema.MIGRATIONS, name,
                            storage_schema.MIGRATIONS[name][:1])
    db = open_databases(data_dir)            # version 1 files, written as version 1 code did
    db.executemany("INSERT INTO users (username, created_at) VALUES (?, 0)",
                   [("alice",), ("bob",)])
    ids = [db.execute("INSERT INTO msg.messages (sender, recipient, sent_at, subject, body, "
                      "kind) VALUES ('alice', 'bob', 0, ?, 'b', 'message')", (f"s{n}",)
                      ).lastrowid for n in range(3)]
    db.execute("DELETE FROM msg.messages WHERE id = ?", (ids[-1],))   # the highest id
    close_databases(db)
    monkeypatch.undo()
    db = open_databases(data_dir)
    try:
        assert storage_schema.schema_version(db, "msg") == 5      # 4, 5: the files table
        assert storage_schema.schema_version(db, "main") == 3
        assert db.execute("SELECT COUNT(*) FROM msg.files").fetchone() == (0,)
        kept = db.execute("SELECT id, subject FROM msg.messages ORDER BY id").fetchall()
        assert kept == [(ids[0], "s0"), (ids[1], "s1")]
        # version 3: the old messages keep a sender's copy and are in the text index
        assert db.execute("SELECT sender_copy, recipient_copy FROM msg.messages").fetchall(
            ) == [(1, 1), (1, 1)]
        assert db.execute("SELECT rowid FROM msg.messages_text WHERE messages_text "
                          "MATCH 's1'").fetchall() == [(ids[1],)]
        assert send(db, "alice", "bob")["id"] > ids[-1]          # the sequence carried over
        assert db.execute("SELECT logoffs, suspended_at FROM users WHERE username = 'bob'"
                          ).fetchone() == (0, None)
    finally:
        close_databases(db)




def test_version_4_files_rows_migrate_keeping_ids_and_the_id_sequence(data_dir,
                                                                     monkeypatch):
    """Version 5 rebuilds the files table for its two new states: every row and
    the id sequence stay, so no file id is ever given twice."""
    monkeypatch.setitem(storage_schema.MIGRATIONS, "messages",
                        storage_schema.MIGRATIONS["messages"][:4])
    db = open_databases(data_dir)
    insert = ("INSERT INTO msg.files (sender, recipient, name, size, sha256, wrapped_key, "
              "state, created_at) VALUES ('alice', 'bob', ?, 1, 'ab', X'00', 'offered', 0)")
    ids = [db.execute(insert, (f"f{n}",)).lastrowid for n in range(3)]
    db.execute("DELETE FROM msg.files WHERE id = ?", (ids[-1],))        # the highest id
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE msg.files SET state = 'returned' WHERE id = ?", (ids[0],))
    close_databases(db)
    monkeypatch.undo()
    db = open_databases(data_dir)
    try:
        assert storage_schema.schema_version(db, "msg") == 5
        assert db.execute("SELECT id, name, state, stored FROM msg.files ORDER BY id"
                          ).fetchall() == [(ids[0], "f0", "offered", 1),
                                           (ids[1], "f1", "offered", 1)]
        db.execute("UPDATE msg.files SET state = 'returned' WHERE id = ?", (ids[0],))
        db.execute("UPDATE msg.files SET state = 'deleted' WHERE id = ?", (ids[1],))
        assert db.execute(insert, ("new",)).lastrowid > ids[-1]   # the sequence carried over
        indexes = {row[0] for row in db.execute(
            "SELECT name FROM msg.sqlite_master WHERE type = 'index' AND tbl_name = 'files'")}
        assert {"files_by_recipient", "files_by_sender", "files_uploading",
                "files_by_message", "files_stored"} <= indexes
    finally:
        close_databases(db)
