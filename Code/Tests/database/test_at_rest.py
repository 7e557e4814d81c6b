"""Tests for Modules/database/at_rest.py: SQLCipher connections, the atomic
conversion of a plaintext data dir, and rekey, each killed after every step."""

import os
import subprocess
import sys

import pytest

from Modules.database import at_rest, db_key, filestore, storage
from Modules.database.schema import close_databases, open_databases, open_reader
from Tests.support import CODE_DIR
from Tests.support.storage import make_users, send_stored

NEEDLES = (b"zebra-subject", b"quokka-body", b"alicewonder", b"$argon2id$")
# 3 exports, the storage key rewrapped, the commit file, 3 + 1 replaces, the commit file gone
MIGRATION_STEPS = 10
REKEY_STEPS = 11        # the same, and the new key file put in place before the last
COMMIT_STEP = 5


def found_plaintext(data_dir, needles=NEEDLES):
    """Every (file, needle) where a file under `data_dir` holds a needle."""
    hits = []
    for folder, _dirs, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                content = handle.read()
            hits += [(name, needle) for needle in needles if needle in content]
    return hits


def fill(data_dir, key=None):
    os.makedirs(data_dir, exist_ok=True)
    filestore.load_or_create_storage_key(os.path.join(data_dir, "storage_key"), key)
    db = open_databases(data_dir, key)
    make_users(db, "alicewonder", "bob")
    send_stored(db, "alicewonder", "bob", subject="zebra-subject", body="quokka-body")
    close_databases(db)


def assert_all_there(data_dir, key):
    db = open_databases(data_dir, key)
    try:
        users = {row[0] for row in db.execute("SELECT username FROM users")}
        hashes = db.execute("SELECT count(*) FROM pw.passwords").fetchone()[0]
        bodies = [row[0] for row in db.execute("SELECT body FROM msg.messages")]
    finally:
        close_databases(db)
    assert users == {"alicewonder", "bob"} and hashes == 2 and bodies == ["quokka-body"]


def assert_storage_key(data_dir, key):
    path = os.path.join(data_dir, "storage_key")
    assert at_rest.is_wrapped(open(path, "rb").read()) == (key is not None)
    assert len(filestore.load_or_create_storage_key(path, key)) == 32


def run_prepare(data_dir, key_file, die_after=None, action="prepare"):
    """db_key.prepare (or rekey) in a child process; its exit status."""
    env = dict(os.environ, PYTHONPATH=CODE_DIR)
    env.pop(at_rest.DIE_AFTER_ENV, None)
    if die_after is not None:
        env[at_rest.DIE_AFTER_ENV] = str(die_after)
    script = ("import sys; from Modules.database import db_key\n"
              "key = db_key.prepare(sys.argv[1], {'file': sys.argv[2]})\n"
              "if sys.argv[3] == 'rekey': db_key.rekey(sys.argv[1], sys.argv[2], key)\n")
    return subprocess.run([sys.executable, "-c", script, data_dir, key_file, action],
                          env=env, cwd=CODE_DIR, timeout=120).returncode


@pytest.fixture
def key_file(tmp_path):
    return str(tmp_path / "keys" / "parley.key")


@pytest.fixture(autouse=True)
def key_dir(tmp_path):
    os.makedirs(tmp_path / "keys")


def test_a_keyed_database_holds_no_plaintext_and_opens_only_with_its_key(data_dir):
    key = os.urandom(32)
    fill(data_dir, key)
    assert found_plaintext(data_dir) == []
    assert_all_there(data_dir, key)
    with pytest.raises(storage.StorageError, match="database key does not open .*users.db: "
                                                   "wrong key, or the file is not a Parley"):
        open_databases(data_dir, os.urandom(32))


def test_the_scan_finds_plaintext_without_a_key(data_dir):
    fill(data_dir)
    found = {needle for _name, needle in found_plaintext(data_dir)}
    assert found == set(NEEDLES)


def test_the_reader_opens_keyed_files_and_rows_work(data_dir):
    key = os.urandom(32)
    fill(data_dir, key)
    reader = open_reader(data_dir, key)
    cursor = reader.cursor()
    cursor.row_factory = at_rest.row_type(reader)
    row = cursor.execute("SELECT subject FROM msg.messages").fetchone()
    assert row["subject"] == "zebra-subject"
    reader.close()


def test_plaintext_files_are_refused_when_a_key_is_given_without_converting(data_dir):
    fill(data_dir)
    with pytest.raises(storage.StorageError, match="not encrypted but a database key"):
        open_databases(data_dir, os.urandom(32))


def test_a_malformed_key_is_refused():
    with pytest.raises(at_rest.AtRestError, match="32 bytes"):
        at_rest.connect(":memory:", b"short")


@pytest.mark.parametrize("step", range(1, MIGRATION_STEPS + 1))
def test_migration_killed_after_every_step_loses_nothing(data_dir, key_file, step):
    fill(data_dir)
    assert run_prepare(data_dir, key_file, die_after=step) == 86
    assert run_prepare(data_dir, key_file) == 0            # finishes, or starts again
    key = db_key.parse_key(open(key_file, "rb").read(), "key")
    assert_all_there(data_dir, key)
    assert_storage_key(data_dir, key)
    assert found_plaintext(data_dir) == []
    assert not [name for name in os.listdir(data_dir) if name.endswith((".new", ".commit"))]


def test_a_migration_killed_before_its_commit_leaves_the_plaintext_usable(data_dir,
                                                                         key_file):
    fill(data_dir)
    assert run_prepare(data_dir, key_file, die_after=3) == 86
    at_rest.recover(data_dir)                              # as a start without the key
    assert_all_there(data_dir, None)
    assert_storage_key(data_dir, None)


@pytest.mark.parametrize("step", range(1, REKEY_STEPS + 1))
def test_rekey_killed_after_every_step_opens_with_the_key_file(data_dir, key_file, step):
    fill(data_dir)
    assert run_prepare(data_dir, key_file) == 0
    old_key = db_key.parse_key(open(key_file, "rb").read(), "key")
    assert run_prepare(data_dir, key_file, die_after=step, action="rekey") == 86
    assert run_prepare(data_dir, key_file) == 0
    key = db_key.parse_key(open(key_file, "rb").read(), "key")
    assert_all_there(data_dir, key)
    assert (key == old_key) == (step < COMMIT_STEP)
    assert_storage_key(data_dir, key)
    assert not os.path.exists(key_file + ".new")
    assert found_plaintext(data_dir) == []


def test_rekey_finished_changes_the_key_and_keeps_everything(data_dir, key_file):
    fill(data_dir)
    old_key = db_key.prepare(data_dir, {"file": key_file})
    new_key = db_key.rekey(data_dir, key_file, old_key)
    assert new_key != old_key
    assert db_key.prepare(data_dir, {"file": key_file}) == new_key
    assert_all_there(data_dir, new_key)
    with pytest.raises(storage.StorageError, match="wrong key"):
        open_databases(data_dir, old_key)


def test_a_commit_for_another_key_is_refused(data_dir, key_file):
    fill(data_dir)
    db_key.prepare(data_dir, {"file": key_file})
    with open(os.path.join(data_dir, at_rest.COMMIT_NAME), "w") as handle:
        handle.write("0123456789abcdef\n")
    before = {name: open(os.path.join(data_dir, name), "rb").read()
              for name in os.listdir(data_dir)}
    with pytest.raises(at_rest.AtRestError, match="converted to another key"):
        db_key.prepare(data_dir, {"file": key_file})
    assert before == {name: open(os.path.join(data_dir, name), "rb").read()
                      for name in os.listdir(data_dir)}

