"""Parley load generator: many concurrent clients per process, real protocol.

Every client speaks Parley's wire protocol: TCP to 127.0.0.1, the Noise NX
handshake, the Version exchange and the login dialogue through the
reference sans-IO `protocol.Connection.client()` (the very code the real
client uses). After login a client either keeps using that `Connection`
(codec "protocol") or exports its live transport state (keys and nonce
counters, exactly what the server's login process hands to the user
process) and continues with `FastSession`, a lean but wire-identical codec
for single-chunk transport messages: the binary serializer of
`Modules/wire/serializers.py`, ChaCha20-Poly1305 from `cryptography` (a
reusable key object, ~1 us per message against ~5 us for the server's
pycryptodome path, Modules/wire/aead.py) and no per-packet state-table checks. That is
codec "fast", the default, so that the load generator is not the
bottleneck on a 2-core machine where it shares the CPU with the server.

One `Engine` per process runs a selectors loop over non-blocking sockets.
Every loop is bounded in count and in time: `Engine.run_until()` takes a
deadline, and every scenario caps its message counts.

`worker_main()` is the entry point of a load-generator process: it obeys a
small command protocol on a multiprocessing pipe (login, run traffic,
report, close), so `bench/run.py` can start several of them and line up
their phases with the server-side measurements.
"""

import errno
import heapq
import os
import resource
import selectors
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CODE = os.path.join(os.path.dirname(HERE), "Code")
if CODE not in sys.path:
    sys.path.insert(0, CODE)

from Modules.wire import channel as channel_mod  # noqa: E402
from Modules.wire import protocol  # noqa: E402
from Modules.wire.errors import ProtocolError  # noqa: E402
from Modules.wire.framing import CLOSED, NEED_DATA  # noqa: E402
from Modules.wire.serializers import BINARY, Packet  # noqa: E402

try:  # optional: a much cheaper AEAD for the load generator's own crypto
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as _FastAEAD
except ImportError:  # pragma: no cover - falls back to the reference cipher
    _FastAEAD = None

HOST = "127.0.0.1"
PASSWORD = "bench password 1"
_LEN = struct.Struct(">I")
_NONCE = struct.Struct("<4xQ")
RECV_SIZE = 262144


def now_ns():
    return time.monotonic_ns()   # CLOCK_MONOTONIC: one clock for every process


class BenchError(Exception):
    """The scenario cannot go on (server refused, protocol error, timeout)."""


# --------------------------------------------------------------------------
# The lean session codec


class FastSession:
    """Session-phase codec continuing an exported client channel.

    Wire-identical to `SecureChannel` + `BINARY` for payloads that fit in one
    transport message (all the benchmark sends). Multi-chunk payloads from
    the server are reassembled too, and batch frames are read and (when the
    Version exchange agreed on "batch", as it does with this server) sent:
    a burst of packets from one loop turn shares one encrypted frame.
    """

    def __init__(self, state, serializer):
        ch = state["channel"]
        if serializer.name != "binary":
            raise BenchError("the fast codec speaks the binary serializer only")
        self.send_n, self.recv_n = ch["send_nonce"], ch["recv_nonce"]
        if _FastAEAD is not None:
            self._enc = _FastAEAD(ch["send_key"]).encrypt
            self._dec = _FastAEAD(ch["recv_key"]).decrypt
        else:
            from Modules.wire.noise import CipherState
            send_cs = CipherState(ch["send_key"], self.send_n)
            recv_cs = CipherState(ch["recv_key"], self.recv_n)
            self._enc = lambda nonce, pt, ad: send_cs.encrypt_with_ad(b"", pt)
            self._dec = lambda nonce, ct, ad: recv_cs.decrypt_with_ad(b"", ct)
        self.buf = bytearray(ch["pending"])
        self._chunks = [] if ch["partial"] is None else [ch["partial"]]
        self.batching = state.get("batching") is True
        self.ready = [BINARY.loads(item) for item in _split_items(ch["ready"])]
        self.loads = BINARY.loads        # payload -> Packet (bench/abuse.py may peek instead)

    def send(self, packet):
        return self._frame(b"\x00" + BINARY.dumps(packet))

    def send_many(self, packets):
        if len(packets) == 1 or not self.batching:
            return b"".join(self.send(packet) for packet in packets)
        frames, items, size = [], [], 0
        for packet in packets:
            payload = BINARY.dumps(packet)
            if items and size + 4 + len(payload) > BATCH_BYTES:
                frames.append(self._frame(b"\x02" + b"".join(items)))
                items, size = [], 0
            items.append(_LEN.pack(len(payload)) + payload)
            size += 4 + len(payload)
        frames.append(self._frame(b"\x02" + b"".join(items)))
        return b"".join(frames)

    def _frame(self, pt):
        ct = self._enc(_NONCE.pack(self.send_n), pt, None)
        self.send_n += 1
        return _LEN.pack(len(ct) + 1) + b"\x02" + ct

    def receive_data(self, data):
        self.buf += data

    def packets(self):
        """Every whole packet buffered so far."""
        out, self.ready = self.ready, []
        buf = self.buf
        pos, size = 0, len(buf)
        while size - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            end = pos + 4 + length
            if end > size:
                break
            if buf[pos + 4] != 0x02:
                raise BenchError(f"unexpected frame kind {buf[pos + 4]} in session")
            ct = bytes(buf[pos + 5:end])
            try:
                pt = self._dec(_NONCE.pack(self.recv_n), ct, None)
            except Exception as error:
                raise BenchError(f"decrypt failed: {error}") from None
            self.recv_n += 1
            pos = end
            if pt[0] == 2 and not self._chunks:
                out.extend(self.loads(item) for item in _split_items(memoryview(pt)[1:]))
            elif pt[0] == 0 and not self._chunks:
                out.append(self.loads(pt[1:]))
            else:
                self._chunks.append(pt[1:])
                if pt[0] == 0:
                    out.append(self.loads(b"".join(self._chunks)))
                    self._chunks = []
        if pos:
            del buf[:pos]
        return out


