"""The rows of files sent between people (issue 14): `msg.files` in messages.db.

One row per file: sender, recipient, the name its sender gave (untrusted:
only the recipient's client turns it into a name on disk), size, SHA-256,
an optional note, its key wrapped by the server's storage key
(`Modules/database/filestore.py`; the content is never in a database
file), and its state:

    uploading --FileDone, hash right--> offered --last chunk fetched--> downloaded
        |  ^                               |  \\__________________________/  |
        |  +- the same file offered again  +------------ decline ------------+--> declined
        |     (resumed after a lost        +--not downloaded in time, or the
        |     connection or a restart)     |  recipient's account deleted--> returned
        +--hash wrong, or left unfinished  +--the recipient deleted the offer--> deleted
           too long: row deleted

`stored` says whether the content is still on disk (a declined or returned
file's goes at once: the sender has the original, and nobody else may read
it; the others' go when neither copy of the offer is kept, or after the
expiry time: `Modules/database/file_upkeep.py`). The offer reaches the
recipient as an ordinary message (kind "message", from the sender, both
copies kept, pushed live or at login by `storage.store_message`), and that
message is the handle to the file: the recipient may list, fetch and
decline it only while they keep their copy of it, the sender only while
they keep theirs. A decline or a return reaches the sender as a bounce
from `parley` with the reason.

Who calls it: `Modules/database/files.py` (the monitor's answers) and
`file_upkeep.py`, on the single writer (`job`) or a reader thread
(`query`); every function runs inside the caller's transaction, gets
validated, lower-cased names and the time as `now`, and returns plain
values.

How it fails: an outcome the sender must hear (no account, blocked, too
large, over the quota, no room on the server) is a word from
`begin_upload`, which `files.py` turns into one sentence; sqlite3 errors
propagate for the caller's savepoint to undo.
"""

import unicodedata
from typing import NamedTuple

from Modules.database import blocks, filestore, mailbox, storage

GIB = 1024 ** 3
SUBJECT_NAME_MAX = 150      # characters of the name shown in the offer's subject


class FileLimits(NamedTuple):
    """The operator's limits (`--file-max-bytes`, `--file-quota-bytes`,
    `--file-storage-bytes`)."""

    max_bytes: int = GIB          # the largest file
    quota_bytes: int = 5 * GIB    # what one user's sent files may hold, together
    storage_bytes: int = 50 * GIB  # what everyone's files may hold, together


LISTED = ("id", "sender", "recipient", "name", "size", "sha256", "note", "state",
          "created_at", "message_id")


def display_name(name, limit=SUBJECT_NAME_MAX):
    """The name as one harmless line for a subject or a log: control, format and
    line-break characters become '?', and a long name is cut."""
    shown = "".join("?" if unicodedata.category(ch)[0] in "CZ" and ch != " " else ch
                    for ch in name)
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


def _active(db, *names):
    marks = ", ".join("?" * len(names))
    return {row[0] for row in db.execute(
        f"SELECT username FROM users WHERE username IN ({marks}) AND state = 'active'", names)}


def stored_bytes(db, sender):
    """What `sender`'s files hold on disk (or are being uploaded), in bytes."""
    return db.execute("SELECT COALESCE(SUM(size), 0) FROM msg.files WHERE sender = ? "
                      "AND stored", (sender,)).fetchone()[0]


