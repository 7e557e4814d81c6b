"""Tests for Tests/support/postgres.py: the tests' own PostgreSQL cluster.

It starts as an unprivileged user on a Unix socket only, a database made
for a test takes connections through its DSN, what was committed survives
a restart and a SIGKILL of the postmaster, and a stopped cluster leaves no
process behind.
"""

import os

import psycopg

from Tests.support.postgres import PostgresCluster


def test_a_test_database_takes_connections_and_keeps_data_over_a_restart(postgres, pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n integer)")
        conn.execute("INSERT INTO kept VALUES (7)")
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        assert conn.execute("SHOW fsync").fetchone()[0] == "on"
    postgres.restart()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]
    postgres.kill()
    assert postgres.pid() is None
    postgres.start()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(7,)]


def test_a_stopped_cluster_leaves_no_process(postgres):
    cluster = PostgresCluster(binaries=postgres.binaries)
    try:
        pid = cluster.init().start().pid()
        assert pid is not None
        cluster.stop()
        assert cluster.pid() is None
        cluster.stop()                      # twice is fine
    finally:
        cluster.remove()
    assert not os.path.exists(cluster.directory)
