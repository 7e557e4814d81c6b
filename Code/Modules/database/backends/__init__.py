"""Where the database process keeps its data: SQLite in the data dir, or PostgreSQL.

`open_backend(url, data_dir, key=None)` gives the backend the database
process (`monitor.serve`) and `admin migrate` work through: `None` or
"sqlite" is the default, the three SQLite files of `schema.py` in the data
dir; a `postgresql://` URL is one PostgreSQL database that several servers
may share (issue 18, docs/postgresql.md). Both give the same things:

* `open_writer()` / `open_reader()`: a connection with sqlite3's API (the
  PostgreSQL one is `pg_connection.PgConnection`); `close(conn)`;
* `repair`: the writer's repair after a failed commit (SQLite's commits are
  per file and can tear; PostgreSQL's cannot, so it has none);
* `errors`: the exceptions a statement or a commit may raise; `lost`: those
  that mean the database cannot be reached (a job they stop is answered
  `unavailable`, to be tried again, not `internal`);
* `shared`: whether other servers may use the same data at once;
* `supports_backup`: whether `admin backup` applies (PostgreSQL has pg_dump);
* `describe()`: where the data is, without any password;
* `raise_sequences(db, tables)`: after rows were copied in with their ids;
* for the writer: `prelock(conn, names)`, where servers share the data,
  locks people's rows in name order at a batch's start (None for SQLite,
  which has one writer); `deferred` makes the writer's connection add up
  the server totals and write them just before COMMIT (on PostgreSQL it
  keeps two servers' writers from deadlocking; on both it is a statement
  per batch instead of one per Send and per Ack).

Every PostgreSQL connection of a running server holds a shared advisory
lock (`SERVERS_LOCK`); `offline(data_dir, url)`, for the migration, takes
the data dir's lock and that advisory lock exclusively, so it runs only
when no server uses either.

How it fails: a URL that is not PostgreSQL's raises `StorageError`; so does
a PostgreSQL that cannot be reached at open (with libpq's reason, never
the password).
"""

import contextlib
import fcntl
import os
import urllib.parse

from Modules.database import at_rest, statistics, storage
from Modules.database.schema import StorageError

SERVERS_LOCK = 0x50524C59_0002
SCHEMES = ("postgresql://", "postgres://")
LOCK_FILE = "parley.lock"            # monitor.LOCK_FILE: one process on the data dir


class SqliteBackend:
    """The three SQLite files in the data dir: the default."""

    name = "sqlite"
    shared = False
    supports_backup = True
    dsn = None
    errors = at_rest.ERRORS
    lost = ()
    prelock = None
    deferred = statistics.DeferredTotals   # the totals once per batch, not once per job

    def __init__(self, data_dir, key=None):
        self.data_dir, self.key = data_dir, key
        self.repair = storage.repair_torn_writes

    def open_writer(self):
        return storage.open_databases(self.data_dir, self.key)

    def open_reader(self):
        return storage.open_reader(self.data_dir, self.key)

    def open_unlocked(self):
        """The migration's connection (the data dir's lock is `offline`'s)."""
        return self.open_writer()

    @staticmethod
    def close(conn):
        storage.close_databases(conn)

    def describe(self):
        return os.path.abspath(self.data_dir)

    @staticmethod
    def raise_sequences(db, tables):
        """Nothing to do: SQLite's AUTOINCREMENT follows ids inserted as they are."""


class PostgresBackend:
    """One PostgreSQL database, possibly shared by several servers."""

    name = "postgresql"
    shared = True
    supports_backup = False
    repair = None
    deferred = statistics.DeferredTotals

    def __init__(self, url):
        from Modules.database.backends import pg_connection   # psycopg: only here
        self._pg = pg_connection
        self.dsn = url
        self.errors = pg_connection.ERRORS + at_rest.ERRORS
        self.lost = pg_connection.LOST

    def _connect(self, servers_lock=True):
        try:
            conn = self._pg.connect(self.dsn)
        except self._pg.ERRORS as error:
            raise StorageError(f"cannot reach PostgreSQL at {self.describe()}: "
                               f"{_first_line(error)}") from None
        if servers_lock:
            conn.keep(f"SELECT pg_advisory_lock_shared({SERVERS_LOCK})")
        return conn

    def open_writer(self):
        from Modules.database.backends import pg_schema
        conn = self._connect()
        pg_schema.ensure(conn)
        return conn

    def open_reader(self):
        conn = self._connect()
        conn.keep("SET default_transaction_read_only = on")     # as SQLite's readers
        return conn

    def open_unlocked(self):
        """A connection that holds no server's lock (the migration's own)."""
        from Modules.database.backends import pg_schema
        conn = self._connect(servers_lock=False)
        pg_schema.ensure(conn)
        return conn

    @staticmethod
    def close(conn):
        conn.close()

    def describe(self):
        return describe_url(self.dsn)

    @staticmethod
    def prelock(conn, names):
        """Lock these people's rows for the transaction, in name order."""
        conn.execute("SELECT 1 FROM users WHERE username = ANY(?) ORDER BY username "
                     "FOR UPDATE", (list(names),)).fetchall()

    @staticmethod
    def raise_sequences(db, tables):
        from Modules.database.backends import pg_schema
        pg_schema.raise_sequences(db, tables)


def is_postgresql(url):
    return bool(url) and url.startswith(SCHEMES)


def open_backend(url, data_dir, key=None):
    """The backend for `url` (None or "sqlite": the data dir's SQLite files, with the
    database `key` if they are encrypted at rest)."""
    if not url or url == "sqlite":
        return SqliteBackend(data_dir, key)
    if not is_postgresql(url):
        raise StorageError(f"{describe_url(url)} is not a storage Parley knows "
                           "(give postgresql://HOST/DATABASE, or nothing for SQLite)")
    return PostgresBackend(url)     # a database key is refused before (monitor.prepare_key)


def describe_url(url):
    """`url` without its password (and without any query string)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        netloc = parts.netloc
    else:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def offline(data_dir, url):
    """Hold the data dir and the PostgreSQL database while no server runs on them."""
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"a Parley server is using {data_dir}; stop it first") from None
        backend = PostgresBackend(url)
        conn = backend._connect(servers_lock=False)
        try:
            if not conn.execute(f"SELECT pg_try_advisory_lock({SERVERS_LOCK})").fetchone()[0]:
                raise StorageError(f"a Parley server is using {backend.describe()}; "
                                   "stop every server first")
            yield
        finally:
            conn.close()
    finally:
        os.close(fd)
