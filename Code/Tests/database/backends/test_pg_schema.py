"""Tests for Modules/database/backends/pg_schema.py: Parley's tables in PostgreSQL.

On a real database of the tests' own cluster: `ensure` makes every table
the SQLite files have, with the same columns in the same order, and is
safe to run again (and by two servers at once); a database of a newer
schema version is refused and left alone; `raise_sequences` makes new ids
go on past copied ones.
"""

import threading

import pytest

from Modules.database import backends, migrate
from Modules.database.backends import pg_connection, pg_schema
from Modules.database.schema import StorageError


def _columns(db, table):
    return migrate.columns_of(db, table)


def test_every_table_has_the_sqlite_columns_in_their_order(pg_dsn, tmp_path):
    sqlite = backends.open_backend(None, str(tmp_path / "data")).open_writer()
    postgresql = backends.open_backend(pg_dsn, str(tmp_path)).open_writer()
    try:
        for table, _key in migrate.TABLES:
            assert _columns(postgresql, table) == _columns(sqlite, table), table
    finally:
        sqlite.close()
        postgresql.close()


def test_ensure_runs_again_and_at_once_from_two_servers(pg_dsn):
    errors = []

    def one():
        try:
            db = pg_connection.connect(pg_dsn)
            pg_schema.ensure(db)
            db.close()
        except Exception as error:         # reported below
            errors.append(error)
    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = pg_connection.connect(pg_dsn)
    try:
        pg_schema.ensure(db)
        assert pg_schema.version(db) == pg_schema.VERSION
    finally:
        db.close()


@pytest.fixture
def made(pg_dsn):
    """A connection to a database with Parley's tables."""
    db = pg_connection.connect(pg_dsn)
    pg_schema.ensure(db)
    yield db
    db.close()


def test_a_newer_schema_is_refused_and_left_alone(made):
    made.execute("UPDATE pw.deployment SET value = ? WHERE name = 'schema_version'",
                 (str(pg_schema.VERSION + 1).encode(),))
    with pytest.raises(StorageError, match="newer than this server knows"):
        pg_schema.ensure(made)
    assert pg_schema.version(made) == pg_schema.VERSION + 1


def test_new_ids_go_on_past_copied_ones(made):
    made.execute("INSERT INTO users (id, username) VALUES (41, 'copied')")
    pg_schema.raise_sequences(made, ["main.users"])
    assert made.execute("INSERT INTO users (username) VALUES ('new')").lastrowid == 42
