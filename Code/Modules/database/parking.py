"""Parked sessions, the database's side (issue 16): who is parked, and "wake X".

A user process that has been idle for `--park-after` seconds asks `Park`
(user role) and, once it is answered, hands its connection back to the
daemon and exits. From then on the session is a `ParkedSession` here: the
user stays online (`Monitor.user_sessions()` lists it, so `who`, `last`,
presence and the admin's `sessions` see it), its ticket stays live, and no
push, presence or announcement goes anywhere. When something that is a
message for that user is committed (`Hub.deliver`: a message, a bounce, a
file offer, a broadcast), the daemon's link gets one `Wake` packet with the
session's ticket; the daemon hands the connection to a fresh user process,
whose `Bind` with the same ticket takes the parked session over (no
"came online" notice: it never went offline) and whose `Subscribe` pushes
the stored backlog, so nothing committed meanwhile is missed.

The daemon's link is a monitor connection in the *daemon* role (`Daemon`,
checked by SO_PEERCRED: only the daemon's pid may open it, never a login or
user process). Over it the daemon says `Parked` (a connection it holds
parked, idempotent) and `Ended` (a connection closed: a parked session of
its ticket is over, the user may go offline). Wakes that find no daemon
link are kept and sent when it connects. A database process started again
after a crash is given the parked tickets in its config (`parked`, like
`live_tickets`), so it knows them before it serves anyone; those with
anything undelivered are woken at once (a wake lost in the crash).

An operator's kick, suspend, reset-password or delete of a parked user ends
the parked session here and sends `Wake` with the ending's event and
sentence: the woken user process tells the client and closes, without
binding.

Talks to: the monitor (its tickets, presence, hub, readers). How it fails:
a ticket that does not check out is ignored (logged); nothing here raises
into a connection.
"""

import logging
import time

from Modules.database import auth
from Modules.wire.serializers import Packet

log = logging.getLogger("parley.database")

BUSY = "Not idle: something is still moving on this session."
# Notices that end a session (the monitor's end_sessions); the rest only pass by.
ENDINGS = ("kicked", "suspended", "password_reset", "password_changed", "account_deleted")


class _Parked:
    """The `subscription` a parked session shows: never LIVE (presence skips it)."""

    state = "PARKED"


class ParkedSession:
    """A session whose connection the daemon holds; shaped like a bound connection
    where the monitor's listings read one (user, address, bound_at, last_request)."""

    parked = True
    subscription = _Parked()

    def __init__(self, parking, ticket, raw_ticket, bound_at, last_request, address="?",
                 peer="?"):
        self.parking, self.ticket, self.raw_ticket = parking, ticket, raw_ticket
        self.user = ticket.username
        self.bound_at, self.last_request = bound_at, last_request
        self.address, self.peer = address, peer
        self.woken = False
        self.ending = None           # (event, sentence) an operator's action left
        self._closed = False

    def closed(self):
        return self._closed

    def send_notice(self, event, message=None):
        """Presence and announcements are not delivered to a parked session (they do
        not wake it); an ending notice is kept for the close that follows."""
        if event in ENDINGS:
            self.ending = (event, message)

    def close(self):
        """Ended by the monitor (an operator's action): the daemon tells the client."""
        self.parking.end(self)


def has_undelivered(db, username):
    return db.execute("SELECT 1 FROM msg.messages WHERE recipient = ? AND delivered_at "
                      "IS NULL AND recipient_copy LIMIT 1", (username,)).fetchone() is not None


