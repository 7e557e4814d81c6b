"""Tests for Modules/database/migrate.py: `admin migrate` between SQLite and PostgreSQL.

A real SQLite data dir filled through the storage functions (accounts,
messages and a bounce, a block, the ledger, a setting) and a real
PostgreSQL database (`pg_dsn`): copied there with ids kept and every table
checked; copied back into a new data dir, where it is the same again; the
id sequences go on past the copied ids; a run interrupted after any batch,
in process and by SIGKILL of the real command at a random moment, resumes
and ends with the same checked copy; a target with accounts of its own, or
an unfinished migration from another source, is refused; a running server
on the data dir is refused.
"""

import os
import random
import signal
import subprocess
import sys

import pytest

from Modules.database import backends, blocks, migrate, statistics, storage
from Modules.database.migrate import TABLES, MigrationError, checksum
from Tests.support import SERVER, WAIT, child_env
from Tests.support.storage import T0, make_users, run_committed, send_stored


def fill(data_dir, messages=30):
    backend = backends.open_backend(None, data_dir)
    db = backend.open_writer()
    try:
        make_users(db, "alice", "bob", "carol")
        for n in range(messages):
            send_stored(db, "alice", "bob", client_id=f"c{n}", subject=f"s{n}",
                        body=f"body {n} \u00e9\u2603")
        send_stored(db, "bob", "nobody", client_id="gone")               # a bounce
        run_committed(db, blocks.block, "carol", "alice", T0)
        run_committed(db, statistics.record_login, "bob", "10.0.0.7", T0, True)
        return {table: checksum(db, table, key) for table, key in TABLES}
    finally:
        backend.close(db)


def sums(backend):
    db = backend.open_writer()
    try:
        return {table: checksum(db, table, key) for table, key in TABLES}
    finally:
        backend.close(db)


def test_a_data_dir_goes_into_postgresql_and_back_unchanged(tmp_path, pg_dsn):
    source_dir, back_dir = str(tmp_path / "data"), str(tmp_path / "back")
    original = fill(source_dir)
    sqlite, postgresql = backends.open_backend(None, source_dir), \
        backends.open_backend(pg_dsn, source_dir)
    counts = migrate.migrate(sqlite, postgresql)
    assert counts["main.users"] == 3 and counts["msg.messages"] == original["msg.messages"][0]
    assert original["msg.messages"][0] >= 31                 # the messages and the bounce
    assert sums(postgresql) == original
    migrate.migrate(postgresql, backends.open_backend(None, back_dir))
    assert sums(backends.open_backend(None, back_dir)) == original


def test_new_ids_on_the_target_go_on_past_the_copied_ones(tmp_path, pg_dsn):
    source_dir = str(tmp_path / "data")
    fill(source_dir, messages=5)
    postgresql = backends.open_backend(pg_dsn, source_dir)
    migrate.migrate(backends.open_backend(None, source_dir), postgresql)
    db = postgresql.open_writer()
    try:
        highest = db.execute("SELECT max(id) FROM msg.messages").fetchone()[0]
        stored = run_committed(db, storage.store_message, "bob", "alice", "s", "b", "new",
                               T0 + 9)
        assert stored["id"] > highest
    finally:
        postgresql.close(db)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("stop_after", [1, 2, 5, 9])
def test_a_migration_stopped_after_any_batch_resumes_to_the_same_copy(tmp_path, pg_dsn,
                                                                      monkeypatch, stop_after):
    source_dir = str(tmp_path / "data")
    original = fill(source_dir)
    monkeypatch.setattr(migrate, "BATCH", 4)
    batches = []

    def stop(table, copied):
        batches.append(table)
        if len(batches) == stop_after:
            raise Interrupted

    sqlite, postgresql = backends.open_backend(None, source_dir), \
        backends.open_backend(pg_dsn, source_dir)
    with pytest.raises(Interrupted):
        migrate.migrate(sqlite, postgresql, after_batch=stop)
    migrate.migrate(sqlite, postgresql)
    assert sums(postgresql) == original


def test_the_real_command_killed_at_a_random_moment_resumes(tmp_path, pg_dsn):
    source_dir = str(tmp_path / "data")
    original = fill(source_dir, messages=3000)
    command = [sys.executable, SERVER, "admin", "migrate", "--data-dir", source_dir,
               "--to", pg_dsn]
    killed = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        killed.wait(timeout=random.uniform(0.3, 2.0))
    except subprocess.TimeoutExpired:
        killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=WAIT)
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True,
                          timeout=WAIT * 4)
    assert done.returncode == 0, done.stderr
    assert "every table checked" in done.stdout
    assert sums(backends.open_backend(pg_dsn, source_dir)) == original


def test_a_target_with_accounts_of_its_own_is_refused(tmp_path, pg_dsn):
    first, second = str(tmp_path / "one"), str(tmp_path / "two")
    fill(first, messages=1)
    fill(second, messages=2)
    postgresql = backends.open_backend(pg_dsn, first)
    migrate.migrate(backends.open_backend(None, first), postgresql)
    with pytest.raises(MigrationError, match="unfinished migration|already holds accounts"):
        migrate.migrate(backends.open_backend(None, second), postgresql)


def test_an_unfinished_migration_is_not_resumed_from_another_source(tmp_path, pg_dsn,
                                                                     monkeypatch):
    first, second = str(tmp_path / "one"), str(tmp_path / "two")
    fill(first, messages=20)
    fill(second, messages=21)
    monkeypatch.setattr(migrate, "BATCH", 2)
    postgresql = backends.open_backend(pg_dsn, first)

    def stop(_table, _copied):
        raise Interrupted
    with pytest.raises(Interrupted):
        migrate.migrate(backends.open_backend(None, first), postgresql, after_batch=stop)
    with pytest.raises(MigrationError, match="other contents than this source"):
        migrate.migrate(backends.open_backend(None, second), postgresql)


def test_the_command_refuses_a_data_dir_a_server_is_using(make_server, pg_dsn):
    server = make_server()
    done = subprocess.run([sys.executable, SERVER, "admin", "migrate", "--data-dir",
                           server.data_dir, "--to", pg_dsn], env=child_env(),
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 1 and "stop it first" in done.stderr
    assert os.path.isdir(server.data_dir)
