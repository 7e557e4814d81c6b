"""The single writer: one thread, one SQLite connection, group commit.

Modelled on Datasette's write queue. Every database operation of the
database process is a *job* `fn(connection, *args)` submitted from the
asyncio loop. The writer thread takes the first waiting job, then every
other job already waiting (up to `max_batch`), runs them in one
transaction and COMMITs once (one fsync per file touched with
synchronous=FULL). Jobs run back to back first; if one raises, the
transaction is rolled back and the batch runs again with each job inside
its own SAVEPOINT, so the job that raised is rolled back alone and the
others commit. (Jobs touch nothing but the database, so running one twice
is safe; nearly every batch succeeds the first time and saves two
statements per job.) Only after the commit are the results handed back, in
submission order, in ONE callback on the loop thread: each job's `after`
hook runs first (the database process pushes new messages from there, so
pushes follow commit order exactly), then its future is resolved.

A job's exception becomes its future's exception and never stops the
writer. If COMMIT itself fails (disk full, read-only directory), the batch
is rolled back and every job in it fails with `CommitFailed`: nothing that
was not durable is ever acknowledged.
"""

import logging
import queue
import sqlite3
import threading
import time

log = logging.getLogger("parley.writer")
_STOP = object()
LAZY_WINDOW = 0.05   # seconds a lazy job may wait for company before it commits alone


class CommitFailed(Exception):
    """The transaction holding this job could not be made durable."""


class _Job:
    __slots__ = ("fn", "args", "future", "after", "lazy", "result", "error")

    def __init__(self, fn, args, future, after, lazy=False):
        self.fn, self.args, self.future, self.after = fn, args, future, after
        self.lazy = lazy
        self.result = self.error = None


class SingleWriter:
    """Owns the connection made by `connect()`; closes it with `close(conn)`."""

    def __init__(self, loop, connect, close, max_batch=1000, repair=None, on_repaired=None):
        self.loop = loop
        self._connect, self._close = connect, close
        self._repair, self._on_repaired = repair, on_repaired
        self._needs_repair = False
        self.max_batch = max_batch
        self._queue = queue.SimpleQueue()
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

    def submit(self, fn, *args, after=None, lazy=False):
        """Queue `fn(conn, *args)`; returns an asyncio future of its result.

        A `lazy` job (nobody waits for it: a delivery acknowledgement) may
        wait up to LAZY_WINDOW for other jobs so that it shares their
        commit instead of costing one of its own. Jobs never change order.
        """
        future = self.loop.create_future()
        self._queue.put(_Job(fn, args, future, after, lazy))
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
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        lazy_until = time.monotonic() + LAZY_WINDOW if first.lazy else None
        while len(batch) < self.max_batch:
            try:
                job = self._next_job(lazy_until)
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # finish this batch, then stop
                break
            batch.append(job)
            if not job.lazy:
                lazy_until = None   # someone waits: commit what is there now
        return batch, False

    def _next_job(self, lazy_until):
        """The next queued job; while only lazy jobs are held, wait for one."""
        if lazy_until is None:
            return self._queue.get_nowait()
        remaining = lazy_until - time.monotonic()
        if remaining <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=remaining)

    def _run_batch(self, conn, batch):
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not self._run_jobs_together(conn, batch):
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                for job in batch:
                    self._run_job(conn, job)
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            self._fail_batch(conn, batch, error)
        self.batches += 1
        self.jobs += len(batch)

    @staticmethod
    def _run_jobs_together(conn, batch):
        """Every job without savepoints; False (results cleared) if one raised."""
        for job in batch:
            try:
                job.result = job.fn(conn, *job.args)
            except Exception:
                for each in batch:
                    each.result = None
                return False
        return True

    @staticmethod
    def _run_job(conn, job):
        job.error = None
        conn.execute("SAVEPOINT job")
        try:
            job.result = job.fn(conn, *job.args)
        except Exception as error:  # goes back to the caller
            job.error = error
            conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")

    def _try_repair(self, conn):
        """After a failed COMMIT: undo what it may have kept in the files it reached."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = self._repair(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            log.error("repair after a failed commit did not work yet: %s", error)
            _rollback(conn)
            return
        self._needs_repair = False
        if self._on_repaired is not None:
            self.loop.call_soon_threadsafe(self._on_repaired, result)

    def _fail_batch(self, conn, batch, error):
        log.error("transaction of %d jobs not committed: %s", len(batch), error)
        _rollback(conn)
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


def _rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
