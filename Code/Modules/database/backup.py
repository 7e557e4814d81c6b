"""`admin backup DIR`: an online, consistent copy of the data while the server runs.

Only the database process runs it (it alone opens the data). What it copies:
`users.db`, `passwords.db` and `messages.db` through SQLite's backup API,
the stored files those copies still keep (`files/<id>.blob`), and the key
files the data needs (`storage_key`, `server_key`). Into `DIR`, atomically:
everything is written into a hidden staging directory beside `DIR`, each
file fsynced, `manifest.json` (the size and SHA-256 of every file, the
highest message, account and file ids) written last, and the staging
directory renamed to `DIR` only then. A backup that stopped half-way has no
manifest and no name that looks like `DIR`; restore refuses it.

Consistency across the three files: a job on the single writer (the only
thing that ever writes) opens one read transaction on a connection of our
own and reads each of the three files in it. While the job runs no write
can land, so the three WAL snapshots taken there are one moment of the
data: no commit is ever half in them. The job takes microseconds; the
copying then happens on a thread of its own at nice 10 (as the file I/O
thread) from those snapshots (`backup(pages=BACKUP_PAGES)`, which lets go
of the GIL at each step), while the writer goes on committing: live traffic waits for the
pin, never for the copy. The WAL cannot be checkpointed past the snapshot
until the copy ends, so it grows by what is written meanwhile.

Stored files: a file's blob is written completely before its row says it
is stored, so every row the snapshot keeps points to a finished blob. If
the upkeep removed one between the snapshot and its copy (a file that
expired in those seconds), the manifest lists it under `missing_files`
and the restore marks it no longer stored (as a file whose content went).

The destination databases are opened through `open_destination(path,
connect)` alone, so that encrypted databases (issue 15) are copied through
the same connect, and stay encrypted with the same key.

How it fails: `BackupError` with one sentence (the directory exists and is
not empty, lies inside the data dir, cannot be written; a copy failed);
the staging directory is removed and nothing named `DIR` is made.
"""

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from Modules.database import at_rest, storage
from Modules.runtime import BACKGROUND_NICE, lower_priority

MANIFEST = "manifest.json"
FORMAT = 1
BACKUP_PAGES = 256                 # pages copied per step of the backup API
DATABASES = tuple(storage.SCHEMAS)            # users, passwords, messages
KEY_FILES = ("storage_key", "server_key")
FILES_DIR = "files"
# The id sequences a client may see: table -> the schema that holds it.
ID_TABLES = {"messages": "messages", "users": "users", "files": "messages"}


class BackupError(Exception):
    """The backup cannot be made as asked; the message says why."""


def open_destination(path, connect=sqlite3.connect):
    """The one way a backup or a restore opens a database file it writes or reads:
    `connect(path)` (an encrypted store passes its own, keyed, connect)."""
    return connect(path)


def check_target(target, data_dir):
    """The absolute target directory, or BackupError if it may not be used."""
    target = os.path.abspath(target)
    real_target, real_data = os.path.realpath(target), os.path.realpath(data_dir)
    if os.path.commonpath([real_target, real_data]) == real_data:
        raise BackupError(f"{target} is inside the data directory {data_dir}; a backup "
                          "must go somewhere else")
    if os.path.lexists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise BackupError(f"{target} already exists and is not an empty directory; "
                          "give a new one")
    if not os.path.isdir(os.path.dirname(target)):
        raise BackupError(f"the directory {os.path.dirname(target)} that would hold "
                          "the backup does not exist")
    return target


def pin_snapshot(_writer_conn, snapshot):
    """A writer job: open one read transaction on `snapshot` across the three files,
    while no write can land (run again after a rolled-back batch: it stays pinned)."""
    if snapshot.in_transaction:
        return
    snapshot.execute("BEGIN")
    for schema in storage.SCHEMAS.values():
        snapshot.execute(f"SELECT count(*) FROM {schema}.sqlite_master").fetchone()


def keyed_connect(key):
    """The connect of a data dir encrypted with `key` (None: plain SQLite)."""
    return lambda path: at_rest.connect(path, key)


