"""Tests for Modules/database/backends/pg_connection.py: sqlite3's API over PostgreSQL.

`translate` as plain text: each rewrite of the module docstring, and that
nothing inside a quoted literal is touched. Against a real database of the
tests' own PostgreSQL cluster (`pg_dsn`): rows by position and by name,
`lastrowid` of an INSERT into an id table, sums and booleans as SQLite
gives and takes them, a JSON array of ids, and a PostgreSQL restart: a
connection idle at that moment works again at its next statement, one in
the middle of a transaction fails until its ROLLBACK and never carries
the transaction's second half on alone. Deferred writes go with the next
statement, in order, and their error is raised by the flush, undone by
the savepoint's rollback.
"""

import pytest

from Modules.database import backends
from Modules.database.backends.pg_connection import translate


@pytest.mark.parametrize("sqlite, postgresql", [
    ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
    ("SELECT a FROM t WHERE b = :me", "SELECT a FROM t WHERE b = %(me)s"),
    ("SELECT 'a?b :c %' FROM t WHERE x LIKE '%' || ?",
     "SELECT 'a?b :c %' FROM t WHERE x LIKE '%' || %s"),
    ("SELECT 5 % 2", "SELECT 5 %% 2"),
    ("SELECT x::text FROM t", "SELECT x::text FROM t"),
    ("DELETE FROM t WHERE id IN (SELECT value FROM json_each(?))",
     "DELETE FROM t WHERE id IN (SELECT value::bigint FROM "
     "json_array_elements_text(%s::json) AS ids(value))"),
    ("UPDATE users SET n = MAX(0, n - ?)", "UPDATE users SET n = GREATEST(0, n - %s)"),
    ("SELECT length(CAST(m.body AS BLOB)) FROM m", "SELECT octet_length(m.body) FROM m"),
    ("SELECT a FROM t LIMIT -1", "SELECT a FROM t LIMIT ALL"),
    ("BEGIN IMMEDIATE", "BEGIN"),
    ("INSERT INTO f (k) VALUES (X'')", "INSERT INTO f (k) VALUES ('\\x'::bytea)"),
    ("SELECT id FROM files WHERE stored AND f.state = 'x'",
     "SELECT id FROM files WHERE (stored <> 0) AND f.state = 'x'"),
    ("SELECT 1 WHERE NOT m.recipient_copy AND (m.sender_copy OR x)",
     "SELECT 1 WHERE NOT (m.recipient_copy <> 0) AND ((m.sender_copy <> 0) OR x)"),
    ("UPDATE files SET stored = 0 WHERE stored = 1",
     "UPDATE files SET stored = 0 WHERE stored = 1"),
    ("SELECT stored, sender_copy FROM files", "SELECT stored, sender_copy FROM files"),
    ("INSERT INTO msg.messages (a) VALUES (?)",
     "INSERT INTO msg.messages (a) VALUES (%s) RETURNING id"),
    ("INSERT INTO ledger (a) VALUES (?)", "INSERT INTO ledger (a) VALUES (%s)"),
])
def test_each_rewrite(sqlite, postgresql):
    assert translate(sqlite) == postgresql


@pytest.fixture
def conn(pg_dsn, tmp_path):
    backend = backends.open_backend(pg_dsn, str(tmp_path))
    connection = backend.open_writer()
    yield connection
    connection.close()


