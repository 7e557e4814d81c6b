"""Fixtures of the database tests: a data dir, the three files open in it, and a
real database process."""

import sqlite3

import pytest

from Modules.database.storage import close_databases, open_databases
from Tests.support import running_database


@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


@pytest.fixture
def db(data_dir):
    connection = open_databases(data_dir)
    yield connection
    try:
        close_databases(connection)
    except sqlite3.ProgrammingError:  # the test closed it already
        pass


@pytest.fixture
def database(tmp_path):
    """A real database process (forkserver child, real files): (process, config)."""
    with running_database(tmp_path) as started:
        yield started
