"""Tests for Modules/database/writer.py: the single writer thread and its group commit.

Uses a real SQLite file in tmp_path and a real asyncio loop. Checks that jobs
queued together share one transaction, that a failing job is rolled back
alone while the rest of its batch commits, that `after` hooks run in
submission order before each future resolves, that a failed COMMIT fails the
whole batch with CommitFailed and leaves nothing on disk while the writer
carries on, that stop() finishes queued work and closes the connection, and
that an error opening the database is raised by start().

On PostgreSQL (issue 18): two writers whose batches lock the same people in
crossed order do not deadlock (a batch locks its people first, in name
order; the test sees the deadlock when that is left out), and the server
totals a batch adds are written once at its end, without those of a job
that was rolled back.
"""

import asyncio
import sqlite3
import threading

import psycopg
import pytest

from Modules.database import backends, statistics, storage
from Modules.database import writer as db_writer
from Modules.database.writer import CommitFailed, SingleWriter
from Tests.support import wait_until
from Tests.support.storage import T0, make_users

WAIT = 30.0


# ----------------------------------------------------------------- helpers


def connector(path, closed=None):
    """connect() and close() for a writer on `path` (schema created on connect)."""

    def connect():
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript("""
            CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);
            CREATE TABLE IF NOT EXISTS child (
                id INTEGER PRIMARY KEY,
                parent_id INTEGER NOT NULL
                    REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
        """)
        return conn

    def close(conn):
        if closed is not None:
            closed.append(threading.current_thread().name)
        conn.close()

    return connect, close


def on_disk(path, sql="SELECT value FROM items ORDER BY id"):
    """Rows as another connection sees them (only committed data)."""
    conn = sqlite3.connect(path)
    try:
        return [row[0] if len(row) == 1 else row for row in conn.execute(sql)]
    finally:
        conn.close()


def insert(conn, value):
    return conn.execute("INSERT INTO items (value) VALUES (?)", (value,)).lastrowid


def insert_then_fail(conn, value):
    insert(conn, value)
    raise ValueError(f"job {value} failed on purpose")


def orphan_child(conn):
    """Legal until COMMIT: the deferred foreign key has no parent row."""
    conn.execute("INSERT INTO child (parent_id) VALUES (999)")
    return "inserted"


def hold(writer):
    """Block the writer thread in a job of its own until the event is set.

    Whatever is submitted meanwhile is queued, so it forms the next batch.
    """
    started, release = threading.Event(), threading.Event()

    def gate(_conn):
        started.set()
        release.wait(WAIT)
        return "gate"

    future = writer.submit(gate)
    assert started.wait(WAIT)
    return release, future


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "test.db")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


async def started_writer(path, closed=None, **options):
    connect, close = connector(path, closed)
    writer = SingleWriter(asyncio.get_running_loop(), connect, close, **options)
    writer.start()
    return writer


# ------------------------------------------------------------------- tests


def test_jobs_queued_together_share_transactions(db_path):
    async def main():
        writer = await started_writer(db_path)
        try:
            release, gate = hold(writer)           # all 200 wait while the gate runs
            futures = [writer.submit(insert, f"v{n}") for n in range(200)]
            release.set()
            results = await asyncio.gather(gate, *futures)
            assert results == ["gate"] + list(range(1, 201))
            assert writer.jobs == 201
            assert writer.batches == 2             # the gate, then all 200 together
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == [f"v{n}" for n in range(200)]


def test_max_batch_splits_batches(db_path):
    async def main():
        writer = await started_writer(db_path, max_batch=10)
        try:
            release, gate = hold(writer)
            futures = [writer.submit(insert, str(n)) for n in range(25)]
            release.set()
            await asyncio.gather(gate, *futures)
            assert writer.batches == 1 + 3   # the gate, then 10 + 10 + 5
        finally:
            writer.stop()

    run(main())


