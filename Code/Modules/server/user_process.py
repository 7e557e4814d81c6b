"""The user process: one per logged-in connection, named `parley: user NAME`.

Talks to: the client over the TCP connection handed over by the login
process (the Noise transport state continues, nonces included); the
database process in the *user* role, bound by the ticket from the login;
the daemon through a one-way pipe, used only to hand the connection back: to
a login process after the account is deleted, or to the daemon itself when the
session parks (issue 16: `--park-after` seconds with nothing from the client
and nothing in flight, `Park` answered by the database; the daemon wakes the
connection into a new user process, whose hand-off says `resumed`: no second
System "ready", and one woken by a message parks again QUICK_REPARK after
its client's Ack; see docs/DESIGN.md "Parked sessions"). It is contained like a login
process (`Modules/server/containment.py`) before it reads its client, and
finds the database's socket in its empty root, again after a restart.

It relays every operation the registry (`Modules/operations.py`) marks
`relayed`, with the registry's fields only, to the database, and passes
the reply back as a Result (the registry's reply fields) or an Error with
the client's request id; operations without a reply (Ack) are fire and
forget. Logout it answers itself. Pushed messages from the database go to
the client as Message packets. After subscribing it sends System "ready"
once the stored backlog has been pushed, so the client prints the backlog
before it runs its first command. The session's life is one table
(`SESSION_MOVES`): RUNNING, DRAINING after SIGTERM, then CLOSING, or
HANDING_BACK to a login process after the account was deleted, or PARKING
then PARKED. With
`--idle-timeout`, a session that heard nothing from its client for that
long (while no answer of ours was pending) tells it so in a System
`idle_timeout` notice and closes. A session that moves a file (its first
FileOffer, FileChunk or FileFetch) lowers its own CPU priority for the
rest of its life (`runtime.lower_priority`), as the database does for its
file thread: when the CPU is short, bulk bytes give way to messages.

What it logs (INFO, every line with the connection's id): each message
sent (its id, recipient and size in bytes), each delivery (a pushed message
the client acknowledged: id, sender, size), the first rate_limited answer
of a pause, and how the session ended (logout, the client closing, a
protocol error, the server's shutdown, ...). Never a subject, a body or a
ticket (`SessionLog`).

Failures: a request with bad fields gets an Error and the session goes on;
a protocol violation or undecodable bytes close this connection only. If
the database process goes away, every request still waiting gets an Error
("unavailable", safe to retry thanks to the client's message id), and the
process reconnects, binds again and re-subscribes; messages not yet
acknowledged are pushed again and the client drops repeats by id. A client
that stops reading its pushes is disconnected once its buffer is full.
"""

import logging
import selectors
import signal
import socket
import time

from Modules import operations
from Modules.database.link import DbError, DbLink, DbUnavailable, Notice, Push, Reply
from Modules.runtime import (
    close_connection,
    lower_priority,
    restore_default_signals,
    start_process,
)
from Modules.server import containment
from Modules.server.session_parking import PARKED, PARKING, QUICK_REPARK, SessionParking  # noqa: F401
from Modules.server.session_log import SessionLog, message_size
from Modules.wire import protocol
from Modules.wire.errors import LocalProtocolError, ProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.machine import Machine
from Modules.wire.serializers import Packet

log = logging.getLogger("parley.user")

MAX_CLIENT_BUFFER = 8 * 1024 * 1024
MAX_PENDING = 1000
MAX_DB_BACKLOG = 4 * 1024 * 1024   # bytes queued for the database before we stop reading
SHUTDOWN_GRACE = 3.0
MAX_PAUSE = 10.0                   # seconds a rate_limited client is not read, at most
BULK_OPERATIONS = frozenset({"FileOffer", "FileChunk", "FileFetch"})   # a session moving files

