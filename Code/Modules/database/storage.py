"""Parley's storage: accounts, password hashes and messages in SQLite.

Talks to: one `sqlite3.Connection` from `open_databases()` (defined in
`Modules.database.schema`, re-exported here), whose main schema is
`users.db`, with `passwords.db` attached as `pw` and `messages.db` as
`msg`. Only the database process imports this, and runs it on its single
writer thread.

Every function here runs inside the caller's transaction: the caller says
BEGIN, runs several functions (each in its own SAVEPOINT) and COMMITs.
Nothing here begins, commits or rolls back, or reads the clock: times come
in as `now` (REAL seconds since the epoch). Usernames arrive validated and
lower-cased. Results are plain dicts, lists, ints and bools.

Counts are a cache: `users.undelivered` mirrors the messages with no
`delivered_at`. SQLite in WAL mode does not commit attached files
atomically, so after a crash one file may hold a transaction's changes and
another not. Start-up recovery therefore (1) finishes the deletion of every
account in `accounts_being_deleted()` by re-running the steps below, each
of which is idempotent, and (2) runs `reconcile_counts()`.

Account deletion, one committed transaction per step, in this order:
`mark_deleting`, `bounce_and_clear_inbox`, `remove_password`,
`remove_account`.

How it fails: `StorageError` (and its subclasses `AccountExists`,
`NoSuchAccount`) for requests that make no sense for the stored state;
sqlite3 errors propagate unchanged for the caller's savepoint to undo.
No message, log line or exception ever contains a password hash or a
message body.
"""

import json
from typing import NamedTuple

from Modules.database import at_rest, blocks, mailbox, reserved_names
from Modules.database.schema import (  # noqa: F401  (re-exported API)
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMAS,
    StorageError,
    check_writable,
    close_databases,
    open_databases,
    open_reader,
    schema_version,
)
from Modules.database.statistics import add_total, forget_user

SYSTEM_SENDER = "parley"
UNKNOWN_RECIPIENT_NOTE = "No user named '{name}' exists on this server."
DELETED_ACCOUNT_NOTE = "The account '{name}' was deleted before this message was read."
_NO_UPPER_BOUND = 2**63 - 1

_MESSAGE_COLUMNS = ("id, sender, recipient, sent_at, subject, body, kind, note, "
                    "original_to, delivered_at, read_at")
_STATISTICS = ("messages_sent", "messages_received", "logins", "failed_logins",
               "last_login", "last_failed_login")


class AccountExists(StorageError):
    """The username is taken (possibly by an account being deleted)."""


class NoSuchAccount(StorageError):
    """The operation needs an active account of that name and there is none."""


# -- small helpers -----------------------------------------------------------

def _rows(db, sql, params=()):
    cursor = db.cursor()
    cursor.row_factory = at_rest.row_type(db)
    return cursor.execute(sql, params).fetchall()


def _row(db, sql, params=()):
    rows = _rows(db, sql, params)
    return rows[0] if rows else None


def _id_list(ids):
    """Distinct ids in the order given, as ints."""
    return list(dict.fromkeys(int(message_id) for message_id in ids))


def _json_ids(ids):
    """Ids as a JSON array, for `id IN (SELECT value FROM json_each(?))`."""
    return json.dumps(ids)


def _message(row):
    """The message dict of a messages row (pushes and reads)."""
    message = {"id": row["id"], "from": row["sender"], "to": row["recipient"],
               "subject": row["subject"], "body": row["body"],
               "sent_at": row["sent_at"], "kind": row["kind"],
               "read": row["read_at"] is not None}
    if row["kind"] == "bounce":
        message["note"] = row["note"]
        message["original_to"] = row["original_to"]
    return message


def _inbox_entry(row):
    entry = {"id": row["id"], "from": row["sender"], "subject": row["subject"],
             "sent_at": row["sent_at"], "kind": row["kind"],
             "unread": row["read_at"] is None}
    if row["kind"] == "bounce":
        entry["note"] = row["note"]
    return entry


def _add_undelivered(db, username, delta):
    if delta:
        db.execute("UPDATE users SET undelivered = MAX(0, undelivered + ?) "
                   "WHERE username = ?", (delta, username))


def _state(db, username):
    row = _row(db, "SELECT state FROM users WHERE username = ?", (username,))
    return None if row is None else row["state"]


