"""Tests for Modules/database/readers.py: reader threads beside the writer, and budgets.

On both backends (`db`): readers see what the writer committed and cannot
write; owners take turns (one owner's queued reads do not go ahead of
another's); a query's exception comes back to its caller and the reader
goes on; the read budget spends rows, refills with time and says how long
to wait.
"""

import asyncio
import threading

import pytest

from Modules.database import backends, storage
from Modules.database.readers import ReadBudget, ReaderPool
from Tests.support import WAIT
from Tests.support.storage import make_users, send_stored


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, WAIT))


async def started_readers(data_dir, db, workers=1):
    """Readers on the storage of `db` (SQLite in data_dir, or db's PostgreSQL)."""
    backend = backends.open_backend(getattr(db, "dsn", None), data_dir)
    pool = ReaderPool(asyncio.get_running_loop(), backend.open_reader, backend.close,
                      workers=workers)
    pool.start()
    return pool


def test_readers_see_what_was_committed_and_cannot_write(data_dir, db):
    make_users(db, "alice", "bob")
    send_stored(db, "alice", "bob")

    async def main():
        pool = await started_readers(data_dir, db)
        try:
            page, more = await pool.submit("bob", storage.inbox, "bob")
            assert [entry["from"] for entry in page] == ["alice"] and more is False
            with pytest.raises(backends.open_backend(getattr(db, "dsn", None),
                                                     data_dir).errors):
                await pool.submit("bob", storage.mark_deleting, "bob")
            assert await pool.submit("bob", storage.user_exists, "bob") is True  # goes on
        finally:
            pool.stop()

    run(main())


def test_owners_take_turns(data_dir, db):
    make_users(db, "alice")
    order, started, release = [], threading.Event(), threading.Event()

    def gate(_conn):
        started.set()
        release.wait(WAIT)

    def note(_conn, name):
        order.append(name)

    async def main():
        pool = await started_readers(data_dir, db, workers=1)
        try:
            held = pool.submit("first", gate)
            await asyncio.get_running_loop().run_in_executor(None, started.wait, WAIT)
            flood = [pool.submit("flooder", note, f"flood{n}") for n in range(5)]
            other = pool.submit("other", note, "other")          # queued last
            release.set()
            await asyncio.gather(held, other, *flood)
        finally:
            pool.stop()

    run(main())
    assert order.index("other") == 1                # after one of the flood, not all


def test_the_budget_reserves_rows_gives_back_the_unused_and_says_how_long_to_wait():
    now = [0.0]
    budget = ReadBudget(rate=100.0, burst=400, clock=lambda: now[0])
    assert budget.take("bob", 200) == 0                         # 200 reserved
    assert budget.take("bob", 300) == 0                         # 100 rows in debt
    assert budget.take("bob", 200) == pytest.approx(1.01)       # back to 1 row at 100/s
    assert budget.take("alice", 200) == 0                       # each owner its own
    budget.settle("bob", 300, 50)                               # 250 unused come back
    assert budget.take("bob", 100) == 0
    now[0] += 100
    budget.settle("bob", 100, 0)                                # an empty page costs 1
    assert budget._buckets["bob"][0] == 400                     # never above the burst
    assert budget.take("bob", 0) == 0
    assert budget._buckets["bob"][0] == 399