"""The rest of a file's life (issue 14): expiry, deleted offers, room, figures.

A file offered to someone (`Modules/database/file_records.py`) is kept
encrypted in `<data dir>/files` until one of these, each done here:

* **Expiry** (`--file-expiry-days`, 30 by default): a file not downloaded
  or declined that long after it was offered goes back to its sender as a
  bounce ("... was not downloaded within 30 days"), state "returned"; the
  content of one that was downloaded, or whose offer its recipient
  deleted, goes quietly then (the recipient has their copy, or did not
  want it). So no file holds a quota for longer than the expiry time.
* **Deleting the offer.** The offer message is the handle to the file:
  when the recipient deletes it before downloading, the file's state
  becomes "deleted" (the sender sees it in `sent`; no bounce: it was their
  choice) and the recipient can no longer reach it; when neither the
  recipient's nor the sender's copy is kept, the content goes at once, in
  the same transaction as the Delete (`delete_messages`), and its quota
  is free again.
* **Half-written uploads** (`--upload-expiry-hours`, 24 by default): an
  upload whose row shows no activity for that long, whose `.part` file
  was not written to for that long, and whose connection is not open goes,
  row and file (`abandon_stale_uploads`).

`keep_up` is the monitor's task that does all of it, once at start and
then every 30 s (sooner when an expiry time is shorter): the decisions in
the single writer, the files removed on the FileService's I/O thread
(`monitor.files.run`), bounces pushed live after the commit
(`monitor.hub.deliver`). Each round also removes any `.blob` or `.part` no
row keeps (a crash between a commit and the removal), never one newer than
what the round saw, so it cannot race an upload that begins meanwhile.

Also here: the server's own room for a new file (`room_refusal`, asked by
FileOffer before any byte: `--file-storage-bytes` for everyone together,
50 GiB by default, and the data dir's disk must keep `disk_margin` free:
1 GiB, or 5 % of a disk smaller than 20 GiB, room for the databases'
own writes), and the operator's figures of file storage for `stats` and
`audit` (`storage_figures`, `storage_by_user`, `disk_bytes`).

Talks to: the SQLite connection it is given (inside the caller's
transaction), the file system under the store's directory, and, in the
coroutines, the monitor's writer, I/O thread and hub. Logs counts and file
ids, never a name, a note or content.

How it fails: a round that fails (a commit refused, a disk error) is
logged and tried again next round, and the server goes on; sqlite3 errors
in the functions on a connection propagate for the caller's transaction to
undo.
"""

import asyncio
import json
import logging
import os
import time
from typing import NamedTuple

from Modules.database import file_records, storage

log = logging.getLogger("parley.database")

GIB = 1024 ** 3
UPKEEP_EVERY = 30.0          # seconds between rounds at most ...
UPKEEP_AT_LEAST = 0.5        # ... and at least, whatever the expiry times
BATCH = 200                  # files one writer job returns at most
DISK_MARGIN = GIB            # what a new file must leave free on the disk ...
DISK_MARGIN_SHARE = 0.05     # ... or this share of a small disk
RETURNED_NOT_DOWNLOADED = "The file '{file}' was not downloaded by {recipient} within " \
    "{period}; the server did not keep it longer."


class UpkeepSettings(NamedTuple):
    """The operator's times (`--file-expiry-days`, `--upload-expiry-hours`)."""

    expiry_days: float = 30.0
    upload_expiry_hours: float = 24.0


def settings_from(config):
    """The UpkeepSettings of the database process's config (config["files"])."""
    given = config.get("files") or {}
    return UpkeepSettings(**{name: float(given[name]) for name in UpkeepSettings._fields
                             if given.get(name)})


def upkeep_interval(settings):
    """Seconds between rounds: 30, or half the shortest expiry time if less."""
    shortest = min(settings.expiry_days * 86400, settings.upload_expiry_hours * 3600)
    return max(UPKEEP_AT_LEAST, min(UPKEEP_EVERY, shortest / 2))


