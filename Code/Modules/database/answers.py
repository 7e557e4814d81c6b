"""What the monitor answers a new, a login and a user connection.

Like OpenSSH's monitor, every monitor connection is in a *phase* and may
send only the requests of its phase's table (`Modules/database/dispatch.py`
builds the tables from the registry and these answer sets; the admin
role's answers are in `admin_answers.py`).

An answer set is built for one connection and one role: `NewAnswers`
(Hello, Bind, Admin), `LoginAnswers` (Exists, Verify, Create, SetPassword)
and `UserAnswers`
(Subscribe, Send, Ack, Inbox, Read, Delete, DeleteAccount; and from the mixins
of issue 13's "my account": ChangePassword in `passwords.py`, Block, Unblock
and Blocked in `blocks.py`; and of its presence: Online, Presence and LastSeen
in `presence.py`; issue 14's FileOffer, FileChunk, FileDone, Files, FileFetch
and FileDecline in `files.py`). Every answer is
a coroutine `answer(args)` that gets the request's fields already
validated by the registry and returns the reply's fields, or a `Refusal`
for an outcome the caller must be told as a failure (a stale ticket, a
message that is not there). Outcomes a login expects (a wrong password, a
throttled or busy hasher, a taken name) are plain values in the reply's
`outcome` field, which the login process hands to its dialogue unchanged.
A user answer acts as the connection's own user (`conn.user`, recorded at
Bind), never as any name a request carries.

How it fails: an answer raises only for the unexpected; the connection
turns that into an "internal" refusal and logs it.
"""

import asyncio
import logging
import math
import secrets
import time
from typing import NamedTuple

from Modules.database import (
    auth,
    file_records,
    file_upkeep,
    mailbox,
    statistics,
    storage,
)
from Modules.database.blocks import BlockAnswers
from Modules.database.files import FileAnswers
from Modules.database.parking import DaemonAnswers, ParkAnswers
from Modules.database.passwords import PasswordAnswers, predates_password_change
from Modules.database.presence import PresenceAnswers
from Modules.database.reserved_names import NameReserved
from Modules.database.server_key import KeyAnswers
from Modules.database.writer import CommitFailed

log = logging.getLogger("parley.database")

WRONG_PASSWORD = "Wrong username or password."
BUSY = "The server is busy with other logins; try again in a moment."
BUSY_RETRY = 1          # seconds a client waits before trying a busy answer again
NAME_TAKEN = "That username is taken."
STALE_SESSION = "That session is no longer valid; log in again."
SUSPENDED = "This account is suspended; ask the server's administrator."
MUST_CHANGE = ("Your password was reset by the administrator: choose a new one to "
               "finish logging in.")
REGISTRATION_CLOSED = ("There is no account '{name}', and this server does not take new "
                       "accounts; ask its administrator for one.")


class Refusal(NamedTuple):
    """An answer that is a failure for the caller: `ok: false`, a code, a sentence
    (and, for rate_limited, the seconds to wait before asking again)."""

    code: str
    reason: str
    retry_after: int | None = None


def refusal_for(error):
    """The Refusal an exception from a request stands for (None: unexpected)."""
    if isinstance(error, CommitFailed):
        return Refusal("unavailable", "The server could not store this change; try again.")
    if isinstance(error, storage.NoSuchAccount):     # a request racing its account's deletion
        return Refusal("account_deleted", "This account has been deleted.")
    return None


def _now():
    return time.time()


def _nothing(_db):
    """A job that only makes the writer commit what waits before it."""


def plural(seconds):
    return f"{seconds} second" + ("" if seconds == 1 else "s")