def begin_upload(db, storage_key, sender, recipient, name, size, sha256, note, now, limits,
                 room=None):
    """A new upload: ("ok", file id, file key); the same file to the same person
    already being uploaded: ("resume", its id, its key); or (why not, None,
    None) with why one of "no_account", "blocked", "too_large", "quota", or the
    word of `room(db, size, limits)` (the server's own room,
    `file_upkeep.room_refusal`)."""
    active = _active(db, sender, recipient)
    if sender not in active:
        raise storage.NoSuchAccount(f"there is no active account named '{sender}'")
    if recipient not in active:
        return "no_account", None, None
    if blocks.is_blocked(db, recipient, sender):
        return "blocked", None, None
    resumed = db.execute(
        "SELECT id, wrapped_key FROM msg.files WHERE sender = ? AND recipient = ? AND "
        "name = ? AND size = ? AND sha256 = ? AND state = 'uploading' ORDER BY id DESC "
        "LIMIT 1", (sender, recipient, name, size, sha256)).fetchone()
    if resumed is not None:
        db.execute("UPDATE msg.files SET note = ?, changed_at = ? WHERE id = ?",
                   (note, now, resumed[0]))
        return "resume", resumed[0], filestore.unwrap_key(storage_key, resumed[0], resumed[1])
    if size > limits.max_bytes:
        return "too_large", None, None
    if stored_bytes(db, sender) + size > limits.quota_bytes:
        return "quota", None, None
    full = room(db, size, limits) if room is not None else None
    if full:
        return full, None, None
    file_id = db.execute(
        "INSERT INTO msg.files (sender, recipient, name, size, sha256, note, wrapped_key, "
        "state, created_at) VALUES (?, ?, ?, ?, ?, ?, X'', 'uploading', ?)",
        (sender, recipient, name, size, sha256, note, now)).lastrowid
    key, wrapped = filestore.new_file_key(storage_key, file_id)
    db.execute("UPDATE msg.files SET wrapped_key = ? WHERE id = ?", (wrapped, file_id))
    return "ok", file_id, key


def offer_text(row):
    """(subject, body) of the message that offers a file to its recipient."""
    shown = display_name(row["name"])
    lines = [f"{row['sender']} sent you a file: {shown}",
             f"Size: {row['size']} bytes. SHA-256: {row['sha256']}"]
    if row["note"]:
        lines += ["", row["note"]]
    lines += ["", f"Download it with 'download {row['id']}', or send it back with "
                  f"'decline {row['id']}'."]
    return f"File: {shown}", "\n".join(lines)


def finish_upload(db, file_id, now, limits=mailbox.DEFAULT_LIMITS):
    """The whole file is durable and its hash checked: offer it. The result of
    `storage.store_message` (a full mailbox bounces it: the file is then not
    kept), with "file" set."""
    row = _one(db, "SELECT * FROM msg.files WHERE id = ? AND state = 'uploading'", (file_id,))
    if row is None:
        raise storage.StorageError(f"file {file_id} is not being uploaded")
    subject, body = offer_text(row)
    result = storage.store_message(db, row["sender"], row["recipient"], subject, body, None,
                                   now, limits)
    state, kept = ("declined", 0) if result["bounced"] else ("offered", 1)
    db.execute("UPDATE msg.files SET state = ?, stored = ?, message_id = ?, changed_at = ? "
               "WHERE id = ?", (state, kept, result["id"], now, file_id))
    return {**result, "file": file_id}


def abandon_upload(db, file_id):
    """An upload that will not finish (wrong hash, connection gone): no row left."""
    return db.execute("DELETE FROM msg.files WHERE id = ? AND state = 'uploading'",
                      (file_id,)).rowcount > 0


def uploading_ids(db):
    """The ids of the uploads not finished (their `.part` files are kept)."""
    return {row[0] for row in db.execute("SELECT id FROM msg.files WHERE state = 'uploading'")}


def stored_ids(db):
    """The ids of the files whose content must be on disk."""
    return {row[0] for row in db.execute("SELECT id FROM msg.files WHERE stored")}


def _one(db, sql, params):
    cursor = db.cursor()
    cursor.row_factory = _dict_row
    return cursor.execute(sql, params).fetchone()


def _dict_row(cursor, values):
    return {column[0]: value for column, value in zip(cursor.description, values)}


# The recipient's hold on a file, and the sender's: their copy of the offer.
_RECEIVED_HELD = ("(f.recipient = :me AND f.state IN ('offered', 'downloaded') AND EXISTS "
                  "(SELECT 1 FROM msg.messages AS m WHERE m.id = f.message_id "
                  "AND m.recipient = :me AND m.recipient_copy))")
_SENT_HELD = ("(f.sender = :me AND f.state != 'uploading' AND EXISTS "
              "(SELECT 1 FROM msg.messages AS m WHERE m.id = f.message_id "
              "AND m.sender = :me AND m.sender_copy))")


