"""Parked connections, the daemon's side (issue 16).

A user process idle for `--park-after` seconds hands its connection back
(`{"action": "park", "state": ..., "idle_for": ...}` on its pipe) and exits;
`ParkingLot` keeps the socket in the daemon's selector *without reading it*,
with the channel state the next user process needs (nonces continue). A
parked connection is woken — handed to a user process (a spare), whose
handoff says `resumed` (no second System "ready") — when:

* its socket is readable: the client sent something (or closed), and those
  bytes wait in the kernel for the new process to read;
* the database sends `Wake` with its ticket on the daemon's link (a message,
  a bounce, a file offer for that user was committed: `database/parking.py`);
  a `Wake` with an event is an operator's ending: the woken process tells the
  client and closes;
* `--idle-timeout` runs out: the woken process (told how long the client has
  been silent) ends the session the usual way, with its System notice.

A Wake that arrives while the connection is still on its way back (its user
process parking) is remembered and acted on the moment the hand-back arrives.

The link is a monitor connection in the daemon role (`Daemon`: the monitor
checks our pid by SO_PEERCRED). After each (re)start of the database process
it connects again; the database learns the parked tickets from its config
(`parked`), and `Parked` on each hand-back covers a hand-back its predecessor
never saw. When a user connection ends, `Ended` tells the database, which
ends a parked session of that ticket (say, its user process was killed after
Park was answered).

Talks to: the daemon (its selector, `_spawn`, `children.base_config`), the database
process over its Unix socket. How it fails: a broken link is dropped and made
again after the database restarts; a wake whose process cannot start closes
that connection only.
"""

import logging
import selectors
import socket
import time

from Modules.database.link import DbError, DbLink, DbUnavailable, Reply, Wake
from Modules.wire import protocol
from Modules.wire.errors import ProtocolError
from Modules.wire.framing import CLOSED
from Modules.wire.serializers import Packet

log = logging.getLogger("parley.daemon")

LINK_TIMEOUT = 5.0


