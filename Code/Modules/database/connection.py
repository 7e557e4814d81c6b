"""One monitor connection: requests checked against its phase's table, answers out.

Talks to: one login or user process over the monitor's Unix socket
(length-prefixed frames of the internal msgpack codec,
`Modules/database/codec.py`, strict on what it reads; `Modules/database/link.py`
is the other end), and to the `Monitor` the whole process shares (the
writer, the hasher, the throttle, the hub of subscribers).

A request is *accepted* when its operation is in the table of the
connection's phase (`dispatch.TABLES`), it was not a once-only request
already accepted, and its fields pass the registry's validation; anything
else outside the table is refused, logged, and the connection closed, as
OpenSSH's monitor does. A request that fails validation is answered with a
refusal and changes nothing. The phase a request leads to is decided when
it is accepted, and while that request is being answered every later
request waits (at most `MAX_HELD`): a pipelined `Bind`, `Hello`, `Exists`
therefore ends with the Bind's answer and the Hello refused in the user
phase, and a pipelined `Bind`, `Subscribe` works as one would hope. If an
accepted phase change is refused (a stale ticket), the connection closes.

Output: replies and pushes of one loop turn leave in one write, at the end
of that turn (one callback per connection and turn). Pushes are packed
into `Push` packets of bounded size. Subscriptions are a state
machine (`SUBSCRIPTION_MOVES`): until the stored backlog has been read
and sent, new messages for the user are buffered, so the recipient sees
everything in commit order, the backlog first. A process that stops
reading is cut off once `MAX_WRITE_BUFFER` bytes wait for it, and one that
has `MAX_OUTSTANDING` requests unanswered gets `rate_limited` for more
(a user process never has that many: it stops reading its client first).

How it fails: undecodable frames, a request without an integer rid, or a
request outside the table close this connection only. An answer that
raises unexpectedly becomes an "internal" refusal, logged; the connection
goes on.
"""

import asyncio
import functools
import logging
import socket
import struct
import time
from collections import deque

from Modules import operations, rules
from Modules.database import codec, mail_signals
from Modules.database.answers import Refusal, refusal_for
from Modules.database.dispatch import TABLES
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import NEED_DATA, FrameDecoder, frame_prefix
from Modules.wire.machine import Machine
from Modules.wire.serializers import Packet

log = logging.getLogger("parley.database")

MAX_FRAME = 2 * 1024 * 1024           # as the link: above a session's 1 MiB packets
MAX_WRITE_BUFFER = 16 * 1024 * 1024   # a user process that stops reading is cut off
MAX_HELD = 64                         # requests waiting behind a phase change
MAX_OUTSTANDING = 2048                # accepted, not yet answered, per connection
PUSH_BYTES = 256 * 1024               # worst-case UTF-8 size of one Push packet
INTERNAL = Refusal("internal", "The server hit an internal error with this request.")
SHUTTING_DOWN = Refusal("unavailable", "The database is shutting down.")

# A connection's subscription to new messages.
UNSUBSCRIBED, BUFFERING, LIVE, ENDED = "UNSUBSCRIBED", "BUFFERING", "LIVE", "ENDED"
SUBSCRIPTION_MOVES = {
    (UNSUBSCRIBED, "subscribe"): BUFFERING,     # pushes wait while the backlog is read
    (BUFFERING, "backlog_sent"): LIVE,          # from now on pushes go straight out
    (UNSUBSCRIBED, "end"): ENDED,
    (BUFFERING, "end"): ENDED,
    (LIVE, "end"): ENDED,
    (ENDED, "end"): ENDED,
}