def _require_active(db, username):
    if _state(db, username) != "active":
        raise NoSuchAccount(f"there is no active account named '{username}'")


# -- accounts and passwords --------------------------------------------------

def account(db, username):
    """The account (active or being deleted) as a dict, or None."""
    row = _row(db, "SELECT * FROM users WHERE username = ?", (username,))
    if row is None:
        return None
    return {"id": row["id"], "username": row["username"], "state": row["state"],
            "created_at": row["created_at"], "undelivered": row["undelivered"],
            "suspended": row["suspended_at"] is not None,
            "must_change_password": bool(row["must_change_password"]),
            "statistics": {name: row[name] for name in _STATISTICS}}


def user_exists(db, username):
    """Whether an active account of that name exists."""
    return _state(db, username) == "active"


def password_hash(db, username):
    """The stored hash string of an active account, or None."""
    return credentials(db, username).hash


class Credentials(NamedTuple):
    """What a login needs to know of an account (all None/False: no account)."""

    hash: str | None = None
    account_id: int | None = None
    suspended: bool = False
    must_change: bool = False


def credentials(db, username):
    """The Credentials of an active account (empty ones if there is none)."""
    row = db.execute("SELECT p.hash, u.id, u.suspended_at IS NOT NULL, "
                     "u.must_change_password FROM pw.passwords AS p JOIN users AS u "
                     "ON u.username = p.username "
                     "WHERE p.username = ? AND u.state = 'active'", (username,)).fetchone()
    return Credentials() if row is None else Credentials(row[0], row[1], bool(row[2]),
                                                         bool(row[3]))


def set_password_hash(db, username, new_hash, now, must_change=None):
    """Store a new hash for an active account (NoSuchAccount otherwise); with
    `must_change` True or False, also whether it must be changed at the next login."""
    _require_active(db, username)
    _upsert_password(db, username, new_hash, now)
    if must_change is not None:
        db.execute("UPDATE users SET must_change_password = ? WHERE username = ?",
                   (int(must_change), username))


def _upsert_password(db, username, hash_string, now):
    db.execute("INSERT INTO pw.passwords (username, hash, updated_at) "
               "VALUES (?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
               "hash = excluded.hash, updated_at = excluded.updated_at",
               (username, hash_string, now))


def create_account(db, username, password_hash, now):
    """A new active account with its password hash; returns its id.

    AccountExists if the name is taken, even by an account being deleted;
    reserved_names.NameReserved while it is the name of an account deleted
    not long ago (issue 13). A stale password row left without an account is
    overwritten.
    """
    if username == SYSTEM_SENDER:
        raise AccountExists(f"the name '{username}' is reserved")
    if _state(db, username) is not None:
        raise AccountExists(f"an account named '{username}' already exists")
    reserved_names.check_free(db, username, now)
    cursor = db.execute("INSERT INTO users (username, created_at) VALUES (?, ?)",
                        (username, now))
    _upsert_password(db, username, password_hash, now)
    add_total(db, "accounts_created")
    return cursor.lastrowid


# -- sending -----------------------------------------------------------------

def store_message(db, sender, recipient, subject, body, client_id, now,
                  limits=mailbox.DEFAULT_LIMITS):
    """Store one message (the recipient's and the sender's copy), or a bounce to
    the sender if nobody can receive it: no such account, a recipient who
    blocked the sender, a mailbox over its `limits` (a `mailbox.Limits`).

    Idempotent on (sender, client_id): a repeat stores nothing and returns
    the first result with "duplicate": True and no deliveries. A client_id
    of None turns the de-duplication off. NoSuchAccount if the sender is
    not an active account.
    """
    active = _active_among(db, sender, recipient)
    if sender not in active:
        raise NoSuchAccount(f"there is no active account named '{sender}'")
    previous = _previous_send(db, sender, client_id)
    if previous is not None:
        return previous
    if recipient not in active:
        note = UNKNOWN_RECIPIENT_NOTE.format(name=recipient)
    else:
        note = blocks.refusal_note(db, sender, recipient) or mailbox.full_note(
            active[recipient], mailbox.size_of(subject, body), limits, recipient)
    if note is None:
        result = _deliver(db, sender, recipient, subject, body, now)
    else:
        result = _bounce_refused(db, sender, recipient, subject, body, now, note)
    if client_id is not None:
        execute_later(db, "INSERT INTO msg.sent_ids (sender, client_id, message_id, "
                      "recipient, bounced, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                      (sender, client_id, result["id"], recipient,
                       int(result["bounced"]), now))
    return result


