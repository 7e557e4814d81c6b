"""What only the operator changes in storage: settings, suspension, broadcasts.

Functions in the style of `storage`: each runs inside the caller's
transaction on the one connection it is given (the writer's), takes the
time as `now`, and returns plain values.

* settings (`settings` table in `users.db`): the greeting shown before the
  username prompt and the message of the day shown after login; an empty
  value clears one;
* suspension (`users.suspended_at`): a suspended account cannot log in and
  its sessions are ended by the monitor; mail to it is still accepted and
  kept for when it is unsuspended (the sender is not told: suspension is
  the operator's business, not the correspondents');
* broadcasts: one stored message of kind `broadcast` from the reserved
  sender to every active account, counted in each recipient's
  `broadcasts_received` and the server's `broadcasts` total.

Talks to: SQLite through the given connection. How it fails: sqlite3
errors propagate for the caller's savepoint to undo; an account that does
not exist is reported by a False/None result, never an exception.
"""

from Modules.database.statistics import add_total
from Modules.database.storage import SYSTEM_SENDER, insert_message

BROADCAST_SUBJECT_MAX = 80


def settings(db):
    """{name: value} of every setting that has a value."""
    return dict(db.execute("SELECT name, value FROM settings WHERE value != ''").fetchall())


def set_setting(db, name, value, now, changed_by):
    """Set (or, with '', clear) one setting."""
    db.execute("INSERT INTO settings (name, value, changed_at, changed_by) "
               "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
               "changed_at = excluded.changed_at, changed_by = excluded.changed_by",
               (name, value, now, changed_by))


def set_suspended(db, username, suspended, now):
    """Suspend or unsuspend an active account: True if that changed anything,
    False if it already was so, None if there is no such account."""
    row = db.execute("SELECT suspended_at FROM users WHERE username = ? AND state = 'active'",
                     (username,)).fetchone()
    if row is None:
        return None
    if (row[0] is not None) == suspended:
        return False
    db.execute("UPDATE users SET suspended_at = ? WHERE username = ?",
               (now if suspended else None, username))
    return True


def broadcast_subject(text):
    """The subject of a broadcast: its first line, shortened."""
    first = text.strip().splitlines()[0] if text.strip() else "Broadcast"
    return first if len(first) <= BROADCAST_SUBJECT_MAX else \
        first[:BROADCAST_SUBJECT_MAX - 1] + "…"


def store_broadcast(db, text, now):
    """One broadcast message to every active account; [(recipient, message)] to push."""
    subject = broadcast_subject(text)
    recipients = [row[0] for row in db.execute(
        "SELECT username FROM users WHERE state = 'active' ORDER BY id")]
    deliveries = []
    for recipient in recipients:
        message = insert_message(db, SYSTEM_SENDER, recipient, subject, text, now,
                                  kind="broadcast")
        deliveries.append((recipient, message))
    db.execute("UPDATE users SET undelivered = undelivered + 1, "
               "stored_messages = stored_messages + 1, stored_bytes = stored_bytes + ?, "
               "broadcasts_received = broadcasts_received + 1 WHERE state = 'active'",
               (len(subject.encode()) + len(text.encode()),))
    add_total(db, "broadcasts")
    return deliveries