async def take(monitor, target, connect=None, key_paths=None):
    """Make the backup in `target`; its manifest (a dict). With the data dir
    encrypted at rest the copies are encrypted with the same key."""
    data_dir = monitor.data_dir
    key = getattr(monitor, "db_key", None)
    connect = connect or keyed_connect(key)
    target = check_target(target, data_dir)
    staging = _make_staging(target)
    started = time.monotonic()
    try:
        snapshot = storage.open_reader(data_dir, key)
        try:
            await monitor.job(pin_snapshot, snapshot)
        except BaseException:
            snapshot.close()
            raise
        manifest = await _on_background_thread(
            copy_everything, snapshot, data_dir, staging, connect,
            key_paths or default_key_paths(data_dir), _files_directory(monitor))
        _publish(staging, target)
    except (OSError, *at_rest.ERRORS, storage.StorageError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackupError(f"the backup into {target} failed: "
                          f"{getattr(error, 'strerror', None) or error}") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest["seconds"] = round(time.monotonic() - started, 3)
    return manifest


async def _on_background_thread(fn, *args):
    """`fn(*args)` on a thread of its own at nice BACKGROUND_NICE: the copy gives
    way to the event loop and the writer when the CPU is short."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup",
                            initializer=lower_priority,
                            initargs=(BACKGROUND_NICE, True)) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def default_key_paths(data_dir):
    """{name in the backup: path} of the key files the data dir needs."""
    return {name: os.path.join(data_dir, name) for name in KEY_FILES}


def _make_staging(target):
    staging = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}"
                                                    f".partial-{secrets.token_hex(4)}")
    try:
        os.mkdir(staging, 0o700)
    except OSError as error:
        raise BackupError(f"cannot write in {os.path.dirname(target)}: "
                          f"{error.strerror or error}") from None
    return staging


# -- on the copying thread -----------------------------------------------------------

def _files_directory(monitor):
    """Where the stored files are: --files-dir, or files/ in the data dir."""
    store = getattr(getattr(monitor, "files", None), "store", None)
    return store.directory if store is not None else os.path.join(monitor.data_dir, FILES_DIR)


def copy_everything(snapshot, data_dir, staging, connect, key_paths, files_dir=None):
    """Databases from the pinned snapshot, then stored files, keys and the manifest."""
    try:
        for name in DATABASES:
            copy_database(snapshot, storage.SCHEMAS[name],
                          os.path.join(staging, f"{name}.db"), connect)
    finally:
        snapshot.close()                       # ends the read transaction
    ids = highest_ids(staging, connect)
    missing = copy_stored_files(files_dir or os.path.join(data_dir, FILES_DIR), staging,
                                kept_file_ids(staging, connect))
    for name, path in key_paths.items():
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(staging, name))
            os.chmod(os.path.join(staging, name), 0o600)
    manifest = {"format": FORMAT, "created_at": time.time(), "ids": ids,
                "missing_files": missing, "files": describe_files(staging)}
    write_manifest(staging, manifest)
    return manifest


def copy_database(snapshot, schema, path, connect):
    """One schema of the snapshot into a new file at `path`, in steps."""
    dest = open_destination(path, connect)
    try:
        snapshot.backup(dest, pages=BACKUP_PAGES, name=schema)
        dest.execute("PRAGMA journal_mode = DELETE")   # one self-contained file
    finally:
        dest.close()
    os.chmod(path, 0o600)


def highest_ids(directory, connect):
    """{table: the highest id it ever handed out} of the databases in `directory`."""
    ids = {}
    for table, name in ID_TABLES.items():
        db = open_destination(os.path.join(directory, f"{name}.db"), connect)
        try:
            ids[table] = highest_id(db, table)
        finally:
            db.close()
    return ids


def highest_id(db, table, schema="main"):
    """The larger of the table's AUTOINCREMENT sequence and its highest id."""
    row = db.execute(f"SELECT seq FROM {schema}.sqlite_sequence WHERE name = ?",
                     (table,)).fetchone()
    top = db.execute(f"SELECT max(id) FROM {schema}.{table}").fetchone()[0]
    return max((row[0] or 0) if row else 0, top or 0)


def kept_file_ids(directory, connect):
    """The ids of the files the copied messages.db says are on disk."""
    db = open_destination(os.path.join(directory, "messages.db"), connect)
    try:
        return [row[0] for row in db.execute(
            "SELECT id FROM files WHERE stored AND state != 'uploading' ORDER BY id")]
    finally:
        db.close()


def copy_stored_files(files_dir, staging, file_ids):
    """Copy `<files_dir>/<id>.blob` of each id into the backup's files/; the ids whose
    blob was already gone."""
    os.mkdir(os.path.join(staging, FILES_DIR), 0o700)
    missing = []
    for file_id in file_ids:
        source = os.path.join(files_dir, f"{file_id}.blob")
        try:
            shutil.copyfile(source, os.path.join(staging, FILES_DIR, f"{file_id}.blob"))
            os.chmod(os.path.join(staging, FILES_DIR, f"{file_id}.blob"), 0o600)
        except FileNotFoundError:
            missing.append(file_id)
    return missing


def describe_names(directory):
    """The relative path of every file under `directory` but the manifest, sorted."""
    found = []
    for folder, _dirs, names in os.walk(directory):
        found += [os.path.relpath(os.path.join(folder, name), directory) for name in names]
    return sorted(name for name in found if name != MANIFEST)


def describe_files(directory):
    """{relative path: {"size", "sha256"}} of every file under `directory` (each
    fsynced on the way)."""
    described = {}
    for relative in describe_names(directory):
        path = os.path.join(directory, relative)
        described[relative] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
        at_rest.fsync_path(path)
    return described


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory, manifest):
    path = os.path.join(directory, MANIFEST)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w",
              encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    at_rest.fsync_path(os.path.join(directory, FILES_DIR))
    at_rest.fsync_path(directory)


def _publish(staging, target):
    """The staging directory becomes `target` (an empty `target` is replaced)."""
    os.rename(staging, target)
    at_rest.fsync_path(os.path.dirname(target))

