"""Restoring a backup made by `admin backup`, offline, and checking one.

`python Code/server_daemon.py admin restore BACKUP --data-dir DIR [--id-margin N]
[--key-file PATH]` and `python Code/server_daemon.py admin check-backup BACKUP` (`main`).

Restore, in this order, stopping at the first problem:
1. the backup's manifest is read and every file it lists is checked, size
   and SHA-256 (`verify`); a file that differs, is missing or is extra is
   one sentence, and nothing is touched; a backup of a data dir encrypted
   at rest needs its key (`--key-file`, `$PARLEY_DB_KEY` or the systemd
   credential, as for the server), checked before anything is copied, and
   is restored still encrypted;
2. the data dir must not be in use: its locks (`parley.lock` of the
   database process, `daemon.lock` of the daemon) are taken and held until
   the end, so a server cannot start on it meanwhile;
3. the backup is copied into a hidden staging directory beside the data
   dir, and its id sequences are raised (`raise_id_floors`): ids are never
   handed out again (below); a stored file whose blob had gone before the
   backup copied it is marked no longer stored;
4. the old data dir, if there is one, is renamed aside to
   `DIR.before-restore-<time>` (never deleted), and the staging directory
   renamed to `DIR`.

Ids never reused: a client that saw message id N (or account or file id N)
before the restore must not see N given to different data after it. The
restored sequences start above the largest of: the backup's highest ids,
the highest ids of the data dir being replaced (read before it is moved
aside, when it can be read), and `--ids-above N` if the operator knows
more; plus a margin (`--id-margin`, default `ID_MARGIN`) for what was handed
out but is not known here (the data dir was lost). The limits are in
docs/RELIABILITY.md.

Talks to: the file system only (the backup, the data dir and its parent),
and SQLite through `backup.open_destination`. How it fails: `RestoreError`
with one sentence; printed by `main` as one line, exit status 1.
"""

import argparse
import fcntl
import json
import os
import shutil
import sqlite3
import sys
import time

from Modules.database import at_rest, backup, db_key
from Modules.database.backup import MANIFEST, open_destination

ID_MARGIN = 1_000_000_000          # ids skipped after a restore (about 11 days at 1,000/s)
LOCK_FILES = ("parley.lock", "daemon.lock")


class RestoreError(Exception):
    """The backup cannot be restored (or checked) as asked; the message says why."""


def read_manifest(backup_dir):
    path = os.path.join(backup_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise RestoreError(f"{backup_dir} has no {MANIFEST}: it is not a backup, or one "
                           "that did not finish") from None
    except (OSError, ValueError) as error:
        raise RestoreError(f"the manifest of {backup_dir} cannot be read ({error})") \
            from None
    if not isinstance(manifest, dict) or manifest.get("format") != backup.FORMAT or \
            not isinstance(manifest.get("files"), dict):
        raise RestoreError(f"the manifest of {backup_dir} is not one this Parley writes")
    return manifest


def verify(backup_dir):
    """The manifest, once every file of the backup matches it (RestoreError if not)."""
    backup_dir = os.path.abspath(backup_dir)
    manifest = read_manifest(backup_dir)
    listed = manifest["files"]
    for name in backup.DATABASES:
        if f"{name}.db" not in listed:
            raise RestoreError(f"the backup {backup_dir} holds no {name}.db")
    on_disk = set(backup.describe_names(backup_dir))
    extra = sorted(on_disk - set(listed))
    if extra:
        raise RestoreError(f"{extra[0]} in {backup_dir} is not in its manifest; refusing "
                           "to restore a backup that was changed")
    for relative, expected in sorted(listed.items()):
        _check_file(backup_dir, relative, expected)
    return manifest


def _check_file(backup_dir, relative, expected):
    path = os.path.join(backup_dir, relative)
    if not os.path.isfile(path):
        raise RestoreError(f"{relative} is missing from the backup {backup_dir}")
    if os.path.getsize(path) != expected.get("size") or \
            backup.file_sha256(path) != expected.get("sha256"):
        raise RestoreError(f"{relative} in {backup_dir} does not match its manifest "
                           "(size or SHA-256 differs); refusing to restore it")


def lock_data_dir(data_dir):
    """The data dir's locks, held (open fds), or RestoreError if a server has them."""
    held = []
    for name in LOCK_FILES:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            continue
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            for other in held:
                os.close(other)
            raise RestoreError(f"a Parley server is running on {data_dir}; stop it "
                               "before restoring") from None
        held.append(fd)
    return held


def connect_for(key):
    """Opens each database file as it is: plain SQLite, or SQLCipher with `key`."""
    return lambda path: at_rest.connect(path, None if at_rest.is_plaintext(path) else key)


def check_backup_key(backup_dir, key):
    """RestoreError unless `key` opens an encrypted backup (a plain one needs none)."""
    encrypted = at_rest.encrypted_file(backup_dir)
    if encrypted is None:
        return
    if key is None:
        raise RestoreError(f"the backup {backup_dir} is encrypted at rest: give its key "
                           f"with --key-file PATH or ${db_key.ENV_NAME}")
    db = at_rest.connect(encrypted, key)
    try:
        at_rest.check_key(db, "main", encrypted)
    except at_rest.AtRestError as error:
        raise RestoreError(str(error)) from None
    finally:
        db.close()


def restore_key(key_file, environ, data_dir):
    """The key to restore with: from an existing --key-file, $PARLEY_DB_KEY, or None."""
    if key_file and not os.path.exists(key_file):
        raise RestoreError(f"the key file {key_file} does not exist")
    try:
        return db_key.load(data_dir,
                           {"file": key_file, "hex": environ.get(db_key.ENV_NAME),
                            "credentials": environ.get("CREDENTIALS_DIRECTORY")})
    except at_rest.AtRestError as error:
        raise RestoreError(str(error)) from None


def live_ids(data_dir, connect=sqlite3.connect):
    """The highest ids of the data dir about to be replaced ({} where unreadable)."""
    found = {}
    for table, name in backup.ID_TABLES.items():
        path = os.path.join(data_dir, f"{name}.db")
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            continue
        try:
            db = open_destination(path, connect)      # the same connect as the copies
            try:
                found[table] = backup.highest_id(db, table)
            finally:
                db.close()
        except at_rest.ERRORS:
            pass                          # unreadable: the margin has to cover it
    return found


def id_floors(manifest, live, ids_above, margin):
    """{table: the first id after the restore, minus one}."""
    return {table: max(int(manifest.get("ids", {}).get(table, 0)), live.get(table, 0),
                       ids_above) + margin
            for table in backup.ID_TABLES}


def raise_id_floors(directory, floors, connect=sqlite3.connect):
    """Set each table's AUTOINCREMENT sequence in the databases in `directory`."""
    for table, floor in floors.items():
        name = backup.ID_TABLES[table]
        db = open_destination(os.path.join(directory, f"{name}.db"), connect)
        try:
            with db:
                changed = db.execute(
                    "UPDATE sqlite_sequence SET seq = max(coalesce(seq, 0), ?) "
                    "WHERE name = ?", (floor, table)).rowcount
                if not changed:
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                               (table, floor))
        finally:
            db.close()


