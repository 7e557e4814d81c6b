"""An XMPP load generator for the Prosody comparison: plain sockets, the standard library.

What it does: many concurrent c2s clients per process over non-blocking TCP
to 127.0.0.1 (one `selectors` loop, `Engine`), each speaking just the XMPP
that the benchmark needs (RFC 6120/6121): stream open, in-band registration
(XEP-0077), SASL PLAIN without TLS (the private Prosody allows it on
loopback), a stream restart, resource binding, initial presence, `<message>`
stanzas carrying their send time in the body, and XMPP pings (XEP-0199) as
the "everything before this is processed" marker of the offline scenario.
The XML stream is parsed incrementally by `StreamParser` (expat through
`xml.etree.ElementTree.XMLPullParser`; each top-level stanza is handed over
complete and dropped from the tree).

What it talks to: a Prosody started by bench/peers/prosody.py, and, as a
worker process (`worker_main`), bench/run.py's `Workers` pipe protocol: each
command gets one reply dict whose keys are those of bench/loadgen.py's, so
bench/run.py's `relay_once`/`paced_once` compute the figures unchanged.

How it fails: a stream error, an auth failure or bad XML closes that client
and is recorded in `engine.errors`; a worker replies {"ok": False, "error"}
to a command it could not carry out; every loop has a deadline.
"""

import base64
import heapq
import os
import selectors
import socket
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

NS_STREAM = "{http://etherx.jabber.org/streams}"
NS_SASL = "{urn:ietf:params:xml:ns:xmpp-sasl}"
NS_CLIENT = "{jabber:client}"
PASSWORD = "bench password 1"
PAD = "x" * 48
RECV_SIZE = 262144
DONE, FAILED = "done", "failed"


def now_ns():
    return time.monotonic_ns()   # one clock for every process, as bench/loadgen.py


class BenchError(Exception):
    """The scenario cannot go on."""


class StreamParser:
    """Incremental XML stream parser: bytes in, ("open"|"stanza"|"close", element) out."""

    def __init__(self):
        self._parser = ET.XMLPullParser(("start", "end"))
        self._depth = 0
        self._root = None

    def feed(self, data):
        self._parser.feed(data)
        out = []
        for event, elem in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = elem
                    out.append(("open", elem))
            else:
                self._depth -= 1
                if self._depth == 1:
                    out.append(("stanza", elem))
                    self._root.remove(elem)      # keep the tree from growing
                elif self._depth == 0:
                    out.append(("close", elem))
        return out