def period_text(seconds):
    """'30 days', '1.5 hours', '2.59 seconds': the expiry time as a bounce says it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or unit == "second":
            shown = f"{seconds / size:.3g}"
            return f"{shown} {unit}" + ("" if shown == "1" else "s")


def _ids_json(ids):
    return json.dumps([int(file_id) for file_id in ids])


# -- the server's room for a new file -------------------------------------------------

def disk_margin(disk_bytes):
    """What a new file must leave free on a disk of `disk_bytes`."""
    return min(DISK_MARGIN, int(disk_bytes * DISK_MARGIN_SHARE))


def unwritten_upload_bytes(db, store):
    """What the uploads in progress will still write (announced size minus the
    bytes their `.part` holds so far)."""
    total = 0
    for file_id, size in db.execute("SELECT id, size FROM msg.files "
                                    "WHERE state = 'uploading'"):
        try:
            written = os.path.getsize(store.path(file_id, partial=True))
        except OSError:
            written = 0
        total += max(0, size - written)
    return total


def room_refusal(store, db, size, limits, statvfs=os.statvfs):
    """For `file_records.begin_upload`: None if a new file of `size` bytes fits on
    this server, else "storage_full" (everyone's files would hold more than
    `limits.storage_bytes`) or "disk_full" (the disk would keep less than
    `disk_margin` free once the uploads in progress and this one are written)."""
    kept = db.execute("SELECT coalesce(sum(size), 0) FROM msg.files WHERE stored").fetchone()[0]
    if kept + size > limits.storage_bytes:
        return "storage_full"
    directory = store.directory if os.path.isdir(store.directory) else \
        os.path.dirname(os.path.abspath(store.directory))
    disk = statvfs(directory)
    free = disk.f_bavail * disk.f_frsize
    if free - unwritten_upload_bytes(db, store) - size < disk_margin(disk.f_blocks *
                                                                      disk.f_frsize):
        return "disk_full"
    return None


# -- copies of the offer dropped ------------------------------------------------------

_ACTIVE_RECIPIENT = ("EXISTS (SELECT 1 FROM users AS u WHERE u.username = f.recipient "
                     "AND u.state = 'active')")       # one lookup by the unique name


def delete_messages(db, username, ids, now):
    """The Delete request: `storage.delete_messages`, then `settle_copies` for the
    messages it touched; (deleted ids, missing ids, ids of the files whose
    content the caller removes from disk)."""
    deleted, missing = storage.delete_messages(db, username, ids)
    return deleted, missing, settle_copies(db, now, deleted) if deleted else []


def settle_copies(db, now, message_ids=None):
    """What dropped copies of offers (among `message_ids`, or all) mean for their
    files: an offer its recipient no longer keeps, never downloaded, is
    "deleted"; a file whose offer neither side keeps is no longer stored.
    Offers to an account being deleted are left to `return_undownloaded`
    (they go back to the sender). The ids no longer stored."""
    among = "" if message_ids is None else \
        " AND f.message_id IN (SELECT value FROM json_each(:ids))"
    params = {"ids": _ids_json(message_ids or ()), "now": now}
    unkept_offers = [row[0] for row in db.execute(
        f"SELECT f.id FROM msg.files AS f WHERE f.stored AND f.state = 'offered'{among} "
        f"AND {_ACTIVE_RECIPIENT} AND NOT EXISTS (SELECT 1 FROM msg.messages AS m "
        "WHERE m.id = f.message_id AND m.recipient_copy)", params)]
    db.execute("UPDATE msg.files SET state = 'deleted', changed_at = ? WHERE id IN "
               "(SELECT value FROM json_each(?))", (now, _ids_json(unkept_offers)))
    unheld = [row[0] for row in db.execute(
        f"SELECT f.id FROM msg.files AS f WHERE f.stored AND f.state != 'uploading'{among} "
        f"AND (f.state != 'offered' OR {_ACTIVE_RECIPIENT}) AND NOT EXISTS (SELECT 1 FROM "
        "msg.messages AS m WHERE m.id = f.message_id AND (m.recipient_copy OR m.sender_copy))",
        params)]
    db.execute("UPDATE msg.files SET stored = 0 WHERE id IN (SELECT value FROM json_each(?))",
               (_ids_json(unheld),))
    return unheld


# -- expiry ---------------------------------------------------------------------------

def return_expired(db, offered_before, now, period, limit=BATCH):
    """Files offered before `offered_before` and still stored (at most `limit`):
    one never downloaded goes back to its sender as a bounce saying it was not
    downloaded within `period` (state "returned"); one downloaded, or whose
    offer was deleted, just stops being stored. ([(sender, bounce)], their ids)."""
    rows = db.execute(
        "SELECT f.id, f.recipient, f.state, f.name FROM msg.files AS f LEFT JOIN "
        "msg.messages AS m ON m.id = f.message_id WHERE f.stored AND f.state IN "
        "('offered', 'downloaded', 'deleted') AND coalesce(m.sent_at, f.created_at) < ? "
        "ORDER BY f.id LIMIT ?", (offered_before, limit)).fetchall()
    deliveries = []
    for file_id, recipient, state, name in rows:
        if state == "offered":
            why = RETURNED_NOT_DOWNLOADED.format(file=file_records.display_name(name),
                                                 recipient=recipient, period=period)
            deliveries += file_records.decline(db, recipient, file_id, None, now,
                                               why=why) or []
        else:
            db.execute("UPDATE msg.files SET stored = 0 WHERE id = ?", (file_id,))
    return deliveries, [row[0] for row in rows]


# -- half-written uploads -------------------------------------------------------------

def upload_candidates(db, older_than):
    """Ids of the uploads whose row shows no activity since `older_than`."""
    return [row[0] for row in db.execute(
        "SELECT id FROM msg.files WHERE state = 'uploading' "
        "AND coalesce(changed_at, created_at) < ? ORDER BY id", (older_than,))]


def abandon_stale_uploads(db, older_than, quiet=None):
    """The uploads whose row shows no activity since `older_than` (begun, and
    changed if ever, before it) and, when `quiet` is given, whose ids are in it
    (the caller saw their `.part` idle as long): their rows go. Their ids, for
    the caller to remove the `.part` files."""
    stale = upload_candidates(db, older_than)
    if quiet is not None:
        allowed = {int(file_id) for file_id in quiet}
        stale = [file_id for file_id in stale if file_id in allowed]
    db.execute("DELETE FROM msg.files WHERE state = 'uploading' AND id IN "
               "(SELECT value FROM json_each(?))", (_ids_json(stale),))
    return stale


def quiet_parts(store, file_ids, older_than):
    """On the I/O thread: the ids among `file_ids` whose `.part` was not written to
    since `older_than` (or is not there at all)."""
    quiet = []
    for file_id in file_ids:
        try:
            if os.path.getmtime(store.path(file_id, partial=True)) >= older_than:
                continue
        except FileNotFoundError:
            pass
        quiet.append(file_id)
    return quiet


def _in_progress(upload):
    """An upload of this process whose connection is still open."""
    conn = getattr(upload, "conn", None)
    return conn is not None and not conn.closed()


# -- files on disk ---------------------------------------------------------------------

def kept_files(db):
    """(ids of the files whose content must be on disk, the highest id ever given)."""
    if getattr(db, "dialect", "sqlite") == "postgresql":
        row = db.execute("SELECT pg_sequence_last_value("
                         "pg_get_serial_sequence('msg.files', 'id'))").fetchone()
    else:
        row = db.execute("SELECT seq FROM msg.sqlite_sequence WHERE name = 'files'").fetchone()
    return file_records.stored_ids(db), (row[0] or 0) if row else 0


def _stored_names(store):
    try:
        names = os.listdir(store.directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem, _, suffix = name.partition(".")
        if stem.isdigit() and suffix in ("blob", "part"):
            found.append((int(stem), name))
    return found


def remove_unkept(store, kept, through):
    """On the I/O thread: remove every `.blob` and `.part` of an id up to
    `through` that is not in `kept`; how many."""
    removed = 0
    for file_id, name in _stored_names(store):
        if file_id <= through and file_id not in kept:
            try:
                os.unlink(os.path.join(store.directory, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def remove_all(store, file_ids):
    """On the I/O thread: the content of these files goes (finished or not)."""
    for file_id in file_ids:
        store.remove(file_id)


def disk_bytes(store):
    """On the I/O thread: the bytes the store's files take on disk."""
    total = 0
    for _file_id, name in _stored_names(store):
        try:
            total += os.path.getsize(os.path.join(store.directory, name))
        except FileNotFoundError:
            pass
    return total