class ParkingLot:
    """The daemon's parked connections and its link to the database."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.records = {}          # socket -> ClientRecord, for every parked connection
        self.link = None           # the DbLink in the daemon role, when connected
        self.wakes = 0             # connections woken so far (figures, tests)

    @property
    def selector(self):
        return self.daemon.selector

    def tickets(self):
        return [record.ticket for record in self.records.values() if record.ticket]

    # -- the link --------------------------------------------------------------------
    def connect(self, socket_path):
        """After the database process is ready: open the daemon's link."""
        self.drop_link()
        link, wakes = DbLink(socket_path, connect_timeout=LINK_TIMEOUT), []
        try:
            link.connect()
            link.sock.settimeout(LINK_TIMEOUT)   # a database that never answers: no hang
            rid = link.send_request("Daemon")
            while not isinstance(reply := link.read_event(), Reply) or reply.rid != rid:
                if isinstance(reply, Wake):   # kept for us while no link was open
                    wakes.append(reply)
            if not reply.ok:
                raise DbError(reply.data.get("code"), reply.data.get("reason"))
        except (DbUnavailable, DbError) as error:
            log.error("cannot open the parking link to the database: %s", error)
            link.close()
            return
        link.sock.setblocking(False)
        self.link = link
        self.selector.register(link.sock, selectors.EVENT_READ, "parking")
        for wake in wakes:
            self._on_wake(wake)

    def drop_link(self):
        if self.link is not None:
            try:
                self.selector.unregister(self.link.sock)
            except (KeyError, ValueError):
                pass
            self.link.close()
            self.link = None

    def _tell(self, op, ticket):
        if self.link is None or not ticket:
            return
        try:
            self.link.send_request(op, ticket=ticket)
        except DbUnavailable:
            self.drop_link()          # the database restarts; its config names the parked

    def on_link_readable(self):
        try:
            data = self.link.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self.drop_link()
        self.link.feed(data)
        try:
            for event in self.link.events():
                if event is CLOSED:
                    return self.drop_link()
                if isinstance(event, Wake):
                    self._on_wake(event)
        except Exception as error:   # noqa: BLE001 -- a bad frame drops the link, no more
            log.error("the parking link broke: %s", error)
            self.drop_link()

    def flush(self):
        if self.link is not None and self.link.out:
            try:
                self.link.flush()
            except DbUnavailable:
                self.drop_link()

    # -- parking -----------------------------------------------------------------------
    def park(self, record, message):
        """A user process handed its connection back: hold it, unread."""
        daemon = self.daemon
        daemon.selector.unregister(record.pipe)
        daemon.clients.pop(record.pipe, None)
        daemon.exiting.append(record.proc)
        record.pipe.close()
        record.proc = record.pipe = None
        record.kind = "parked"
        record.handoff = {**record.handoff, "state": message["state"], "resumed": True}
        record.silent_since = time.monotonic() - max(0.0, float(message.get("idle_for", 0)))
        self.records[record.sock] = record
        self.selector.register(record.sock, selectors.EVENT_READ, ("parked", record))
        self._tell("Parked", record.ticket)
        log.info("%s parked", record.user, extra=record.about)
        if record.wake_pending is not None:
            self.wake(record, record.wake_pending, reason="message")

    def on_parked_readable(self, record):
        """A parked client sent something: wake it; one that closed: end it here."""
        try:
            closed = record.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            closed = True
        if not closed:
            return self.wake(record, reason="client")
        self.selector.unregister(record.sock)
        self.records.pop(record.sock, None)
        record.kind = "user"
        self.daemon.connection_closed(record)

    def _on_wake(self, event):
        record = self.daemon.by_ticket.get(event.ticket)
        if record is None:
            return
        ending = {"event": event.event, "message": event.message} if event.event else True
        if record.kind == "parked":
            self.wake(record, ending, reason="message")
        elif record.kind == "user":   # on its way back: wake it when it arrives
            if record.wake_pending is None or ending is not True:
                record.wake_pending = ending

    def wake(self, record, why=True, reason="idle timeout"):
        """Hand a parked connection to a user process; `why` True (something for it)
        or the ending the process must tell its client."""
        self.selector.unregister(record.sock)
        self.records.pop(record.sock, None)
        record.wake_pending = None
        handoff = {**record.handoff, "idle_for": time.monotonic() - record.silent_since,
                   "woken_by": "client" if reason == "client" else "message"}
        if isinstance(why, dict):
            handoff["ending"] = why
        self.wakes += 1
        log.info("%s woken (%s)", record.user, reason if why is True else why["event"],
                  extra=record.about)
        try:
            self.daemon.spawn_user(record, handoff)
        except (OSError, EOFError) as error:   # EOFError: the forkserver died
            log.error("cannot wake %s: %s", record.peer, error, extra=record.about)
            record.kind = "user"
            self.daemon.connection_closed(record)

    def expire_idle(self, idle_timeout):
        """--idle-timeout applies to parked connections: the woken process ends them."""
        if not idle_timeout or not self.records:
            return
        now = time.monotonic()
        for record in [r for r in self.records.values()
                       if now - r.silent_since >= idle_timeout]:
            self.wake(record)

    def close_all(self):
        """Shutdown: each parked client gets the goodbye an active one gets (System
        shutdown), encrypted here from its channel state (no process per client;
        nothing is read), then its connection closes."""
        for record in list(self.records.values()):
            self.selector.unregister(record.sock)
            _say_shutdown(record)
            record.sock.close()
        self.records.clear()
        self.drop_link()


def _say_shutdown(record):
    try:
        conn = protocol.Connection.from_state(record.handoff["state"])
        data = conn.send(Packet("System", {"event": "shutdown",
                                           "message": "The server is shutting down."}))
        record.sock.setblocking(False)
        record.sock.send(data)
    except (OSError, ProtocolError, KeyError, ValueError):
        pass                          # best effort, as for an active session
