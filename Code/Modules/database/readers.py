"""Reader threads: read-only queries beside the single writer, fair between users.

Datasette's pattern: one writer, readers beside it. A read (an inbox page,
an account's credentials) never waits behind a commit or an fsync, and a
flood of reads never delays a write: it waits only for the readers. Each
reader thread owns one read-only connection (`storage.open_reader`: WAL
mode lets it see every committed transaction); jobs are queued per owner
(a user, or a login's address) and the threads take one job from each
owner in turn, so one user's flood of reads waits behind itself, not
ahead of others.

`ReadBudget` is the other half of fairness: a token bucket per owner, so
that a user who keeps asking is told `rate_limited` (with how long to
wait) instead of being queued without bound.

Talks to: SQLite through its connections, and the monitor's event loop
(results come back through `call_soon_threadsafe`). How it fails: a
query's exception becomes its future's exception; nothing stops a reader
thread but `stop()`.
"""

import logging
import threading
import time
from collections import OrderedDict, deque

log = logging.getLogger("parley.readers")


class ReaderPool:
    """`workers` threads, each with a connection from `connect()`."""

    def __init__(self, loop, connect, close, workers=2):
        self.loop, self._connect, self._close = loop, connect, close
        self._lines = OrderedDict()         # owner -> deque of (fn, args, future)
        self._cond = threading.Condition()
        self._stopping = False
        self.workers = workers
        self._threads = []

    def start(self):
        """Open every reader's connection here (an error is raised to the caller,
        as the writer's is), then start the threads."""
        connections = []
        try:
            for _ in range(self.workers):
                connections.append(self._connect())
        except BaseException:
            for conn in connections:
                self._close(conn)
            raise
        for n, conn in enumerate(connections):
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name=f"parley-reader-{n}")
            thread.start()
            self._threads.append(thread)

    def submit(self, owner, fn, *args):
        """`fn(conn, *args)` on a reader; an asyncio future of its result."""
        future = self.loop.create_future()
        with self._cond:
            self._lines.setdefault(owner, deque()).append((fn, args, future))
            self._cond.notify()
        return future

    def stop(self):
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _serve(self, conn):
        try:
            while (job := self._next_job()) is not None:
                self._run(conn, *job)
        finally:
            self._close(conn)

    def _next_job(self):
        """The next owner's oldest job (owners take turns); None when stopping."""
        with self._cond:
            while not self._lines and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            owner, jobs = self._lines.popitem(last=False)
            job = jobs.popleft()
            if jobs:
                self._lines[owner] = jobs      # back of the line
            return job

    def _run(self, conn, fn, args, future):
        try:
            result, error = fn(conn, *args), None
        except Exception as failure:           # goes back to the caller
            result, error = None, failure
        self.loop.call_soon_threadsafe(_resolve, future, result, error)


def _resolve(future, result, error):
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class ReadBudget:
    """Rows read per owner: `rate` a second, up to `burst` saved; bounded memory.

    A read is let through while the owner has anything left. It reserves the
    most rows it may return when it is let through (`take`), before it runs,
    so that requests pipelined together cannot all pass on the same balance;
    once answered, what it did not use is given back (`settle`; a read
    costs at least one row, and the balance may go below zero). The default
    lets one person read 200 rows a second (four of the interactive
    client's pages of 50), two pages of 200 at once, and a flood of reads
    gets `rate_limited` instead of the server's time.
    """

    def __init__(self, rate=200.0, burst=400, clock=time.monotonic, max_owners=100_000):
        self.rate, self.burst, self.clock, self.max_owners = rate, burst, clock, max_owners
        self._buckets = OrderedDict()       # owner -> (tokens, when)

    def take(self, owner, most):
        """0 and `most` rows reserved if `owner` may read now, else the seconds
        until it may (nothing reserved)."""
        tokens = self._refilled(owner)
        if tokens < 1.0:
            return (1.0 - tokens) / self.rate
        self._buckets[owner] = (tokens - max(1, most), self.clock())
        return 0.0

    def settle(self, owner, reserved, rows):
        """A read that reserved `reserved` rows returned `rows`: give back the rest."""
        unused = max(1, reserved) - max(1, rows)
        if unused > 0:
            tokens = self._refilled(owner)
            self._buckets[owner] = (min(float(self.burst), tokens + unused), self.clock())

    def _refilled(self, owner):
        now = self.clock()
        tokens, last = self._buckets.pop(owner, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        self._buckets[owner] = (tokens, now)
        while len(self._buckets) > self.max_owners:
            self._buckets.popitem(last=False)
        return tokens