# The session's life: RUNNING until something ends it; DRAINING after SIGTERM
# (the client was told; requests in flight get their answers, new ones are not
# read); CLOSING (this connection ends); HANDING_BACK (the account was deleted:
# the connection goes back to a login process).
RUNNING, DRAINING, CLOSING, HANDING_BACK = "RUNNING", "DRAINING", "CLOSING", "HANDING_BACK"
# Parking (issue 16, `session_parking.py`): PARKING once the idle session asked the
# database to Park (the client is not read meanwhile); PARKED when that was answered.
_ENDINGS = ("client_closed", "protocol_error", "logout", "deleted_elsewhere",
            "ended_by_admin", "cannot_send", "database_gone", "idle", "drained")
# Notices from the monitor that end the session (the operator's kick, suspend,
# reset-password; the user's passwd in another session), and those only passed on.
_ENDING_NOTICES = ("kicked", "suspended", "password_reset", "password_changed")
_TOLD_NOTICES = ("announce", "presence")
SESSION_MOVES = {
    (RUNNING, "shutdown"): DRAINING,
    (RUNNING, "account_deleted"): HANDING_BACK,
    (DRAINING, "account_deleted"): HANDING_BACK,
    **{(RUNNING, event): CLOSING for event in _ENDINGS if event != "drained"},
    **{(DRAINING, event): CLOSING for event in _ENDINGS},
    **{(CLOSING, event): CLOSING for event in _ENDINGS + ("shutdown", "account_deleted")},
    **{(HANDING_BACK, event): HANDING_BACK for event in _ENDINGS + ("shutdown",)},
    (RUNNING, "park"): PARKING,
    (PARKING, "park_refused"): RUNNING,
    (PARKING, "parked"): PARKED,
    **{(PARKING, event): CLOSING for event in _ENDINGS if event != "drained"},
}
FINISHED = (CLOSING, HANDING_BACK, PARKED)
# How a session ended, by the event that finished it, as its last log line says.
# What the relay passes on, from the registry, looked up once.
_REQUEST_FIELDS = {op.name: tuple(f.name for f in op.fields)
                   for op in operations.CLIENT_OPERATIONS if op.relayed}
_REPLY_FIELDS = {op.name: op.reply_fields() for op in operations.CLIENT_OPERATIONS}


def _error(code, reason, rid=None, fatal=False, retry_after=None):
    fields = {"code": code, "reason": reason, "fatal": fatal}
    if type(rid) is int:   # noqa: E721 -- never echo a rid the schema does not allow
        fields["rid"] = rid
    if type(retry_after) is int:   # noqa: E721
        fields["retry_after"] = retry_after
    return Packet("Error", fields)


def _system(event, message, **extra):
    return Packet("System", {"event": event, "message": message, **extra})


class SessionLife(Machine):
    """The session's Machine, remembering the event that finished it (for the log)."""

    __slots__ = ("ended_by",)

    def __init__(self, name):
        super().__init__(name, SESSION_MOVES, RUNNING)
        self.ended_by = None

    def move(self, event, *args, **kwargs):
        state = super().move(event, *args, **kwargs)
        if state in FINISHED and self.ended_by is None:
            self.ended_by = event
        return state