BATCH_BYTES = 60000   # below one Noise message (channel.CHUNK_SIZE)


def _split_items(body):
    """The payloads of a batch frame body (4-byte length + payload each)."""
    items, pos = [], 0
    while pos < len(body):
        (size,) = _LEN.unpack_from(body, pos)
        items.append(bytes(body[pos + 4:pos + 4 + size]))
        pos += 4 + size
    return items


# --------------------------------------------------------------------------
# One client


LOGIN, SESSION, DONE = "LOGIN", "SESSION", "DONE"


class Client:
    """One connection: logs in (or creates its account), then a session."""

    __slots__ = ("engine", "name", "password", "sock", "conn", "fast", "state", "out",
                 "t", "handler", "create", "logout_sent", "error", "codec", "on_login",
                 "backlog", "want_ready", "closed_at", "queued", "retries", "last_answer",
                 "__weakref__")

    def __init__(self, engine, name, password=PASSWORD, codec="fast", handler=None,
                 on_login=None):
        self.engine, self.name, self.password, self.codec = engine, name, password, codec
        self.handler, self.on_login = handler, on_login
        self.sock = self.conn = self.fast = None
        self.state = LOGIN
        self.out = bytearray()
        self.t = {}                      # phase name -> monotonic ns
        self.create = None               # True if the account was created
        self.logout_sent = False
        self.error = None
        self.backlog = 0                 # Message packets before "ready"
        self.closed_at = None
        self.queued = []                 # session packets of this loop turn
        self.retries = 0                 # answers sent again after a retry_after prompt
        self.last_answer = None          # the last Login answer (sent again on retry_after)

    # -- connecting ------------------------------------------------------------
    def connect(self, port, source=None):
        """`source`: the local address to connect from (any of 127/8 reaches the server)."""
        self.t["connect"] = now_ns()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            sock.bind((source, 0))
        sock.setblocking(False)
        code = sock.connect_ex((HOST, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise BenchError(f"connect failed: {os.strerror(code)}")
        self.sock = sock
        self.conn = protocol.Connection.client()
        self.out += self.conn.start()       # flushed once the socket is writable
        self.engine.register(self)

    def write(self, data):
        if not self.out:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self.fail(f"send failed: {error}")
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        self.out += data
        self.engine.want_write(self)

    def flush(self):
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.fail(f"send failed: {error}")
            return
        del self.out[:sent]
        if not self.out:
            self.engine.done_writing(self)

    def send(self, op, **data):
        """Queue a session packet; the engine sends each turn's packets together."""
        if not self.queued:
            self.engine.dirty.append(self)
        self.queued.append(Packet(op, data))

    def send_queued(self):
        packets, self.queued = self.queued, []
        if not packets or self.state == DONE:
            return
        if self.fast is not None:
            self.write(self.fast.send_many(packets))
            return
        for packet in packets:
            self.conn.queue(packet)
        self.write(self.conn.flush())

    # -- receiving -----------------------------------------------------------------
    def readable(self):
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.ended()
            return
        try:
            if self.fast is not None:
                self.fast.receive_data(data)
                for packet in self.fast.packets():
                    self.on_packet(packet)
            else:
                self.conn.receive_data(data)
                self._drain()
        except (ProtocolError, BenchError) as error:
            self.fail(f"protocol error: {error}")

    def _drain(self):
        while self.state != DONE and self.fast is None:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return
            if event is CLOSED:
                self.ended()
                return
            if isinstance(event, channel_mod.HandshakeDone):
                self.t["handshake"] = now_ns()
                self.write(self.conn.send(protocol.version_offer(("binary",))))
            elif isinstance(event, channel_mod.Notice):
                self.fail(f"server notice: {event.text}")
            elif isinstance(event, protocol.BadPacket):
                self.fail(f"bad packet from server: {event.reason}")
            else:
                self.on_packet(event)

    def on_packet(self, packet):
        op, data = packet
        if self.state == SESSION:
            if op == "System" and data.get("event") == "goodbye":
                self.close()
                return
            if op == "Error" and (self.handler is None or "rid" not in data
                                  or data.get("fatal")):
                self.fail(f"server error {data.get('code')}: {data.get('reason')}")
                return
            if self.handler is not None:
                self.handler(self, op, data)
            return
        # login phase
        if op == "Version":
            self.t["version"] = now_ns()
        elif op == "Login":
            self._answer_prompt(data)
        elif op == "Welcome":
            self.t["welcome"] = now_ns()
            self.create = bool(data.get("created"))
        elif op == "Message":
            self.backlog += 1
            if self.handler is not None:
                self.handler(self, op, data)
        elif op == "System" and data.get("event") == "ready":
            self.t["ready"] = now_ns()
            self.state = SESSION
            if self.codec == "fast":
                self.fast = FastSession(self.conn.export_state(), self.conn.serializer)
                self.conn = None
            self.engine.logged_in(self)
            if self.on_login is not None:
                self.on_login(self)
        elif op == "Error":
            self.fail(f"login error {data.get('code')}: {data.get('reason')}")
        elif op == "System" and data.get("event") != "presence":   # notices may come
            self.fail(f"system event {data.get('event')} during login")

    def _answer_prompt(self, data):
        prompt = data.get("prompt")
        if data.get("retry_after") is not None and self.last_answer is not None:
            self.retry_later(data["retry_after"])      # busy or throttled: not a refusal
        elif prompt == "username":
            if "username" in self.t:
                self.fail(f"username refused: {data.get('message')}")
                return
            self.t["username"] = now_ns()
            self.answer(username=self.name)
        elif prompt in ("password", "new_password"):
            if "password" in self.t:
                self.fail(f"password refused: {data.get('message')}")
                return
            self.t["password"] = now_ns()
            self.answer(**{prompt: self.password})
        else:
            self.fail(f"unknown prompt {prompt!r}")

    def answer(self, **fields):
        self.last_answer = Packet("Login", fields)
        self.write(self.conn.send(self.last_answer))

    def retry_later(self, seconds):
        """Send the last answer again in `seconds` (a prompt with retry_after)."""
        self.retries += 1
        packet = self.last_answer

        def again():
            if self.state == LOGIN:
                self.write(self.conn.send(packet))
        self.engine.at(now_ns() + int(float(seconds) * 1e9), again)

    # -- ending --------------------------------------------------------------------
    def logout(self):
        if self.state == SESSION and not self.logout_sent:
            self.logout_sent = True
            self.send("Logout")

    def ended(self):
        if self.state != DONE and not self.logout_sent:
            self.fail("server closed the connection")
        self.close()

    def fail(self, reason):
        if self.error is None:
            self.error = reason
            self.engine.errors.append(f"{self.name}: {reason}")
        self.close()

    def close(self):
        if self.state == DONE:
            return
        was_login = self.state == LOGIN
        self.state = DONE
        self.closed_at = now_ns()
        self.engine.unregister(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self.engine.closed(self, was_login)


# --------------------------------------------------------------------------
# The event loop of one load-generator process


class Engine:
    """`port`: the server's; or {first letter of a name: port} for several servers
    (bench/pg_servers.py: a person's client goes to the server their name's first
    letter picks)."""

    def __init__(self, port):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.errors = []
        self.live = set()
        self.logins_done = []        # clients that reached "ready"
        self.login_failures = 0
        self._timers = []            # heap of (due_ns, seq, fn)
        self._seq = 0
        self.after_round = []        # called after each batch of socket events
        self.dirty = []              # clients with queued packets

    def port_for(self, name):
        if isinstance(self.port, dict):
            return self.port[name[0]]
        return self.port

    def register(self, client):
        self.live.add(client)
        self.sel.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def want_write(self, client):
        try:
            self.sel.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
        except (KeyError, ValueError):
            pass

    def done_writing(self, client):
        try:
            self.sel.modify(client.sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError):
            pass

    def unregister(self, client):
        self.live.discard(client)
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass

    def logged_in(self, client):
        self.logins_done.append(client)

    def closed(self, client, was_login):
        if was_login:
            self.login_failures += 1

    def at(self, due_ns, fn):
        self._seq += 1
        heapq.heappush(self._timers, (due_ns, self._seq, fn))

    def run_until(self, done, deadline_ns):
        """Serve sockets and timers until done() is true or the deadline passes."""
        sel, timers = self.sel, self._timers
        while not done():
            now = now_ns()
            if now >= deadline_ns:
                return False
            while timers and timers[0][0] <= now:
                heapq.heappop(timers)[2]()
            self.send_queued()
            if done():
                break
            wait = (deadline_ns - now) / 1e9
            if timers:
                wait = min(wait, max(0.0, (timers[0][0] - now) / 1e9))
            for key, mask in sel.select(min(wait, 0.5)):
                client = key.data
                if mask & selectors.EVENT_WRITE:
                    if client.out:
                        client.flush()
                    else:
                        self.done_writing(client)
                if mask & selectors.EVENT_READ and client.state != DONE:
                    client.readable()
            for hook in self.after_round:
                hook()
            self.send_queued()
        return True

    def send_queued(self):
        dirty, self.dirty = self.dirty, []
        for client in dirty:
            client.send_queued()


# --------------------------------------------------------------------------
# Traffic patterns (run inside one Engine)


def login_many(engine, names, concurrency, deadline_ns, codec="fast", handler=None,
               keep=True):
    """Log in (creating accounts as needed) every name, `concurrency` at a time.

    Returns the clients (still connected if keep, else logged out and closed).
    """
    queue = list(reversed(names))
    clients = []
    in_flight = set()

    def finished(client):
        in_flight.discard(client)
        if not keep:
            client.logout()

    def start_more():
        while queue and len(in_flight) < concurrency:
            client = Client(engine, queue.pop(), codec=codec, handler=handler,
                            on_login=finished)
            in_flight.add(client)
            clients.append(client)
            client.connect(engine.port_for(client.name))

    def done():
        for client in list(in_flight):
            if client.state == DONE:
                in_flight.discard(client)
        start_more()
        if keep:
            return not queue and not in_flight
        # logged out and closed: only the clients of this call (others may be kept)
        return not queue and not in_flight and all(c.state == DONE for c in clients)

    start_more()
    ok = engine.run_until(done, deadline_ns)
    if not ok:
        raise BenchError(f"logins timed out ({len(queue)} not started, "
                         f"{len(in_flight)} in flight); errors: {engine.errors[:3]}")
    failed = [c for c in clients if c.error]
    if failed:
        raise BenchError(f"{len(failed)} logins failed, first: {failed[0].error}")
    return clients


def login_phases(client):
    """Per-phase times of one completed login, milliseconds."""
    t = client.t
    def ms(a, b):
        return (t[b] - t[a]) / 1e6
    return {"total": ms("connect", "ready"), "handshake": ms("connect", "handshake"),
            "version": ms("handshake", "version"),
            "username": ms("username", "password"),      # Exists lookup + prompt
            "password": ms("password", "welcome"),      # hash + hand-off start
            "welcome_to_ready": ms("welcome", "ready"),  # user process start, Bind, Subscribe
            "retries": client.retries}                   # answers repeated after retry_after


class RelayStats:
    """Counters and latency samples of the relay traffic of one process."""

    def __init__(self):
        self.sent = self.results = self.received = self.acked = self.send_errors = 0
        self.error_codes = {}
        self.latencies = []          # ns, one per received message
        self.first_send = self.last_receive = self.last_result = None
        self.send_lag = []           # paced: how late sends went out (ns)


def _make_receiver_handler(stats, ack_batch_ns=0):
    def handler(client, op, data):
        if op != "Message":
            return
        now = now_ns()
        body = data["body"]
        sent = int(body[:body.index(" ")])
        stats.latencies.append(now - sent)
        stats.received += 1
        stats.last_receive = now
        client_ids = client_acks.setdefault(client, [])
        client_ids.append(data["id"])
    client_acks = {}

    def flush_acks():
        for client, ids in client_acks.items():
            if ids and client.state == SESSION:
                client.send("Ack", ids=ids)
                stats.acked += len(ids)
        client_acks.clear()
    handler.flush_acks = flush_acks
    return handler


PAD = "x" * 48


def _body():
    return f"{now_ns()} {PAD}"


class Sender:
    """Sends Send requests from one client, keeping a window of outstanding ones."""

    __slots__ = ("client", "to", "stats", "window", "outstanding", "seq", "limit",
                 "stop_ns", "prefix")

    def __init__(self, client, to, stats, window, limit, stop_ns):
        self.client, self.to, self.stats = client, to, stats
        self.window, self.limit, self.stop_ns = window, limit, stop_ns
        self.outstanding = self.seq = 0
        self.prefix = f"{client.name}.{os.getpid()}.{now_ns() % 10**9}."

    def send_one(self):
        self.seq += 1
        self.outstanding += 1
        self.stats.sent += 1
        self.client.send("Send", rid=self.seq, to=self.to, subject="bench", body=_body(),
                         client_id=self.prefix + str(self.seq))

    def fill(self):
        if now_ns() >= self.stop_ns:
            return
        while self.outstanding < self.window and self.seq < self.limit:
            self.send_one()

    def on_result(self, op, data):
        if op == "Result":
            self.outstanding -= 1
            self.stats.results += 1
            self.stats.last_result = now_ns()
            if self.window < 10**9:
                self.fill()
        elif op == "Error":   # e.g. "unavailable": counted, the sender goes on
            self.outstanding -= 1
            self.stats.send_errors += 1
            self.stats.error_codes[data.get("code")] = \
                self.stats.error_codes.get(data.get("code"), 0) + 1
            if self.window < 10**9:
                self.fill()


def run_relay(engine, pairs, go_ns, duration_s, window=0, rate_per_sender=0.0,
              limit_per_sender=10**9, drain_s=30.0):
    """Relay traffic over logged-in (sender, receiver) client pairs.

    Saturation when `window` > 0 (pipelined sends, `window` outstanding per
    sender); paced when `rate_per_sender` > 0 (open loop on a fixed schedule,
    the send time is in the body). Sending stops at go + duration or at the
    limit; then the loop waits (at most drain_s) for every sent message to be
    received and acknowledged.
    """
    stats = RelayStats()
    recv_handler = _make_receiver_handler(stats)
    stop_ns = go_ns + int(duration_s * 1e9)
    senders = []
    for sender_client, receiver_client in pairs:
        sender = Sender(sender_client, receiver_client.name, stats, window or 10**9,
                        limit_per_sender, stop_ns)
        sender_client.handler = lambda c, op, data, s=sender: s.on_result(op, data)
        receiver_client.handler = recv_handler
        senders.append(sender)

    cpu0 = time.process_time()
    engine.run_until(lambda: False, go_ns)       # wait for the common start
    cpu_start = time.process_time()
    stats.first_send = now_ns()
    engine.after_round.append(recv_handler.flush_acks)   # one Ack per receiver per round
    if window:
        for sender in senders:
            sender.fill()
    else:
        period = int(1e9 / rate_per_sender)
        count = min(limit_per_sender, int(duration_s * rate_per_sender))
        for index, sender in enumerate(senders):
            offset = int(period * index / len(senders))   # spread senders evenly
            sender.limit = count

            def tick(sender=sender, due=go_ns + offset):
                lag = now_ns() - due
                stats.send_lag.append(lag)
                sender.send_one()
                if sender.seq < sender.limit:
                    nxt = due + period
                    engine.at(nxt, lambda: tick(sender, nxt))
            engine.at(go_ns + offset, tick)

    def done():
        if engine.errors:
            return True
        if now_ns() < stop_ns and any(s.seq < s.limit for s in senders):
            return False
        return (stats.results + stats.send_errors >= stats.sent
                and stats.received >= stats.results)
    engine.run_until(done, stop_ns + int(drain_s * 1e9))
    engine.after_round.remove(recv_handler.flush_acks)
    recv_handler.flush_acks()
    engine.run_until(lambda: all(not c.out for c, _ in pairs), now_ns() + int(2e9))
    cpu_end = time.process_time()
    for sender_client, receiver_client in pairs:
        sender_client.handler = receiver_client.handler = None
    return {"sent": stats.sent, "results": stats.results, "received": stats.received,
            "first_send": stats.first_send, "last_receive": stats.last_receive,
            "last_result": stats.last_result, "latencies": stats.latencies,
            "send_lag": stats.send_lag, "cpu": cpu_end - cpu_start,
            "send_errors": stats.send_errors, "error_codes": stats.error_codes,
            "cpu_wait": cpu_start - cpu0, "errors": list(engine.errors)}


def run_paced_logins(engine, names, go_ns, rate, duration_s, max_in_flight=64,
                     codec="fast", logout=True):
    """Open-loop logins at `rate`/s for `duration_s` (each: login, Logout, close)."""
    count = min(len(names), int(rate * duration_s))
    period = int(1e9 / rate)
    clients, skipped = [], [0]
    in_flight = set()

    def finished(client):
        in_flight.discard(client)
        if logout:
            client.logout()

    def start(index):
        if len(in_flight) >= max_in_flight:
            skipped[0] += 1
            return
        client = Client(engine, names[index], codec=codec, on_login=finished)
        client.t["due"] = go_ns + index * period
        in_flight.add(client)
        clients.append(client)
        client.connect(engine.port)

    for index in range(count):
        engine.at(go_ns + index * period, lambda i=index: start(i))
    end_ns = go_ns + int(duration_s * 1e9)
    cpu0 = time.process_time()

    def done():
        for client in list(in_flight):
            if client.state == DONE:
                in_flight.discard(client)
        return now_ns() > end_ns and not in_flight and len(clients) + skipped[0] >= count
    engine.run_until(done, end_ns + int(60e9))
    ok = [c for c in clients if "ready" in c.t]
    return {"started": len(clients), "ok": len(ok), "skipped": skipped[0],
            "latencies_ms": [(c.t["ready"] - c.t["connect"]) / 1e6 for c in ok],
            "phases": [login_phases(c) for c in ok],
            "retries": sum(c.retries for c in clients),
            "errors": list(engine.errors)[:5], "cpu": time.process_time() - cpu0}


# --------------------------------------------------------------------------
# The worker process


def _close_all(engine, clients, timeout_s=10.0):
    for client in clients:
        if client.state == SESSION:
            client.logout()
    engine.run_until(lambda: not engine.live, now_ns() + int(timeout_s * 1e9))
    for client in list(engine.live):
        client.close()


# More commands: name -> fn(engine, clients, codec, *arguments) -> reply fields.
# bench/abuse.py adds its traffic patterns here (before the workers are forked).
COMMANDS = {}


def worker_main(pipe, port, codec="fast"):
    """A load-generator process: obeys commands from bench/run.py on `pipe`.

    Commands (tuples): ("login", names, concurrency, timeout_s, keep),
    ("relay", pair_names, go_ns, duration_s, window, rate_per_sender, limit),
    ("paced_logins", names, go_ns, rate, duration_s),
    ("logout_all",), ("count",), ("stop",), and those of COMMANDS. Each gets one
    reply dict.
    """
    engine = Engine(port)
    clients = {}
    while True:
        try:
            command = pipe.recv()
        except EOFError:
            break
        kind = command[0]
        reply = {"ok": True}
        cpu0 = time.process_time()
        try:
            if kind == "login":
                _, names, concurrency, timeout_s, keep = command
                engine.errors.clear()
                t0 = now_ns()
                done = login_many(engine, names, concurrency, t0 + int(timeout_s * 1e9),
                                  codec=codec, keep=keep)
                reply["elapsed_s"] = (now_ns() - t0) / 1e9
                reply["phases"] = [login_phases(c) for c in done]
                reply["created"] = sum(1 for c in done if c.create)
                if keep:
                    clients.update({c.name: c for c in done})
            elif kind == "relay":
                _, pair_names, go_ns, duration_s, window, rate, limit = command
                engine.errors.clear()
                pairs = [(clients[s], clients[r]) for s, r in pair_names]
                reply.update(run_relay(engine, pairs, go_ns, duration_s, window, rate,
                                       limit))
            elif kind == "paced_logins":
                _, names, go_ns, rate, duration_s = command
                engine.errors.clear()
                reply.update(run_paced_logins(engine, names, go_ns, rate, duration_s,
                                              codec=codec))
            elif kind == "send_burst":
                _, sender, to, count, window, go_ns, timeout_s = command
                engine.errors.clear()
                reply.update(run_send_burst(engine, clients[sender], to, count, window,
                                            go_ns, timeout_s))
            elif kind == "receive_backlog":
                _, name, expect, timeout_s = command
                engine.errors.clear()
                reply.update(run_receive_backlog(engine, name, expect, timeout_s, codec))
            elif kind == "logout_all":
                _close_all(engine, list(clients.values()))
                clients.clear()
            elif kind == "count":
                reply["live"] = sum(1 for c in clients.values() if c.state == SESSION)
            elif kind == "stop":
                _close_all(engine, list(clients.values()))
                pipe.send(reply)
                break
            elif kind in COMMANDS:
                engine.errors.clear()
                reply.update(COMMANDS[kind](engine, clients, codec, *command[1:]))
            else:
                raise BenchError(f"unknown command {kind!r}")
        except BenchError as error:
            reply = {"ok": False, "error": str(error)}
        reply["worker_cpu"] = time.process_time() - cpu0
        reply["rusage_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pipe.send(reply)
    pipe.close()


# --------------------------------------------------------------------------
# Offline store-and-forward


def run_send_burst(engine, sender, to, count, window, go_ns, timeout_s):
    """`count` pipelined Sends from one logged-in client to `to` (may be offline)."""
    stats = RelayStats()
    s = Sender(sender, to, stats, window, count, go_ns + int(timeout_s * 1e9))
    sender.handler = lambda c, op, data: s.on_result(op, data)
    engine.run_until(lambda: False, go_ns)
    cpu0 = time.process_time()
    stats.first_send = now_ns()
    s.fill()
    engine.run_until(lambda: engine.errors or stats.results >= count,
                     go_ns + int(timeout_s * 1e9))
    sender.handler = None
    return {"sent": stats.sent, "results": stats.results, "first_send": stats.first_send,
            "last_result": stats.last_result, "cpu": time.process_time() - cpu0,
            "errors": list(engine.errors)}


def run_receive_backlog(engine, name, expect, timeout_s, codec="fast"):
    """Log in as `name` and receive its stored backlog; acknowledge it all."""
    got = {"n": 0, "last": None, "ids": []}

    def handler(client, op, data):
        if op == "Message":
            got["n"] += 1
            got["last"] = now_ns()
            got["ids"].append(data["id"])
    cpu0 = time.process_time()
    deadline = now_ns() + int(timeout_s * 1e9)
    client = Client(engine, name, codec=codec, handler=handler)
    client.connect(engine.port)
    engine.run_until(lambda: client.state != LOGIN and got["n"] >= expect, deadline)
    if client.error or client.state != SESSION:
        raise BenchError(f"backlog login failed: {client.error or client.state}")
    t = client.t
    result = {"received": got["n"], "connect": t["connect"], "welcome": t.get("welcome"),
              "ready": t.get("ready"), "last_message": got["last"],
              "cpu": time.process_time() - cpu0}
    ids = got["ids"]
    for start in range(0, len(ids), 5000):
        client.send("Ack", ids=ids[start:start + 5000])
    client.logout()
    engine.run_until(lambda: client.state == DONE, now_ns() + int(10e9))
    return result
