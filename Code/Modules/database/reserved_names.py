"""Names of deleted accounts, kept back so that a new account cannot pass for the old one.

Mail from and to a deleted account stays in other people's inboxes and
conversations under its name. A new account of the same name, made the
next day, would look like the old one's owner in all of them. So a
deleted account's name is *kept back* (reserved) for a number of days
set by the operator (`reserved_name_days`, default `DEFAULT_DAYS`; 0
turns it off), and the operator may release one early
(`admin release-name NAME`).

Table `main.reserved_names(username, deleted_at)` in `users.db` (schema
v3). Who writes and reads it:

* `storage.remove_account` calls `reserve()` in the same transaction that
  removes the account row (so a crash keeps both or neither); an account
  that never logged in and never had mail (a creation cut off by a crash,
  never acknowledged to anyone) leaves no reservation;
* `storage.create_account` calls `check_free()`, which raises
  `NameReserved` (its `sentence` is what the login dialogue shows) while
  the name is kept back, and forgets a reservation that has run out;
* the operator: `days_setting()` checks the Setting value,
  `ReservedNameAnswers.release_name` (mixed into `AdminAnswers`) answers
  ReleaseName. The setting lives in `main.settings` like the greeting, so
  `create_account` reads the current value in its own transaction; a
  changed setting applies to names already kept back too.

Talks to: SQLite through the caller's connection (the writer's), inside
the caller's transaction; times come in as `now`. How it fails:
`NameReserved` for a name kept back; `rules.RuleError` for a setting that
is not a whole number of days; sqlite3 errors propagate.
"""

import logging
import time

from Modules import rules
from Modules.database.schema import StorageError

log = logging.getLogger("parley.database")

SETTING = "reserved_name_days"
DEFAULT_DAYS = 30
DAYS_MAX = 3650              # ten years: more is a typo
DAY = 86400.0


class NameReserved(StorageError):
    """The name belonged to an account deleted less than the set days ago."""

    def __init__(self, username, until):
        super().__init__(f"the name '{username}' is kept back until {_date(until)}")
        self.username, self.until = username, until

    @property
    def sentence(self):
        """What the person who wanted the name is told (the login dialogue shows it)."""
        return (f"The name '{self.username}' belonged to an account that was deleted; it "
                f"is kept back until {_date(self.until)} (UTC) so that nobody takes a new "
                "account for the old one. Choose another username.")


def _date(epoch):
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


# -- the setting ------------------------------------------------------------------------

def days_setting(value):
    """The Setting value for `reserved_name_days`, normalised ('30'; '' clears it back
    to the default), or RuleError."""
    text = value.strip()
    if not text:
        return ""
    if not text.isascii() or not text.isdigit() or int(text) > DAYS_MAX:
        raise rules.RuleError(f"{SETTING} is a whole number of days from 0 to {DAYS_MAX} "
                              "(0: a deleted account's name is free at once).",
                              "bad_request")
    return str(int(text))


def reserve_days(db):
    """The days a deleted account's name is kept back now (the setting, or the default)."""
    row = db.execute("SELECT value FROM settings WHERE name = ?", (SETTING,)).fetchone()
    if row is None or not row[0].strip():
        return DEFAULT_DAYS
    try:
        return int(days_setting(row[0]))
    except rules.RuleError:          # stored by hand, wrongly: the safe default
        return DEFAULT_DAYS


# -- reservations (inside the caller's transaction) ------------------------------------

def reserve(db, username, now):
    """Keep `username` back from `now` on (a later deletion of the same name restarts it)."""
    db.execute("INSERT INTO reserved_names (username, deleted_at) VALUES (?, ?) "
               "ON CONFLICT (username) DO UPDATE SET deleted_at = excluded.deleted_at",
               (username, now))


def reserved_until(db, username):
    """Until when `username` is kept back at the current setting, or None if never."""
    row = db.execute("SELECT deleted_at FROM reserved_names WHERE username = ?",
                     (username,)).fetchone()
    return None if row is None else row[0] + reserve_days(db) * DAY


def check_free(db, username, now):
    """NameReserved while `username` is kept back; a reservation that ran out is
    forgotten."""
    until = reserved_until(db, username)
    if until is None:
        return
    if until > now:
        raise NameReserved(username, until)
    release(db, username)


def release(db, username):
    """`username` may be taken again now; whether it was kept back."""
    return db.execute("DELETE FROM reserved_names WHERE username = ?",
                      (username,)).rowcount > 0


def release_kept(db, username, now):
    """Release `username`; whether it was kept back until now (an old, run-out
    reservation is forgotten too, but was not keeping anyone out)."""
    until = reserved_until(db, username)
    release(db, username)
    return until is not None and until > now


# -- the operator's answers -------------------------------------------------------------------

class ReservedNameAnswers:
    """ReleaseName (mixed into AdminAnswers; uses its `job`, `refusal` and `_done`)."""

    async def release_name(self, args):
        username = args["username"]
        if not await self.job(release_kept, username, time.time()):
            return self.refusal("not_found", f"The name '{username}' is not kept back.")
        self._done("release-name", username, "may be taken again")
        return {"released": True}
