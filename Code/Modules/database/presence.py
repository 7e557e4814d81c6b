"""Presence: who is online, join and leave notices, `presence on|off`, `last NAME`.

Three parts, all inside the database process:

* `PresenceTracker` (one per monitor, `monitor.presence`): the monitor calls
  it when a session binds and when one ends. A person *comes online* with
  their first session and *goes offline* with their last one; `presence
  off` looks like going offline, `presence on` like coming online. It
  records `users.last_seen` (lazily: a timestamp never delays anyone) and
  gathers the changes of one *window* (`WINDOW`, 1 second) before it tells
  anyone: then every online person gets at most ONE `presence` notice
  listing the names that came and went ("bob and carol are online; dave
  went offline"; past `NAMES_SHOWN` names, "and 193 others"). After a
  notice the next one waits a full window, so nobody gets more than one
  presence notice a second, whatever happens (a restart with 200 clients
  reconnecting is a few notices, not 400). A session that comes and goes
  within one window makes no notice at all, and the sessions that bind
  again after the database process itself restarted are no news.
* the rules of who sees whom, read from `users.presence_hidden` and
  `main.blocks` at the moment of asking: a person with presence off is
  invisible to everyone else (not in `who`, no notices about them, `last`
  says nothing) and gets no notices; a row (owner=me, blocked=them) of
  `blocks` hides me from them in the same three ways. Everyone always sees
  themselves.
* `PresenceAnswers`, the mixin of `UserAnswers` (`answers.py`) with the
  answers Online (`who`), Presence and LastSeen; like every user answer
  they act as `self.conn.user` only.

Notices are not stored and not acknowledged: a `Notice` frame on the
monitor connection of each recipient's user process (which passes it on
as a System `presence` packet), sent from a timer, never in the path of a
message. Talks to: the monitor (its sessions, its writer through `job`,
its readers through `read`). How it fails: if the query behind a notice
fails, that window's notices are dropped and logged (they are not
promised); a write of last_seen that fails is logged and forgotten.
"""

import asyncio
import logging
import math
import time

from Modules.database import storage

log = logging.getLogger("parley.database")

WINDOW = 1.0            # seconds: at most one presence notice per recipient per window
NAMES_SHOWN = 8         # names a notice lists before "and N others"
LIVE = "LIVE"           # a subscription that receives pushes (connection.LIVE)
READER_OWNER = "presence"


# -- the queries (a connection to the three files, on a reader or the writer) -------
def hidden_users(db):
    """Every account with presence off."""
    return {row[0] for row in db.execute(
        "SELECT username FROM users WHERE presence_hidden != 0")}


def blockers_of(db, viewer):
    """The people who blocked `viewer` (so `viewer` may not see them)."""
    return {row[0] for row in db.execute("SELECT owner FROM blocks WHERE blocked = ?",
                                         (viewer,))}


def viewer_facts(db, viewer):
    """(hidden accounts, accounts that blocked `viewer`): whom `viewer` may not see."""
    return hidden_users(db), blockers_of(db, viewer)


def notice_facts(db, subjects):
    """(hidden accounts, {subject: the people that subject blocked})."""
    blocked = {}
    subjects = list(subjects)
    for start in range(0, len(subjects), 500):
        part = subjects[start:start + 500]
        marks = ",".join("?" * len(part))
        for owner, who in db.execute(
                f"SELECT owner, blocked FROM blocks WHERE owner IN ({marks})", part):
            blocked.setdefault(owner, set()).add(who)
    return hidden_users(db), blocked


def is_hidden(db, username):
    row = db.execute("SELECT presence_hidden FROM users WHERE username = ?",
                     (username,)).fetchone()
    if row is None:
        raise storage.NoSuchAccount(username)
    return bool(row[0])


def set_hidden(db, username, hidden):
    """Presence off (hidden) or on; whether it was hidden before."""
    before = is_hidden(db, username)
    db.execute("UPDATE users SET presence_hidden = ? WHERE username = ?",
               (1 if hidden else 0, username))
    return before


def record_seen(db, username, when):
    """`username` was online at `when` (nothing if the account is gone)."""
    db.execute("UPDATE users SET last_seen = ? WHERE username = ?", (when, username))