class _Answers:
    """What every answer set has: its connection and the shared monitor."""

    def __init__(self, conn):
        self.conn, self.monitor = conn, conn.monitor

    @staticmethod
    def refusal(code, reason, retry_after=None):
        """A Refusal, for the answer mixins of other modules (they cannot import this one)."""
        return Refusal(code, reason, retry_after)

    def job(self, fn, *args, after=None, delivers=None, lazy=False, locks=()):
        """A write on the single writer, in this connection's owner's line; it locks
        the user's row, and those of `locks` (`Monitor.job`)."""
        future = self.monitor.job(fn, *args, after=after, delivers=delivers, lazy=lazy,
                                  owner=self.conn.owner, locks=(self.conn.user, *locks))
        self.conn.last_write, self.conn.last_write_lazy = future, lazy
        return future

    async def query(self, fn, *args):
        """A read on a reader thread, answered only after this connection's earlier
        writes are on disk: a pipelined Delete then Inbox agrees, and as on the
        writer, a request sent after an Ack is answered once the Ack is stored
        (RELIABILITY C14), and refused `unavailable` if it could not be. A lazy
        Ack is not waited out: a no-op job behind it ends its wait for company,
        and it commits now."""
        pending = self.conn.last_write
        if pending is not None and not pending.done():
            await asyncio.wait([self.job(_nothing) if self.conn.last_write_lazy else pending])
        if pending is not None and pending.done() and not pending.cancelled() \
                and isinstance(pending.exception(), CommitFailed):
            # That earlier write (an Ack: it has no reply) was not stored: this answer
            # must not tell the client it was, as an answer after an Ack does (C14).
            self.conn.last_write = None
            raise CommitFailed("an earlier change of this connection was not stored")
        return await self.monitor.read(self.conn.owner, fn, *args)


class NewAnswers(_Answers):
    """Phase "new": a connection says what it is, once."""

    async def hello(self, args):
        self.conn.peer = args["peer"]
        self.conn.address = args["address"] or args["peer"]   # the throttle's key
        greeting = self.monitor.settings.get("greeting")
        return {"greeting": greeting} if greeting else {}

    async def admin(self, args):
        """Only the daemon itself may open an admin connection: its pid is checked
        on the socket (SO_PEERCRED), not taken from the request."""
        if self.conn.peer_pid() != self.monitor.daemon_pid or self.monitor.daemon_pid is None:
            log.warning("an admin connection from pid %s, not the daemon's; refused",
                        self.conn.peer_pid())
            return Refusal("refused", "Only the Parley daemon may administer the server.")
        self.conn.operator = args["operator"]
        self.conn.address = "admin"
        return {}

    async def daemon(self, _args):
        """The daemon's parking link (`parking.py`): only the daemon's pid, checked on
        the socket (SO_PEERCRED), may open it; a login or user process never can."""
        pid = self.conn.peer_pid()
        if self.monitor.daemon_pid is None or pid != self.monitor.daemon_pid:
            log.warning("a daemon link from pid %s, not the daemon's; refused", pid)
            return Refusal("refused", "Only the Parley daemon may open this link.")
        self.conn.address = "daemon"
        self.monitor.parking.daemon_connected(self.conn)
        return {}

    async def bind(self, args):
        """A ticket binds once, soon after its login, to an account still there."""
        ticket = auth.check_ticket(self.monitor.ticket_secret, args["ticket"])
        # A parked session woken (parking.py): its ticket binds again, once per wake.
        parked = self.monitor.parking.take(args["ticket"], self.conn) if ticket else None
        if ticket is None or predates_password_change(self.monitor, ticket) \
                or not (parked or self.monitor.tickets.bind(ticket, self.conn)):
            return self._stale(parked)
        self.conn.ticket, self.conn.raw_ticket = ticket, args["ticket"]   # ends with it
        account = await self.query(storage.account, ticket.username)
        if not account or account["id"] != ticket.account_id or account["state"] != "active" \
                or account["suspended"]:
            return self._stale(parked)
        self.conn.user = ticket.username
        self.conn.peer = args["peer"]                 # for the log only: "c17 10.0.0.1:5544"
        self.conn.address = self.monitor.session_addresses.pop(ticket.nonce, "?")
        if parked:
            self.conn.address = parked.address
        self.monitor.session_started(self.conn, parked)
        return {"user": self.conn.user}

    def _stale(self, parked):
        if parked:                    # a woken parked session that cannot go on: it is over
            self.monitor.parking.forget_taken(parked)
        return Refusal("bad_ticket", STALE_SESSION)