def test_one_owners_flood_does_not_push_another_owner_into_a_later_batch(db_path):
    async def main():
        writer = await started_writer(db_path, max_batch=10)
        try:
            def insert_noting_batch(conn, value):
                # writer.batches counts committed batches: read in the writer
                # thread, while a job runs, it names that job's own batch
                return insert(conn, value), writer.batches + 1

            release, gate = hold(writer)
            flood = [writer.submit(insert, f"a{n}", owner="alice") for n in range(30)]
            bobs = writer.submit(insert_noting_batch, "bob's", owner="bob")  # queued last
            release.set()
            await gate
            bob_id, bobs_batch = await bobs
            assert bobs_batch == 2              # in the first batch after the gate
            flood_ids = await asyncio.gather(*flood)
            assert flood_ids == sorted(flood_ids)                   # alice's order kept
            assert bob_id < flood_ids[9]        # ahead of most of alice's flood
            assert writer.batches == 1 + 4      # the gate, then 10 + 10 + 10 + 1 jobs
        finally:
            writer.stop()

    run(main())


def test_failing_job_is_rolled_back_alone(db_path):
    async def main():
        writer = await started_writer(db_path)
        try:
            release, _ = hold(writer)
            ok1 = writer.submit(insert, "first")
            bad = writer.submit(insert_then_fail, "bad")
            ok2 = writer.submit(insert, "last")
            release.set()
            assert isinstance(await ok1, int) and isinstance(await ok2, int)
            with pytest.raises(ValueError, match="job bad failed on purpose"):
                await bad
            assert writer.batches == 2
            # the writer keeps going
            assert await writer.submit(insert, "after") > 0
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["first", "last", "after"]


def test_a_retried_batch_reports_what_was_committed(db_path):
    """Jobs run together first; after a failure they run again one savepoint
    each, and every reply describes the second, committed run."""
    async def main():
        writer = await started_writer(db_path)
        try:
            release, _ = hold(writer)
            ok = [writer.submit(insert, f"ok{n}") for n in range(3)]
            bad = writer.submit(insert_then_fail, "bad")
            last = writer.submit(insert, "last")
            release.set()
            ids = [await future for future in ok] + [await last]
            with pytest.raises(ValueError):
                await bad
            return ids
        finally:
            writer.stop()

    ids = run(main())
    rows = on_disk(db_path, "SELECT id, value FROM items ORDER BY id")
    assert rows == list(zip(ids, ["ok0", "ok1", "ok2", "last"]))


def test_a_lazy_job_waits_for_company_and_shares_its_commit(db_path, monkeypatch):
    monkeypatch.setattr(db_writer, "LAZY_WINDOW", WAIT)   # it waits until company comes
    async def main():
        writer = await started_writer(db_path)
        try:
            lazy = writer.submit(insert, "ack", lazy=True)
            await asyncio.sleep(0.05)
            assert not lazy.done()
            eager = writer.submit(insert, "send")
            assert await asyncio.gather(lazy, eager) == [1, 2]
            assert writer.batches == 1
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["ack", "send"]


def test_a_lazy_job_alone_still_commits(db_path):
    async def main():
        writer = await started_writer(db_path)
        try:
            assert await writer.submit(insert, "alone", lazy=True) == 1
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["alone"]


def test_sql_error_in_a_job_is_rolled_back_alone(db_path):
    def duplicate(conn):
        conn.execute("INSERT INTO items (id, value) VALUES (1, 'dup')")

    async def main():
        writer = await started_writer(db_path)
        try:
            release, _ = hold(writer)
            first = writer.submit(insert, "one")
            dup = writer.submit(duplicate)
            last = writer.submit(insert, "two")
            release.set()
            assert await first == 1
            with pytest.raises(sqlite3.IntegrityError):
                await dup
            assert await last == 2
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["one", "two"]