def seen_by(db, username, viewer):
    """{"last_seen": t or None} if `viewer` may know when `username` was online;
    None if there is no such account, or it is hidden from `viewer`."""
    row = db.execute("SELECT presence_hidden, last_seen FROM users WHERE username = ? "
                     "AND state = 'active'", (username,)).fetchone()
    if row is None:
        return None
    if username != viewer and (row[0] or db.execute(
            "SELECT 1 FROM blocks WHERE owner = ? AND blocked = ?",
            (username, viewer)).fetchone()):
        return None
    return {"last_seen": row[1]}


# -- the notice's text ------------------------------------------------------------
def listed(names):
    """'bob', 'bob and carol', 'a, b and c', 'a, b, ... and 193 others'."""
    names = sorted(names)
    if len(names) > NAMES_SHOWN:
        shown = names[:NAMES_SHOWN - 1]
        return ", ".join(shown) + f" and {len(names) - len(shown)} others"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def notice_text(came, went):
    """'bob is online', 'bob and carol are online; dave went offline'."""
    parts = []
    if came:
        parts.append(f"{listed(came)} {'is' if len(came) == 1 else 'are'} online")
    if went:
        parts.append(f"{listed(went)} went offline")
    return "; ".join(parts)


# -- the tracker ------------------------------------------------------------------
class PresenceTracker:
    """Gathers who came and went, and tells everyone once per window."""

    def __init__(self, monitor, window=WINDOW):
        self.monitor, self.window = monitor, window
        self._changed = {}          # user -> (online before, hidden before or None)
        self._timer = None
        self._flushing = False
        self._quiet_until = 0.0     # loop time before which no notice may leave
        self.notices = 0            # presence notices sent (for tests and figures)
        # Sessions still running when this monitor started (after a crash): they
        # bind again, and are not news to anyone.
        self._resuming = set(monitor.tickets.resumable)

    def _others_online(self, conn):
        others = self.monitor.sessions_by_user(everywhere=True).get(conn.user, ())
        return any(other is not conn for other in others)

    def session_started(self, conn):
        """`conn` just bound: its user comes online unless already there (or it is a
        session that ran on while the database process restarted)."""
        nonce = getattr(conn.ticket, "nonce", None)
        if nonce in self._resuming:
            self._resuming.discard(nonce)
            return
        if not self._others_online(conn):
            self._note(conn.user, False)
            self._record_seen(conn.user)

    def session_ended(self, conn):
        """`conn` ended: its user goes offline with the last session."""
        if not self._others_online(conn):
            self._note(conn.user, True)
            self._record_seen(conn.user)

    def visibility_changed(self, user, was_hidden):
        """`presence on|off` of `user`: others see them come or go if they are online."""
        pending = self._changed.get(user)
        if pending is not None and pending[1] is None:   # came or went this window:
            self._changed[user] = (pending[0], was_hidden)  # hidden as it was all along
        elif self.monitor.sessions_by_user(everywhere=True).get(user):
            self._note(user, True, was_hidden)

    def remote_change(self, user, was_online):
        """`user` came or went on another server (`roster.py`): news as for ours."""
        self._note(user, was_online)

    def _note(self, user, was_online, was_hidden=None):
        self._changed.setdefault(user, (was_online, was_hidden))
        self._schedule()

    def _record_seen(self, user):
        try:
            future = self.monitor.job(record_seen, user, time.time(), lazy=True,
                                      locks=(user,))
        except Exception as error:          # the writer has stopped
            log.warning("last seen of %s not recorded: %s", user, error)
            return
        future.add_done_callback(_consume)

    def _schedule(self):
        if self._timer is not None or self._flushing:
            return
        loop = asyncio.get_running_loop()
        delay = max(self.window, self._quiet_until - loop.time())
        self._timer = loop.call_later(delay, self._start_flush)

    def _start_flush(self):
        self._timer = None
        changed, self._changed = self._changed, {}
        self._flushing = True
        asyncio.ensure_future(self._flush(changed)).add_done_callback(self._flushed)

    def _flushed(self, task):
        self._flushing = False
        if not task.cancelled() and task.exception() is not None:
            log.warning("presence notices not sent: %s", task.exception())
        self._quiet_until = asyncio.get_running_loop().time() + self.window
        if self._changed:
            self._schedule()

    async def _flush(self, changed):
        hidden, blocked = await self.monitor.read(READER_OWNER, notice_facts, list(changed))
        online = self.monitor.sessions_by_user(everywhere=True)
        came, went = [], []
        for user, (was_online, was_hidden) in changed.items():
            before = was_online and not (user in hidden if was_hidden is None else was_hidden)
            now = user in online and user not in hidden
            if now != before:
                (came if now else went).append(user)
        if came or went:
            self._tell(online, hidden, blocked, came, went)

    def _tell(self, online, hidden, blocked, came, went):
        """One notice to each session of every visible person, of what they may see."""
        for recipient, conns in online.items():
            if recipient in hidden:
                continue
            text = notice_text(*([name for name in names if name != recipient
                                  and recipient not in blocked.get(name, ())]
                                 for names in (came, went)))
            if not text:
                continue
            for conn in conns:
                if conn.subscription.state == LIVE:
                    conn.send_notice("presence", text)
                    self.notices += 1


