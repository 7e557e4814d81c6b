"""`admin migrate`: a SQLite data dir into PostgreSQL, or back (issue 18).

    python Code/server_daemon.py admin migrate --data-dir DIR --to postgresql://HOST/DB
    python Code/server_daemon.py admin migrate --data-dir DIR --from postgresql://HOST/DB

The first copies the three SQLite files of DIR into the PostgreSQL
database (its schema made there first); the second copies a PostgreSQL
database into an empty DIR, for a deployment that shrinks back to one
machine. Servers stopped: the data dir's locks are taken for the whole
run (a server on it is refused meanwhile), and on PostgreSQL the
deployment's advisory lock (`backends.SERVERS_LOCK`), which every running
server holds shared.

How, table by table in `TABLES` order, each in key order:
* rows go over in batches of `BATCH`, each batch ONE transaction on the
  target together with the table's progress row in `parley_migration`
  (the last key copied), so a run killed at any point leaves whole
  batches and a progress row that says exactly where to go on; running
  the same command again resumes there (with the same source: the source
  description and its row counts are recorded at the start, and a resume
  from a different source is refused);
* ids are copied as they are (accounts, messages, files keep their ids,
  so clients' ids stay true), and the target's id sequences are set past
  the highest copied id;
* at the end every table is checked: the row count and a SHA-256 of all
  its rows in key order, computed the same way on both sides; any
  difference is named and the run fails. The search index is not copied:
  the target builds its own (`mailbox.py`).

A target that already holds accounts and is not a migration from this
source is refused. Talks to: the two backends (`Modules.database.backends`).
How it fails: `MigrationError` (one sentence) or a database error, printed
as one line by `main`, exit status 1; the target keeps every whole batch.
"""

import argparse
import hashlib
import json
import os
import sys

from Modules.database import backends
from Modules.database.schema import StorageError

BATCH = 1000
# (table, key columns): the order of copying, and of the checksum.
TABLES = [
    ("main.users", ("id",)),
    ("main.ledger", ("username", "address")),
    ("main.settings", ("name",)),
    ("main.totals", ("name",)),
    ("main.blocks", ("owner", "blocked")),
    ("main.reserved_names", ("username",)),
    ("pw.passwords", ("username",)),
    ("msg.messages", ("id",)),
    ("msg.sent_ids", ("sender", "client_id")),
    ("msg.files", ("id",)),
]
ID_TABLES = ("main.users", "msg.messages", "msg.files")
_PROGRESS = ("CREATE TABLE IF NOT EXISTS parley_migration (name TEXT PRIMARY KEY, "
             "value TEXT NOT NULL)")


class MigrationError(Exception):
    """The migration cannot go on as asked; the message says why."""


def columns_of(db, table):
    """The column names of `table`, from an empty select (works on both backends)."""
    cursor = db.execute(f"SELECT * FROM {table} LIMIT 0")
    return [column[0] for column in cursor.description]


def _progress(db, name):
    row = db.execute("SELECT value FROM parley_migration WHERE name = ?", (name,)).fetchone()
    return None if row is None else json.loads(row[0])


def _set_progress(db, name, value):
    db.execute("DELETE FROM parley_migration WHERE name = ?", (name,))
    db.execute("INSERT INTO parley_migration (name, value) VALUES (?, ?)",
               (name, json.dumps(value)))


def source_facts(db, description):
    return {"source": description,
            "counts": {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                       for table, _key in TABLES}}


def begin(target, facts):
    """Start, or resume the migration from the same source; refuse anything else."""
    target.execute(_PROGRESS)
    started = _progress(target, "source")
    if started is None:
        if target.execute("SELECT count(*) FROM main.users").fetchone()[0]:
            raise MigrationError("the target already holds accounts and is not a "
                                 "migration in progress; give an empty database")
        target.execute("BEGIN")
        _set_progress(target, "source", facts)
        target.execute("COMMIT")
        return False
    if started != facts:
        raise MigrationError(f"the target holds an unfinished migration from "
                             f"{started['source']} with other contents than this source; "
                             "finish it with that source, or start over on an empty target")
    return True