def test_after_hooks_run_in_order_before_the_futures_resolve(db_path):
    async def main():
        writer = await started_writer(db_path)
        calls = []
        futures = []

        def hook(index):
            def after(result):
                assert not futures[index].done()
                assert on_disk(db_path)[index] == f"v{index}"   # already committed
                calls.append((index, result))
            return after

        try:
            release, _ = hold(writer)
            for n in range(20):
                futures.append(writer.submit(insert, f"v{n}", after=hook(n)))
            failed = writer.submit(insert_then_fail, "x", after=hook(99))
            release.set()
            results = await asyncio.gather(*futures)
            with pytest.raises(ValueError):
                await failed
            assert calls == [(n, results[n]) for n in range(20)]   # none for the failure
        finally:
            writer.stop()

    run(main())


def test_after_hook_error_does_not_lose_the_reply(db_path):
    def broken(_result):
        raise RuntimeError("hook bug")

    async def main():
        writer = await started_writer(db_path)
        try:
            assert await writer.submit(insert, "kept", after=broken) == 1
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["kept"]


def test_commit_failure_fails_the_whole_batch(db_path):
    async def main():
        writer = await started_writer(db_path)
        try:
            release, gate = hold(writer)
            good = writer.submit(insert, "lost")
            orphan = writer.submit(orphan_child)
            also_good = writer.submit(insert, "lost too")
            release.set()
            assert await gate == "gate"
            for future in (good, orphan, also_good):
                with pytest.raises(CommitFailed):
                    await future
            # nothing of that batch is on disk, and the writer keeps working
            assert on_disk(db_path) == []
            assert on_disk(db_path, "SELECT count(*) FROM child") == [0]
            assert await writer.submit(insert, "next") > 0
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["next"]


def test_commit_failure_does_not_run_after_hooks(db_path):
    async def main():
        writer = await started_writer(db_path)
        calls = []
        try:
            release, _ = hold(writer)
            good = writer.submit(insert, "lost", after=calls.append)
            orphan = writer.submit(orphan_child, after=calls.append)
            release.set()
            results = await asyncio.gather(good, orphan, return_exceptions=True)
            assert all(isinstance(r, CommitFailed) for r in results)
            assert calls == []
        finally:
            writer.stop()

    run(main())


def test_stop_finishes_queued_jobs_and_closes(db_path):
    closed = []

    async def main():
        writer = await started_writer(db_path, closed)
        release, gate = hold(writer)
        futures = [writer.submit(insert, f"q{n}") for n in range(10)]
        release.set()
        writer.stop()
        assert closed == ["parley-writer"]
        assert await asyncio.gather(gate, *futures) == ["gate"] + list(range(1, 11))

    run(main())
    assert on_disk(db_path) == [f"q{n}" for n in range(10)]


def test_cancelled_future_does_not_stop_the_writer(db_path):
    async def main():
        writer = await started_writer(db_path)
        try:
            release, _ = hold(writer)
            cancelled = writer.submit(insert, "still stored")
            kept = writer.submit(insert, "kept")
            cancelled.cancel()
            release.set()
            assert await kept == 2
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["still stored", "kept"]


def test_connect_error_is_raised_by_start(tmp_path):
    def connect():
        return sqlite3.connect(str(tmp_path / "missing-dir" / "x.db"))

    async def main():
        writer = SingleWriter(asyncio.get_running_loop(), connect, lambda conn: None)
        with pytest.raises(sqlite3.OperationalError):
            writer.start()

    run(main())


def test_connect_error_of_any_kind_is_raised_by_start():
    class Broken(Exception):
        pass

    def connect():
        raise Broken("cannot open")

    async def main():
        writer = SingleWriter(asyncio.get_running_loop(), connect, lambda conn: None)
        with pytest.raises(Broken, match="cannot open"):
            writer.start()

    run(main())


class LinkLost(Exception):
    """Stands for the backend's "the database cannot be reached" (psycopg's
    OperationalError on PostgreSQL)."""