class LoginAnswers(KeyAnswers, _Answers):
    """Phase "login": a login process asks about accounts, never about messages."""

    async def exists(self, args):
        found = await self.query(storage.user_exists, args["username"])
        if found:
            return {"outcome": "exists"}
        refusal = self._registration_refusal(args["username"])
        if refusal is not None:             # say so now, before any password is asked
            return {"outcome": "registration_closed", "reason": refusal}
        return {"outcome": "missing"}

    def _registration_refusal(self, username):
        """Why no account may be created from this connection now, or None."""
        if not self.monitor.registration_open:
            return REGISTRATION_CLOSED.format(name=username)
        wait = self.monitor.registrations.wait_time(self.conn.address)
        if wait > 0:
            minutes = max(1, math.ceil(wait / 60))
            return (f"There is no account '{username}', and too many new accounts were "
                    f"created from here or on this server lately; try again in {minutes} "
                    "minute" + ("" if minutes == 1 else "s") + ".")
        return None

    async def verify(self, args):
        username = args["username"]
        wait = self.monitor.throttle.wait_time(username, self.conn.address)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return {"outcome": "throttled", "retry_after": seconds,
                    "reason": f"Too many failed logins; try again in {plural(seconds)}."}
        found = await self.query(storage.credentials, username)
        try:
            ok, new_hash = await self.monitor.hasher.verify(args["password"], found.hash)
        except auth.Busy:
            return {"outcome": "busy", "reason": BUSY, "retry_after": BUSY_RETRY}
        now = _now()
        if not ok:
            self.monitor.throttle.failed(username, self.conn.address)
            if found.hash is not None:
                await self._record_login(username, now, False)
            log.info("failed login for %s from %s", username, self.conn.peer)
            return {"outcome": "wrong_password", "reason": WRONG_PASSWORD}
        if new_hash:
            await self.job(storage.set_password_hash, username, new_hash, now)
        if found.suspended:
            await self._record_login(username, now, False)
            log.info("login of suspended account %s from %s refused", username,
                     self.conn.peer)
            return {"outcome": "suspended", "reason": SUSPENDED}
        if found.must_change:
            self.conn.changing_password = (username, found.account_id)
            return {"outcome": "must_change", "reason": MUST_CHANGE}
        log.info("login of %s from %s", username, self.conn.peer)
        return await self._logged_in("verified", username, found.account_id, now)

    async def set_password(self, args):
        """The new password of an account whose one-time password was just verified
        on this connection (and only then)."""
        pending, self.conn.changing_password = self.conn.changing_password, None
        if pending is None:
            return Refusal("refused", "No password change is due on this connection.")
        username, account_id = pending
        try:
            password_hash = await self.monitor.hasher.hash(args["password"])
        except auth.Busy:
            self.conn.changing_password = pending
            return {"outcome": "busy", "reason": BUSY, "retry_after": BUSY_RETRY}
        now = _now()
        await self.job(storage.set_password_hash, username, password_hash, now, False)
        log.info("%s chose a new password after a reset, from %s", username, self.conn.peer)
        return await self._logged_in("verified", username, account_id, now)

    def _record_login(self, username, now, success):
        return self.job(statistics.record_login, username, self.conn.address, now, success,
                        self.monitor.ledger_limits, locks=(username,))

    async def create(self, args):
        username = args["username"]
        refusal = self._registration_refusal(username)
        if refusal is not None:
            return {"outcome": "create_failed", "reason": refusal}
        registrations = self.monitor.registrations
        registrations.record(self.conn.address)   # now: creations in progress count too
        try:
            password_hash = await self.monitor.hasher.hash(args["password"])
        except auth.Busy:
            registrations.forget(self.conn.address)
            return {"outcome": "busy", "reason": BUSY, "retry_after": BUSY_RETRY}
        now = _now()
        try:
            account_id = await self.job(storage.create_account, username, password_hash, now)
        except NameReserved as reserved:          # a deleted account's name (issue 13)
            registrations.forget(self.conn.address)
            return {"outcome": "create_failed", "reason": reserved.sentence}
        except storage.AccountExists:
            registrations.forget(self.conn.address)
            return {"outcome": "create_failed", "reason": NAME_TAKEN}
        log.info("account %s created from %s", username, self.conn.peer)
        return await self._logged_in("created", username, account_id, now)

    async def _logged_in(self, outcome, username, account_id, now):
        self.monitor.throttle.succeeded(username, self.conn.address)
        await self._record_login(username, now, True)
        nonce = secrets.token_hex(12)
        self.monitor.remember_address(nonce, self.conn.address)
        reply = {"outcome": outcome,
                 "ticket": auth.issue_ticket(self.monitor.ticket_secret, account_id, username,
                                             _now(), nonce)}
        motd = self.monitor.settings.get("motd")
        if motd:
            reply["motd"] = motd
        return reply


class DaemonLinkAnswers(DaemonAnswers, _Answers):
    """Phase "daemon": the daemon's parking link (`parking.py`)."""


