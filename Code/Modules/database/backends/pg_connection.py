"""A PostgreSQL connection that the storage modules can use as they use sqlite3's.

The storage functions (`storage.py`, `mailbox.py`, `statistics.py`, ...) are
written once, in the SQL both databases share, against the `sqlite3`
connection API. `connect(dsn)` returns a `PgConnection` with the part of
that API they use: `execute`, `executemany`, `cursor()` (with a settable
`row_factory`), `fetchone/fetchall/fetchmany`, iteration, `rowcount`,
`lastrowid`, `description`, `close()`. Each statement is rewritten once
(and cached) from SQLite's dialect to PostgreSQL's by `translate`:

* `X'..'` (a blob literal) becomes `'\\x..'::bytea`;
* `?` and `:name` placeholders become `%s` and `%(name)s` (a literal `%`
  is doubled); nothing inside a quoted literal is touched;
* `SELECT value FROM json_each(X)` (a JSON array of ids) becomes
  `json_array_elements_text`, cast to bigint;
* the two-argument scalar `MAX(0, x)` becomes `GREATEST(0, x)`, and a
  UTF-8 length `length(CAST(x AS BLOB))` becomes `octet_length(x)`;
* `LIMIT -1` becomes `LIMIT ALL`; `BEGIN IMMEDIATE` becomes `BEGIN`;
* an integer flag used as a condition (`WHERE stored`, `AND m.sender_copy`,
  `NOT recipient_copy`) becomes `(flag <> 0)`: the columns stay integers,
  as in SQLite, so that every assignment and every copied row is the same;
* an INSERT into a table with an id column gets `RETURNING id`, which
  gives `lastrowid`.

Sums of bigints come back from PostgreSQL as numeric; they are loaded as
int (or float when they have a fraction), as SQLite gives them; Python's
True and False go in as 1 and 0, as SQLite stores them.

The connection is in autocommit mode, and the callers' own BEGIN, COMMIT,
ROLLBACK and SAVEPOINT statements go through unchanged, so the single
writer's group commit and savepoints work as on SQLite. Every connection's
search_path is `main, msg, pw, public` (`pg_schema.py` puts the tables in
those three schemas), so unqualified table names resolve as on SQLite's
attached files.

A statement whose result nobody reads (a counter's UPDATE, a sent id, a
notice) can be given to `defer(sql, params)` instead (`storage.execute_later`):
it waits in the connection and goes to PostgreSQL in one pipeline with the
next statement that is run, its result not awaited on its own, so a Send's
three such statements cost no round trip of their own. Order is kept (a
later read sees them). `flush()` sends what waits; the writer calls it at
the end of every job, so an error of a deferred statement is its job's.

How it fails: psycopg's exceptions (`psycopg.Error`) reach the caller;
the writer and readers treat them as they treat sqlite3's. A connection
that PostgreSQL dropped (a restart, a network cut) is opened again at the
next statement outside a transaction (with the statements given to
`keep`: the servers' lock, a reader's read-only setting), and a BEGIN or a
read that found the link dead runs again on the new one; inside a
transaction every statement fails until the caller's ROLLBACK, so the
transaction's jobs are answered with an error, nothing half-done is
acknowledged, and no statement of it ever runs alone on a new link.
"""

import functools
import re

import psycopg
from psycopg.adapt import Dumper, Loader

SEARCH_PATH = "main, msg, pw, public"
ID_TABLES = ("users", "messages", "files")
FLAGS = ("recipient_copy", "sender_copy", "stored")
ERRORS = (psycopg.Error,)
LOST = (psycopg.OperationalError,)       # the link or the server is gone (or restarting)

_INSERT_WITH_ID = re.compile(
    r"^\s*INSERT\s+INTO\s+(?:main\.|msg\.)?(" + "|".join(ID_TABLES) + r")\s*\(", re.I)
_JSON_EACH = re.compile(r"SELECT\s+value\s+FROM\s+json_each\(\s*(%s|%\(\w+\)s)\s*\)", re.I)
_BLOB_LITERAL = re.compile(r"\bX'([0-9A-Fa-f]*)'")
_SCALAR_MAX = re.compile(r"\bMAX\(\s*0\s*,", re.I)
_BYTE_LENGTH = re.compile(r"\blength\(\s*CAST\(\s*([\w.]+)\s+AS\s+BLOB\s*\)\s*\)", re.I)
_FLAG_NAMES = "|".join(FLAGS)
_FLAG_AFTER_KEYWORD = re.compile(
    r"\b(WHERE|AND|OR|NOT)(\s+)((?:\w+\.)?(?:" + _FLAG_NAMES + r"))\b(?!\s*(?:=|!=|<>|<|>|IS\b))",
    re.I)
