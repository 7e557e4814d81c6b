"""Fixtures of the database tests: a data dir, the databases open in it, and a
real database process.

`db` is the storage the functions under test run on, on both backends: the
three SQLite files in a temporary data dir, and one database of the test
worker's private PostgreSQL cluster (`Tests/support/postgres.py`), emptied
before each test. A test about SQLite itself (its files, its pragmas, its
torn commits) is marked `@pytest.mark.sqlite_only` and runs on SQLite alone.
"""

import sqlite3

import pytest

from Modules.database import backends
from Modules.database.storage import close_databases, open_databases
from Tests.support import running_database

BACKENDS = ["sqlite", "postgresql"]


def pytest_generate_tests(metafunc):
    if "db" in metafunc.fixturenames:
        chosen = ["sqlite"] if metafunc.definition.get_closest_marker("sqlite_only") \
            else BACKENDS
        metafunc.parametrize("db", chosen, indirect=True)


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


@pytest.fixture(scope="session")
def storage_dsn(postgres):
    """One database for the storage tests of this worker, its tables made once."""
    dsn = postgres.create_database()
    backend = backends.open_backend(dsn, "/nonexistent")
    backend.close(backend.open_writer())
    return dsn


def _emptied(conn):
    tables = [f"{schema}.{name}" for schema, name in conn.execute(
        "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN "
        "('main', 'pw', 'msg') AND tablename NOT IN ('deployment', 'text_index_state')")]
    conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    return conn


@pytest.fixture
def db(request, data_dir):
    if request.param == "sqlite":
        connection = open_databases(data_dir)
        yield connection
        try:
            close_databases(connection)
        except sqlite3.ProgrammingError:  # the test closed it already
            pass
        return
    postgres = request.getfixturevalue("postgres")
    if postgres.pid() is None:               # an earlier test stopped or killed it
        postgres.start()
    backend = backends.open_backend(request.getfixturevalue("storage_dsn"), data_dir)
    connection = _emptied(backend.open_writer())
    yield connection
    connection.close()


@pytest.fixture
def database(tmp_path):
    """A real database process (forkserver child, real files): (process, config)."""
    with running_database(tmp_path) as started:
        yield started