class Hub:
    """Who is subscribed for pushes; shared by every connection of the process."""

    def __init__(self):
        self.subscribers = {}   # username -> set of MonitorConnection
        self.parked = {}        # username -> their parked sessions (parking.Parking.by_user)
        self.wake = None        # parking.Parking.wake_user, set by the monitor
        self.signals = None     # mail_signals.MailSignals when servers share PostgreSQL

    def add(self, conn):
        self.subscribers.setdefault(conn.user, set()).add(conn)

    def remove(self, conn):
        conns = self.subscribers.get(conn.user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.subscribers[conn.user]

    def deliver(self, deliveries, recent=None):
        """After-commit hook: push each (recipient, message) to its connections. With
        several servers (`recent`: each recipient's undelivered messages up to the
        new one, read in the storing transaction) a session is pushed those in id
        order instead: another server may have committed an earlier message for
        the same person that this one has not heard of yet. If they may not reach
        back to what the session has, it is caught up from the database
        (`mail_signals.look`)."""
        parked = self.parked
        for recipient, message in deliveries:
            for conn in self.subscribers.get(recipient, ()):
                if recent is None:
                    conn.queue_push(message)
                elif not conn.push_unseen(recent.get(recipient, ()), mail_signals.RECENT):
                    self.signals.look(recipient)
            if recipient in parked:     # a parked session: its daemon wakes it (issue 16)
                self.wake(recipient)



class MonitorConnection(asyncio.Protocol):
    """One login or user process's connection, with its phase and its table."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.phase = operations.NEW
        self.user = None                  # set by Bind, from the monitor's own record
        self.ticket = None                # the Ticket that bound it: dead when it closes
        self.raw_ticket = None            # ... as the string Bind gave (parking's key)
        self.parked = False               # Park answered: the session lives on parked
        self.last_pushed = 0              # the highest message id pushed to it (Park)
        self.last_write = None            # the future of its latest write
        self.last_write_lazy = False      # whether that one was a lazy job (an Ack)
        self.peer = self.address = "?"
        self.operator = None              # an admin connection's Unix user (Admin)
        self.changing_password = None     # (user, account id) after must_change (Verify)
        self.bound_at = self.last_request = None   # a user connection's, for `who`
        self.decoder = FrameDecoder(MAX_FRAME)
        self.transport = None
        self._closed = False              # closed by us, or the transport was lost
        self.subscription = Machine("subscription", SUBSCRIPTION_MOVES, UNSUBSCRIBED)
        self._buffered = []               # pushes held while the backlog is sent
        self._accepted_once = set()       # once-only operations already accepted
        self._outstanding = 0             # accepted requests not answered yet
        self._changing_phase = False      # an accepted phase change is being answered
        self._held = deque()              # requests received meanwhile
        self._answer_sets = {}
        self._outbox = []                 # pushes waiting for the end of this loop turn
        self._wbuf = bytearray()          # frames waiting for the end of this loop turn
        self._flush_due = False           # _flush_writes is scheduled for this turn

    # -- transport events ----------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.monitor.connections.add(self)

    def connection_lost(self, exc):
        self._closed = True
        self.monitor.connections.discard(self)
        if self.parked:                      # not over: parked (the ticket stays live)
            self.ticket = self.bound_at = None
        if self.ticket is not None:          # the session is over: its ticket is dead
            self.monitor.tickets.ended(self.ticket)
        if self.bound_at is not None:
            self.monitor.session_ended(self)
        if self.phase == operations.DAEMON:
            self.monitor.parking.daemon_lost(self)
        self.subscription_ended()
        if getattr(self.monitor, "files", None) is not None:   # its uploads will not finish
            self.monitor.files.connection_closed(self.monitor, self)
        self.phase = operations.CLOSED

    def peer_pid(self):
        """The pid of the process at the other end (SO_PEERCRED), or None."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        try:
            pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        except (AttributeError, OSError):
            return None
        return pid

    def data_received(self, data):
        try:
            self.decoder.receive_data(data)
            while (frame := self.decoder.next_event()) is not NEED_DATA:
                self.receive(codec.loads_request(frame))
        except RemoteProtocolError as error:
            log.warning("closing %s connection (%s): %s", self.phase, self.describe(),
                        error.reason)
            self.close()

    def describe(self):
        if self.user:
            return f"user {self.user}" + (f" ({self.peer})" if self.peer != "?" else "")
        return f"peer {self.peer}"

    @property
    def owner(self):
        """Whose line its jobs wait in: the user, or a login's source address."""
        if self.user is not None:
            return "user " + self.user
        return "address " + self.address

    def closed(self):
        return self._closed

    def close(self):
        self.phase = operations.CLOSED
        self._closed = True
        self._held.clear()
        if self.transport is not None:
            self._flush_writes()
            self.transport.close()

    # -- requests --------------------------------------------------------------
    def receive(self, packet):
        """One request: accepted now, or held until a phase change is answered."""
        if self._closed:
            return
        if not self._changing_phase:
            self._accept(packet)
        elif len(self._held) < MAX_HELD:
            self._held.append(packet)
        else:
            log.warning("%s sent too many requests behind a phase change; closing",
                        self.describe())
            self.close()

    def _accept(self, packet):
        rid = packet.data.get("rid")
        if type(rid) is not int:   # noqa: E721 -- not a bool, not a huge string echoed back
            log.warning("request without an integer rid from %s; closing", self.describe())
            self.close()
            return
        entry = TABLES[self.phase].get(packet.op)
        if entry is None or packet.op in self._accepted_once:
            self._refuse_and_close(rid, packet.op, entry is not None)
            return
        if self._outstanding >= MAX_OUTSTANDING:  # a user process gone wild: not queued
            self._answered(rid, entry, Refusal("rate_limited", "Too many requests at "
                                               "once; try again in 1 second.", 1))
            return
        try:
            args = entry.operation.validate(packet.data)
        except rules.RuleError as error:   # not accepted: refused, nothing changes
            self._answered(rid, entry, Refusal(error.code, error.reason))
            return
        except Exception as error:         # a bug in the registry must not end the loop
            self._answered(rid, entry, self._internal(entry, error))
            return
        self.monitor.requests += 1
        if self.bound_at is not None and not entry.no_reply:   # an Ack is not the person
            self.last_request = time.time()
        if entry.once:
            self._accepted_once.add(packet.op)
        if entry.phase is not None:
            self.phase, self._changing_phase = entry.phase, True
        answers = self._answer_sets.get(entry.answers) or self._answer_set(entry.answers)
        self._outstanding += 1
        self._run_answer(entry.answer(answers, args), rid, entry)

    def _refuse_and_close(self, rid, op, again):
        what = "may be sent once" if again else "is not allowed here"
        log.warning("refused %s request from %s connection (%s): it %s; closing",
                    op, self.phase, self.describe(), what)
        self.reply_error(rid, "refused", f"{op} {what}")
        self.close()

    def _answer_set(self, kind):
        answers = self._answer_sets[kind] = kind(self)
        return answers

    def _run_answer(self, coroutine, rid, entry, _future=None):
        """Run an answer up to its next wait, and again each time that wait ends.

        What an asyncio Task would do, without one: the first step runs now,
        in the order the requests came (so jobs reach the writer in that
        order), and each later step runs from the done-callback of the
        future it waited for. That saves a Task and two loop turns per
        request on the monitor's busiest path.
        """
        try:
            waited = coroutine.send(None)
        except StopIteration as done:
            self._finished(rid, entry, done.value)
            return
        except asyncio.CancelledError:
            self._finished(rid, entry, SHUTTING_DOWN)
            return
        except Exception as error:
            self._finished(rid, entry, refusal_for(error) or self._internal(entry, error))
            return
        step = functools.partial(self._run_answer, coroutine, rid, entry)
        if waited is None:                       # a bare yield (asyncio.sleep(0))
            asyncio.get_running_loop().call_soon(step)
        else:
            waited.add_done_callback(step)

    def _finished(self, rid, entry, answer):
        self._outstanding -= 1
        self._answered(rid, entry, answer)

    def _internal(self, entry, error):
        log.error("%s from %s failed: %s: %s", entry.operation.name, self.describe(),
                  type(error).__name__, error)
        return INTERNAL

    def _answered(self, rid, entry, answer):
        refused = isinstance(answer, Refusal)
        if entry.no_reply:
            if refused:
                log.info("%s from %s not done: %s", entry.operation.name, self.describe(),
                         answer.reason)
        elif refused:
            self.reply_error(rid, answer.code, answer.reason, answer.retry_after)
        else:
            self.reply(rid, answer or {})
        if self._changing_phase and entry.phase is not None:
            self._changing_phase = False
            if refused:
                self.close()      # the phase it decided cannot be entered
            else:
                self._release_held()

    def _release_held(self):
        while self._held and not self._changing_phase and not self._closed:
            self._accept(self._held.popleft())

    # -- output --------------------------------------------------------------
    def send(self, packet):
        """Queue a frame; every frame of this loop turn leaves in one write."""
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        try:
            payload = codec.dumps(packet)
            prefix = frame_prefix(payload, MAX_FRAME)
        except LocalProtocolError as error:   # a reply we cannot frame: this one ends
            log.error("cannot send %s to %s: %s; closing", packet.op, self.describe(),
                      error.reason)
            self.close()
            return
        self._wbuf += prefix
        self._wbuf += payload
        self._flush_soon()

    def _flush_soon(self):
        """One write at the end of this loop turn, for its replies and pushes alike."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_writes)

    def _flush_writes(self):
        if self._outbox:                 # pushes of this turn, packed, behind its replies
            messages, self._outbox = self._outbox, []
            self._send_pushes(messages)
        self._flush_due = False
        if not self._wbuf or self.transport.is_closing():
            return
        data, self._wbuf = self._wbuf, bytearray()   # handed over whole: never reused
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("%s does not read its pushes; disconnecting it", self.describe())
            self.close()

    def reply(self, rid, fields):
        self.send(Packet("Reply", {"rid": rid, "ok": True, **fields}))

    def reply_error(self, rid, code, reason, retry_after=None):
        fields = {"rid": rid, "ok": False, "code": code, "reason": reason}
        if retry_after is not None:
            fields["retry_after"] = retry_after
        self.send(Packet("Reply", fields))

    def send_notice(self, event, message=None):
        fields = {"event": event} if message is None else {"event": event, "message": message}
        self.send(Packet("Notice", fields))

    # -- the subscription ------------------------------------------------------
    def subscription_started(self):
        """Subscribe accepted: buffer new messages until the backlog is sent."""
        if self.subscription.state == ENDED:   # the connection was lost meanwhile
            return
        self.subscription.move("subscribe")
        self.monitor.hub.add(self)

    def push_backlog(self, rows):
        """After-commit hook of the backlog read: send it, then what came meanwhile."""
        if self.subscription.state != BUFFERING:   # the connection ended meanwhile
            return
        self.subscription.move("backlog_sent")
        buffered, self._buffered = self._buffered, []
        last = rows[-1]["id"] if rows else 0
        self.last_pushed = max(self.last_pushed, last)
        self._send_pushes(rows)
        for message in buffered:
            if message["id"] > last:
                self.queue_push(message)

    def push_unseen(self, rows, window=None):
        """Undelivered messages read from the database (several servers,
        `mail_signals.py`): push those past the last one pushed, in id order. Per
        recipient the ids are given in commit order (`storage.insert_message` locks
        the recipient's row first), so an id at or below `last_pushed` was pushed
        already, even if the read began before its acknowledgement committed.
        `window`: the most rows the read returned; False (nothing pushed) if it
        returned that many and they may not reach back to what was pushed."""
        rows = sorted(rows, key=lambda row: row["id"])
        if window is not None and len(rows) >= window and rows[0]["id"] > self.last_pushed:
            return False
        for message in rows:
            if message["id"] > self.last_pushed:
                self.queue_push(message)
        return True

    def subscription_ended(self):
        if self.subscription.state != UNSUBSCRIBED:
            self.monitor.hub.remove(self)
        self.subscription.move("end")
        self._buffered = []

    def queue_push(self, message):
        """Called from the after-commit hook; pushes leave once per loop turn."""
        state = self.subscription.state
        if state == BUFFERING:
            self._buffered.append(message)
        elif state == LIVE:
            self.last_pushed = max(self.last_pushed, message["id"])
            self._outbox.append(message)
            self._flush_soon()

    def _send_pushes(self, messages):
        """Push packets of at most PUSH_BYTES of text each (frames are bounded)."""
        batch, size = [], 0
        for message in messages:
            weight = 256 + 4 * (len(message["body"]) + len(message["subject"]))
            if batch and size + weight > PUSH_BYTES:
                self.send(Packet("Push", {"messages": batch}))
                batch, size = [], 0
            batch.append(message)
            size += weight
        if batch:
            self.send(Packet("Push", {"messages": batch}))