def test_a_job_stopped_by_a_lost_database_fails_as_not_stored_and_the_others_commit(db_path):
    def cut_off(_conn):
        raise LinkLost("server closed the connection")

    async def main():
        writer = await started_writer(db_path, lost=(LinkLost,))
        try:
            release, gate = hold(writer)
            kept, lost = writer.submit(insert, "kept"), writer.submit(cut_off)
            release.set()
            await gate
            assert await kept > 0
            with pytest.raises(CommitFailed):     # answered `unavailable`: send it again
                await lost
            with pytest.raises(ValueError):       # any other error stays the job's own
                await writer.submit(lambda _conn: int("x"))
        finally:
            writer.stop()

    run(main())
    assert on_disk(db_path) == ["kept"]


# ------------------------------------------- two writers on one PostgreSQL (issue 18)


def _pg_writers(backend, count, **options):
    loop = asyncio.get_running_loop()
    writers = [SingleWriter(loop, backend.open_writer, backend.close, errors=backend.errors,
                            lost=backend.lost, **options) for _ in range(count)]
    for each in writers:
        each.start()
    return writers


def _send(sender, recipient, ran=None):
    def job(conn):
        result = storage.store_message(conn, sender, recipient, "s", "b", None, T0 + 1)
        if ran is not None:
            ran.set()
        return result["id"]
    return job


