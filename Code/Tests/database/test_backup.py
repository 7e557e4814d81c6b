"""Tests for Modules/database/backup.py: the online backup of issue 15.

Real SQLite files in a tmp dir and the real single writer on an asyncio
loop, standing in for the database process (the backup only needs its
data dir and its writer); the end-to-end test with real daemons and clients
is Tests/system/test_backups.py.
"""

import asyncio
import json
import os
import sqlite3
import types

import pytest

from Modules.database import backup, storage
from Modules.database.writer import SingleWriter

NOW = 1_700_000_000.0


def fill(data_dir, messages=20):
    """Two accounts and `messages` messages between them; the highest message id."""
    db = storage.open_databases(data_dir)
    try:
        db.execute("BEGIN")
        storage.create_account(db, "alice", "$argon2id$fake", NOW)
        storage.create_account(db, "bob", "$argon2id$fake", NOW)
        last = None
        for number in range(messages):
            last = storage.store_message(db, "alice", "bob", f"s{number}", f"b{number}",
                                         f"c{number}", NOW)
        db.execute("COMMIT")
        return db.execute("SELECT max(id) FROM msg.messages").fetchone()[0]
    finally:
        storage.close_databases(db)


def add_file_row(data_dir, state="offered", stored=1):
    """A file row (and, unless uploading, its blob on disk); its id."""
    db = storage.open_databases(data_dir)
    try:
        file_id = db.execute(
            "INSERT INTO msg.files (sender, recipient, name, size, sha256, wrapped_key, state, "
            "stored, created_at) VALUES ('alice', 'bob', 'a.txt', 3, ?, x'00', ?, ?, ?)",
            ("0" * 64, state, stored, NOW)).lastrowid
    finally:
        storage.close_databases(db)
    os.makedirs(os.path.join(data_dir, "files"), exist_ok=True)
    with open(os.path.join(data_dir, "files", f"{file_id}.blob"), "wb") as blob:
        blob.write(b"sealed bytes")
    return file_id


def run_backup(data_dir, target, during=None, **options):
    """backup.take with a real writer; `during(writer)` runs once the snapshot is pinned."""
    async def main():
        loop = asyncio.get_running_loop()
        writer = SingleWriter(loop, lambda: storage.open_databases(data_dir),
                              storage.close_databases)
        writer.start()
        monitor = types.SimpleNamespace(data_dir=data_dir, job=writer.submit)
        original = backup.copy_everything

        def copy_after_writes(*args):
            """The copy, once `during` has written more through the writer."""
            asyncio.run_coroutine_threadsafe(during(writer), loop).result()
            return original(*args)
        if during is not None:
            backup.copy_everything = copy_after_writes
        try:
            return await backup.take(monitor, target, **options)
        finally:
            backup.copy_everything = original
            writer.stop()
    return asyncio.run(main())


def rows(path, sql):
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_backup_holds_the_three_files_the_keys_and_a_manifest_that_checks(tmp_path):
    data_dir = str(tmp_path / "data")
    top = fill(data_dir)
    for name in backup.KEY_FILES:
        (tmp_path / "data" / name).write_bytes(b"key " + name.encode())
    target = str(tmp_path / "copy")
    manifest = run_backup(data_dir, target)
    assert sorted(os.listdir(target)) == sorted(
        ["manifest.json", "files", "users.db", "passwords.db", "messages.db",
         "storage_key", "server_key"])
    on_disk = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert on_disk["files"] == manifest["files"]
    for relative, entry in on_disk["files"].items():
        path = os.path.join(target, relative)
        assert os.path.getsize(path) == entry["size"]
        assert backup.file_sha256(path) == entry["sha256"]
    assert on_disk["ids"] == {"messages": top, "users": 2, "files": 0}
    assert rows(os.path.join(target, "messages.db"), "SELECT count(*) FROM messages") == \
        [(20,)]
    assert rows(os.path.join(target, "users.db"), "PRAGMA journal_mode") == [("delete",)]
    assert not any(name.startswith(".copy") for name in os.listdir(tmp_path))
    assert os.stat(target).st_mode & 0o777 == 0o700
    for folder, _dirs, names in os.walk(target):
        for name in names:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o777 == 0o600, name


