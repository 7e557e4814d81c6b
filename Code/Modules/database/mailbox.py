"""A person's own mail beyond the inbox: sent copies, conversations, search, limits.

One row of `msg.messages` holds both copies of a message: the recipient's
(`recipient_copy`) and the sender's (`sender_copy`, kept for messages a
person sent; bounces and broadcasts have none). Each person deletes only
their own copy; the row goes when neither is left. So deleting a message
from the inbox leaves the sender's copy, and the other way round, and the
sender's copy keeps saying whether the message was delivered and read.

Here: the sender's view (`sent`, with the state of a file a message
offers), the conversation with one person
(`history`), full-text search over one's own copies (`search`, SQLite's
FTS5 table `msg.messages_text`, filled in batches by `index_pending` and
kept on deletion by a trigger of schema version 3),
the dropping of copies (delete, account deletion), and the mailbox limits
(a cap on the messages and bytes an inbox stores, counted in
`users.stored_messages` / `stored_bytes` when a copy is stored or dropped,
and recomputed at start-up by `reconcile_sizes`).

Every query is keyed by the asking account's name, which the caller takes
from the monitor's own record of the connection: nothing here can reach
another person's copies.

Talks to: the storage connection, inside the caller's transaction (like
`Modules.database.storage`). How it fails: sqlite3 errors propagate; a
search text with nothing to look for raises `EmptySearch`.
"""

import re
from typing import NamedTuple

from Modules.database import at_rest
from Modules.operations import MAILBOX_DEFAULTS

_NO_UPPER_BOUND = 2**63 - 1
PREVIEW_CHARS = 200          # the start of a body a conversation or search lists
MAILBOX_FULL_NOTE = ("The mailbox of '{name}' is full ({what}); the message was not "
                     "delivered.")


class Limits(NamedTuple):
    """How much one inbox may store (the operator's settings)."""

    messages: int = MAILBOX_DEFAULTS["mailbox_messages"]
    bytes: int = MAILBOX_DEFAULTS["mailbox_bytes"]


DEFAULT_LIMITS = Limits()
SETTING_NAMES = {"mailbox_messages": "messages", "mailbox_bytes": "bytes"}


class EmptySearch(ValueError):
    """The search text holds no word to look for."""


def limits_from(settings):
    """The Limits the operator's settings say (defaults for those not set).

    Asked for every Send: the answer is kept per pair of raw setting values
    (a namedtuple's _replace was a tenth of the database thread's relay CPU)."""
    key = tuple(map(settings.get, SETTING_NAMES))
    limits = _LIMITS_SEEN.get(key)
    if limits is None:
        values = {field: int(settings[name]) for name, field in SETTING_NAMES.items()
                  if str(settings.get(name, "")).isdigit()}
        limits = DEFAULT_LIMITS._replace(**values)
        if len(_LIMITS_SEEN) >= 16:   # the operator changed them many times
            _LIMITS_SEEN.clear()
        _LIMITS_SEEN[key] = limits
    return limits


_LIMITS_SEEN = {}   # (raw mailbox_messages, raw mailbox_bytes) -> Limits


def size_of(subject, body):
    """The bytes a message counts for in a mailbox (its subject and body, UTF-8)."""
    return len(subject.encode("utf-8", "surrogatepass")) + len(
        body.encode("utf-8", "surrogatepass"))


def full_note(stored, size, limits, name):
    """The bounce's note if a message of `size` bytes does not fit the mailbox
    holding `stored` (messages, bytes), else None."""
    messages, used = stored
    if messages + 1 > limits.messages:
        return MAILBOX_FULL_NOTE.format(name=name, what=f"{limits.messages} messages")
    if used + size > limits.bytes:
        return MAILBOX_FULL_NOTE.format(name=name, what=_bytes_text(limits.bytes))
    return None


def _bytes_text(count):
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


def _rows(db, sql, params):
    cursor = db.cursor()
    cursor.row_factory = at_rest.row_type(db)
    return cursor.execute(sql, params).fetchall()


# -- the sender's copy -------------------------------------------------------

def sent_state(row):
    """What the sender's copy says of the recipient's: delivered, read."""
    return {"delivered": row["delivered_at"] is not None, "read": row["read_at"] is not None}


def _sent_entry(row):
    entry = {"id": row["id"], "to": row["recipient"], "subject": row["subject"],
             "sent_at": row["sent_at"], **sent_state(row)}
    if row["file_id"] is not None:
        entry["file"] = {"id": row["file_id"], "state": row["file_state"]}
    return entry


