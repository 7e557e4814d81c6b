"""Tests for Modules/database/monitor.py: the database process as a whole.

A real database process (forkserver child, real SQLite files in a
temporary dir) driven over its Unix socket with `DbLink`: SIGTERM closes
the databases cleanly (the WAL checkpointed), a full disk fails a write
clearly while the process keeps serving and keeps nothing half written,
a second database process on the same data dir is refused, an account
deletion cut off by a crash is finished at the next start, and the runtime
dir of a daemon that died goes, with the jail in it.
"""

import os
import signal
import socket
import subprocess

import pytest

from Modules.database import monitor, storage
from Modules.database.link import DbError
from Tests.support import running_database
from Tests.support.monitor import login_link, user_link


def test_sigterm_closes_the_databases_cleanly(database):
    proc, config = database
    user_link(config, "alice").call("Send", to="alice", subject="s", body="b", client_id="c")
    os.kill(proc.pid, signal.SIGTERM)
    proc.join(30)
    assert proc.exitcode == 0
    wal = os.path.join(config["data_dir"], "messages.db-wal")
    assert not os.path.exists(wal) or os.path.getsize(wal) == 0


def test_a_full_disk_fails_the_write_clearly_and_nothing_half_written_is_kept(database):
    proc, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    alice.call("Send", to="bob", subject="before", body="b", client_id="c1")
    limit = ["prlimit", "--pid", str(proc.pid)]
    subprocess.run(limit + ["--fsize=4096:unlimited"], check=True)   # writes past 4 KiB fail
    try:
        with pytest.raises(DbError) as info:
            alice.call("Send", to="bob", subject="during", body="b", client_id="c2")
        assert info.value.code == "unavailable" and "could not store" in info.value.reason
        assert bob.call("Inbox")["messages"][0]["subject"] == "before"   # still serving
    finally:
        subprocess.run(limit + ["--fsize=unlimited:unlimited"], check=True)
    alice.call("Send", to="bob", subject="after", body="b", client_id="c2")   # same id: retried
    subjects = [m["subject"] for m in bob.call("Inbox")["messages"]]
    assert subjects == ["after", "before"]
    assert proc.is_alive()


def test_a_second_database_process_on_the_same_data_dir_is_refused(tmp_path):
    data_dir = str(tmp_path / "data")
    first = monitor.lock_data_dir(data_dir)
    try:
        with pytest.raises(storage.StorageError) as info:
            monitor.lock_data_dir(data_dir, wait=0.2)
        assert "another Parley server" in str(info.value)
    finally:
        os.close(first)
    os.close(monitor.lock_data_dir(data_dir, wait=0.2))   # free again once it is gone


def test_a_deletion_cut_off_by_a_crash_is_finished_at_the_next_start(tmp_path):
    with running_database(tmp_path) as (proc, config):
        user_link(config, "alice")
        bob = user_link(config, "bob")
        bob.call("Send", to="alice", subject="unread", body="b", client_id="c1")
    connection = storage.open_databases(config["data_dir"])    # the process is gone
    connection.execute("BEGIN")
    storage.mark_deleting(connection, "alice")                  # step 1 of 4, then "crash"
    connection.execute("COMMIT")
    storage.close_databases(connection)
    with running_database(tmp_path) as (proc, config):
        assert login_link(config).call("Exists", username="alice")["outcome"] == "missing"
        inbox = user_link(config, "bob").call("Inbox")["messages"]
        assert [(m["from"], m["kind"], m["subject"]) for m in inbox] == [
            ("parley", "bounce", "unread")]


def test_after_the_daemon_died_its_runtime_dir_goes_jail_and_all(tmp_path):
    runtime_dir = tmp_path / "parley-x"
    jail = runtime_dir / "jail"
    jail.mkdir(parents=True)
    for path in (jail / "db.sock", runtime_dir / "admin.sock"):
        with socket.socket(socket.AF_UNIX) as bound:
            bound.bind(str(path))
    monitor.remove_runtime_dir(str(jail / "db.sock"), str(runtime_dir))
    assert not runtime_dir.exists()
