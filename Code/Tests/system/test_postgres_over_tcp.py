"""Parley on a PostgreSQL reached over TCP, with TLS and a password (issue 18).

Several hosts cannot share a Unix socket: a real deployment reaches its
PostgreSQL over the network, as a role that is not a superuser, with a
password, over TLS that checks the server's certificate. This module runs
its own cluster that takes only that (`PostgresCluster.init(tcp_port=…)`:
`hostssl … scram-sha-256`, plain TCP rejected) and checks, with the real
daemon and the real client:

* a server started with such a URL serves accounts and mail, and every
  connection it holds to PostgreSQL is encrypted (`pg_stat_ssl`);
* the password, given in `--storage`, is in no process's command line, in
  no log and in no output (the daemon's title replaces its arguments);
* the password can instead stay in a libpq password file (`PGPASSFILE`),
  with a URL that carries none;
* a wrong password and a certificate that is not the server's are refused
  at start with a sentence naming the database, not the password.
"""

import os
import socket

import psycopg
import pytest

from Tests.support import ServerProcess, run_ok, wait_until
from Tests.support.postgres import (PostgresCluster, database_name, find_binaries,
                                    make_tls_certificate)

ROLE, PASSWORD = "parley_app", "s3cret-Pg-pass-7Q"


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tcp_cluster():
    if find_binaries() is None:
        pytest.skip("PostgreSQL's binaries are not installed (apt-get install postgresql)")
    cluster = PostgresCluster()
    try:
        cluster.init(tcp_port=_free_port()).start()
        cluster.add_login(ROLE, PASSWORD)
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def database(tcp_cluster):
    """A new database the role owns (one deployment per test)."""
    dsn = tcp_cluster.create_database(owner=ROLE)
    return database_name(dsn)


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(*args, env=None, name="server"):
        directory = tmp_path / name
        directory.mkdir()
        server = ServerProcess(directory, *args, env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill_group()


def _command_lines():
    """Every process's command line that we can read."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    yield int(entry), file.read().replace(b"\0", b" ")
            except OSError:
                continue


def _ssl_connections(cluster, database):
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        return conn.execute(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid "
            "WHERE a.usename = %s AND a.datname = %s", (ROLE, database)).fetchall()


def test_a_server_over_tls_with_a_password_serves_mail_and_shows_the_password_nowhere(
        tcp_cluster, database, start_server):
    server = start_server("--storage", tcp_cluster.tcp_dsn(ROLE, database, PASSWORD))
    run_ok(server, "alice", create=True)
    run_ok(server, "bob", ['send alice "Over TLS" "a body"'], create=True)
    bodies = [o["body"] for o in run_ok(server, "alice") if o["type"] == "message"]
    assert bodies == ["a body"]
    links = _ssl_connections(tcp_cluster, database)
    assert links and all(encrypted for (encrypted,) in links)
    secret = PASSWORD.encode()
    exposed = [pid for pid, line in _command_lines() if secret in line]
    assert exposed == []
    assert PASSWORD not in server.log()


def test_the_password_can_stay_in_a_libpq_password_file(tcp_cluster, database, start_server,
                                                       tmp_path):
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{tcp_cluster.tcp_port}:{database}:{ROLE}:{PASSWORD}\n")
    passfile.chmod(0o600)
    server = start_server("--storage", tcp_cluster.tcp_dsn(ROLE, database),
                          env={"PGPASSFILE": str(passfile)})
    run_ok(server, "carol", create=True)
    assert any(encrypted for (encrypted,) in _ssl_connections(tcp_cluster, database))


def test_a_wrong_password_is_refused_at_start_without_echoing_it(tcp_cluster, database,
                                                               start_server):
    wrong = "not-the-Password-91"
    with pytest.raises(RuntimeError) as refused:
        start_server("--storage", tcp_cluster.tcp_dsn(ROLE, database, wrong))
    said = str(refused.value)
    assert "cannot reach PostgreSQL at postgresql://parley_app:***@127.0.0.1" in said
    assert "password authentication failed" in said
    assert wrong not in said


def test_a_certificate_that_is_not_the_servers_is_refused_at_start(tcp_cluster, database,
                                                                   start_server, tmp_path):
    other = make_tls_certificate(str(tmp_path))
    with pytest.raises(RuntimeError) as refused:
        start_server("--storage", tcp_cluster.tcp_dsn(ROLE, database, PASSWORD,
                                                      sslrootcert=other))
    said = str(refused.value)
    assert "cannot reach PostgreSQL" in said and "certificate verify failed" in said
    assert PASSWORD not in said


def test_plain_tcp_without_tls_is_rejected_by_this_cluster(tcp_cluster, database):
    """The cluster under test takes TLS only (so the tests above are over TLS)."""
    plain = tcp_cluster.tcp_dsn(ROLE, database, PASSWORD, sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption|rejects connection"):
        psycopg.connect(plain)
    wait_until(lambda: tcp_cluster.pid() is not None)