def list_files(db, username, limit=200):
    """The files offered to `username` (offered or downloaded) and those they sent,
    each while they keep their copy of the offer, newest first: dicts of LISTED,
    plus "direction" ("received" or "sent") and "stored"."""
    cursor = db.cursor()
    cursor.row_factory = _dict_row
    rows = cursor.execute(
        f"SELECT {', '.join('f.' + name for name in LISTED)}, f.stored FROM msg.files AS f "
        f"WHERE {_RECEIVED_HELD} OR {_SENT_HELD} ORDER BY f.id DESC LIMIT :limit",
        {"me": username, "limit": limit}).fetchall()
    for row in rows:
        row["direction"] = "received" if row["recipient"] == username else "sent"
        row["stored"] = bool(row["stored"])
    return rows


def file_for_download(db, username, file_id):
    """The row of a stored file `username` may download (its recipient, while it is
    offered or downloaded and they keep the offer; its sender, while they keep
    their copy of it), or None."""
    return _one(db, "SELECT f.id, f.sender, f.recipient, f.name, f.size, f.sha256, "
                    "f.wrapped_key, f.state FROM msg.files AS f WHERE f.id = :id "
                    f"AND f.stored AND ({_RECEIVED_HELD} OR {_SENT_HELD})",
                {"id": file_id, "me": username})


def mark_downloaded(db, username, file_id, now):
    """The recipient fetched the last chunk; whether the state changed."""
    return db.execute("UPDATE msg.files SET state = 'downloaded', changed_at = ? "
                      "WHERE id = ? AND recipient = ? AND state = 'offered'",
                      (now, file_id, username)).rowcount > 0


DELETED_BEFORE_DOWNLOAD = "The account '{name}' was deleted before the file '{file}' " \
    "was downloaded."


def decline_text(row, note, deleted=False, why=None):
    """(subject, body, bounce note) of the bounce that returns a declined file; with
    `deleted`, one whose recipient's account was deleted first, with `why` one
    returned for that reason (a sentence: `file_upkeep`'s expiry)."""
    shown = display_name(row["name"])
    if why is None and deleted:
        why = DELETED_BEFORE_DOWNLOAD.format(name=row["recipient"], file=shown)
    subject = f"Returned: {shown}" if why is not None else f"Declined: {shown}"
    why = why or f"{row['recipient']} declined the file '{shown}'."
    body = f"{why}\nSize: {row['size']} bytes. SHA-256: {row['sha256']}"
    return subject, body, why + (f" Their note: {note}" if note else "")


def return_undownloaded(db, username, now):
    """Account deletion: every file offered to `username` and never downloaded goes
    back to its sender as a bounce, like unread mail; ([(sender, bounce)], ids of
    the files whose content the caller removes from disk). Idempotent."""
    rows = db.execute("SELECT id FROM msg.files WHERE recipient = ? AND state = 'offered' "
                      "ORDER BY id", (username,)).fetchall()
    deliveries = []
    for (file_id,) in rows:
        deliveries += decline(db, username, file_id, None, now, deleted=True) or []
    return deliveries, [file_id for (file_id,) in rows]


def decline(db, username, file_id, note, now, deleted=False, why=None):
    """`username` returns a file offered to them (and whose offer they keep): the
    deliveries of the bounce to its sender, or None if they have no such file.
    With `deleted` (their account is being deleted) or `why` (the reason the
    server returns it) the state is "returned", else "declined". The content is
    no longer stored (the caller removes it from disk)."""
    returned = deleted or why is not None
    held = "" if returned else f" AND {_RECEIVED_HELD}"
    row = _one(db, "SELECT * FROM msg.files AS f WHERE f.id = :id AND f.recipient = :me "
                   f"AND f.state IN ('offered', 'downloaded'){held}",
               {"id": file_id, "me": username})
    if row is None:
        return None
    db.execute("UPDATE msg.files SET state = ?, stored = 0, changed_at = ? WHERE id = ?",
               ("returned" if returned else "declined", now, file_id))
    if row["sender"] not in _active(db, row["sender"]):
        return []
    subject, body, bounce_note = decline_text(row, note, deleted, why)
    bounce = storage.insert_message(db, storage.SYSTEM_SENDER, row["sender"], subject, body,
                                    now, kind="bounce", note=bounce_note,
                                    original_to=username)
    db.execute("UPDATE users SET undelivered = undelivered + 1, "
               "stored_messages = stored_messages + 1, stored_bytes = stored_bytes + ? "
               "WHERE username = ?", (mailbox.size_of(subject, body), row["sender"]))
    return [(row["sender"], bounce)]