def stream_header(domain):
    return (f"<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
            f"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()


class Client:
    """One c2s connection: registers, or logs in (and then runs a handler per stanza)."""

    def __init__(self, engine, name, register=False, presence=True, on_ready=None):
        self.engine, self.name, self.register = engine, name, register
        self.presence, self.on_ready = presence, on_ready
        self.jid = f"{name}@{engine.domain}"
        self.state = "connecting"
        self.out = bytearray()
        self.handler = None           # fn(client, element) for stanzas once ready
        self.t = {}
        self.error = None
        self.sock = None

    def connect(self):
        self.t["connect"] = now_ns()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.connect(("127.0.0.1", self.engine.port))
        except BlockingIOError:
            pass
        self.engine.register(self)
        self._open_stream()

    def _open_stream(self):
        self.parser = StreamParser()
        self.state = "features"
        self.write(stream_header(self.engine.domain))

    def write(self, data):
        self.out += data
        self.engine.dirty.add(self)

    def flush(self):
        if not self.out or self.state in (DONE, FAILED):
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            return self.fail(f"send: {error}")
        del self.out[:sent]
        self.engine.want_write(self, bool(self.out))

    def readable(self):
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            return self.fail(f"recv: {error}")
        if not data:
            return self.fail("closed by the server") if self.state != "closing" else self.close()
        try:
            events = self.parser.feed(data)
        except ET.ParseError as error:
            return self.fail(f"bad XML: {error}")
        for kind, elem in events:
            if self.state in (DONE, FAILED):
                return
            if kind == "stanza":
                self.on_stanza(elem)
            elif kind == "close":
                self.close() if self.state == "closing" else self.fail("stream closed")

    def on_stanza(self, elem):
        tag = elem.tag
        if self.state == "ready":
            if self.handler is not None:
                self.handler(self, elem)
        elif tag == NS_STREAM + "error":
            self.fail("stream error: " + ",".join(child.tag for child in elem))
        elif self.state == "features" and tag == NS_STREAM + "features":
            self._on_features(elem)
        elif self.state == "auth":
            if tag != NS_SASL + "success":
                return self.fail(f"auth failed: {[c.tag for c in elem]}")
            self.t["welcome"] = now_ns()
            self._open_stream()
            self.state = "features2"
        elif self.state == "features2" and tag == NS_STREAM + "features":
            self.state = "bind"
            self.write(b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:"
                       b"xmpp-bind'><resource>bench</resource></bind></iq>")
        elif self.state == "bind" and tag == NS_CLIENT + "iq":
            if elem.get("type") != "result":
                return self.fail("bind refused")
            self._ready()
        elif self.state == "registering" and tag == NS_CLIENT + "iq":
            error = elem.find(NS_CLIENT + "error")
            if elem.get("type") != "result" and (error is None or error.get("code") != "409"):
                return self.fail("registration refused")
            self.t["ready"] = now_ns()
            self.end_stream()

    def _on_features(self, elem):
        if self.register:
            self.state = "registering"
            self.write(f"<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>"
                       f"{escape(self.name)}</username><password>{escape(PASSWORD)}"
                       f"</password></query></iq>".encode())
            return
        token = base64.b64encode(f"\0{self.name}\0{PASSWORD}".encode()).decode()
        self.state = "auth"
        self.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                   f"{token}</auth>".encode())

    def _ready(self):
        if self.presence:
            self.write(b"<presence/>")
        self.t["ready"] = now_ns()
        self.state = "ready"
        if self.on_ready:
            self.on_ready(self)

    def send_message(self, to_jid, body):
        self.write(f"<message to='{to_jid}' type='chat'><body>{body}</body></message>".encode())

    def ping(self, ident):
        self.write(f"<iq type='get' id='{ident}' to='{self.engine.domain}'>"
                   f"<ping xmlns='urn:xmpp:ping'/></iq>".encode())

    def end_stream(self):
        self.state = "closing"
        self.write(b"</stream:stream>")

    def fail(self, reason):
        if self.state not in (DONE, FAILED):
            self.error = reason
            self.engine.errors.append(f"{self.name}: {reason}")
        self._shut(FAILED)

    def close(self):
        self._shut(DONE)

    def _shut(self, state):
        if self.state in (DONE, FAILED):
            return
        self.state = state
        self.engine.unregister(self)
        try:
            self.sock.close()
        except OSError:
            pass


class Engine:
    """One selectors loop over many clients, with timers."""

    def __init__(self, port, domain):
        self.port, self.domain = port, domain
        self.sel = selectors.DefaultSelector()
        self.errors, self.live, self.dirty = [], set(), set()
        self._timers, self._seq = [], 0

    def register(self, client):
        self.live.add(client)
        self.sel.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def want_write(self, client, want):
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
        try:
            self.sel.modify(client.sock, events, client)
        except (KeyError, ValueError):
            pass

    def unregister(self, client):
        self.live.discard(client)
        self.dirty.discard(client)
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass

    def at(self, due_ns, fn):
        self._seq += 1
        heapq.heappush(self._timers, (due_ns, self._seq, fn))

    def run_until(self, done, deadline_ns):
        timers = self._timers
        while not done():
            now = now_ns()
            if now >= deadline_ns:
                return False
            while timers and timers[0][0] <= now:
                heapq.heappop(timers)[2]()
            self._flush_dirty()
            wait = (deadline_ns - now) / 1e9
            if timers:
                wait = min(wait, max(0.0, (timers[0][0] - now) / 1e9))
            for key, mask in self.sel.select(min(wait, 0.5)):
                client = key.data
                if mask & selectors.EVENT_WRITE:
                    client.flush()
                if mask & selectors.EVENT_READ and client.state not in (DONE, FAILED):
                    client.readable()
            self._flush_dirty()
        return True

    def _flush_dirty(self):
        dirty, self.dirty = self.dirty, set()
        for client in dirty:
            client.flush()


# --------------------------------------------------------------------------
# Traffic patterns


def connect_many(engine, names, concurrency, deadline_ns, register=False, presence=True):
    """Register or log in `names`, `concurrency` at a time; returns the clients."""
    pending, active, done = list(reversed(names)), set(), []

    def start_more():
        while pending and len(active) < concurrency:
            client = Client(engine, pending.pop(), register=register, presence=presence)
            active.add(client)
            done.append(client)
            client.connect()

    def finished():
        for client in list(active):
            if client.state in (DONE, FAILED) or (client.state == "ready" and not register):
                active.discard(client)
        start_more()
        return not active and not pending
    start_more()
    if not engine.run_until(finished, deadline_ns):
        raise BenchError(f"{len(active) + len(pending)} of {len(names)} clients unfinished")
    failed = [c for c in done if c.error]
    if failed:
        raise BenchError(f"{len(failed)} of {len(names)} failed, e.g. {failed[0].error}")
    return done