# -- the operator's figures -------------------------------------------------------------

def storage_figures(db):
    """The server's file storage: files stored and their bytes, uploads in progress
    and their announced bytes, files offered and waiting to be downloaded."""
    stored, stored_bytes = db.execute(
        "SELECT COUNT(*), coalesce(SUM(size), 0) FROM msg.files "
        "WHERE stored AND state != 'uploading'").fetchone()
    uploads, upload_bytes = db.execute(
        "SELECT COUNT(*), coalesce(SUM(size), 0) FROM msg.files "
        "WHERE state = 'uploading'").fetchone()
    waiting = db.execute("SELECT COUNT(*) FROM msg.files WHERE state = 'offered' "
                         "AND stored").fetchone()[0]
    return {"stored": stored, "stored_bytes": stored_bytes, "uploads": uploads,
            "upload_bytes": upload_bytes, "waiting": waiting}


def storage_by_user(db):
    """{account: {"files_stored", "file_bytes", "files_waiting"}}: the files each
    sent that the server keeps and their bytes, and those offered to them and
    not yet downloaded (accounts with none are left out)."""
    found = {}
    for sender, count, size in db.execute(
            "SELECT sender, COUNT(*), SUM(size) FROM msg.files WHERE stored "
            "AND state != 'uploading' GROUP BY sender"):
        found[sender] = {"files_stored": count, "file_bytes": size, "files_waiting": 0}
    for recipient, count in db.execute(
            "SELECT recipient, COUNT(*) FROM msg.files WHERE state = 'offered' AND stored "
            "GROUP BY recipient"):
        found.setdefault(recipient, {"files_stored": 0, "file_bytes": 0})
        found[recipient]["files_waiting"] = count
    return found