def sent(db, username, before_id=None, limit=50):
    """A page of the messages `username` sent (its copies), newest first, and
    whether more exist. A message that offers a file (issue 14) says which, and
    the file's state: offered, downloaded, declined, returned or deleted."""
    upper = _NO_UPPER_BOUND if before_id is None else before_id
    rows = _rows(db, "SELECT m.id, m.recipient, m.subject, m.sent_at, m.delivered_at, "
                     "m.read_at, f.id AS file_id, f.state AS file_state "
                     "FROM msg.messages AS m LEFT JOIN msg.files AS f "
                     "ON f.message_id = m.id AND f.sender = m.sender "
                     "WHERE m.sender = ? AND m.sender_copy AND m.id < ? "
                     "ORDER BY m.id DESC LIMIT ?", (username, upper, limit + 1))
    return [_sent_entry(row) for row in rows[:limit]], len(rows) > limit


# -- conversations and search ------------------------------------------------

_MINE = ("((m.recipient = :me AND m.recipient_copy) OR (m.sender = :me AND m.sender_copy))")
_ENTRY_COLUMNS = ("m.id, m.sender, m.recipient, m.subject, m.sent_at, m.kind, m.note, "
                  "m.delivered_at, m.read_at, substr(m.body, 1, :preview) AS preview, "
                  "length(m.body) > :preview AS cut")


def _entry(row, me):
    """A conversation or search entry: who, what, when, the body's start, the state."""
    entry = {"id": row["id"], "from": row["sender"], "to": row["recipient"],
             "subject": row["subject"], "sent_at": row["sent_at"], "kind": row["kind"],
             "preview": row["preview"], "cut": bool(row["cut"])}
    if row["recipient"] == me:
        entry["unread"] = row["read_at"] is None
    if row["sender"] == me:
        entry.update(sent_state(row))
    if row["kind"] == "bounce":
        entry["note"] = row["note"]
    return entry


def history(db, username, other, before_id=None, limit=50):
    """A page of the conversation of `username` with `other` (both directions,
    `username`'s own copies), newest first, and whether more exist.

    Only what was exchanged with the account now named `other` counts: a
    message from before that account was created belongs to an earlier
    account of that name (see docs/DESIGN.md, names of deleted accounts).
    """
    upper = _NO_UPPER_BOUND if before_id is None else before_id
    params = {"me": username, "them": other, "upper": upper, "n": limit + 1,
              "preview": PREVIEW_CHARS}
    rows = _rows(db, f"SELECT {_ENTRY_COLUMNS} FROM msg.messages AS m "
                     "WHERE ((m.sender = :me AND m.recipient = :them AND m.sender_copy) "
                     "OR (m.sender = :them AND m.recipient = :me AND m.recipient_copy)) "
                     "AND m.id < :upper AND m.sent_at >= coalesce((SELECT created_at "
                     "FROM users WHERE username = :them AND state = 'active'), 0) "
                     "ORDER BY m.id DESC LIMIT :n", params)
    return [_entry(row, username) for row in rows[:limit]], len(rows) > limit


_WORD = re.compile(r"[^\W_]+")


def match_expression(text):
    """The FTS5 query for a person's search text: every word must occur. Words
    are runs of letters and digits, as the index's tokenizer splits them, each
    quoted, so no character of the text is FTS5 syntax (and with the index's
    detail=none, every quoted string is one token). EmptySearch if none."""
    words = _WORD.findall(text)
    if not words:
        raise EmptySearch("Give at least one word to search for.")
    return " ".join(f'"{word}"' for word in dict.fromkeys(words))


def index_pending(db):
    """Bring the text index up to date: the messages stored since the last call
    go into it in one batch (one FTS5 segment, not one per commit). How many.
    PostgreSQL's index (`backends/pg_schema.py`) is always up to date: none."""
    if getattr(db, "dialect", "sqlite") == "postgresql":
        return 0
    through = db.execute("SELECT indexed_through FROM msg.text_index_state").fetchone()[0]
    newest = db.execute("SELECT coalesce(max(id), 0) FROM msg.messages").fetchone()[0]
    if newest <= through:
        return 0
    added = db.execute("INSERT INTO msg.messages_text (rowid, subject, body) "
                       "SELECT id, subject, body FROM msg.messages WHERE id > ? AND id <= ? "
                       "ORDER BY id", (through, newest)).rowcount
    db.execute("UPDATE msg.text_index_state SET indexed_through = ?", (newest,))
    return added