_FLAG_IN_PARENS = re.compile(
    r"\(\s*((?:\w+\.)?(?:" + _FLAG_NAMES + r"))\s+(?=OR\b|AND\b)", re.I)
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|(?<!:):(\w+)|%")


def _placeholders(sql):
    def replace(match):
        text = match.group(0)
        if text.startswith(("'", '"')):
            return text
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return f"%({match.group(1)})s"
    return _PLACEHOLDER.sub(replace, sql)


@functools.lru_cache(maxsize=2048)
def translate(sql):
    """The PostgreSQL text of one SQLite statement (see the module docstring)."""
    text = _placeholders(_BLOB_LITERAL.sub(r"'\\x\1'::bytea", sql))
    text = _JSON_EACH.sub(
        r"SELECT value::bigint FROM json_array_elements_text(\1::json) AS ids(value)", text)
    text = _SCALAR_MAX.sub("GREATEST(0,", text)
    text = _BYTE_LENGTH.sub(r"octet_length(\1)", text)
    text = re.sub(r"\bLIMIT\s+-1\b", "LIMIT ALL", text, flags=re.I)
    text = re.sub(r"^\s*BEGIN\s+IMMEDIATE\s*$", "BEGIN", text, flags=re.I)
    text = _FLAG_AFTER_KEYWORD.sub(r"\1\2(\3 <> 0)", text)
    text = _FLAG_IN_PARENS.sub(r"((\1 <> 0) ", text)
    if _INSERT_WITH_ID.match(text) and not re.search(r"\bRETURNING\b", text, re.I):
        text += " RETURNING id"
    return text


class _NumericLoader(Loader):
    """numeric as SQLite gives it: an int when whole, else a float."""

    def load(self, data):
        text = bytes(data).decode()
        if "." in text or "e" in text.lower() or text in ("NaN", "Infinity", "-Infinity"):
            return float(text)
        return int(text)


class _BoolAsIntDumper(Dumper):
    """True and False as the integers 1 and 0 that SQLite stores for them."""

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj):
        return b"1" if obj else b"0"


class Row:
    """A row by position and by column name, with `keys()`: sqlite3.Row's shape."""

    __slots__ = ("_names", "_values")

    def __init__(self, cursor, values):
        self._names = [column[0] for column in cursor.description]
        self._values = tuple(values)

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self._values[key]
        try:
            return self._values[self._names.index(key)]
        except ValueError:
            raise IndexError(f"no column named {key}") from None

    def keys(self):
        return list(self._names)

    def __len__(self):
        return len(self._values)

    def __iter__(self):
        return iter(self._values)

    def __eq__(self, other):
        return isinstance(other, Row) and self._values == other._values

    __hash__ = None


class PgCursor:
    """One statement's results, as a sqlite3.Cursor gives them."""

    def __init__(self, connection):
        self.connection = connection
        self.row_factory = None
        self._cursor = None
        self._pending = []          # rows fetched early (an INSERT's RETURNING id)
        self.rowcount = -1
        self.lastrowid = None
        self.description = None

    def execute(self, sql, params=()):
        text = translate(sql)
        self._cursor = self.connection.run(text, params)
        self.rowcount = self._cursor.rowcount
        self.description = self._cursor.description
        self._pending = []
        if text.endswith(" RETURNING id"):
            ids = self._cursor.fetchall()
            self.lastrowid = ids[-1][0] if ids else None
            self.description = None
        return self

    def executemany(self, sql, seq_of_params):
        text = translate(sql)
        if text.endswith(" RETURNING id"):
            text = text[:-len(" RETURNING id")]
        self._cursor = self.connection.run_many(text, seq_of_params)
        self.rowcount = self._cursor.rowcount
        self.description = None
        return self

    def _made(self, rows):
        if self.row_factory is None:
            return rows
        return [self.row_factory(self, row) for row in rows]

    def fetchone(self):
        rows = self.fetchmany(1)
        return rows[0] if rows else None

    def fetchmany(self, size=1):
        if self.description is None:
            return []
        return self._made(self._cursor.fetchmany(size))

    def fetchall(self):
        if self.description is None:
            return []
        return self._made(self._cursor.fetchall())

    def __iter__(self):
        while True:
            rows = self.fetchmany(500)
            if not rows:
                return
            yield from rows

    def close(self):
        if self._cursor is not None:
            self._cursor.close()


