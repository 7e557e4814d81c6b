"""Blocks: whose mail a user refuses (`block NAME`, `unblock NAME`, `blocked`).

One table, `main.blocks(owner, blocked, created_at)` in `users.db` (schema
v3): a row says that `owner` accepts no mail from `blocked`. Who reads it:

* `refusal_note(db, sender, recipient)`, which `storage.store_message`
  asks before it stores a message: a blocked sender gets a bounce whose
  note says only that the recipient did not accept it (`BLOCKED_NOTE`),
  never that it was a block;
* the presence engineer's `who`/`last`, which hide an owner from the people
  they block (the same table, read there);
* `BlockAnswers`, the monitor's answers to Block, Unblock and Blocked,
  mixed into `answers.UserAnswers`: each acts only as the connection's
  own user (`conn.user`), so nobody can see or change another's blocks.

The storage functions run inside the caller's transaction like those of
`storage` (the time comes in as `now`, names arrive validated and
lower-cased) and return plain values. An account's blocks, both ways, go
with the account (`forget_account`, called by `storage.remove_account`),
so that a later account of the same name starts with none.

How it fails: an unknown name, oneself, the system sender or a full list
is a `Refusal` with one sentence (a block of a name with no account is an
error: a typo would otherwise block nobody, silently); sqlite3 errors
propagate for the caller's savepoint to undo.
"""

import logging
import time

log = logging.getLogger("parley.database")

BLOCKED_NOTE = "The message was not accepted by the recipient."
BLOCKS_MAX = 1000            # names one account may block (the Blocked list fits a frame)
SYSTEM_SENDER = "parley"     # storage.SYSTEM_SENDER: bounces and the operator's broadcasts

# What `block` says when it refuses, by the outcome of `block()`.
REFUSALS = {
    "no_account": ("not_found", "There is no account '{name}' to block."),
    "self": ("bad_request", "You cannot block yourself."),
    "system": ("bad_request", "Messages from the server itself ('parley') cannot be "
                              "blocked."),
    "full": ("too_many", f"You block {BLOCKS_MAX} names already, the most there may be; "
                         "unblock some first."),
}


# -- storage (inside the caller's transaction) ----------------------------------------

def is_blocked(db, owner, sender):
    """Whether `owner` refuses mail from `sender`."""
    return db.execute("SELECT 1 FROM blocks WHERE owner = ? AND blocked = ?",
                      (owner, sender)).fetchone() is not None


def refusal_note(db, sender, recipient):
    """The bounce note for a message `recipient` does not accept from `sender`, or None.

    The note does not say why: a blocked sender is not told that they are blocked.
    """
    return BLOCKED_NOTE if is_blocked(db, recipient, sender) else None


def block(db, owner, name, now):
    """Block `name` for `owner`: "blocked", "already", or why not ("no_account",
    "self", "system", "full")."""
    if name == owner:
        return "self"
    if name == SYSTEM_SENDER:
        return "system"
    if db.execute("SELECT 1 FROM users WHERE username = ? AND state = 'active'",
                  (name,)).fetchone() is None:
        return "no_account"
    if is_blocked(db, owner, name):
        return "already"
    count = db.execute("SELECT COUNT(*) FROM blocks WHERE owner = ?", (owner,)).fetchone()[0]
    if count >= BLOCKS_MAX:
        return "full"
    db.execute("INSERT INTO blocks (owner, blocked, created_at) VALUES (?, ?, ?)",
               (owner, name, now))
    return "blocked"


def unblock(db, owner, name):
    """Accept mail from `name` again; whether it was blocked."""
    return db.execute("DELETE FROM blocks WHERE owner = ? AND blocked = ?",
                      (owner, name)).rowcount > 0


def blocked_by(db, owner):
    """[{username, since}] of the names `owner` blocks, alphabetically."""
    return [{"username": name, "since": since} for name, since in db.execute(
        "SELECT blocked, created_at FROM blocks WHERE owner = ? ORDER BY blocked", (owner,))]


def forget_account(db, username):
    """A removed account's blocks, both ways, go with it; how many rows."""
    return db.execute("DELETE FROM blocks WHERE owner = ? OR blocked = ?",
                      (username, username)).rowcount


# -- the monitor's answers ----------------------------------------------------------------

class BlockAnswers:
    """Block, Unblock and Blocked, as the connection's own user (mixed into UserAnswers).

    Uses `self.conn`, `self.job`, `self.query` and `self.refusal(code, reason)` of
    the answer set it is mixed into.
    """

    async def block(self, args):
        owner, name = self.conn.user, args["username"]
        outcome = await self.job(block, owner, name, time.time())
        if outcome in REFUSALS:
            code, reason = REFUSALS[outcome]
            return self.refusal(code, reason.format(name=name))
        if outcome == "blocked":
            log.info("%s blocked a sender", owner)        # never whom: that is theirs
        return {"changed": outcome == "blocked"}

    async def unblock(self, args):
        changed = await self.job(unblock, self.conn.user, args["username"])
        return {"changed": changed}

    async def blocked(self, _args):
        return {"blocked": await self.query(blocked_by, self.conn.user)}