class UserSession(SessionParking):
    """The relay between one client and the database process."""

    def __init__(self, sock, handoff, config):
        self.sock, self.config = sock, config
        self.user, self.ticket = handoff["user"], handoff["ticket"]
        peer, conn_id = handoff.get("peer") or "?", config.get("conn_id")
        self.described = f"{conn_id} {peer}" if conn_id else peer   # for the database's log
        self.conn = protocol.Connection.from_state(handoff["state"])
        self.db = DbLink(config["db_socket"], cancelled=self._stopping)
        self.selector = selectors.DefaultSelector()
        self.pending = {}          # db rid -> (client op, client rid)
        self.send_notes = {}       # db rid of a Send -> (recipient, size), for the log
        self.moves_files = False   # a file moved: the process runs at a lower priority
        self.trace = SessionLog(self.user)
        self.out = bytearray()     # bytes waiting to go to the client
        self.subscribe_rid = None
        self.ready_sent = False
        self._registered = {}      # "client"/"db" -> events registered with the selector
        self.life = SessionLife(f"user session {self.user}")
        # After a rate_limited answer, what the client sends waits in its socket
        # (costing nobody anything) until then: a flood that ignores retry_after
        # slows only itself.
        self.paused_until = None
        # Set by the SIGTERM handler, acted on by the loop: a handler must never
        # encrypt (it could interrupt conn.send() and reuse its nonce).
        self.shutdown_requested = False
        self.handback_state = None
        self.stop_at = None
        # --idle-timeout: a session with nothing from its client for that long ends.
        self.idle_timeout = config.get("idle_timeout") or None
        self.heard_at = time.monotonic() - max(0.0, handoff.get("idle_for") or 0.0)
        # --park-after: an idle session hands its connection back to the daemon.
        self.park_after = config.get("park_after") or None
        self.quiet_since = time.monotonic()   # since when nothing stopped it parking
        self.unacked = set()       # ids pushed to the client and not acknowledged yet
        self.seen = 0              # the highest message id pushed to the client
        self.park_rid = None
        # Woken by a message, not by its client: parks again soon after the client's Ack
        # (a broadcast to 10,000 parked sessions must not keep 10,000 processes for
        # --park-after seconds), until the client itself sends a request.
        self.client_spoke = handoff.get("woken_by") != "message"
        self.ending = handoff.get("ending")   # woken only to say why it ended (parking)
        if handoff.get("resumed"):            # woken from parking: the client is in session
            self.ready_sent = True

    @property
    def state(self):
        return self.life.state

    def _stopping(self):
        return self.shutdown_requested or self.state != RUNNING

    # -- set-up ----------------------------------------------------------------
    def start(self):
        self.sock.setblocking(False)
        self._wake_r, wake_w = socket.socketpair()
        for end in (self._wake_r, wake_w):
            end.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w.fileno())   # a signal ends the select() at once
        if self.ending:               # a parked session an operator ended: say so, close
            log.info("%s: session ended by the server while parked (%s)", self.user,
                     self.ending["event"])
            self._send(_system(self.ending["event"], self.ending["message"]))
            self.life.move("ended_by_admin")
            return
        self._connect_db()
        self._drain_client_events()   # frames the login process had buffered
        self._write_out()             # what those produced leaves now, not after an event

    def _connect_db(self):
        """Connect, bind and subscribe, retrying while the database process
        restarts. The Subscribe leaves in the Bind's write (the monitor holds
        it until the Bind is decided), a round trip less before "ready"."""
        deadline = time.monotonic() + self.db.connect_timeout
        while True:
            try:
                self.db.connect()
                bind = self.db.send_request("Bind", now=False, ticket=self.ticket,
                                            peer=self.described)
                subscribe = self.db.send_request("Subscribe")
                self.db.wait_for(bind)
                break
            except DbUnavailable:
                if time.monotonic() > deadline or self._stopping():
                    raise
                time.sleep(0.05)
        self.db.sock.setblocking(False)
        self._registered["db"] = 0
        self.subscribe_rid = subscribe
        self._handle_db_events()      # what came with the Bind's reply

    # -- the loop ----------------------------------------------------------------
    def run(self):
        while not self._finished():
            if self.shutdown_requested and self.state == RUNNING:
                self.shutdown()
            self._end_if_idle()
            self._park_if_idle()
            self._update_interest()
            for key, mask in self.selector.select(self._timeout()):
                if mask & selectors.EVENT_WRITE:
                    self._on_writable(key.data)
                if mask & selectors.EVENT_READ:
                    self._on_readable(key.data)
            self._write_out()
        self._flush_blocking()

    def _write_out(self):
        """Once per loop turn: what this turn produced leaves in few frames and syscalls."""
        self._encode_queued()
        if self.out:
            self._flush()
        if self.db.out and self.state != CLOSING:   # not to a link already given up
            self._on_writable("db")

    def _finished(self):
        if self.state == DRAINING and (not self.pending or time.monotonic() > self.stop_at):
            self.life.move("drained")
        return self.state in FINISHED

    def _timeout(self):
        if self.state != RUNNING:
            return 0.2
        if self.paused_until is not None:
            return max(0.0, self.paused_until - time.monotonic())
        due = [at for at in (self.idle_timeout and self.heard_at + self.idle_timeout,
                             self.park_after and self._park_due()) if at]
        return max(0.0, min(due) - time.monotonic()) if due else None

    def _end_if_idle(self):
        """--idle-timeout: nothing from the client for that long (and nothing of its
        waiting on us: no answer pending, no rate_limited pause) ends the session."""
        if not self.idle_timeout or self.state != RUNNING:
            return
        now = time.monotonic()
        if self.pending or self.paused_until is not None:
            self.heard_at = now
        elif now - self.heard_at >= self.idle_timeout:
            log.info("%s: idle for %g s; ending the session (--idle-timeout)", self.user,
                     self.idle_timeout)
            self._send(_system("idle_timeout", f"Nothing was received from you for "
                               f"{self.idle_timeout:g} seconds, the server's limit; this "
                               "session is closed. Log in again to go on."))
            self.life.move("idle")

    def _update_interest(self):
        """Read from the client only while the database keeps up, and not while the
        client was told to wait (rate_limited); write when due."""
        if self.paused_until is not None and time.monotonic() >= self.paused_until:
            self.paused_until = None
        keeping_up = len(self.pending) < MAX_PENDING and len(self.db.out) < MAX_DB_BACKLOG \
            and self.paused_until is None and self.state != PARKING
        self._interest(self.sock, "client", (selectors.EVENT_READ if keeping_up else 0)
                       | (selectors.EVENT_WRITE if self.out else 0))
        self._interest(self.db.sock, "db", selectors.EVENT_READ
                       | (selectors.EVENT_WRITE if self.db.out else 0))

    def _interest(self, sock, name, events):
        registered = self._registered.get(name)
        if registered == events:
            return
        if registered:
            self.selector.unregister(sock)
        if events:
            self.selector.register(sock, events, name)
        self._registered[name] = events

    def _on_writable(self, which):
        if which == "client":
            self._flush()
            return
        try:
            self.db.flush()
        except DbUnavailable:
            self._db_lost()

    def _on_readable(self, which):
        if which == "wake":
            self._wake_r.recv(64)
        elif which == "client":
            self._process_client_bytes(self._recv(self.sock))
        else:
            self._process_db_bytes(self._recv(self.db.sock))

    @staticmethod
    def _recv(sock):
        try:
            return sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    # -- client side -------------------------------------------------------------
    def _process_client_bytes(self, data):
        """Feed bytes from the client (b"" = it closed) and handle every event."""
        if data is None:
            return
        self.heard_at = time.monotonic()
        try:
            self.conn.receive_data(data)
            self._drain_client_events()
        except ProtocolError as error:
            log.info("%s: closing after protocol error: %s", self.user, error.reason)
            self._say_farewell(_error(error.code, error.reason, fatal=True))
            self.life.move("protocol_error")

    def _say_farewell(self, packet):
        try:
            self.out += self.conn.farewell(packet)
        except ProtocolError:
            pass   # nothing can be said on this connection any more

    def _drain_client_events(self):
        while self.life.state == RUNNING:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return
            if event is CLOSED:
                self.life.move("client_closed")
                return
            self._on_client_event(event)

    def _on_client_event(self, event):
        if isinstance(event, protocol.BadPacket):
            self._send(_error("bad_request", event.reason, event.rid))
        elif event.op == "Logout":
            self._send(_system("goodbye", "Logged out. Goodbye."))
            self.life.move("logout")
        else:
            if event.op != "Ack":
                self.client_spoke = True
            self._relay(operations.BY_NAME[event.op], event)

    def _relay(self, operation, packet):
        """Pass a request on to the database with the registry's fields only.

        An operation without a reply (Ack) is fire and forget: if the
        database is away it is not acknowledged, so the message is pushed
        again after the reconnect.
        """
        rid, data = packet.data.get("rid"), packet.data
        fields = {name: data[name] for name in _REQUEST_FIELDS[operation.name] if name in data}
        try:
            db_rid = self.db.send_request(operation.name, now=False, **fields)
        except DbUnavailable:
            if operation.replies:
                self._send(_error("unavailable", "The server's database is restarting; "
                                                 "try again.", rid))
            return
        except LocalProtocolError:   # more than any rule allows: say so, go on
            self._send(_error("too_large", f"This {operation.name} request is too large.",
                              rid))
            return
        if operation.replies:
            self.pending[db_rid] = (operation, rid)
        if operation.name in BULK_OPERATIONS and not self.moves_files:
            self.moves_files = True      # from now on this session gives way to messages
            lower_priority()
        if operation.name == "Send":
            self.send_notes[db_rid] = (fields.get("to"),
                                       message_size(fields.get("subject", ""), fields.get("body", "")))
        elif operation.name == "Ack" and isinstance(fields.get("ids"), list):
            self.trace.acknowledged(fields["ids"])
            self.unacked.difference_update(   # the client's list, unchecked until the
                i for i in fields["ids"] if type(i) is int)   # database answers: ints only

    def _send(self, packet, force=False):
        """Queue a packet for the client; the loop encodes the turn's packets together."""
        if self.life.state == CLOSING and not force:
            return
        self.conn.queue(packet)

    def _encode_queued(self):
        try:
            self.out += self.conn.flush()
        except ProtocolError as error:   # e.g. nonces used up: nothing more can be sent
            if self.state != CLOSING:    # (after a farewell, it carried the queue)
                log.warning("%s: cannot send any more (%s); closing", self.user, error.reason)
            self.life.move("cannot_send")
            return
        if len(self.out) > MAX_CLIENT_BUFFER:
            log.warning("%s: client is not reading; disconnecting", self.user)
            self.out.clear()
            self.life.move("cannot_send")

    def _flush(self):
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.out.clear()
            self.life.move("cannot_send")
            return
        del self.out[:sent]

    def _flush_blocking(self):
        self._encode_queued()
        if not self.out:
            return
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(2.0)
            self.sock.sendall(self.out)
        except OSError:
            pass
        self.out.clear()

    # -- database side -------------------------------------------------------------
    def _process_db_bytes(self, data):
        if data is None:
            return
        self.db.feed(data)
        self._handle_db_events()

    def _handle_db_events(self):
        try:
            for event in self.db.events():
                if event is CLOSED:
                    return self._db_lost()
                self._on_db_event(event)
        except ProtocolError:
            self._db_lost()

    def _on_db_event(self, event):
        if isinstance(event, Push):
            for message in event.messages:
                self._send(Packet("Message", message))
                self.trace.pushed(message)
                self.unacked.add(message["id"])
                self.seen = max(self.seen, message["id"])
        elif isinstance(event, Notice):
            self._on_notice(event)
        elif isinstance(event, Reply):
            self._on_reply(event)

    def _on_notice(self, notice):
        if notice.event == "account_deleted":
            self._send(_system("account_deleted", notice.message or "This account was "
                                                  "deleted in another session."))
            self.life.move("deleted_elsewhere")
        elif notice.event in _ENDING_NOTICES:
            log.info("%s: session ended by the server (%s)", self.user, notice.event)
            self._send(_system(notice.event, notice.message))
            self.life.move("ended_by_admin")
        elif notice.event in _TOLD_NOTICES:
            self._send(_system(notice.event, notice.message))

    def _on_reply(self, reply):
        if reply.rid == self.subscribe_rid:
            self.subscribe_rid = None
            if not self.ready_sent:   # not again after a database reconnect, or a wake
                self._send(_system("ready", "Logged in.", user=self.user))
                self.ready_sent = True
            return
        if reply.rid == self.park_rid:
            return self._on_park_reply(reply)
        operation, rid = self.pending.pop(reply.rid, (None, None))
        note = self.send_notes.pop(reply.rid, None)
        if operation is None:
            return
        if not reply.ok:
            self._refused(reply, rid, note)
            return
        fields = {name: reply.data[name] for name in _REPLY_FIELDS[operation.name]
                  if name in reply.data}
        self._send(Packet("Result", {"rid": rid, **fields}))
        if note is not None:
            self.trace.send_result(note, fields)
        if operation.phase == operations.CLOSED:   # DeleteAccount: the account is gone
            self.life.move("account_deleted")

    def _refused(self, reply, rid, note):
        code, retry_after = reply.data.get("code", "error"), reply.data.get("retry_after")
        self._send(_error(code, reply.data.get("reason", ""), rid, retry_after=retry_after))
        if note is not None:
            self.trace.send_refused(note, code)
        if code == "rate_limited" and type(retry_after) is int:  # noqa: E721
            seconds = min(retry_after, MAX_PAUSE)
            if self.paused_until is None:        # once per pause in the log
                self.trace.throttled(seconds)
            self.paused_until = time.monotonic() + seconds

    def _db_lost(self):
        log.warning("%s: database connection lost; reconnecting", self.user)
        if self._registered.get("db"):
            self.selector.unregister(self.db.sock)
        self._registered["db"] = 0
        for _op, rid in self.pending.values():
            self._send(_error("unavailable", "The server's database restarted during "
                                             "this request; try again.", rid))
        self.pending.clear()
        self.send_notes.clear()
        if self.state == PARKING:     # that Park's answer is lost with the link: go on
            self.park_rid = None
            self.life.move("park_refused")
        try:
            self._connect_db()
        except (DbUnavailable, DbError) as error:
            self._send(_error("unavailable", "The server's database is not available; "
                                             "reconnect later.", fatal=True), force=True)
            log.error("%s: %s", self.user, error)
            self.life.move("database_gone")

    # -- shutdown ----------------------------------------------------------------
    def shutdown(self):
        """SIGTERM: tell the client, let requests in flight finish, then close."""
        if self.state == RUNNING:
            self._send(_system("shutdown", "The server is shutting down."))
            self.life.move("shutdown")
            self.stop_at = time.monotonic() + SHUTDOWN_GRACE

    def handback_payload(self):
        return {"action": "login", "state": self.conn.export_state(), "peer": self.user}


def install_sigterm_flag(session):
    """SIGTERM only sets `session.shutdown_requested`; the loop does the rest.

    A handler runs between any two bytecodes of the main thread: one that
    encrypted could land inside conn.send() and reuse its nonce.
    """
    signal.signal(signal.SIGTERM, lambda *_: setattr(session, "shutdown_requested", True))


def main(sock, handoff, back_channel, config):
    """Entry point of a user process (a forkserver child)."""
    restore_default_signals(config.get("lifeline"))
    start_process(f"user {handoff['user']}", config)
    containment.enter(config, "user")   # unprivileged, in an empty root, from here on
    session = UserSession(sock, handoff, config)
    install_sigterm_flag(session)
    try:
        session.start()
        session.run()
    except (DbUnavailable, DbError) as error:
        log.error("%s: cannot reach the database: %s", handoff["user"], error)
        session._send(_error("unavailable", "The server's database is not available; "
                                            "try again later.", fatal=True), force=True)
        session._flush_blocking()
    session.trace.ended(session.life.ended_by or "database_gone")
    if session.state == HANDING_BACK:
        back_channel.send(session.handback_payload())
    elif session.state == PARKED:
        back_channel.send(session.park_payload())
    else:
        close_connection(sock)
    back_channel.close()