def mark_missing_files(directory, file_ids, connect=sqlite3.connect):
    """Files whose blob had gone by the time the backup copied it: not stored."""
    if not file_ids:
        return
    db = open_destination(os.path.join(directory, "messages.db"), connect)
    try:
        with db:
            db.execute("UPDATE files SET stored = 0 WHERE id IN (SELECT value FROM "
                       "json_each(?))", (json.dumps([int(i) for i in file_ids]),))
    finally:
        db.close()


def restore(backup_dir, data_dir, margin=ID_MARGIN, ids_above=0, key=None):
    """Restore `backup_dir` into `data_dir`; (where the old data dir went or None, floors).
    An encrypted backup needs its `key`, and stays encrypted with it."""
    backup_dir, data_dir = os.path.abspath(backup_dir), os.path.abspath(data_dir)
    manifest = verify(backup_dir)
    check_backup_key(backup_dir, key)
    connect = connect_for(key)
    if os.path.commonpath([os.path.realpath(backup_dir), os.path.realpath(data_dir)]) in (
            os.path.realpath(backup_dir), os.path.realpath(data_dir)):
        raise RestoreError("the backup and the data directory must not contain each other")
    held = lock_data_dir(data_dir) if os.path.isdir(data_dir) else []
    staging = os.path.join(os.path.dirname(data_dir),
                           f".{os.path.basename(data_dir)}.restoring-{os.getpid()}")
    try:
        floors = id_floors(manifest, live_ids(data_dir, connect), ids_above, margin)
        _stage(backup_dir, staging, floors, connect)
        mark_missing_files(staging, manifest.get("missing_files") or [], connect)
        aside = _swap(data_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        for fd in held:
            os.close(fd)
    return aside, floors


def _stage(backup_dir, staging, floors, connect):
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(backup_dir, staging, ignore=shutil.ignore_patterns(MANIFEST))
    os.chmod(staging, 0o700)
    raise_id_floors(staging, floors, connect)
    backup.describe_files(staging)             # fsyncs every file
    at_rest.fsync_path(staging)


def _swap(data_dir, staging):
    aside = None
    if os.path.lexists(data_dir):
        aside = f"{data_dir}.before-restore-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(data_dir, aside)
    os.rename(staging, data_dir)
    at_rest.fsync_path(os.path.dirname(data_dir))
    return aside


def build_parser():
    parser = argparse.ArgumentParser(prog="server_daemon.py admin restore",
                                     description="Restore a backup into a stopped "
                                     "server's data dir.")
    parser.add_argument("backup_dir", metavar="BACKUP_DIR")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--id-margin", type=int, default=ID_MARGIN)
    parser.add_argument("--ids-above", type=int, default=0)
    parser.add_argument("--key-file", help="the key an encrypted backup was made with "
                        f"(or ${db_key.ENV_NAME})")
    return parser


def main(argv, out=None, err=None, environ=os.environ):
    """`admin restore ...` or `admin check-backup BACKUP_DIR`; the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        if argv[:1] == ["check-backup"]:
            if len(argv) != 2:
                print("usage: server_daemon.py admin check-backup BACKUP_DIR", file=err)
                return 2
            manifest = verify(argv[1])
            print(f"The backup {os.path.abspath(argv[1])} is whole: "
                  f"{len(manifest['files'])} files match its manifest.", file=out)
            return 0
        args = build_parser().parse_args(argv[1:])
        if args.id_margin < 0 or args.ids_above < 0:
            print("parley admin: --id-margin and --ids-above are 0 or more", file=err)
            return 2
        key = restore_key(args.key_file, environ, args.data_dir)
        aside, floors = restore(args.backup_dir, args.data_dir, args.id_margin,
                                args.ids_above, key)
    except (RestoreError, OSError, *at_rest.ERRORS) as error:
        print(f"parley admin: {getattr(error, 'strerror', None) or error}", file=err)
        return 1
    kept = f"; the old data dir is kept at {aside}" if aside else ""
    print(f"Restored {os.path.abspath(args.backup_dir)} into "
          f"{os.path.abspath(args.data_dir)}{kept}. New message ids start above "
          f"{floors['messages']}, account ids above {floors['users']}.", file=out)
    return 0