# -- the monitor's task -----------------------------------------------------------------

async def remove_content(monitor, file_ids):
    """The content of these files goes from disk, on the I/O thread."""
    if file_ids:
        await monitor.files.run(remove_all, monitor.files.store, list(file_ids))


async def expire_offers(monitor, settings, now):
    """Return or drop every file offered longer ago than the expiry time; how many."""
    offered_before = now - settings.expiry_days * 86400
    period = period_text(settings.expiry_days * 86400)
    total = 0
    while True:
        _deliveries, ids = await monitor.job(
            return_expired, offered_before, now, period,
            delivers=lambda found: found[0])
        await remove_content(monitor, ids)
        total += len(ids)
        if len(ids) < BATCH:
            return total


async def release_unkept(monitor, now):
    """Files neither side keeps stop being stored, and whatever no row keeps goes
    from disk; (how many files released, how many files removed from disk)."""
    released = await monitor.job(settle_copies, now)
    await remove_content(monitor, released)
    kept, through = await monitor.job(kept_files)
    orphans = await monitor.files.run(remove_unkept, monitor.files.store, kept, through)
    return len(released), orphans


async def expire_uploads(monitor, older_than):
    """Uploads idle since `older_than` (row and `.part`), not on an open
    connection, go; their ids."""
    files = monitor.files
    candidates = await monitor.job(upload_candidates, older_than)
    live = {file_id for file_id, upload in list(files.uploads.items()) if _in_progress(upload)}
    candidates = [file_id for file_id in candidates if file_id not in live]
    if not candidates:
        return []
    quiet = await files.run(quiet_parts, files.store, candidates, older_than)
    gone = await monitor.job(abandon_stale_uploads, older_than, quiet) if quiet else []
    writers = [getattr(files.uploads.pop(file_id), "writer", None) for file_id in gone
               if file_id in files.uploads]
    await files.run(_close_and_remove, files.store, writers, gone)
    return gone


def _close_and_remove(store, writers, file_ids):
    for writer in writers:
        if writer is not None:
            writer.close()
    remove_all(store, file_ids)


async def upkeep_once(monitor, settings, now=None):
    """One round: expiry, files nobody keeps, stale uploads; what it did."""
    now = time.time() if now is None else now
    expired = await expire_offers(monitor, settings, now)
    released, orphans = await release_unkept(monitor, now)
    abandoned = await expire_uploads(monitor, now - settings.upload_expiry_hours * 3600)
    done = {"expired": expired, "released": released, "orphans": orphans,
            "abandoned": len(abandoned)}
    if any(done.values()):
        log.info("file upkeep: %d files past their expiry, %d no longer kept by anyone, "
                 "%d stray files removed, %d stale uploads removed%s", expired, released,
                 orphans, len(abandoned), f" ({', '.join(map(str, abandoned))})"
                 if abandoned else "")
    return done


async def keep_up(monitor, settings):
    """The monitor's task: a round at once, then every `upkeep_interval`."""
    every = upkeep_interval(settings)
    while True:
        try:
            await upkeep_once(monitor, settings)
        except Exception as error:          # a failed commit, a disk error: next round
            log.warning("the file upkeep failed (again in %g s): %s", every, error)
        await asyncio.sleep(every)