def _consume(future):
    if not future.cancelled() and future.exception() is not None:
        log.warning("a last seen time was not recorded: %s", future.exception())


# -- the answers ------------------------------------------------------------------
def _person(user, conns, now):
    """Idle: since the last request of any session; for one on another server, whose
    requests are not heard of here, since its login (`roster.py`)."""
    latest = max(conn.last_request or conn.bound_at for conn in conns)
    return {"user": user, "since": min(conn.bound_at for conn in conns),
            "idle": round(max(0.0, now - latest), 1)}


class PresenceAnswers:
    """Online, Presence and LastSeen: a mixin of `UserAnswers` (self.conn, self.monitor,
    self.job, self.query and self.refusal are that class's). Online spends the
    monitor's read budget like Inbox: a flood of them is refused `rate_limited`."""

    async def online(self, args):
        """The people online that this user may see, by name, after `after`."""
        me, after, limit = self.conn.user, args["after"], args["limit"]
        budget = self.monitor.read_budget          # a listing, like Inbox: rows a second
        wait = budget.take(self.conn.owner, limit)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return self.refusal("rate_limited", "Too many requests at once; try again in "
                                f"{seconds} second{'' if seconds == 1 else 's'}.", seconds)
        try:
            hidden, blockers = await self.query(viewer_facts, me)
        except BaseException:
            budget.settle(self.conn.owner, limit, 0)
            raise
        now = time.time()
        people = sorted(
            (_person(user, conns, now)
             for user, conns in self.monitor.sessions_by_user(everywhere=True).items()
             if user == me or (user not in hidden and user not in blockers)),
            key=lambda person: person["user"])
        if after is not None:
            people = [person for person in people if person["user"] > after]
        budget.settle(self.conn.owner, limit, min(limit, len(people)))
        return {"people": people[:limit], "more": len(people) > limit}

    async def presence(self, args):
        """Show (no state) or set this user's presence: on (seen) or off (invisible)."""
        me = self.conn.user
        if args["state"] is None:
            hidden = await self.query(is_hidden, me)
        else:
            hidden = args["state"] == "off"
            was_hidden = await self.job(set_hidden, me, hidden)
            if was_hidden != hidden:
                self.monitor.presence.visibility_changed(me, was_hidden)
                log.info("%s turned presence %s", me, args["state"])
        return {"presence": "off" if hidden else "on"}

    async def last_seen(self, args):
        """Whether `username` is online, or when they last were, if this user may know;
        otherwise the very answer a name without an account gets."""
        name = args["username"]
        reply = {"user": name, "online": False}
        seen = await self.query(seen_by, name, self.conn.user)
        if seen is None:
            return reply
        sessions = self.monitor.sessions_by_user(everywhere=True).get(name)
        if sessions:
            reply.update(online=True, since=min(conn.bound_at for conn in sessions))
        elif seen["last_seen"] is not None:
            reply["last_seen"] = seen["last_seen"]
        return reply
