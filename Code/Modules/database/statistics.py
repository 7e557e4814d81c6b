"""The operator's figures: per-user statistics, server totals and the IP ledger.

Kept durably in `users.db` (schema version 2), in the same transactions as
what they count, so a figure never runs ahead of or behind the data:

* per user (columns of `users`): logons, logoffs (every end of a session:
  logout, disconnect, kick, server shutdown), messages sent / received /
  bounced, broadcasts received, last login (time and address), failed
  logins and the last failed one (time and address);
* server totals (`totals`, one row per name in `TOTALS`): the same summed
  over every account that ever was, so deleting an account does not make
  the server's history shrink;
* the IP ledger (`ledger`): per user and address, login attempts, the
  successes among them, first and last seen. Bounded: at most
  `LedgerLimits.addresses` addresses per user (the least recently seen go
  first) and none older than `LedgerLimits.days` (pruned at start and
  every hour).

Live figures (sessions now, addresses active now) are not stored: the
monitor knows them from its connections.

Talks to: the one SQLite connection it is given (the writer's, or a
reader's for the read-only functions), like `storage`. How it fails:
sqlite3 errors propagate for the caller's savepoint to undo; a statistic
of an account that does not exist is simply not counted (False/None).
"""

import fnmatch
from typing import NamedTuple

TOTALS = ("logins", "failed_logins", "logoffs", "accounts_created", "accounts_deleted",
          "messages_accepted", "messages_delivered", "messages_bounced", "broadcasts")
USER_FIGURES = ("logins", "logoffs", "messages_sent", "messages_received",
                "messages_bounced", "broadcasts_received", "failed_logins",
                "last_login", "last_login_address", "last_failed_login",
                "last_failed_address")
USERS_PAGE_MAX = 10_000


class LedgerLimits(NamedTuple):
    """How much of the IP ledger is kept (settable: --ledger-addresses, --ledger-days)."""

    addresses: int = 50
    days: float = 90.0


def add_total(db, name, count=1):
    """Add `count` to one server total (at the end of the writer's batch when the
    connection defers them: `DeferredTotals`)."""
    if not count:
        return
    deferred = getattr(db, "deferred", None)
    if deferred is not None:
        deferred.add(name, count)
        return
    _write_total(db, name, count)


def _write_total(db, name, count):
    db.execute("INSERT INTO totals (name, value) VALUES (?, ?) ON CONFLICT (name) "
               "DO UPDATE SET value = totals.value + excluded.value", (name, count))


class DeferredTotals:
    """The totals a writer's batch adds, summed, written just before its COMMIT.

    Every batch touches these few rows: several servers' writers on one
    PostgreSQL would each hold them from a batch's first message to its
    commit, and wait for one another while holding people's rows, which
    deadlocks. Written last (in name order), they are held only for the
    commit, and a writer holding them waits for nothing. On SQLite too they
    cost one statement per batch, not one per job. The writer undoes a
    job's additions when the job is rolled back (`mark`/`restore`) and drops
    them all when the batch is (`clear`)."""

    def __init__(self):
        self.pending = {}

    def add(self, name, count):
        self.pending[name] = self.pending.get(name, 0) + count

    def mark(self):
        return dict(self.pending)

    def restore(self, mark):
        self.pending = mark

    def clear(self):
        self.pending = {}

    def flush(self, db):
        pending, self.pending = self.pending, {}
        for name in sorted(pending):
            if pending[name]:
                _write_total(db, name, pending[name])


def record_login(db, username, address, now, success, limits=LedgerLimits()):
    """Count a login attempt of an existing account (user, ledger, totals);
    False if there is no such account (nothing is counted for unknown names)."""
    if success:
        sql = ("UPDATE users SET logins = logins + 1, last_login = ?, "
               "last_login_address = ? WHERE username = ?")
    else:
        sql = ("UPDATE users SET failed_logins = failed_logins + 1, "
               "last_failed_login = ?, last_failed_address = ? WHERE username = ?")
    if db.execute(sql, (now, address, username)).rowcount == 0:
        return False
    add_total(db, "logins" if success else "failed_logins")
    _note_address(db, username, address, now, success, limits.addresses)
    return True