class UserAnswers(BlockAnswers, PasswordAnswers, PresenceAnswers, FileAnswers, ParkAnswers,
                  _Answers):
    """Phase "user": every answer acts as `conn.user`, the account Bind named."""

    async def subscribe(self, _args):
        self.conn.subscription_started()
        rows = await self.job(storage.undelivered, self.conn.user,
                              after=self.conn.push_backlog)
        return {"backlog": len(rows)}

    async def send(self, args):
        result = await self.job(
            storage.store_message, self.conn.user, args["to"], args["subject"], args["body"],
            args["client_id"], _now(), mailbox.limits_from(self.monitor.settings),
            delivers=lambda stored: stored["deliveries"], locks=(args["to"],))
        fields = {"id": result["id"], "bounced": result["bounced"],
                  "duplicate": result["duplicate"]}
        if result.get("note"):
            fields["note"] = result["note"]
        return fields

    async def ack(self, args):
        """No reply: the commit may wait to share a later transaction (lazy)."""
        await self.job(storage.mark_delivered, self.conn.user, args["ids"], _now(),
                       args["read"], lazy=True)

    async def _page(self, limit, fn, *args):
        """A page of a listing, within the connections' shared read budget."""
        budget = self.monitor.read_budget
        wait = budget.take(self.conn.owner, limit)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return Refusal("rate_limited", f"Too many requests at once; try again in "
                           f"{plural(seconds)}.", seconds)
        try:
            messages, more = await self.query(fn, self.conn.user, *args, limit)
        except BaseException:
            budget.settle(self.conn.owner, limit, 0)
            raise
        budget.settle(self.conn.owner, limit, len(messages))
        return {"messages": messages, "more": more}

    async def inbox(self, args):
        if args["unread"]:
            return await self._page(args["limit"], _unread_inbox, args["before"])
        return await self._page(args["limit"], storage.inbox, args["before"])

    async def sent(self, args):
        return await self._page(args["limit"], mailbox.sent, args["before"])

    async def history(self, args):
        return await self._page(args["limit"], mailbox.history, args["with"], args["before"])

    async def search(self, args):
        try:
            mailbox.match_expression(args["text"])
        except mailbox.EmptySearch as error:
            return Refusal("bad_request", str(error))
        await self.job(mailbox.index_pending)         # what was sent until now is found
        return await self._page(args["limit"], mailbox.search, args["text"], args["before"])

    async def read(self, args):
        message = await self.job(storage.read_message, self.conn.user, args["id"], _now())
        if message is None:
            return Refusal("not_found", f"You have no message {args['id']}.")
        return {"message": message}

    async def delete(self, args):
        """Dropping one's copy of a file's offer may end the file (`file_upkeep`): its
        content goes before the answer, a crash between is the upkeep's."""
        deleted, missing, unkept = await self.job(file_upkeep.delete_messages, self.conn.user,
                                                  args["ids"], _now())
        await file_upkeep.remove_content(self.monitor, unkept)
        return {"deleted": deleted, "missing": missing}

    async def delete_account(self, _args):
        user = self.conn.user
        bounced = await delete_account(self.monitor, user)
        self.monitor.end_sessions(user, "account_deleted", origin=self.conn,
                                  message="This account was deleted in another session.")
        self.conn.subscription_ended()
        log.info("account %s deleted; %d unread messages returned", user, bounced)
        return {"deleted": True, "bounced": bounced}


def _unread_inbox(db, username, before, limit):
    return storage.inbox(db, username, before, limit, unread_only=True)


async def delete_account(monitor, username):
    """The crash-safe deletion steps, each committed before the next begins: unread
    mail, then files never downloaded, go back to their senders (the count)."""
    await monitor.job(storage.mark_deleting, username)
    bounces = await monitor.job(storage.bounce_and_clear_inbox, username, _now(),
                                delivers=lambda bounces: bounces)
    files_back, file_ids = await monitor.job(
        file_records.return_undownloaded, username, _now(),
        delivers=lambda found: found[0])
    for file_id in file_ids:          # a crash here: the start-up sweep removes them
        await monitor.files.run(monitor.files.store.remove, file_id)
    await monitor.job(storage.remove_password, username)
    await monitor.job(storage.remove_account, username, _now())
    await file_upkeep.release_unkept(monitor, _now())    # files it sent nobody keeps now
    return len(bounces) + len(files_back)