class Parking:
    """Every parked session of the monitor, and the daemon's link."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.by_ticket = {}          # raw ticket -> ParkedSession
        self.by_user = {}            # user -> {raw ticket: ParkedSession}
        self.daemon = None           # the daemon's MonitorConnection, when connected
        self.waiting = []            # Wake packets for a daemon not connected yet
        self.wakes = 0               # sent so far (for tests and figures)

    def sessions(self):
        return self.by_ticket.values()

    # -- parking and waking ------------------------------------------------------
    def park(self, conn):
        """`conn` (bound, subscribed, idle) becomes a parked session."""
        entry = ParkedSession(self, conn.ticket, conn.raw_ticket, conn.bound_at,
                              conn.last_request, conn.address, conn.peer)
        self._add(entry)
        conn.parked = True
        conn.subscription_ended()     # no more pushes to that connection
        return entry

    def restore(self, raw_ticket, wake_if_waiting=False):
        """A parked connection the daemon holds (after this process restarted, or a
        hand-back it learned of first): a parked session, if not one already."""
        if raw_ticket in self.by_ticket:
            return
        ticket = auth.check_ticket(self.monitor.ticket_secret, raw_ticket)
        if ticket is None:
            log.warning("the daemon named a parked ticket that does not check out; ignored")
            return
        holder = self.monitor.tickets.live.get(ticket.nonce)
        if holder is not None and not getattr(holder, "parked", False) \
                and not holder.closed():
            return                    # a user process holds it bound: not parked
        now = time.time()   # logged in when its ticket was issued (admin `who`'s "since")
        entry = ParkedSession(self, ticket, raw_ticket, min(ticket.issued_at, now), now)
        self._add(entry)
        self.monitor.tickets.resumable.discard(ticket.nonce)
        if wake_if_waiting:
            self.monitor.read("parking", has_undelivered, entry.user).add_done_callback(
                lambda future: self._wake_if(entry, future))

    def _wake_if(self, entry, future):
        if not future.cancelled() and (future.exception() is not None or future.result()):
            self._wake(entry)         # undelivered (or unknown): the backlog goes out

    def _add(self, entry):
        self.by_ticket[entry.raw_ticket] = entry
        self.by_user.setdefault(entry.user, {})[entry.raw_ticket] = entry
        self.monitor.tickets.live[entry.ticket.nonce] = entry

    def _remove(self, entry):
        self.by_ticket.pop(entry.raw_ticket, None)
        sessions = self.by_user.get(entry.user)
        if sessions is not None:
            sessions.pop(entry.raw_ticket, None)
            if not sessions:
                del self.by_user[entry.user]
        entry._closed = True

    def take(self, raw_ticket, conn):
        """Bind of a woken session: the parked session, now `conn`'s (or None)."""
        entry = self.by_ticket.get(raw_ticket)
        if entry is None:
            return None
        self._remove(entry)
        self.monitor.tickets.live[entry.ticket.nonce] = conn
        return entry

    def wake_user(self, user):
        """Something for `user` was committed: wake each of their parked sessions once."""
        for entry in list(self.by_user.get(user, {}).values()):
            if not entry.woken:
                self._wake(entry)

    def _wake(self, entry, ending=None):
        entry.woken = True
        fields = {"ticket": entry.raw_ticket}
        if ending is not None:
            fields["event"], fields["message"] = ending[0], ending[1] or ""
        self._tell_daemon(Packet("Wake", fields))

    def _tell_daemon(self, packet):
        self.wakes += 1
        if self.daemon is None or self.daemon.closed():
            self.waiting.append(packet)
        else:
            self.daemon.send(packet)

    # -- endings -------------------------------------------------------------------
    def end(self, entry):
        """An operator ended a parked session: offline now, the client told on wake."""
        if entry.raw_ticket not in self.by_ticket:
            return
        self._forget(entry)
        self._wake(entry, entry.ending or ("kicked", ""))

    def ended(self, raw_ticket):
        """The daemon closed this ticket's connection: a parked session of it is over."""
        entry = self.by_ticket.get(raw_ticket)
        if entry is not None:
            self._forget(entry)

    def _forget(self, entry):
        self._remove(entry)
        self.monitor.tickets.ended(entry.ticket)
        self.monitor.session_ended(entry)

    def forget_taken(self, entry):
        """A woken session whose Bind was then refused: it is over after all."""
        self.monitor.tickets.ended(entry.ticket)
        self.monitor.session_ended(entry)

    # -- the daemon's link ---------------------------------------------------------
    def daemon_connected(self, conn):
        self.daemon = conn
        waiting, self.waiting = self.waiting, []
        for packet in waiting:
            conn.send(packet)

    def daemon_lost(self, conn):
        if self.daemon is conn:
            self.daemon = None


class ParkAnswers:
    """Park: a mixin of `UserAnswers` (self.conn, self.monitor, self.refusal are its)."""

    async def park(self, args):
        conn = self.conn
        files = self.monitor.files
        daemon = self.monitor.parking.daemon     # no link: no wake could reach it
        if daemon is None or daemon.closed() or conn.subscription.state != "LIVE" \
                or conn.last_pushed > args["seen"] \
                or (files is not None and any(True for _ in files.uploads_on(conn))):
            return self.refusal("busy", BUSY)
        self.monitor.parking.park(conn)
        return {}


class DaemonAnswers:
    """Phase "daemon": the daemon's parking link (see the module docstring); a mixin of
    `answers.DaemonLinkAnswers`, which gives it self.conn, self.monitor. The link is
    opened by `Daemon` (`answers.NewAnswers.daemon`: SO_PEERCRED pid, the daemon's)."""

    async def parked(self, args):
        self.monitor.parking.restore(args["ticket"], wake_if_waiting=True)

    async def ended(self, args):
        self.monitor.parking.ended(args["ticket"])
