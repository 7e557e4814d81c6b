"""A user's own password change (`passwd`): ChangePassword, answered by the monitor.

`PasswordAnswers.change_password` is mixed into `answers.UserAnswers`, so
it acts only as the connection's own user (`conn.user`). In order:

1. the login throttle (`monitor.throttle`, the same one a login uses, per
   user and source address): someone at an unlocked terminal cannot guess
   the old password faster than a login could;
2. the old password is verified with the monitor's hasher against the
   stored hash; a wrong one counts as a failed try in the throttle and
   changes nothing;
3. the new one is hashed and replaces the old hash (`storage.set_password_hash`,
   on the writer: in `passwords.db` only, never leaving this process);
4. every OTHER session of the account is told (System `password_changed`)
   and ended (`monitor.end_sessions`); the session that changed it stays;
5. tickets: a ticket issued for the account before the change can no
   longer bind a connection (`predates_password_change`, asked by Bind),
   so a login that passed with the old password a moment earlier does not
   become a session afterwards. The changing client keeps the new
   password in memory to log in again after a dropped connection.

Talks to: the shared `Monitor` (hasher, throttle, writer, sessions) through
the answer set's `self.monitor`, `self.conn`, `self.job`, `self.query`,
`self.refusal`. How it fails: a wrong old password, a throttled user, a
busy hasher, or a new password equal to the old one is a refusal with one
sentence (codes `wrong_password`, `throttled`, `busy`, `bad_request`);
nothing is changed then. Neither password is ever logged or echoed.
"""

import logging
import math
import time

from Modules.database import auth, storage

log = logging.getLogger("parley.database")

ENDED_MESSAGE = ("The password of this account was changed in another session; log in "
                 "again with the new password.")
WRONG_OLD = "That is not your current password; nothing was changed."
SAME_AS_OLD = "The new password is the same as the current one; nothing was changed."
BUSY = "The server is busy with logins; try again in a moment."
CHANGES_KEPT = 10_000        # password changes remembered for Bind, at most


def predates_password_change(monitor, ticket):
    """True if `ticket` was issued before its account's password last changed here
    (it may then not bind). Changes older than a ticket's lifetime are forgotten."""
    changed = monitor.password_changes.get(ticket.username)
    return changed is not None and ticket.issued_at < changed


def _remember_change(monitor, username, now):
    """For Bind: in milliseconds, as tickets carry their time."""
    changes = monitor.password_changes
    changes.pop(username, None)
    changes[username] = math.floor(now * 1000) / 1000
    for name, when in list(changes.items()):
        if len(changes) <= CHANGES_KEPT and when > now - auth.TICKET_TTL:
            break
        del changes[name]                 # oldest first: dicts keep insertion order


class PasswordAnswers:
    """ChangePassword, mixed into UserAnswers."""

    async def change_password(self, args):
        user, address = self.conn.user, self.conn.address
        throttle = self.monitor.throttle
        wait = throttle.wait_time(user, address)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return self.refusal("throttled", "Too many wrong passwords; try again in "
                                f"{seconds} second{'' if seconds == 1 else 's'}.")
        found = await self.query(storage.credentials, user)
        try:
            ok, _rehash = await self.monitor.hasher.verify(args["old_password"], found.hash)
        except auth.Busy:
            return self.refusal("busy", BUSY)
        if not ok:
            throttle.failed(user, address)
            log.info("%s: a password change with a wrong current password", user)
            return self.refusal("wrong_password", WRONG_OLD)
        if args["new_password"] == args["old_password"]:
            return self.refusal("bad_request", SAME_AS_OLD)
        return await self._replace(user, args["new_password"])

    async def _replace(self, user, new_password):
        try:
            new_hash = await self.monitor.hasher.hash(new_password)
        except auth.Busy:
            return self.refusal("busy", BUSY)
        now = time.time()
        await self.job(storage.set_password_hash, user, new_hash, now)
        _remember_change(self.monitor, user, now)
        self.monitor.throttle.succeeded(user, self.conn.address)
        ended = self.monitor.end_sessions(user, "password_changed", message=ENDED_MESSAGE,
                                          origin=self.conn)
        log.info("%s changed the password; %d other sessions ended", user, ended)
        return {"ended": ended}