class PgConnection:
    """The sqlite3.Connection API the storage modules use, over one psycopg connection."""

    dialect = "postgresql"
    row_class = Row

    def __init__(self, dsn):
        self.dsn = dsn
        self._setup = []                 # statements every (re)opened link runs first
        self._conn = _open(dsn, self._setup)
        self._in_transaction = False     # our own record: a dropped link forgets it
        self._deferred = []              # (text, params) waiting for the next statement

    def defer(self, sql, params=()):
        """Run `sql` with the next statement, in one pipeline; its result is not read."""
        self._deferred.append((translate(sql), params))

    def flush(self):
        """Send the deferred statements now (their errors are raised here)."""
        if self._deferred:
            self.run("SELECT 1", ())

    def keep(self, statement):
        """Run `statement` now and again on every new link (a session setting, a lock)."""
        self._setup.append(statement)
        self._conn.execute(statement)

    def _usable(self, text):
        """The psycopg connection, opened again if PostgreSQL dropped it outside a
        transaction. Inside one every statement fails until the caller's ROLLBACK:
        a new connection must never carry on the old transaction's second half."""
        word = text.lstrip()[:8].upper()
        ends = word.startswith(("COMMIT", "END")) or (
            word.startswith("ROLLBACK") and not re.match(r"\s*ROLLBACK\s+TO\b", text, re.I))
        conn = self._conn
        if conn.closed or conn.broken:
            if self._in_transaction and not ends:
                raise psycopg.OperationalError("the connection to PostgreSQL was lost "
                                               "inside a transaction")
            self._in_transaction = False
            self._conn = conn = _open(self.dsn, self._setup)
        if ends:
            self._in_transaction = False
        elif word.startswith("BEGIN"):
            self._in_transaction = True
        return conn

    def run(self, text, params):
        if self._deferred:
            return self._run_after_deferred(text, params)
        outside = not self._in_transaction
        cursor = self._usable(text).cursor()
        try:
            cursor.execute(text, params if params else None)
        except psycopg.OperationalError:
            # A link that PostgreSQL dropped while it was idle says so only now. A
            # BEGIN, or a read outside a transaction, cannot have changed anything:
            # it runs again, once, on a new link. Anything else reports the error.
            if not (outside and self._conn.broken and _repeatable(text)):
                raise
            self._in_transaction = False
            cursor = self._usable(text).cursor()
            cursor.execute(text, params if params else None)
        return cursor

    def _run_after_deferred(self, text, params):
        """The deferred statements, then this one, in one pipeline (one round trip);
        the first error among them is raised when the pipeline ends."""
        waiting, self._deferred = self._deferred, []
        conn = self._usable(text)
        with conn.pipeline():
            for waiting_text, waiting_params in waiting:
                conn.cursor().execute(waiting_text, waiting_params if waiting_params else None)
            cursor = conn.cursor()
            cursor.execute(text, params if params else None)
        return cursor

    def run_many(self, text, seq_of_params):
        cursor = self._usable(text).cursor()
        cursor.executemany(text, list(seq_of_params))
        return cursor

    def cursor(self):
        return PgCursor(self)

    def execute(self, sql, params=()):
        return PgCursor(self).execute(sql, params)

    def executemany(self, sql, seq_of_params):
        return PgCursor(self).executemany(sql, seq_of_params)

    @property
    def in_transaction(self):
        return self._in_transaction

    def close(self):
        self._conn.close()


def _repeatable(text):
    return re.match(r"\s*(BEGIN|SELECT|SET)\b", text, re.I) is not None


def _open(dsn, setup=()):
    conn = psycopg.connect(dsn, autocommit=True)
    conn.adapters.register_loader("numeric", _NumericLoader)
    conn.adapters.register_dumper(bool, _BoolAsIntDumper)
    conn.execute(f"SET search_path = {SEARCH_PATH}")
    for statement in setup:
        conn.execute(statement)
    return conn


def connect(dsn):
    """A `PgConnection` to the database at `dsn` (a postgresql:// URL)."""
    return PgConnection(dsn)