def test_rows_ids_sums_and_flags_come_back_as_sqlite_gives_them(conn):
    first = conn.execute("INSERT INTO users (username, created_at) VALUES (?, ?)",
                         ("alice", 1.5))
    second = conn.execute("INSERT INTO users (username, created_at) VALUES (:n, :t)",
                          {"n": "bob", "t": 2.5})
    assert (first.lastrowid, second.lastrowid) == (1, 2)
    conn.execute("UPDATE users SET presence_hidden = ? WHERE username = ?", (True, "bob"))
    cursor = conn.cursor()
    cursor.row_factory = conn.row_class
    rows = cursor.execute("SELECT username, presence_hidden FROM users ORDER BY id").fetchall()
    assert [(row["username"], row[1]) for row in rows] == [("alice", 0), ("bob", 1)]
    assert rows[0].keys() == ["username", "presence_hidden"]
    total = conn.execute("SELECT sum(presence_hidden), sum(created_at) FROM users").fetchone()
    assert total == (1, 4.0) and type(total[0]) is int
    ids = conn.execute("SELECT username FROM users WHERE id IN (SELECT value FROM "
                       "json_each(?)) ORDER BY id", ("[2]",)).fetchall()
    assert ids == [("bob",)]


def test_a_cursor_reads_in_batches_and_counts_rows(conn):
    conn.executemany("INSERT INTO users (username) VALUES (?)",
                     [(f"u{n}",) for n in range(7)])
    cursor = conn.execute("SELECT username FROM users ORDER BY id")
    assert len(cursor.fetchmany(3)) == 3 and len(list(cursor)) == 4
    assert conn.execute("UPDATE users SET logins = 1 WHERE id > 2").rowcount == 5
    assert [column[0] for column in conn.execute("SELECT id, username FROM users "
                                                   "LIMIT 0").description] == ["id", "username"]


def test_deferred_writes_go_with_the_next_statement_in_order(conn):
    conn.execute("BEGIN")
    conn.defer("INSERT INTO users (username) VALUES (?)", ("alice",))
    conn.defer("UPDATE users SET logins = logins + 2 WHERE username = ?", ("alice",))
    assert conn.execute("SELECT logins FROM users WHERE username = 'alice'").fetchall() \
        == [(2,)]                                   # the read sees both, in their order
    conn.defer("UPDATE users SET logins = logins + 1 WHERE username = ?", ("alice",))
    conn.flush()
    conn.execute("COMMIT")
    assert conn.execute("SELECT logins FROM users").fetchall() == [(3,)]


def test_a_deferred_writes_error_is_raised_by_the_flush_and_undone_by_a_rollback(conn):
    conn.execute("INSERT INTO users (username) VALUES ('alice')")
    conn.execute("BEGIN")
    conn.execute("SAVEPOINT job")
    conn.defer("INSERT INTO users (username) VALUES (?)", ("bob",))
    conn.defer("INSERT INTO users (username) VALUES (?)", ("alice",))    # not unique
    with pytest.raises(backends.PostgresBackend("postgresql:///x").errors,
                       match="duplicate key"):
        conn.flush()
    conn.execute("ROLLBACK TO job")
    conn.execute("RELEASE job")
    conn.execute("COMMIT")
    assert conn.execute("SELECT username FROM users").fetchall() == [("alice",)]


def test_an_idle_connection_works_again_after_a_postgresql_restart(conn, postgres):
    conn.execute("INSERT INTO users (username) VALUES ('alice')")
    postgres.restart()
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1


def test_a_transaction_cut_by_a_restart_fails_until_rolled_back(conn, postgres):
    conn.execute("BEGIN")
    conn.execute("INSERT INTO users (username) VALUES ('alice')")
    postgres.restart()
    with pytest.raises(backends.PostgresBackend("postgresql:///x").errors):
        conn.execute("INSERT INTO users (username) VALUES ('bob')")
    with pytest.raises(backends.PostgresBackend("postgresql:///x").errors):
        conn.execute("INSERT INTO users (username) VALUES ('carol')")   # not on its own
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    assert not conn.in_transaction


def test_a_url_is_described_without_its_password_and_other_storage_is_refused():
    assert backends.describe_url("postgresql://parley:s3cret@db1:5433/parley?sslmode=require") \
        == "postgresql://parley:***@db1:5433/parley"
    with pytest.raises(backends.StorageError, match="not a storage Parley knows"):
        backends.open_backend("mysql://u:pw@h/db", "/nonexistent")