def search(db, username, text, before_id=None, limit=50):
    """A page of `username`'s own messages (received and sent) whose subject or
    body holds every word of `text`, newest first, and whether more exist.
    Only what `index_pending` has indexed is found: the caller runs it first."""
    upper = _NO_UPPER_BOUND if before_id is None else before_id
    params = {"me": username, "query": match_expression(text), "upper": upper,
              "n": limit + 1, "preview": PREVIEW_CHARS}
    rows = _rows(db, f"SELECT {_ENTRY_COLUMNS} FROM msg.messages AS m WHERE "
                     f"{_text_match(db)} AND {_MINE} AND m.id < :upper "
                     "ORDER BY m.id DESC LIMIT :n", params)
    return [_entry(row, username) for row in rows[:limit]], len(rows) > limit


def _text_match(db):
    """Which messages hold every word of :query: FTS5 on SQLite; on PostgreSQL the
    expression index of `pg_schema.py` (the quoted words are plain words to
    plainto_tsquery, which wants every one of them)."""
    if getattr(db, "dialect", "sqlite") == "postgresql":
        return "msg.text_words(m.subject, m.body) @@ msg.query_words(:query)"
    return "m.id IN (SELECT rowid FROM msg.messages_text WHERE messages_text MATCH :query)"


# -- dropping copies -----------------------------------------------------------

def drop_copies(db, username, ids_json):
    """Drop `username`'s copies (received and sent) among the ids (a JSON array);
    rows without copies go. The set of ids that had one."""
    received = _rows(db, "SELECT id, delivered_at, length(CAST(subject AS BLOB)) + "
                         "length(CAST(body AS BLOB)) AS size FROM msg.messages "
                         "WHERE recipient = ? AND recipient_copy "
                         "AND id IN (SELECT value FROM json_each(?))", (username, ids_json))
    sent_ids = [row[0] for row in db.execute(
        "SELECT id FROM msg.messages WHERE sender = ? AND sender_copy "
        "AND id IN (SELECT value FROM json_each(?))", (username, ids_json))]
    db.execute("UPDATE msg.messages SET recipient_copy = 0 WHERE recipient = ? "
               "AND id IN (SELECT value FROM json_each(?))", (username, ids_json))
    db.execute("UPDATE msg.messages SET sender_copy = 0 WHERE sender = ? "
               "AND id IN (SELECT value FROM json_each(?))", (username, ids_json))
    db.execute("DELETE FROM msg.messages WHERE NOT recipient_copy AND NOT sender_copy "
               "AND id IN (SELECT value FROM json_each(?))", (ids_json,))
    if received:
        db.execute("UPDATE users SET undelivered = MAX(0, undelivered - ?), "
                   "stored_messages = MAX(0, stored_messages - ?), "
                   "stored_bytes = MAX(0, stored_bytes - ?) WHERE username = ?",
                   (sum(row["delivered_at"] is None for row in received), len(received),
                    sum(row["size"] for row in received), username))
    return {row["id"] for row in received} | set(sent_ids)


def drop_all_copies(db, username):
    """Account deletion: every copy `username` holds goes (the caller zeroes its
    counts); the other people's copies stay."""
    db.execute("UPDATE msg.messages SET recipient_copy = 0 WHERE recipient = ?", (username,))
    db.execute("UPDATE msg.messages SET sender_copy = 0 WHERE sender = ?", (username,))
    db.execute("DELETE FROM msg.messages WHERE (recipient = :me OR sender = :me) "
               "AND NOT recipient_copy AND NOT sender_copy", {"me": username})


_ACTUAL_SIZES = ("(SELECT COUNT(*), coalesce(SUM(length(CAST(subject AS BLOB)) + "
                 "length(CAST(body AS BLOB))), 0) FROM msg.messages AS m "
                 "WHERE m.recipient = users.username AND m.recipient_copy)")


def reconcile_sizes(db):
    """Recompute every mailbox's stored messages and bytes; rows corrected."""
    return db.execute(f"UPDATE users SET (stored_messages, stored_bytes) = {_ACTUAL_SIZES} "
                      f"WHERE (stored_messages, stored_bytes) != {_ACTUAL_SIZES}").rowcount