def _active_among(db, *usernames):
    """{name: (stored messages, stored bytes)} of the active accounts among
    `usernames` (one query). On PostgreSQL their rows are locked too, in name
    order: every Send takes its two people's locks at once and in one order
    (fewer deadlocks between servers), and the recipient's before the id is
    taken (`insert_message`)."""
    marks = ", ".join("?" * len(usernames))
    lock = " ORDER BY username FOR UPDATE" if _shared(db) else ""
    return {row[0]: (row[1], row[2]) for row in db.execute(
        f"SELECT username, stored_messages, stored_bytes FROM users "
        f"WHERE username IN ({marks}) AND state = 'active'{lock}", usernames)}


def execute_later(db, sql, params=()):
    """A write whose result nobody reads: on PostgreSQL it goes with the next
    statement in one round trip (`PgConnection.defer`); on SQLite, now."""
    defer = getattr(db, "defer", None)
    if defer is None:
        db.execute(sql, params)
    else:
        defer(sql, params)


def _shared(db):
    """Several writers at once (PostgreSQL), not SQLite's one."""
    return getattr(db, "dialect", "sqlite") == "postgresql"


def _previous_send(db, sender, client_id):
    if client_id is None:
        return None
    row = db.execute("SELECT message_id, recipient, bounced FROM msg.sent_ids "
                     "WHERE sender = ? AND client_id = ?", (sender, client_id)).fetchone()
    if row is None:
        return None
    message_id, recipient, bounced = row
    result = {"id": message_id, "duplicate": True, "bounced": bool(bounced),
              "deliveries": []}
    if bounced:
        kept = db.execute("SELECT note FROM msg.messages WHERE id = ?",
                          (message_id,)).fetchone()
        result["note"] = kept[0] if kept and kept[0] else UNKNOWN_RECIPIENT_NOTE.format(
            name=recipient)
    return result


def insert_message(db, sender, recipient, subject, body, now, kind="message",
                    note=None, original_to=None, sender_copy=False, locked=False):
    """Insert a row (the recipient's copy, and the sender's if `sender_copy`);
    returns its message dict. The caller counts it in the recipient's mailbox
    (`locked`: the caller holds the recipient's row lock already)."""
    values = {"sender": sender, "recipient": recipient, "sent_at": now,
              "subject": subject, "body": body, "kind": kind, "note": note,
              "original_to": original_to, "sender_copy": int(sender_copy)}
    if _shared(db) and not locked:
        # Several servers write at once: the recipient's row is locked before the id
        # is taken, so one person's messages get their ids in commit order, and a
        # session pushed id N was pushed everything before it (connection.push_unseen).
        # (SQLite has one writer: ids are in commit order already.)
        db.execute("SELECT 1 FROM users WHERE username = ? FOR UPDATE", (recipient,))
    cursor = db.execute(
        "INSERT INTO msg.messages (sender, recipient, sent_at, subject, body, "
        "kind, note, original_to, sender_copy) VALUES (:sender, :recipient, :sent_at, "
        ":subject, :body, :kind, :note, :original_to, :sender_copy)", values)
    return _message({**values, "id": cursor.lastrowid, "read_at": None})


def _deliver(db, sender, recipient, subject, body, now):
    message = insert_message(db, sender, recipient, subject, body, now, sender_copy=True,
                             locked=True)        # by _active_among
    to_me, from_me = "CASE WHEN username = :to THEN 1 ELSE 0 END", \
        "CASE WHEN username = :from THEN 1 ELSE 0 END"      # (both databases' SQL)
    execute_later(db, f"UPDATE users SET undelivered = undelivered + {to_me}, "
                  f"messages_received = messages_received + {to_me}, "
                  f"stored_messages = stored_messages + {to_me}, "
                  f"stored_bytes = stored_bytes + {to_me} * :size, "
                  f"messages_sent = messages_sent + {from_me} "
                  "WHERE username IN (:to, :from)",
                  {"to": recipient, "from": sender, "size": mailbox.size_of(subject, body)})
    add_total(db, "messages_accepted")
    return {"id": message["id"], "duplicate": False, "bounced": False,
            "deliveries": [(recipient, message)]}