def _someone_waits_for_a_lock(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'").fetchone()[0] > 0


def _pause_until(condition):
    def job(_conn):
        assert wait_until(condition, timeout=WAIT)
    return job


@pytest.mark.parametrize("prelocked", [True, False], ids=["as-built", "without-prelock"])
def test_two_writers_sending_between_the_same_people_in_crossed_order_never_deadlock(
        postgres, pg_dsn, prelocked):
    """Writer 1's batch: alice→bob, then carol→dave; writer 2's: dave→carol, then
    bob→alice, each pausing between its two Sends until the other writer's first
    Send ran or waits for a lock: crossed row locks. As built, a batch locks all its
    people first in name order, and the second waits for the first: no deadlock.
    (`without-prelock` shows the test sees one: PostgreSQL logs it and a batch has
    to run again.)"""
    backend = backends.open_backend(pg_dsn, "/nonexistent")
    setup = backend.open_writer()
    make_users(setup, "alice", "bob", "carol", "dave")
    setup.close()
    deadlocks_before = postgres.log_text().count("deadlock detected")

    async def main():
        options = {"prelock": backend.prelock} if prelocked else {}
        first, second = _pg_writers(backend, 2, deferred=backend.deferred, **options)
        try:
            ran = [threading.Event(), threading.Event()]
            gates = [hold(first), hold(second)]
            futures = [
                first.submit(_send("alice", "bob", ran[0]), locks=("alice", "bob")),
                first.submit(_pause_until(lambda: ran[1].is_set()
                                          or _someone_waits_for_a_lock(pg_dsn))),
                first.submit(_send("carol", "dave"), locks=("carol", "dave")),
                second.submit(_send("dave", "carol", ran[1]), locks=("carol", "dave")),
                second.submit(_pause_until(lambda: ran[0].is_set()
                                           or _someone_waits_for_a_lock(pg_dsn))),
                second.submit(_send("bob", "alice"), locks=("alice", "bob"))]
            for release, _gate in gates:
                release.set()
            return await asyncio.gather(*futures)
        finally:
            first.stop()
            second.stop()

    results = run(main())
    ids = [results[0], results[2], results[3], results[5]]
    check = backend.open_reader()
    try:
        stored = check.execute("SELECT sender, recipient FROM msg.messages WHERE kind = "
                               "'message' ORDER BY sender").fetchall()
        accepted = check.execute("SELECT value FROM totals WHERE name = "
                                 "'messages_accepted'").fetchone()[0]
    finally:
        check.close()
    assert len(set(ids)) == 4
    assert [tuple(row) for row in stored] == [("alice", "bob"), ("bob", "alice"),
                                              ("carol", "dave"), ("dave", "carol")]
    assert accepted == 4                           # each counted once, retried or not
    deadlocks = postgres.log_text().count("deadlock detected") - deadlocks_before
    if prelocked:
        assert deadlocks == 0
    else:      # at least one; the batch run again may meet the other writer's locks again
        assert deadlocks >= 1


def _counted_then_failed(conn):
    statistics.add_total(conn, "messages_accepted", 100)
    raise ValueError("on purpose")


async def _one_batch_then_stop(writer, jobs):
    """`jobs` submitted while the writer is held, so that they form one batch;
    their results (or exceptions), after which the writer is stopped."""
    try:
        release, gate = hold(writer)
        futures = [writer.submit(job) for job in jobs]
        release.set()
        await gate
        return await asyncio.gather(*futures, return_exceptions=True)
    finally:
        writer.stop()


def _accepted_total(backend):
    check = backend.open_reader()
    try:
        return check.execute("SELECT value FROM totals WHERE name = "
                             "'messages_accepted'").fetchone()[0]
    finally:
        check.close()


def test_a_rolled_back_jobs_totals_are_not_written_and_the_batchs_are_written_once(pg_dsn):
    backend = backends.open_backend(pg_dsn, "/nonexistent")
    setup = backend.open_writer()
    make_users(setup, "alice", "bob")
    setup.close()

    async def main():
        (writer,) = _pg_writers(backend, 1, prelock=backend.prelock,
                                deferred=backend.deferred)
        return await _one_batch_then_stop(writer, [_send("alice", "bob"), _counted_then_failed,
                                                   _send("bob", "alice")])

    outcome = run(main())
    assert isinstance(outcome[1], ValueError)
    assert _accepted_total(backend) == 2


def test_on_sqlite_a_batchs_totals_are_one_statement_and_a_rolled_back_jobs_are_dropped(
        tmp_path):
    """SQLite defers the server totals to the batch's end too: fewer statements
    per message, the same counts."""
    backend = backends.open_backend(None, str(tmp_path / "data"))
    setup = backend.open_writer()
    make_users(setup, "alice", "bob")
    backend.close(setup)
    statements = []

    def traced_writer():
        conn = backend.open_writer()
        conn.set_trace_callback(statements.append)
        return conn

    async def main():
        writer = SingleWriter(asyncio.get_running_loop(), traced_writer, backend.close,
                              errors=backend.errors, deferred=backend.deferred)
        writer.start()
        return await _one_batch_then_stop(writer, [
            _counted_then_failed if n == 2 else _send("alice", "bob") for n in range(6)])

    outcome = run(main())
    assert isinstance(outcome[2], ValueError)
    assert sum("INSERT INTO totals" in each for each in statements) == 1   # 5 Sends, 1 write
    assert _accepted_total(backend) == 5


def test_a_deferred_write_that_fails_fails_its_own_job_and_the_others_commit(pg_dsn):
    """PostgreSQL's deferred writes (`storage.execute_later`) are flushed at the end
    of each job: their error is that job's, in a batch run together or one by one."""
    backend = backends.open_backend(pg_dsn, "/nonexistent")
    setup = backend.open_writer()
    make_users(setup, "alice")
    setup.close()

    def defer_a_duplicate(conn):
        storage.execute_later(conn, "INSERT INTO users (username) VALUES (?)", ("alice",))
        return "deferred"

    def defer_a_good_one(conn, name):
        storage.execute_later(conn, "INSERT INTO users (username) VALUES (?)", (name,))
        return name

    async def main():
        (writer,) = _pg_writers(backend, 1, prelock=backend.prelock,
                                deferred=backend.deferred)
        try:
            release, gate = hold(writer)
            jobs = [writer.submit(defer_a_good_one, "bob"), writer.submit(defer_a_duplicate),
                    writer.submit(defer_a_good_one, "carol")]
            release.set()
            await gate
            return await asyncio.gather(*jobs, return_exceptions=True)
        finally:
            writer.stop()

    first, failed, last = run(main())
    assert (first, last) == ("bob", "carol")
    assert isinstance(failed, psycopg.errors.UniqueViolation)
    check = backend.open_reader()
    try:
        names = [row[0] for row in check.execute("SELECT username FROM users ORDER BY id")]
    finally:
        check.close()
    assert names == ["alice", "bob", "carol"]