def _latency_handler(stats, on_message=None):
    def handler(client, elem):
        if elem.tag != NS_CLIENT + "message":
            return
        body = elem.findtext(NS_CLIENT + "body") or ""
        now = now_ns()
        stats["latencies"].append(now - int(body[:body.index(" ")]))
        stats["received"] += 1
        stats["last_receive"] = now
        if on_message:
            on_message(client)
    return handler


def run_relay(engine, pairs, go_ns, duration_s, window=0, rate_per_sender=0.0, drain_s=30.0):
    """Saturation (window > 0: at most `window` messages sent and not yet received
    per pair, end to end) or paced (`rate_per_sender`) relay over (sender, receiver)."""
    stats = {"sent": 0, "received": 0, "latencies": [], "send_lag": [], "last_receive": None}
    stop_ns = go_ns + int(duration_s * 1e9)
    outstanding = {}
    sender_of = {}

    def send(sender, receiver):
        outstanding[sender] += 1
        stats["sent"] += 1
        sender.send_message(receiver.jid, f"{now_ns()} {PAD}")

    def on_message(receiver):
        sender = sender_of[receiver]
        outstanding[sender] -= 1
        if window and now_ns() < stop_ns:
            while outstanding[sender] < window:
                send(sender, receiver)
    handler = _latency_handler(stats, on_message)
    for sender, receiver in pairs:
        outstanding[sender] = 0
        sender_of[receiver] = sender
        receiver.handler = handler
    engine.run_until(lambda: False, go_ns)
    cpu0 = time.process_time()
    if window:
        for sender, receiver in pairs:
            for _ in range(window):
                send(sender, receiver)
    else:
        _schedule_paced(engine, pairs, go_ns, duration_s, rate_per_sender, stats, send)

    def done():
        return engine.errors or (now_ns() >= stop_ns and stats["received"] >= stats["sent"])
    engine.run_until(done, stop_ns + int(drain_s * 1e9))
    for _, receiver in pairs:
        receiver.handler = None
    received = stats["received"]
    return {"sent": stats["sent"], "results": received, "received": received,
            "send_errors": 0, "error_codes": {}, "latencies": stats["latencies"],
            "send_lag": stats["send_lag"], "last_receive": stats["last_receive"],
            "cpu": time.process_time() - cpu0, "errors": list(engine.errors)}


def _schedule_paced(engine, pairs, go_ns, duration_s, rate, stats, send):
    period = int(1e9 / rate)
    count = int(duration_s * rate)
    for index, (sender, receiver) in enumerate(pairs):
        def tick(due, left, sender=sender, receiver=receiver):
            stats["send_lag"].append(now_ns() - due)
            send(sender, receiver)
            if left > 1:
                engine.at(due + period, lambda: tick(due + period, left - 1))
        first = go_ns + int(period * index / len(pairs))
        engine.at(first, lambda first=first, tick=tick: tick(first, count))


def run_send_burst(engine, sender, to_jid, count, window, go_ns, timeout_s):
    """`count` messages to `to_jid` with a ping after every `window`, one ping
    outstanding at most: a ping's answer means everything before it is stored."""
    state = {"sent": 0, "acked": 0, "last_result": None, "waiting": False}

    def burst():
        n = min(window, count - state["sent"])
        for _ in range(n):
            sender.send_message(to_jid, f"{now_ns()} {PAD}")
        state["sent"] += n
        sender.ping(f"p{state['sent']}")
        state["waiting"] = True

    def handler(client, elem):
        if elem.tag == NS_CLIENT + "iq" and elem.get("id", "").startswith("p"):
            state["acked"] = int(elem.get("id")[1:])
            state["last_result"] = now_ns()
            if state["sent"] < count:
                burst()
    sender.handler = handler
    engine.run_until(lambda: False, go_ns)
    cpu0 = time.process_time()
    burst()
    engine.run_until(lambda: engine.errors or state["acked"] >= count,
                     go_ns + int(timeout_s * 1e9))
    sender.handler = None
    return {"sent": state["sent"], "results": state["acked"], "last_result": state["last_result"],
            "cpu": time.process_time() - cpu0, "errors": list(engine.errors)}