def _bounce_refused(db, sender, recipient, subject, body, now, note):
    bounce = _insert_bounce(db, sender, subject, body, now, note, recipient)
    _count_bounced(db, [sender])
    return {"id": bounce["id"], "duplicate": False, "bounced": True,
            "note": note, "deliveries": [(sender, bounce)]}


def _count_bounced(db, senders):
    """The senders' messages came back: their statistics and the server's."""
    for sender in senders:
        db.execute("UPDATE users SET messages_bounced = messages_bounced + 1 "
                   "WHERE username = ?", (sender,))
    add_total(db, "messages_bounced", len(senders))


def _insert_bounce(db, to, subject, body, now, note, original_to):
    bounce = insert_message(db, SYSTEM_SENDER, to, subject, body, now,
                             kind="bounce", note=note, original_to=original_to)
    db.execute("UPDATE users SET undelivered = undelivered + 1, "
               "stored_messages = stored_messages + 1, stored_bytes = stored_bytes + ? "
               "WHERE username = ?", (mailbox.size_of(subject, body), to))
    return bounce


# -- receiving and reading ---------------------------------------------------

_EVERY_ROW = 2 ** 62         # "no limit" that both databases take (PostgreSQL refuses -1)

def undelivered_up_to(db, username, last_id, most):
    """The newest `most` undelivered messages to `username` with ids up to
    `last_id`, oldest first (several servers: `mail_signals.delivering`)."""
    rows = _rows(db, f"SELECT {_MESSAGE_COLUMNS} FROM msg.messages "
                     "WHERE recipient = ? AND delivered_at IS NULL AND id <= ? "
                     "AND recipient_copy ORDER BY id DESC LIMIT ?",
                 (username, last_id, most))
    return [_message(row) for row in reversed(rows)]


def undelivered(db, username, after_id=0, limit=None):
    """Messages to `username` not yet delivered, oldest (lowest id) first."""
    rows = _rows(db, f"SELECT {_MESSAGE_COLUMNS} FROM msg.messages "
                     "WHERE recipient = ? AND delivered_at IS NULL AND id > ? "
                     "AND recipient_copy ORDER BY id LIMIT ?",
                 (username, after_id, _EVERY_ROW if limit is None else limit))
    return [_message(row) for row in rows]


def mark_delivered(db, username, ids, now, read=()):
    """Mark those of `ids` that are `username`'s and undelivered; count them.
    Those of `read` (the client showed their whole text) are read as well."""
    changed = db.execute(
        "UPDATE msg.messages SET delivered_at = ? WHERE recipient = ? "
        "AND delivered_at IS NULL AND id IN (SELECT value FROM json_each(?))",
        (now, username, _json_ids(_id_list(ids)))).rowcount
    _add_undelivered(db, username, -changed)
    add_total(db, "messages_delivered", changed)
    if read:
        db.execute("UPDATE msg.messages SET read_at = ? WHERE recipient = ? "
                   "AND read_at IS NULL AND delivered_at IS NOT NULL "
                   "AND id IN (SELECT value FROM json_each(?))",
                   (now, username, _json_ids(_id_list(read))))
    return changed


def inbox(db, username, before_id=None, limit=50, unread_only=False):
    """A page of `username`'s messages (only the unread ones if `unread_only`),
    newest first, and whether more exist."""
    upper = _NO_UPPER_BOUND if before_id is None else before_id
    unread = "AND read_at IS NULL " if unread_only else ""
    rows = _rows(db, "SELECT id, sender, subject, sent_at, kind, note, read_at "
                     "FROM msg.messages WHERE recipient = ? AND id < ? AND recipient_copy "
                     f"{unread}ORDER BY id DESC LIMIT ?", (username, upper, limit + 1))
    return [_inbox_entry(row) for row in rows[:limit]], len(rows) > limit


