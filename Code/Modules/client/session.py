"""The client's network session with a Parley server; it never prints.

Talks to: one Parley server over TCP, through the sans-IO
`protocol.Connection` (Noise NX channel + packets). The caller (the CLI)
drives it in steps:

    session = ClientSession(host, port, handlers)
    key = session.open()          # TCP + Noise handshake; the server's static key
    ...                           # the caller checks the key pin; nothing sent yet
    session.negotiate()           # Version exchange; starts the reader thread
    step = session.next_login_step()    # a Login prompt or Welcome packet
    session.answer_login(username=...)  # one answer per prompt
    session.wait_ready()          # the backlog has been handed to the handlers
    session.request("Inbox", before=..., limit=...)   # any operation of the registry
    session.send_message(...), delete_account()         # the two with more to them
    session.logout(); session.close()

Threads: after `negotiate()` one reader thread owns all receiving. Pushed
messages, System events, the Welcome (and its message of the day) and the
operator's greeting (which comes with the first Login prompt, and is
handed over before that prompt is) go to the `Handlers` object from that
thread, in arrival order; Login prompts go to a queue read by
`next_login_step()`; replies are matched to the waiting request by rid
under a Condition. The Connection object is not thread-safe, so every use
of it (send and receive) happens under one lock; a second lock keeps the
encrypted frames of two senders from interleaving on the socket.

Messages: a message id is handed to `on_message` at most once per login
(the server pushes unacknowledged messages again after its database
restarts), and every received id is acknowledged with one Ack per batch
of packets, after it has been shown (except while the account is being
deleted: an Ack must not reach the server's login dialogue). A Send that fails with "unavailable"
is retried with the same client_id, which the server stores once.

Failures are exceptions carrying one plain sentence: `CannotConnect`
(exit status 2), `ServerRefused` (a notice such as "server full", a fatal
Error, a System event that ends the login), `ConnectionLost` (the server
went away; the reason is the fatal Error or System message if there was
one) and `RequestFailed` (an Error reply to one request; the session goes
on). `handlers.on_closed(reason)` is called when the server ends the
connection, unless we closed it ourselves. TCP keepalive with short timers
makes a server that vanished without closing (a dead network) end the
session within about 11 seconds even when nothing is being sent.
"""

import queue
import socket
import threading

from Modules.client.session_parts import (  # noqa: F401  (re-exported API)
    CannotConnect,
    ClientFailure,
    ConnectionLost,
    Handlers,
    RequestFailed,
    ServerRefused,
    ack_packet,
    new_client_id,
)
from Modules.wire import channel as channel_mod
from Modules.wire import protocol
from Modules.wire.errors import LocalProtocolError, ProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import Packet

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
SEND_RETRY_DELAYS = (0.5, 1.0, 2.0)   # three retries of an "unavailable" Send
RATE_LIMIT_TRIES = 4                  # a rate_limited request is sent this often in all
RATE_LIMIT_WAIT_MAX = 10              # seconds; a longer wait is the user's to decide
# TCP keepalive: a server that vanished without closing (a dead network, a
# machine switched off) is noticed after about KEEPIDLE + KEEPCNT * KEEPINTVL
# seconds of silence, even while nobody types anything.
KEEPALIVE = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3}
RECV_SIZE = 65536
CLOSED_BY_SERVER = "The server closed the connection."
# System events that only pass by (presence notices): never the reason of an end.
PASSING_EVENTS = frozenset({"presence"})
# Connection states after which nothing can be sent: a request then meets a
# lost connection (kept and retried by the caller), not a refusal.
ENDED_STATES = frozenset({protocol.CLOSED_STATE, protocol.ERROR})


