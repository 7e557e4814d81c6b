"""Tests for Modules/database/restore.py: checking and restoring a backup (issue 15).

Backups are made by the real `backup.take` (Tests/database/test_backup.py's
helpers) from real SQLite files; restore runs as the command does, offline.
"""

import fcntl
import json
import os

import pytest

from Modules.database import restore, storage
from Tests.database.test_backup import NOW, add_file_row, fill, run_backup, rows


@pytest.fixture
def made(tmp_path):
    """A data dir with 20 messages and a backup of it: (data_dir, backup_dir, top id)."""
    data_dir = str(tmp_path / "data")
    top = fill(data_dir)
    (tmp_path / "data" / "storage_key").write_bytes(b"key")
    backup_dir = str(tmp_path / "backup")
    run_backup(data_dir, backup_dir)
    return data_dir, backup_dir, top


def new_message_id(data_dir):
    db = storage.open_databases(data_dir)
    try:
        message = storage.insert_message(db, "alice", "bob", "after", "after", NOW)
        user_id = storage.create_account(db, "dave", "$argon2id$fake", NOW)
        return message["id"], user_id
    finally:
        storage.close_databases(db)


def test_a_whole_backup_checks_and_a_changed_one_is_refused(made):
    _data_dir, backup_dir, _top = made
    assert restore.verify(backup_dir)["format"] == 1
    path = os.path.join(backup_dir, "messages.db")
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) - 10)
        handle.write(b"XXXX")
    with pytest.raises(restore.RestoreError, match="messages.db in .* does not match its "
                                                   "manifest"):
        restore.verify(backup_dir)


def test_a_missing_an_extra_file_and_no_manifest_are_refused(made, tmp_path):
    _data_dir, backup_dir, _top = made
    (tmp_path / "backup" / "stray").write_text("x")
    with pytest.raises(restore.RestoreError, match="stray in .* is not in its manifest"):
        restore.verify(backup_dir)
    os.unlink(tmp_path / "backup" / "stray")
    os.unlink(tmp_path / "backup" / "storage_key")
    with pytest.raises(restore.RestoreError, match="storage_key is missing"):
        restore.verify(backup_dir)
    os.unlink(tmp_path / "backup" / "manifest.json")
    with pytest.raises(restore.RestoreError, match="has no manifest.json"):
        restore.verify(backup_dir)


def test_restoring_into_a_new_dir_raises_every_id_above_the_backup_plus_the_margin(
        made, tmp_path):
    _data_dir, backup_dir, top = made
    target = str(tmp_path / "fresh")
    aside, floors = restore.restore(backup_dir, target, margin=1000)
    assert aside is None
    assert floors == {"messages": top + 1000, "users": 2 + 1000, "files": 1000}
    assert rows(os.path.join(target, "messages.db"), "SELECT count(*) FROM messages") == \
        [(20,)]
    assert os.path.exists(os.path.join(target, "storage_key"))
    assert not os.path.exists(os.path.join(target, "manifest.json"))
    message_id, user_id = new_message_id(target)
    assert message_id == top + 1001 and user_id == 1003


def test_the_old_data_dir_is_moved_aside_and_its_higher_ids_are_not_reused(made, tmp_path):
    data_dir, backup_dir, top = made
    live_top, _ = new_message_id(data_dir)            # handed out after the backup
    aside, floors = restore.restore(backup_dir, data_dir, margin=10)
    assert aside and os.path.basename(aside).startswith("data.before-restore-")
    assert rows(os.path.join(aside, "messages.db"), "SELECT max(id) FROM messages") == \
        [(live_top,)]
    assert floors["messages"] == live_top + 10 > top + 10
    assert floors["users"] == 3 + 10                  # dave was created in the live dir
    message_id, _ = new_message_id(data_dir)
    assert message_id > live_top


def test_ids_above_raises_the_floor_further(made, tmp_path):
    _data_dir, backup_dir, _top = made
    _aside, floors = restore.restore(backup_dir, str(tmp_path / "fresh"), margin=5,
                                     ids_above=10 ** 6)
    assert set(floors.values()) == {10 ** 6 + 5}


def test_a_data_dir_a_server_holds_is_refused_and_left_alone(made):
    data_dir, backup_dir, _top = made
    fd = os.open(os.path.join(data_dir, "parley.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = sorted(os.listdir(data_dir))
        with pytest.raises(restore.RestoreError, match="a Parley server is running on"):
            restore.restore(backup_dir, data_dir)
        assert sorted(os.listdir(data_dir)) == before
        assert not [name for name in os.listdir(os.path.dirname(data_dir))
                    if "restoring" in name or "before-restore" in name]
    finally:
        os.close(fd)


def test_a_corrupted_backup_touches_nothing(made):
    data_dir, backup_dir, _top = made
    manifest_path = os.path.join(backup_dir, "manifest.json")
    manifest = json.load(open(manifest_path, encoding="utf-8"))
    manifest["files"]["users.db"]["sha256"] = "0" * 64
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    with pytest.raises(restore.RestoreError, match="users.db in .* does not match"):
        restore.restore(backup_dir, data_dir)
    assert rows(os.path.join(data_dir, "users.db"), "SELECT count(*) FROM users") == [(2,)]


def test_the_command_line_checks_restores_and_says_why_it_refuses(made, tmp_path, capsys):
    _data_dir, backup_dir, _top = made
    assert restore.main(["check-backup", backup_dir]) == 0
    assert "is whole" in capsys.readouterr().out
    target = str(tmp_path / "fresh")
    assert restore.main(["restore", backup_dir, "--data-dir", target,
                         "--id-margin", "100"]) == 0
    assert "New message ids start above" in capsys.readouterr().out
    assert restore.main(["check-backup", str(tmp_path / "nothing")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "has no manifest.json" in error
    assert restore.main(["restore", backup_dir, "--data-dir", target,
                         "--id-margin", "-1"]) == 2


def test_the_live_ids_of_an_unreadable_data_dir_are_left_to_the_margin(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "messages.db").write_bytes(b"not a database at all" * 10)
    assert restore.live_ids(str(tmp_path / "broken")) == {}


def test_a_file_whose_blob_had_gone_before_the_copy_is_restored_as_not_stored(tmp_path):
    data_dir = str(tmp_path / "data")
    fill(data_dir, messages=1)
    kept, vanished = add_file_row(data_dir), add_file_row(data_dir)
    os.unlink(os.path.join(data_dir, "files", f"{vanished}.blob"))
    run_backup(data_dir, str(tmp_path / "backup"))
    restore.restore(str(tmp_path / "backup"), str(tmp_path / "fresh"), margin=1)
    assert rows(str(tmp_path / "fresh" / "messages.db"),
                "SELECT id, stored FROM files ORDER BY id") == [(kept, 1), (vanished, 0)]