def read_message(db, username, message_id, now):
    """One of `username`'s messages, received (now marked read and delivered) or
    sent (its sender's copy, unchanged); or None."""
    row = _row(db, f"SELECT {_MESSAGE_COLUMNS}, recipient_copy FROM msg.messages "
                   "WHERE id = :id AND ((recipient = :me AND recipient_copy) "
                   "OR (sender = :me AND sender_copy))",
               {"id": message_id, "me": username})
    if row is None:
        return None
    if row["recipient"] != username or not row["recipient_copy"]:
        return {**_message(row), **mailbox.sent_state(row)}
    if row["delivered_at"] is None:
        db.execute("UPDATE msg.messages SET delivered_at = ? WHERE id = ?",
                   (now, message_id))
        _add_undelivered(db, username, -1)
        add_total(db, "messages_delivered")
    if row["read_at"] is None:
        db.execute("UPDATE msg.messages SET read_at = ? WHERE id = ?",
                   (now, message_id))
    return {**_message(row), "read": True}


def delete_messages(db, username, ids):
    """Delete `username`'s copies among `ids` (received or sent; the other
    person's copy stays): (deleted_ids, missing_ids)."""
    wanted = _id_list(ids)
    found = mailbox.drop_copies(db, username, _json_ids(wanted))
    return ([i for i in wanted if i in found],
            [i for i in wanted if i not in found])


def unread_count(db, username):
    """How many of `username`'s messages have not been read."""
    return db.execute("SELECT COUNT(*) FROM msg.messages WHERE recipient = ? "
                      "AND read_at IS NULL AND recipient_copy", (username,)).fetchone()[0]


# -- account deletion (one committed step each, all idempotent) --------------

def mark_deleting(db, username):
    """Step 1: the account stops being active; False if there is none."""
    return db.execute("UPDATE users SET state = 'deleting' WHERE username = ?",
                      (username,)).rowcount > 0


def bounce_and_clear_inbox(db, username, now):
    """Step 2: return unread messages to their senders, then empty the inbox.

    Every unread message of kind 'message' addressed to `username` goes
    back as a bounce to its sender if the sender is an active account
    (otherwise it is dropped); bounces are never bounced. Then the account's
    copies go: every message to `username` and its own sent copies (the
    other person's copy of each stays), its sent_ids rows, its blocks; its
    undelivered and mailbox counts are set to 0. Returns [(recipient,
    bounce_dict)] to push.
    StorageError if the account is still active.
    """
    if _state(db, username) == "active":
        raise StorageError(f"the account '{username}' is active; mark it as "
                           f"deleting before clearing its inbox")
    note = DELETED_ACCOUNT_NOTE.format(name=username)
    deliveries = [(row["sender"], _insert_bounce(db, row["sender"], row["subject"],
                                                 row["body"], now, note, username))
                  for row in _unread_from_active_senders(db, username)]
    _count_bounced(db, [sender for sender, _ in deliveries])
    mailbox.drop_all_copies(db, username)
    db.execute("DELETE FROM msg.sent_ids WHERE sender = ?", (username,))
    db.execute("UPDATE users SET undelivered = 0, stored_messages = 0, stored_bytes = 0 "
               "WHERE username = ?", (username,))
    return deliveries


def _unread_from_active_senders(db, username):
    return _rows(db, "SELECT m.id, m.sender, m.subject, m.body FROM msg.messages AS m "
                     "JOIN users AS u ON u.username = m.sender AND u.state = 'active' "
                     "WHERE m.recipient = ? AND m.read_at IS NULL AND m.recipient_copy "
                     "AND m.kind = 'message' ORDER BY m.id", (username,))


def remove_password(db, username):
    """Step 3: forget the password hash; StorageError if still active."""
    if _state(db, username) == "active":
        raise StorageError(f"the account '{username}' is active; refusing to "
                           f"remove its password")
    return db.execute("DELETE FROM pw.passwords WHERE username = ?",
                      (username,)).rowcount > 0


def remove_account(db, username, now=None):
    """Step 4: delete the account row (and its ledger and blocks) if it is being
    deleted, and keep its name back from `now` on (issue 13: a new account of
    that name must not pass for this one; in the same transaction, so a crash
    keeps both or neither). An account that never logged in and never had mail
    (a creation cut off by a crash) leaves its name free. `now` None: no
    reservation (only for callers that have no clock, never the monitor)."""
    row = db.execute("SELECT logins + messages_sent + messages_received FROM users "
                     "WHERE username = ? AND state = 'deleting'", (username,)).fetchone()
    if row is None:
        return False
    db.execute("DELETE FROM users WHERE username = ?", (username,))
    forget_user(db, username)
    blocks.forget_account(db, username)
    if row[0] and now is not None:
        reserved_names.reserve(db, username, now)
    add_total(db, "accounts_deleted")
    return True


