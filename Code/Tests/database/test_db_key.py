"""Tests for Modules/database/db_key.py: where the key comes from, and every way
a start with a bad or missing key is refused without touching a file."""

import logging
import os
import stat

import pytest

from Modules.database import at_rest, db_key
from Modules.database.schema import close_databases, open_databases
from Tests.support.storage import make_users


def snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))}


def encrypted_dir(data_dir, key):
    db = open_databases(data_dir, key)
    make_users(db, "alice")
    close_databases(db)


@pytest.fixture
def key_file(tmp_path):
    return str(tmp_path / "parley.key")


def test_a_first_start_creates_the_key_file_0400_and_says_where(data_dir, key_file, caplog):
    with caplog.at_level(logging.WARNING):
        key = db_key.prepare(data_dir, {"file": key_file})
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o400
    assert open(key_file).read().strip() == key.hex()
    assert key_file in caplog.text and "losing this file loses the data" in caplog.text
    assert key.hex() not in caplog.text


def test_no_key_means_plaintext_and_one_warning(data_dir, caplog):
    with caplog.at_level(logging.WARNING):
        assert db_key.prepare(data_dir, {}) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not encrypted at rest" in warnings[0]
    assert "--key-file" in warnings[0]


def test_the_env_var_key_is_used(data_dir):
    key = os.urandom(32)
    assert db_key.prepare(data_dir, {"hex": key.hex()}) == key


def test_a_systemd_credential_is_used(data_dir, tmp_path):
    key = os.urandom(32)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / db_key.CREDENTIAL_NAME).write_text(key.hex())
    assert db_key.prepare(data_dir, {"credentials": str(credentials)}) == key


@pytest.mark.parametrize("content", [b"", b"xyz", b"00" * 31, b"00" * 33, b"\xff" * 64])
def test_a_malformed_key_file_is_refused_and_nothing_touched(data_dir, key_file, content):
    encrypted_dir(data_dir, os.urandom(32))
    with open(key_file, "wb") as handle:
        handle.write(content)
    before = snapshot(data_dir)
    with pytest.raises(at_rest.AtRestError, match=f"the key file {key_file} is malformed"):
        db_key.prepare(data_dir, {"file": key_file})
    assert snapshot(data_dir) == before


def test_a_malformed_env_var_is_refused(data_dir):
    with pytest.raises(at_rest.AtRestError, match=r"\$PARLEY_DB_KEY is malformed"):
        db_key.prepare(data_dir, {"hex": "not hex"})


def test_a_missing_key_for_an_encrypted_dir_is_refused(data_dir, key_file):
    encrypted_dir(data_dir, os.urandom(32))
    before = snapshot(data_dir)
    with pytest.raises(at_rest.AtRestError, match="encrypted at rest but no database key"):
        db_key.prepare(data_dir, {})
    with pytest.raises(at_rest.AtRestError, match="does not exist but the data dir"):
        db_key.prepare(data_dir, {"file": key_file})
    assert not os.path.exists(key_file)
    assert snapshot(data_dir) == before


def test_a_wrong_key_is_one_clear_error_and_nothing_touched(data_dir, key_file):
    encrypted_dir(data_dir, os.urandom(32))
    db_key.write_key_file(key_file, os.urandom(32))
    before = snapshot(data_dir)
    key = db_key.prepare(data_dir, {"file": key_file})
    with pytest.raises(Exception, match=f"the database key does not open {data_dir}/users.db: "
                                        "wrong key, or the file is not a Parley database"):
        open_databases(data_dir, key)
    assert snapshot(data_dir) == before


def test_a_key_file_inside_the_data_dir_is_refused(data_dir):
    os.makedirs(data_dir)
    with pytest.raises(at_rest.AtRestError, match="is inside the data dir"):
        db_key.prepare(data_dir, {"file": os.path.join(data_dir, "parley.key")})
    assert os.listdir(data_dir) == []


def test_a_key_file_and_the_env_var_together_are_refused(data_dir, key_file):
    with pytest.raises(at_rest.AtRestError, match="not both"):
        db_key.prepare(data_dir, {"file": key_file, "hex": "00" * 32})


def test_a_log_file_inside_an_encrypted_data_dir_is_refused(data_dir):
    with pytest.raises(at_rest.AtRestError, match="the log names users"):
        db_key.prepare(data_dir, {"hex": "00" * 32}, os.path.join(data_dir, "parley.log"))
    assert db_key.prepare(data_dir, {}, os.path.join(data_dir, "parley.log")) is None
