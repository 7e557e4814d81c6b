"""The login and user processes' end of the database process's Unix socket.

`DbProtocol` is sans-IO: requests become length-prefixed frames of the
internal msgpack codec (`Modules/database/codec.py`: `Packet(op, {"rid": n,
...})` as `[op, data]`), and incoming frames become `Reply`,
`Push` and `Notice` events. `DbLink` wraps it around a Unix socket, with a
blocking `call()` for the login process and non-blocking helpers for the
user process's event loop. Which requests exist, and which of them are
answered, is the registry's (`Modules/operations.py`): a request it does
not know is our own bug and raises LocalProtocolError at once.

Expected outcomes are not failures: a wrong password or a taken name comes
back as an ordinary reply whose `outcome` field says so.

Failures: the database process may be restarting; `connect()` retries for
`connect_timeout` seconds and then raises `DbUnavailable`. A broken
connection mid-request raises `DbUnavailable` from `call()` and shows up as
`CLOSED` in the event loop; the caller reports an error for every request
still pending and reconnects. A refusal from the database comes back as a
`Reply` with ok False (or `DbError` from `call()`).
"""

import socket
import time
from typing import NamedTuple

from Modules import operations
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from Modules.database import codec

MAX_FRAME = 2 * 1024 * 1024   # above the 1 MiB a session packet may have
_MONITOR_REQUESTS = frozenset(op.name for op in operations.OPERATIONS if op.reaches_monitor)


class DbUnavailable(Exception):
    """The database process cannot be reached right now."""


class DbError(Exception):
    """The database process refused or failed a request."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Reply(NamedTuple):
    rid: int
    ok: bool
    data: dict


class Push(NamedTuple):
    messages: list


class Notice(NamedTuple):
    event: str
    message: str = ""


class Wake(NamedTuple):
    """To the daemon's link only: wake the parked connection of `ticket` (with `event`
    and `message`: tell its client the session ended, and close it)."""
    ticket: str
    event: str = ""
    message: str = ""


class DbProtocol:
    """Frames and request ids, no socket."""

    def __init__(self):
        self.decoder = FrameDecoder(MAX_FRAME)
        self._next_rid = 0

    def request(self, op, fields):
        """(rid, bytes) for one request."""
        if op not in _MONITOR_REQUESTS:
            raise LocalProtocolError(f"{op} is not a monitor request", code="unknown_op")
        self._next_rid += 1
        payload = codec.dumps((op, {"rid": self._next_rid, **fields}))
        return self._next_rid, encode_frame(payload, MAX_FRAME)

    def receive_data(self, data):
        self.decoder.receive_data(data)

    def next_event(self):
        frame = self.decoder.next_event()
        if frame is NEED_DATA or frame is CLOSED:
            return frame
        return self._event(codec.loads_reply(frame))

    @staticmethod
    def _event(packet):
        data = packet.data
        if packet.op == "Reply" and isinstance(data.get("rid"), int):
            return Reply(data["rid"], bool(data.get("ok")), data)
        if packet.op == "Push" and isinstance(data.get("messages"), list):
            return Push(data["messages"])
        if packet.op == "Notice":
            message = data.get("message")
            return Notice(str(data.get("event")), message if isinstance(message, str) else "")
        if packet.op == "Wake" and isinstance(data.get("ticket"), str):
            return Wake(data["ticket"], str(data.get("event") or ""), str(data.get("message")
                                                                          or ""))
        raise RemoteProtocolError(f"unexpected {packet.op} from the database process")


class DbLink:
    """A connection to the database process over its Unix socket."""

    def __init__(self, socket_path, connect_timeout=15.0, cancelled=None):
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout
        self.cancelled = cancelled or (lambda: False)   # True: stop retrying now
        self.sock = None
        self.protocol = None
        self.out = bytearray()

    def connect(self):
        """Connect, retrying while the database process (re)starts, unless
        `cancelled()` says this process is stopping (its daemon may be gone)."""
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                return self._connect_once()
            except OSError as error:
                if time.monotonic() >= deadline or self.cancelled():
                    raise DbUnavailable(f"database process unreachable: {error}") from None
                time.sleep(0.05)

    def _connect_once(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.close()
        self.sock, self.protocol, self.out = sock, DbProtocol(), bytearray()
        return sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send_request(self, op, now=True, **fields):
        """Queue a request and (if `now`) send what the socket takes; the request id.

        On a non-blocking socket the rest waits in `out` until `flush()` is
        called again when the socket is writable (a frame is never cut). An
        event loop passes `now=False` and flushes once per turn, so that a
        burst of requests leaves in one write.
        """
        if self.sock is None:
            raise DbUnavailable("not connected to the database process")
        rid, data = self.protocol.request(op, fields)
        self.out += data
        if now:
            self.flush()
        return rid

    def flush(self):
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                raise DbUnavailable(f"database connection lost: {error}") from None
            del self.out[:sent]

    def call(self, op, **fields):
        """Blocking request: the reply's data, or DbError / DbUnavailable."""
        return self.wait_for(self.send_request(op, **fields))

    def wait_for(self, rid):
        """Block until the reply to request `rid` (sent with `send_request`):
        its data, or DbError / DbUnavailable. Events before that reply are
        passed over, so pipelined requests are waited for in the order they
        are answered: a phase change (Hello, Bind) before anything sent after
        it, which the monitor holds until the change is decided."""
        while True:
            event = self.read_event()
            if isinstance(event, Reply) and event.rid == rid:
                if not event.ok:
                    raise DbError(event.data.get("code"), event.data.get("reason"))
                return event.data

    def read_event(self):
        """Block until the next event; DbUnavailable if the connection ends."""
        while True:
            event = self.protocol.next_event()
            if event is CLOSED:
                raise DbUnavailable("database connection closed")
            if event is not NEED_DATA:
                return event
            self.feed(self._recv())

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except OSError:
            return b""

    def feed(self, data):
        self.protocol.receive_data(data)

    def events(self):
        """Every event already decodable (non-blocking use); may end with CLOSED."""
        while True:
            event = self.protocol.next_event()
            if event is NEED_DATA:
                return
            yield event
            if event is CLOSED:
                return