class ClientSession:
    """One connection to a Parley server, from TCP connect to close."""

    def __init__(self, host, port, handlers=None, connect_timeout=CONNECT_TIMEOUT):
        self.host, self.port = host, port
        self.handlers = handlers or Handlers()
        self.connect_timeout = connect_timeout
        self.sock = None
        self.conn = protocol.Connection.client()
        self._conn_lock = threading.Lock()     # every use of self.conn
        self._send_lock = threading.Lock()     # frame order on the socket
        self._replies_cond = threading.Condition()
        self._waiting, self._replies = set(), {}
        self._rid = 0
        self._login_steps = queue.Queue()
        self._ready, self._goodbye, self._closed = (threading.Event(), threading.Event(),
                                                    threading.Event())
        self._seen = set()
        self._ack_lock = threading.Lock()
        self._held_acks = None     # a list while an account deletion is in flight
        self._in_session = False
        self._fatal_reason = self._server_reason = None
        self._pause = self._closed.wait     # waits out a rate_limited answer
        self._closing_by_us = False
        self._reader = None

    # -- connecting ------------------------------------------------------------
    def open(self):
        """Connect and run the Noise handshake; the server's static public key."""
        self.sock = self._connect()
        self._send_bytes(self._locked(self.conn.start))
        while True:
            event = self._next_event_sync()
            if isinstance(event, channel_mod.Notice):
                raise ServerRefused(event.text, "notice")
            if isinstance(event, channel_mod.HandshakeDone):
                return event.remote_static
            if event is CLOSED:
                raise ConnectionLost("The server closed the connection during the "
                                     "handshake.", "closed")

    def _connect(self):
        where = f"{self.host}:{self.port}"
        try:
            return _keepalive(socket.create_connection((self.host, self.port),
                                                       self.connect_timeout))
        except socket.gaierror:
            raise CannotConnect(f"Cannot find the host {self.host}; check --host.",
                                "unknown_host") from None
        except socket.timeout:
            raise CannotConnect(f"Cannot connect to {where}: no answer within "
                                f"{self.connect_timeout:g} seconds.", "timeout") from None
        except ConnectionRefusedError:
            raise CannotConnect(f"Cannot connect to {where}: connection refused. Is the "
                                "server running, and are --host and --port right?",
                                "refused") from None
        except OSError as error:
            raise CannotConnect(f"Cannot connect to {where}: {error.strerror or error}.",
                                "connect_failed") from None

    def negotiate(self):
        """The Version exchange; then the reader thread takes over receiving."""
        self._send(protocol.version_offer())
        event = self._next_event_sync()
        if isinstance(event, Packet) and event.op == "Error":
            raise ServerRefused(event.data["reason"], event.data["code"])
        if isinstance(event, Packet) and event.op == "System":
            raise ServerRefused(event.data["message"], event.data["event"])
        if not (isinstance(event, Packet) and event.op == "Version"):
            raise ConnectionLost(CLOSED_BY_SERVER if event is CLOSED else
                                 "The server answered the version offer wrongly.", "closed")
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="parley-reader",
                                        daemon=True)
        self._reader.start()
        return event.data

    def _next_event_sync(self):
        """The next event before the reader thread runs (handshake, Version)."""
        try:
            while True:
                event = self._locked(self.conn.next_event)
                if event is not NEED_DATA:
                    return event
                data = self.sock.recv(RECV_SIZE)
                self._locked(self.conn.receive_data, data)
        except socket.timeout:
            raise ConnectionLost(f"The server did not answer within "
                                 f"{self.connect_timeout:g} seconds.", "timeout") from None
        except ProtocolError as error:
            raise ConnectionLost(_garbled(error), error.code) from None
        except OSError:
            raise ConnectionLost(CLOSED_BY_SERVER, "closed") from None

    # -- sending -----------------------------------------------------------------
    def _locked(self, function, *args):
        with self._conn_lock:
            return function(*args)

    def _send(self, packet, only_in_session=False):
        """Encrypt and send one packet; False if skipped (no longer in session)."""
        with self._send_lock:
            with self._conn_lock:
                if only_in_session and self.conn.state != protocol.SESSION:
                    return False
                try:
                    data = self.conn.send(packet)
                except LocalProtocolError:
                    if self.closed or self.conn.state in ENDED_STATES:
                        raise self.connection_lost() from None   # it ended meanwhile
                    raise RequestFailed("That cannot be done at this point of the "
                                        "session.", "not_now") from None
                except ProtocolError as error:
                    raise ConnectionLost(_garbled(error), error.code) from None
            self._send_bytes(data)
        return True

    def _send_bytes(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise ConnectionLost(self.close_reason, "closed") from None

    # -- the reader thread -----------------------------------------------------------
    def _read_loop(self):
        reason = None
        try:
            while not self._read_once():
                pass
        except ProtocolError as error:
            reason = _garbled(error)
        except (OSError, ClientFailure):
            pass
        except Exception as error:   # a bug in a handler must not kill silently
            reason = f"The client failed while handling a packet ({type(error).__name__})."
        self._finish(reason)

    def _read_once(self):
        """Handle every complete event, then wait for bytes; True at end of stream."""
        events, error = self._drain()
        self._dispatch(events)
        if error is not None:
            raise error
        if CLOSED in events:
            return True
        data = self.sock.recv(RECV_SIZE)
        self._locked(self.conn.receive_data, data)
        return False

    def _drain(self):
        events = []
        with self._conn_lock:
            try:
                while True:
                    event = self.conn.next_event()
                    if event is NEED_DATA:
                        return events, None
                    events.append(event)
                    if event is CLOSED:
                        return events, None
            except ProtocolError as error:
                return events, error

    def _dispatch(self, events):
        acks = []
        for event in events:
            if isinstance(event, protocol.BadPacket):
                self._on_bad_packet(event)
            elif isinstance(event, Packet):
                handler = getattr(self, "_on_" + event.op.lower(), None)
                if handler is not None:
                    handler(event, acks)
        if acks:
            self._acknowledge(acks)

    def _acknowledge(self, shown):
        """Ack the (id, whole) pairs shown; those shown whole are read as well."""
        with self._ack_lock:
            if self._held_acks is not None:
                self._held_acks.extend(shown)
                return
        self._send(ack_packet(shown), only_in_session=True)

    def _on_login(self, packet, _acks):
        self._in_session = False
        self._ready.clear()
        if packet.data.get("greeting"):
            self.handlers.on_greeting(packet.data["greeting"])
        self._login_steps.put(packet)

    def _on_welcome(self, packet, _acks):
        self._in_session = True
        self._seen.clear()
        with self._ack_lock:
            self._held_acks = None
        self.handlers.on_welcome(packet.data["user"], packet.data["created"])
        if packet.data.get("motd"):
            self.handlers.on_motd(packet.data["motd"])
        self._login_steps.put(packet)

    def _on_message(self, packet, acks):
        message_id, whole = packet.data["id"], False
        if message_id not in self._seen:
            self._seen.add(message_id)
            whole = bool(self.handlers.on_message(packet.data, "push" if self._ready.is_set()
                                                  else "login"))
        acks.append((message_id, whole))

    def _on_result(self, packet, _acks):
        self._deliver_reply(packet.data["rid"], packet)

    def _on_error(self, packet, _acks):
        data = packet.data
        if "rid" in data and self._deliver_reply(data["rid"], packet):
            return
        if data.get("fatal"):
            self._fatal_reason = data["reason"]
        if not self._in_session:
            self._login_steps.put(packet)
        elif not data.get("fatal"):
            self.handlers.on_error(data["code"], data["reason"])

    def _on_system(self, packet, _acks):
        event, message = packet.data["event"], packet.data["message"]
        if event == "ready":      # again after the server's database restarted
            if not self._ready.is_set():
                self._ready.set()
                self.handlers.on_ready(packet.data.get("user"))
            return
        if event == "goodbye":
            self._goodbye.set()
        elif event not in PASSING_EVENTS:
            self._server_reason = message
        if self._in_session:
            self.handlers.on_system(event, message)
        else:
            self._login_steps.put(packet)

    def _on_bad_packet(self, bad):
        if isinstance(bad.rid, int) and not isinstance(bad.rid, bool) \
                and self._deliver_reply(bad.rid, bad):
            return
        self.handlers.on_error("bad_packet", f"The server sent a malformed {bad.op} packet.")

    def _deliver_reply(self, rid, reply):
        with self._replies_cond:
            if rid not in self._waiting:
                return False
            self._replies[rid] = reply
            self._replies_cond.notify_all()
            return True

    def _finish(self, reason):
        if reason is not None and self._fatal_reason is None:
            self._fatal_reason = reason
        self._closed.set()
        self._ready.set()      # wake anyone waiting for the backlog
        with self._replies_cond:
            self._replies_cond.notify_all()
        self._login_steps.put(None)
        if not self._closing_by_us:
            self.handlers.on_closed(self.close_reason)

    # -- state the CLI looks at ----------------------------------------------------------
    @property
    def closed(self):
        return self._closed.is_set()

    @property
    def close_reason(self):
        """Why the connection ended, as one sentence."""
        return self._fatal_reason or self._server_reason or CLOSED_BY_SERVER

    def connection_lost(self):
        return ConnectionLost(self.close_reason, "closed")

    # -- the login dialogue ------------------------------------------------------------
    def next_login_step(self):
        """The next Login prompt or the Welcome packet.

        Raises ServerRefused for a fatal Error or a System event (too many
        attempts, login timeout, shutdown) and ConnectionLost at the end.
        """
        while True:
            try:
                step = self._login_steps.get(timeout=0.5)
            except queue.Empty:
                if self.closed and self._login_steps.empty():
                    raise self.connection_lost() from None
                continue
            if step is None:
                raise self.connection_lost()
            if step.op == "Error":
                raise ServerRefused(step.data["reason"], step.data["code"])
            if step.op == "System":
                raise ServerRefused(step.data["message"], step.data["event"])
            return step

    def answer_login(self, **fields):
        """One answer: username=..., password=..., new_password=... or cancel=True."""
        self._send(Packet("Login", fields))

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Wait until the backlog has been handed over (System ready)."""
        self._ready.wait(timeout)
        if self.closed:
            raise self.connection_lost()

    # -- requests ----------------------------------------------------------------------
    def request(self, op, timeout=REQUEST_TIMEOUT, **fields):
        """Send one request and wait for its Result; the Result's data.

        Fields given as None are left out (the registry's defaults apply). A
        request the server answers `rate_limited` (it was not carried out) is
        sent again after the wait the server names, a few times, and
        `handlers.on_wait(seconds, reason)` says so.
        """
        fields = {name: value for name, value in fields.items() if value is not None}
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            try:
                return self._request_once(op, timeout, fields)
            except RequestFailed as failure:
                wait = failure.retry_after
                if failure.code != "rate_limited" or attempt == RATE_LIMIT_TRIES \
                        or not wait or wait > RATE_LIMIT_WAIT_MAX:
                    raise
                self.handlers.on_wait(wait, failure.message)
                if self._pause(wait):                   # True: the connection ended
                    raise self.connection_lost() from None

    def _request_once(self, op, timeout, fields):
        return self.finish_request(self.start_request(op, **fields), timeout)

    def start_request(self, op, **fields):
        """Send a request without waiting for it (a window of file chunks); its rid,
        for finish_request, which must follow for every rid (no rate_limited retry)."""
        with self._replies_cond:
            self._rid += 1
            rid = self._rid
            self._waiting.add(rid)
        self._send(Packet(op, {"rid": rid, **fields}))
        return rid

    def finish_request(self, rid, timeout=REQUEST_TIMEOUT):
        """The Result data of the request `rid` (RequestFailed, ConnectionLost)."""
        try:
            reply = self._wait_reply(rid, timeout)
        finally:
            with self._replies_cond:
                self._waiting.discard(rid)
                self._replies.pop(rid, None)
        return _result_data(reply)

    def _wait_reply(self, rid, timeout):
        with self._replies_cond:
            self._replies_cond.wait_for(lambda: rid in self._replies or self.closed, timeout)
            if rid in self._replies:
                return self._replies[rid]
        if self.closed:
            raise self.connection_lost()
        raise RequestFailed(f"The server did not answer within {timeout:g} seconds; "
                            "try again.", "timeout")

    def send_message(self, to, subject, body, client_id=None):
        """Send, retrying "unavailable" with the same client_id; the Result data.

        Pass the `client_id` of an earlier attempt to retry that message: the
        server stores it once (see `new_client_id()`).
        """
        fields = {"to": to, "subject": subject, "body": body,
                  "client_id": client_id or new_client_id()}
        for delay in SEND_RETRY_DELAYS:
            try:
                return self.request("Send", **fields)
            except RequestFailed as failure:
                if failure.code != "unavailable":
                    raise
            if self._closed.wait(delay):
                raise self.connection_lost()
        return self.request("Send", **fields)

    def delete_account(self):
        """Delete the account; the server then returns to the login dialogue.

        Acks are held back meanwhile: one arriving after the server's hand-back
        to the login dialogue would be a protocol violation there. If the
        deletion fails they are sent after all.
        """
        with self._ack_lock:
            self._held_acks = []
        try:
            return self.request("DeleteAccount", confirm=True)
        except RequestFailed:
            with self._ack_lock:
                held, self._held_acks = self._held_acks, None
            if held:
                self._send(ack_packet(held), only_in_session=True)
            raise

    # -- ending ----------------------------------------------------------------------------
    def logout(self, wait=2.0):
        """Say goodbye (if still in a session) and wait briefly for the answer."""
        if self.closed:
            return False
        try:
            if not self._send(Packet("Logout", {}), only_in_session=True):
                return False
        except ClientFailure:
            return False
        self._closing_by_us = True
        return self._goodbye.wait(wait) or self._closed.wait(0)

    def close(self):
        """Close the socket and stop the reader thread; safe to call twice."""
        self._closing_by_us = True
        if self.sock is None:
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)


def _keepalive(sock):
    """TCP keepalive with short timers where the platform allows it, and no
    Nagle delay (each request is one whole write; waiting only adds latency)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass     # keepalive is a nicety; the connection works without it
    return sock


def _result_data(reply):
    if isinstance(reply, protocol.BadPacket):
        raise RequestFailed("The server's answer was malformed; try again.", "bad_reply")
    if reply.op == "Error":
        raise RequestFailed(reply.data["reason"], reply.data["code"],
                            reply.data.get("retry_after"))
    return reply.data


def _garbled(error):
    return (f"The connection failed: the server sent something this client does not "
            f"understand ({error.reason}).")