def run_receive_backlog(engine, name, expect, timeout_s):
    """Log in as `name` (with initial presence: that is what flushes mod_offline)."""
    stats = {"received": 0, "latencies": [], "last_receive": None}
    deadline = now_ns() + int(timeout_s * 1e9)
    handler = _latency_handler(stats)
    client = Client(engine, name, on_ready=lambda c: setattr(c, "handler", handler))
    client.connect()
    engine.run_until(lambda: client.error or stats["received"] >= expect, deadline)
    if client.error:
        raise BenchError(f"backlog login failed: {client.error}")
    result = {"received": stats["received"], "connect": client.t["connect"],
              "welcome": client.t.get("welcome"), "ready": client.t.get("ready"),
              "last_message": stats["last_receive"]}
    client.end_stream()
    engine.run_until(lambda: client.state in (DONE, FAILED), now_ns() + int(10e9))
    return result


# --------------------------------------------------------------------------
# The worker process (bench/run.py's Workers protocol)


def worker_main(pipe, port, domain):
    engine = Engine(port, domain)
    clients = {}
    while True:
        try:
            command = pipe.recv()
        except EOFError:
            break
        kind, args = command[0], command[1:]
        reply = {"ok": True}
        engine.errors.clear()
        try:
            if kind in ("register", "login"):
                names, concurrency, timeout_s = args[:3]
                t0 = now_ns()
                done = connect_many(engine, names, concurrency, t0 + int(timeout_s * 1e9),
                                    register=kind == "register")
                reply["elapsed_s"] = (now_ns() - t0) / 1e9
                if kind == "login":
                    clients.update({c.name: c for c in done})
            elif kind == "relay":
                pair_names, go_ns, duration_s, window, rate = args[:5]
                pairs = [(clients[s], clients[r]) for s, r in pair_names]
                reply.update(run_relay(engine, pairs, go_ns, duration_s, window, rate))
            elif kind == "send_burst":
                sender, to, count, window, go_ns, timeout_s = args
                reply.update(run_send_burst(engine, clients[sender], f"{to}@{domain}", count,
                                            window, go_ns, timeout_s))
            elif kind == "receive_backlog":
                reply.update(run_receive_backlog(engine, *args))
            elif kind == "stop":
                _close_all(engine, clients.values())
                pipe.send(reply)
                break
            else:
                raise BenchError(f"unknown command {kind!r}")
        except BenchError as error:
            reply = {"ok": False, "error": str(error)}
        pipe.send(reply)
    pipe.close()


def _close_all(engine, clients):
    for client in clients:
        if client.state == "ready":
            client.end_stream()
    engine.run_until(lambda: not engine.live, now_ns() + int(10e9))
    for client in list(engine.live):
        client.close()


# --------------------------------------------------------------------------
# Self-check of the stream parsing (no network)


def self_check():
    """Feed a server's side of a session in awkward chunks; check what comes out."""
    stream = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' id='x' from='localhost' "
              "version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:"
              "xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
              "<message from='a@localhost/b' to='c@localhost'><body>123 h\u00e9llo &amp; "
              "\u2603</body></message><iq type='result' id='p64'/></stream:stream>").encode()
    for size in (1, 2, 3, 7, 64, len(stream)):
        parser = StreamParser()
        events = []
        for start in range(0, len(stream), size):
            events += parser.feed(stream[start:start + size])
        kinds = [(kind, elem.tag) for kind, elem in events]
        assert kinds == [("open", NS_STREAM + "stream"), ("stanza", NS_STREAM + "features"),
                         ("stanza", NS_CLIENT + "message"), ("stanza", NS_CLIENT + "iq"),
                         ("close", NS_STREAM + "stream")], kinds
        message = events[2][1]
        assert message.findtext(NS_CLIENT + "body") == "123 h\u00e9llo & \u2603"
        assert events[3][1].get("id") == "p64"
        assert len(events[0][1]) == 0, "stanzas must be dropped from the stream root"
    try:
        StreamParser().feed(b"<stream:stream xmlns:stream='x'><a></b>")
    except ET.ParseError:
        pass
    else:
        raise AssertionError("mismatched tags must raise ParseError")
    features = ET.fromstring(b"<iq xmlns='jabber:client' type='error'><error code='409'/></iq>")
    assert features.find(NS_CLIENT + "error").get("code") == "409"
    return "xmpp stream parser: ok (6 chunkings, UTF-8 split across chunks, bad XML refused)"


if __name__ == "__main__":   # pragma: no cover
    print(self_check())
    os._exit(0)
