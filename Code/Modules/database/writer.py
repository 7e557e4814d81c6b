"""The single writer: one thread, one SQLite connection, group commit.

Modelled on Datasette's write queue. Every database operation of the
database process is a *job* `fn(connection, *args)` submitted from the
asyncio loop. The writer thread takes the first waiting job, then every
other job already waiting (up to `max_batch`, one from each owner in
turn: fair between users), runs them in one transaction and COMMITs once
(one fsync per file touched with synchronous=FULL). Jobs run back to back first; if one raises, the
transaction is rolled back and the batch runs again with each job inside
its own SAVEPOINT, so the job that raised is rolled back alone and the
others commit. (Jobs touch nothing but the database, so running one twice
is safe; nearly every batch succeeds the first time and saves two
statements per job.) Only after the commit are the results handed back, in
submission order, in ONE callback on the loop thread: each job's `after`
hook runs first (the database process pushes new messages from there, so
pushes follow commit order exactly), then its future is resolved.

With several servers on one PostgreSQL (issue 18) two writers can want the
same rows; two habits keep them from deadlocking. A job names the people
whose rows it will lock (`locks`), and the batch locks all of them first,
in one statement in name order (`prelock`, the backend's). And the
server-wide counters, which every batch touches, are added up during the
batch and written last, just before COMMIT (`conn.deferred`, see
statistics.DeferredTotals), so a writer holding them waits for nothing.

A job's exception becomes its future's exception and never stops the
writer. If COMMIT itself fails (disk full, read-only directory), the batch
is rolled back and every job in it fails with `CommitFailed`: nothing that
was not durable is ever acknowledged.
"""

import logging
import queue
import threading
import time
from collections import OrderedDict, deque

from Modules.database import at_rest

log = logging.getLogger("parley.writer")
_STOP = object()
LAZY_WINDOW = 0.05   # seconds a lazy job may wait for company before it commits alone


class CommitFailed(Exception):
    """The transaction holding this job could not be made durable."""


class _Job:
    __slots__ = ("fn", "args", "future", "after", "lazy", "owner", "locks", "result",
                 "error")

    def __init__(self, fn, args, future, after, lazy=False, owner=None, locks=()):
        self.fn, self.args, self.future, self.after = fn, args, future, after
        self.lazy, self.owner, self.locks = lazy, owner, locks
        self.result = self.error = None