def _note_address(db, username, address, now, success, most):
    db.execute("INSERT INTO ledger (username, address, attempts, successes, first_seen, "
               "last_seen, last_success) VALUES (:u, :a, 1, :s, :now, :now, "
               "CASE WHEN :s = 1 THEN :now END) ON CONFLICT (username, address) DO UPDATE "
               "SET attempts = ledger.attempts + 1, successes = ledger.successes + :s, "
               "last_seen = :now, "
               "last_success = CASE WHEN :s = 1 THEN :now ELSE ledger.last_success END",
               {"u": username, "a": address, "s": int(success), "now": now})
    db.execute("DELETE FROM ledger WHERE username = ? AND address NOT IN (SELECT address "
               "FROM ledger WHERE username = ? ORDER BY last_seen DESC LIMIT ?)",
               (username, username, most))


def record_logoff(db, username):
    """A session of `username` ended, however; False if the account is gone."""
    if db.execute("UPDATE users SET logoffs = logoffs + 1 WHERE username = ?",
                  (username,)).rowcount == 0:
        return False
    add_total(db, "logoffs")
    return True


def prune_ledger(db, older_than):
    """Forget ledger entries last seen before `older_than`; how many."""
    return db.execute("DELETE FROM ledger WHERE last_seen < ?", (older_than,)).rowcount


def forget_user(db, username):
    """The ledger of an account being removed goes with it."""
    db.execute("DELETE FROM ledger WHERE username = ?", (username,))


# -- reading -------------------------------------------------------------------------

def user_statistics(db, username):
    """One account's figures (and state), or None."""
    row = db.execute(f"SELECT username, created_at, suspended_at, must_change_password, "
                     f"undelivered, {', '.join(USER_FIGURES)} FROM users "
                     "WHERE username = ? AND state = 'active'", (username,)).fetchone()
    return None if row is None else _user_dict(row)


def _user_dict(row):
    names = ("username", "created_at", "suspended_at", "must_change_password",
             "undelivered") + USER_FIGURES
    user = dict(zip(names, row))
    user["suspended"] = user.pop("suspended_at") is not None
    user["must_change_password"] = bool(user["must_change_password"])
    return user


def list_users(db, pattern=None, limit=USERS_PAGE_MAX):
    """(accounts matching the shell-style `pattern`, by name, and whether more exist)."""
    rows = db.execute(f"SELECT username, created_at, suspended_at, must_change_password, "
                      f"undelivered, {', '.join(USER_FIGURES)} FROM users "
                      "WHERE state = 'active' ORDER BY username").fetchall()
    if pattern:
        rows = [row for row in rows if fnmatch.fnmatchcase(row[0], pattern)]
    return [_user_dict(row) for row in rows[:limit]], len(rows) > limit


def totals(db):
    """Every server total (0 for those never counted) and the number of accounts."""
    found = dict(db.execute("SELECT name, value FROM totals").fetchall())
    figures = {name: found.get(name, 0) for name in TOTALS}
    figures["accounts"] = db.execute("SELECT COUNT(*) FROM users WHERE state = 'active'"
                                     ).fetchone()[0]
    figures["messages_stored"] = db.execute("SELECT COUNT(*) FROM msg.messages").fetchone()[0]
    return figures


def ledger(db, username):
    """The ledger of one account, most recently seen first (None: no such account)."""
    if db.execute("SELECT 1 FROM users WHERE username = ? AND state = 'active'",
                  (username,)).fetchone() is None:
        return None
    rows = db.execute("SELECT address, attempts, successes, first_seen, last_seen, "
                      "last_success FROM ledger WHERE username = ? "
                      "ORDER BY last_seen DESC", (username,)).fetchall()
    names = ("address", "attempts", "successes", "first_seen", "last_seen", "last_success")
    return [dict(zip(names, row)) for row in rows]