def copy_table(source, target, table, key, batch=None, after_batch=None):
    """Copy the rows of `table` past its progress row, batch by batch (`BATCH` rows
    unless given); the rows copied."""
    batch = batch or BATCH
    columns = columns_of(source, table)
    order = ", ".join(key)
    listed = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    last = _progress(target, table)
    copied = 0
    while True:
        where = ""
        params = []
        if last is not None:
            where = f"WHERE ({order}) > ({', '.join('?' for _ in key)}) "
            params = list(last)
        rows = source.execute(f"SELECT {listed} FROM {table} {where}ORDER BY {order} "
                              f"LIMIT {int(batch)}", params).fetchall()
        if not rows:
            return copied
        positions = [columns.index(name) for name in key]
        target.execute("BEGIN")
        target.executemany(f"INSERT INTO {table} ({listed}) VALUES ({marks})",
                           [tuple(row) for row in rows])
        last = [rows[-1][position] for position in positions]
        _set_progress(target, table, last)
        target.execute("COMMIT")
        copied += len(rows)
        if after_batch is not None:
            after_batch(table, copied)


def checksum(db, table, key):
    """(rows, SHA-256) of `table` in key order, values written out the same on both
    backends (integers, floats by repr, text, bytes by hex, NULL)."""
    digest = hashlib.sha256()
    count = 0
    columns = columns_of(db, table)
    cursor = db.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(key)}")
    while True:
        rows = cursor.fetchmany(BATCH)
        if not rows:
            return count, digest.hexdigest()
        for row in rows:
            digest.update(json.dumps([_canonical(value) for value in row]).encode())
            count += 1


def _canonical(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["b", bytes(value).hex()]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return ["f", repr(value)]
    return value


def migrate(source_backend, target_backend, out=None, after_batch=None):
    """The whole run: begin or resume, copy, set sequences, check. Returns the counts."""
    source, target = source_backend.open_unlocked(), target_backend.open_unlocked()
    try:
        facts = source_facts(source, source_backend.describe())
        resumed = begin(target, facts)
        if out is not None and resumed:
            print("Resuming the migration where it stopped.", file=out)
        for table, key in TABLES:
            copy_table(source, target, table, key, after_batch=after_batch)
        target_backend.raise_sequences(target, ID_TABLES)
        check(source, target)
        target.execute("BEGIN")
        _set_progress(target, "finished", True)
        target.execute("COMMIT")
        return facts["counts"]
    finally:
        source_backend.close(source)
        target_backend.close(target)


def check(source, target):
    for table, key in TABLES:
        theirs, ours = checksum(source, table, key), checksum(target, table, key)
        if theirs != ours:
            raise MigrationError(f"{table} differs after the copy ({theirs[0]} rows in the "
                                 f"source, {ours[0]} in the target, or their contents); "
                                 "nothing was removed from the source")


def build_parser():
    parser = argparse.ArgumentParser(prog="server_daemon.py admin migrate", description=(
        "Copy a stopped server's data between SQLite (its data dir) and PostgreSQL."))
    parser.add_argument("--data-dir", default="./parley-data")
    way = parser.add_mutually_exclusive_group(required=True)
    way.add_argument("--to", metavar="POSTGRESQL_URL", help="copy the data dir into it")
    way.add_argument("--from", dest="from_", metavar="POSTGRESQL_URL",
                     help="copy it into the (empty) data dir")
    return parser


def main(argv, out=None, err=None):
    """`admin migrate ...`: the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    url = args.to or args.from_
    try:
        if not url.startswith(("postgresql://", "postgres://")):
            raise MigrationError(f"{url} is not a PostgreSQL URL (postgresql://HOST/DB)")
        with backends.offline(args.data_dir, url):
            sqlite = backends.open_backend(None, args.data_dir)
            postgresql = backends.open_backend(url, args.data_dir)
            source, target = (sqlite, postgresql) if args.to else (postgresql, sqlite)
            counts = migrate(source, target, out)
    except (MigrationError, StorageError, OSError) as error:
        print(f"parley admin: {getattr(error, 'strerror', None) or error}", file=err)
        return 1
    except Exception as error:            # a database error: one line, never the data
        print(f"parley admin: the migration stopped: {type(error).__name__}: "
              f"{str(error).splitlines()[0] if str(error) else ''}", file=err)
        return 1
    places = (os.path.abspath(args.data_dir), postgresql.describe())   # no password shown
    print(f"Migrated {places[0] if args.to else places[1]} into "
          f"{places[1] if args.to else places[0]}: "
          f"{counts['main.users']} accounts, {counts['msg.messages']} messages, "
          f"{counts['msg.files']} files; every table checked.", file=out)
    return 0