class SingleWriter:
    """Owns the connection made by `connect()`; closes it with `close(conn)`."""

    def __init__(self, loop, connect, close, max_batch=1000, repair=None, on_repaired=None,
                 errors=at_rest.ERRORS, lost=(), prelock=None, deferred=None):
        self.loop = loop
        self._prelock = prelock         # prelock(conn, sorted names): shared backends
        self._deferred = deferred       # a factory of the connection's `deferred` writes
        self._errors = errors           # what a statement or COMMIT of the backend raises
        self._lost = lost               # what a job raises when the database is unreachable
        self._connect, self._close = connect, close
        self._repair, self._on_repaired = repair, on_repaired
        self._needs_repair = False
        self.max_batch = max_batch
        self._queue = queue.SimpleQueue()
        self._waiting = OrderedDict()   # owner -> deque of jobs (writer thread only)
        self._stop_seen = False
        self._ready = threading.Event()
        self._open_error = None
        self._thread = threading.Thread(target=self._run, name="parley-writer", daemon=True)
        self.batches = self.jobs = 0

    def start(self):
        """Open the databases on the writer thread; re-raise their error here."""
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise self._open_error

    def submit(self, fn, *args, after=None, lazy=False, owner=None, locks=()):
        """Queue `fn(conn, *args)`; returns an asyncio future of its result.

        A `lazy` job (nobody waits for it: a delivery acknowledgement) may
        wait up to LAZY_WINDOW for other jobs so that it shares their
        commit instead of costing one of its own. Jobs of one `owner` (a
        user, or a login's address) never change order; between owners a
        batch takes one job from each in turn, so that one owner's flood
        cannot push everyone else's work into later batches. `locks`: the
        people whose rows the job locks (taken for the whole batch, sorted).
        """
        future = self.loop.create_future()
        self._queue.put(_Job(fn, args, future, after, lazy, owner, locks))
        return future

    def stop(self):
        """Finish every queued job, close the connection, join the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    # -- the writer thread ----------------------------------------------------
    def _run(self):
        try:
            conn = self._connect()
        except BaseException as error:  # reported to start()
            self._open_error = error
            self._ready.set()
            return
        if self._deferred is not None:
            conn.deferred = self._deferred()
        self._ready.set()
        try:
            self._serve(conn)
        finally:
            self._close(conn)

    def _serve(self, conn):
        while True:
            batch, stopping = self._take_batch()
            if batch:
                if self._needs_repair:
                    self._try_repair(conn)
                self._run_batch(conn, batch)
                self.loop.call_soon_threadsafe(self._complete, batch)
            if stopping:
                return

    def _take_batch(self):
        """The next batch: one job from each owner in turn (fair between users),
        each owner's jobs in the order they came; (batch, stopping)."""
        if not self._waiting:
            if self._stop_seen:
                return [], True
            job = self._queue.get()            # nothing held over: wait for work
            if job is _STOP:
                return [], True
            self._hold(job)
        self._drain_queue()
        batch = self._round_robin(self.max_batch)
        if all(job.lazy for job in batch):
            self._wait_for_company(batch)
        return batch, self._stop_seen and not self._waiting

    def _hold(self, job):
        self._waiting.setdefault(job.owner, deque()).append(job)

    def _drain_queue(self):
        """Everything queued now, into the owners' lines (never blocks)."""
        while not self._stop_seen:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is _STOP:
                self._stop_seen = True     # finish what is queued, then stop
            else:
                self._hold(job)

    def _round_robin(self, limit):
        batch = []
        while self._waiting and len(batch) < limit:
            owner, jobs = self._waiting.popitem(last=False)
            batch.append(jobs.popleft())
            if jobs:
                self._waiting[owner] = jobs    # back of the line
        return batch

    def _wait_for_company(self, batch):
        """Only lazy jobs (Acks): wait up to LAZY_WINDOW for a job to share the commit."""
        deadline = time.monotonic() + LAZY_WINDOW
        while len(batch) < self.max_batch and not self._stop_seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                job = self._queue.get(timeout=remaining)
            except queue.Empty:
                return
            if job is _STOP:
                self._stop_seen = True
                return
            self._hold(job)
            self._drain_queue()
            batch += self._round_robin(self.max_batch - len(batch))
            if not all(each.lazy for each in batch):
                return                         # someone waits: commit what is there now

    def _run_batch(self, conn, batch):
        deferred = getattr(conn, "deferred", None)
        try:
            self._begin(conn, batch)
            if not self._run_jobs_together(conn, batch, deferred):
                conn.execute("ROLLBACK")
                self._begin(conn, batch)
                for job in batch:
                    self._run_job(conn, job, deferred)
            if deferred is not None:
                deferred.flush(conn)
            conn.execute("COMMIT")
        except self._errors as error:
            if deferred is not None:
                deferred.clear()
            self._fail_batch(conn, batch, error)
        self.batches += 1
        self.jobs += len(batch)

    def _begin(self, conn, batch):
        conn.execute("BEGIN IMMEDIATE")
        if self._prelock is not None:
            names = sorted({name for job in batch for name in job.locks if name})
            if names:
                self._prelock(conn, names)

    @staticmethod
    def _run_jobs_together(conn, batch, deferred):
        """Every job without savepoints; False (results cleared) if one raised."""
        for job in batch:
            try:
                job.result = job.fn(conn, *job.args)
                _flush(conn)
            except Exception:
                for each in batch:
                    each.result = None
                if deferred is not None:
                    deferred.clear()
                return False
        return True

    def _run_job(self, conn, job, deferred):
        job.error = None
        conn.execute("SAVEPOINT job")
        mark = deferred.mark() if deferred is not None else None
        try:
            job.result = job.fn(conn, *job.args)
            _flush(conn)
        except Exception as error:  # goes back to the caller
            if deferred is not None:
                deferred.restore(mark)
            job.error = error
            if isinstance(error, self._lost):     # not the job's fault: try again later
                job.error = CommitFailed(f"the database could not store this change "
                                         f"({error})")
            conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")

    def _try_repair(self, conn):
        """After a failed COMMIT: undo what it may have kept in the files it reached."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = self._repair(conn)
            conn.execute("COMMIT")
        except self._errors as error:
            log.error("repair after a failed commit did not work yet: %s", error)
            _rollback(conn, self._errors)
            return
        self._needs_repair = False
        if self._on_repaired is not None:
            self.loop.call_soon_threadsafe(self._on_repaired, result)

    def _fail_batch(self, conn, batch, error):
        log.error("transaction of %d jobs not committed: %s", len(batch), error)
        _rollback(conn, self._errors)
        self._needs_repair = self._repair is not None
        failure = CommitFailed(f"the database could not store this change ({error})")
        for job in batch:
            job.result, job.error = None, failure

    # -- back on the loop thread ---------------------------------------------
    @staticmethod
    def _complete(batch):
        for job in batch:
            if job.error is None and job.after is not None:
                try:
                    job.after(job.result)
                except Exception:  # a hook bug must not lose the reply
                    log.exception("after-commit hook failed")
            if job.future.cancelled():
                continue
            if job.error is None:
                job.future.set_result(job.result)
            else:
                job.future.set_exception(job.error)


def _flush(conn):
    """A job's deferred statements (PostgreSQL's pipeline) run before it counts as
    done, so that their errors are the job's."""
    flush = getattr(conn, "flush", None)
    if flush is not None:
        flush()


def _rollback(conn, errors):
    try:
        conn.execute("ROLLBACK")
    except errors:
        pass