def test_writes_after_the_pin_are_not_in_the_copy_in_any_of_the_three_files(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=5)

    async def write_more(writer):
        await writer.submit(storage.create_account, "carol", "$argon2id$fake", NOW)
        await writer.submit(storage.store_message, "alice", "bob", "late", "late", "late",
                            NOW)
    target = str(tmp_path / "copy")
    manifest = run_backup(data_dir, target, during=write_more)
    assert rows(os.path.join(target, "users.db"), "SELECT count(*) FROM users") == [(2,)]
    assert rows(os.path.join(target, "passwords.db"), "SELECT count(*) FROM passwords") == \
        [(2,)]
    assert rows(os.path.join(target, "messages.db"), "SELECT count(*) FROM messages") == \
        [(5,)]
    assert manifest["ids"]["users"] == 2
    live = rows(os.path.join(data_dir, "users.db"), "SELECT count(*) FROM users")
    assert live == [(3,)]                          # the writer went on meanwhile


def test_only_finished_stored_files_are_copied_and_a_vanished_one_is_listed(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)
    kept = add_file_row(data_dir)
    uploading = add_file_row(data_dir, state="uploading")
    not_stored = add_file_row(data_dir, stored=0)
    vanished = add_file_row(data_dir)
    os.unlink(os.path.join(data_dir, "files", f"{vanished}.blob"))
    target = str(tmp_path / "copy")
    manifest = run_backup(data_dir, target)
    assert os.listdir(os.path.join(target, "files")) == [f"{kept}.blob"]
    assert manifest["missing_files"] == [vanished]
    assert manifest["ids"]["files"] == vanished
    assert uploading and not_stored


def test_every_destination_database_is_opened_through_the_given_connect(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)
    opened = []

    def connect(path):
        opened.append(os.path.basename(path))
        return sqlite3.connect(path)
    run_backup(data_dir, str(tmp_path / "copy"), connect=connect)
    assert {"users.db", "passwords.db", "messages.db"} <= set(opened)


@pytest.mark.parametrize("where, said", [
    ("data/inside", "is inside the data directory"),
    ("full", "already exists and is not an empty directory"),
    ("nowhere/copy", "does not exist"),
])
def test_a_target_that_may_not_be_used_is_refused_in_one_sentence(tmp_path, where, said):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("mine")
    with pytest.raises(backup.BackupError, match=said):
        run_backup(data_dir, str(tmp_path / where))
    assert (tmp_path / "full" / "something").read_text() == "mine"
    assert not os.path.exists(tmp_path / "data" / "inside")


def test_an_empty_existing_directory_is_used(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)
    (tmp_path / "empty").mkdir()
    run_backup(data_dir, str(tmp_path / "empty"))
    assert os.path.exists(tmp_path / "empty" / "manifest.json")


def test_a_failed_copy_leaves_neither_the_target_nor_a_staging_directory(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)

    def broken(path):
        raise sqlite3.OperationalError("disk I/O error")
    with pytest.raises(backup.BackupError, match="the backup into .* failed: disk I/O"):
        run_backup(data_dir, str(tmp_path / "copy"), connect=broken)
    assert sorted(os.listdir(tmp_path)) == ["data"]
    after = rows(os.path.join(data_dir, "users.db"), "SELECT count(*) FROM users")
    assert after == [(2,)]


def test_the_pin_is_taken_once_even_when_its_batch_runs_again(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)
    snapshot = storage.open_reader(data_dir)
    try:
        backup.pin_snapshot(None, snapshot)
        backup.pin_snapshot(None, snapshot)
        assert snapshot.in_transaction
    finally:
        snapshot.close()
