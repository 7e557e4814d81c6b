"""Tests for Modules/database/deployment.py: what the servers of one PostgreSQL share.

On a real database of the tests' own cluster (`pg_dsn`), through the
writer's connection: the first server's ticket secret is stored and every
later one adopts it; a server whose key, or whose storage key, is not the
deployment's is refused naming both (fingerprint, check value), and the
refusal changes nothing; the check value is not the storage key.
"""

import os

import pytest

from Modules.database import backends, deployment
from Modules.database.schema import StorageError
from Modules.identity import fingerprint


def _join(db, secret, public_key, storage_key=None):
    db.execute("BEGIN")
    try:
        result = deployment.join(db, secret, public_key, storage_key)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


@pytest.fixture
def db(pg_dsn, tmp_path):
    backend = backends.open_backend(pg_dsn, str(tmp_path))
    connection = backend.open_writer()
    yield connection
    backend.close(connection)


KEY, OTHER_KEY = os.urandom(32), os.urandom(32)
STORAGE, OTHER_STORAGE = os.urandom(32), os.urandom(32)


def test_the_first_servers_ticket_secret_is_adopted_by_the_next(db):
    first, second = os.urandom(32), os.urandom(32)
    assert _join(db, first, KEY, STORAGE) == first
    assert _join(db, second, KEY, STORAGE) == first


def test_another_server_key_is_refused_naming_both_fingerprints_and_changes_nothing(db):
    secret = os.urandom(32)
    _join(db, secret, KEY, STORAGE)
    with pytest.raises(StorageError) as refused:
        _join(db, os.urandom(32), OTHER_KEY, STORAGE)
    assert fingerprint(KEY) in str(refused.value) and fingerprint(OTHER_KEY) in str(refused.value)
    assert "copy server_key and server_key.pub" in str(refused.value)
    assert _join(db, os.urandom(32), KEY, STORAGE) == secret     # the first key still joins


def test_another_storage_key_is_refused_by_its_check_value_never_the_key(db):
    _join(db, os.urandom(32), KEY, STORAGE)
    with pytest.raises(StorageError) as refused:
        _join(db, os.urandom(32), KEY, OTHER_STORAGE)
    text = str(refused.value)
    assert deployment.storage_key_check(STORAGE) in text
    assert deployment.storage_key_check(OTHER_STORAGE) in text and "copy storage_key" in text
    assert STORAGE.hex() not in text and OTHER_STORAGE.hex() not in text
    stored = {name: bytes(value) for name, value in
              db.execute("SELECT name, value FROM pw.deployment").fetchall()}
    assert STORAGE not in stored.values() and STORAGE.hex().encode() not in stored.values()