def accounts_being_deleted(db):
    """Names of accounts whose deletion has begun but not finished."""
    return [row["username"] for row in
            _rows(db, "SELECT username FROM users WHERE state = 'deleting' "
                      "ORDER BY username")]


# -- maintenance -------------------------------------------------------------

_ACTUAL_UNDELIVERED = ("(SELECT COUNT(*) FROM msg.messages AS m "
                       "WHERE m.recipient = users.username AND m.delivered_at IS NULL "
                       "AND m.recipient_copy)")


def reconcile_counts(db):
    """Recompute every undelivered count and mailbox size from the messages;
    rows corrected."""
    return db.execute(f"UPDATE users SET undelivered = {_ACTUAL_UNDELIVERED} "
                      f"WHERE undelivered != {_ACTUAL_UNDELIVERED}").rowcount + \
        mailbox.reconcile_sizes(db)


def repair_torn_writes(db):
    """Undo what a commit torn across the files left; {what: how many or which}.

    SQLite in WAL mode commits attached files one after another, so a crash
    or a COMMIT failing on a later file can keep part of a transaction: an
    account row without its password (a creation never acknowledged: it is
    marked for deletion, so anything sent to it meanwhile goes back to its
    senders), a password without an account (removed), or counts that no
    longer match the messages (recomputed).
    """
    torn = [row["username"] for row in _rows(
        db, "SELECT username FROM users AS u WHERE state = 'active' AND NOT EXISTS "
            "(SELECT 1 FROM pw.passwords WHERE username = u.username) ORDER BY username")]
    db.executemany("UPDATE users SET state = 'deleting' WHERE username = ?",
                   [(name,) for name in torn])
    orphans = db.execute("DELETE FROM pw.passwords WHERE NOT EXISTS (SELECT 1 FROM users "
                         "WHERE users.username = pw.passwords.username)").rowcount
    return {"torn_accounts": torn, "orphan_passwords": orphans,
            "counts_fixed": reconcile_counts(db)}


def prune_sent_ids(db, older_than):
    """Forget de-duplication records created before `older_than`; count them."""
    return db.execute("DELETE FROM msg.sent_ids WHERE created_at < ?",
                      (older_than,)).rowcount


def check_consistency(db):
    """Human-readable problems across the three files; [] when all is well."""
    return (_count_problems(db) + _orphan_message_problems(db)
            + _password_problems(db))


def _count_problems(db):
    rows = _rows(db, f"SELECT username, undelivered, {_ACTUAL_UNDELIVERED} AS actual "
                     "FROM users ORDER BY username")
    return [f"account '{row['username']}' has an undelivered count of "
            f"{row['undelivered']} but {row['actual']} undelivered messages"
            for row in rows if row["undelivered"] != row["actual"]]


def _orphan_message_problems(db):
    rows = _rows(db, "SELECT recipient, COUNT(*) AS total, SUM(CASE WHEN delivered_at "
                     "IS NULL THEN 1 ELSE 0 END) AS waiting FROM msg.messages AS m "
                     "WHERE recipient_copy AND NOT EXISTS "
                     "(SELECT 1 FROM users WHERE username = m.recipient) "
                     "GROUP BY recipient ORDER BY recipient")
    return [f"{row['total']} messages ({row['waiting']} undelivered) are "
            f"addressed to '{row['recipient']}', who has no account"
            for row in rows]


def _password_problems(db):
    orphans = _rows(db, "SELECT username FROM pw.passwords AS p WHERE NOT EXISTS "
                        "(SELECT 1 FROM users WHERE username = p.username) "
                        "ORDER BY username")
    missing = _rows(db, "SELECT username FROM users AS u WHERE state = 'active' "
                        "AND NOT EXISTS (SELECT 1 FROM pw.passwords "
                        "WHERE username = u.username) ORDER BY username")
    return ([f"a password is stored for '{row['username']}', who has no account"
             for row in orphans]
            + [f"the active account '{row['username']}' has no password"
               for row in missing])
