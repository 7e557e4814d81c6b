"""The crash harness: many real clients, a killer, and a check of the promise.

What it does: starts the real server (`Tests.support.ServerProcess`, its own
process group, in one data dir), creates one account per simulated user,
then runs one thread per user. Each thread speaks the wire protocol itself
(`protocol.Connection.client()` over a TCP socket, like `RawClient`), sends
its share of a seeded random plan of messages to other users, and receives,
records and acknowledges every `Message` pushed to it. Meanwhile a killer
thread sends SIGKILL, at seeded random points of progress, to the database
process, a user process, a login process, or the whole daemon tree (after
which it starts a new server on the same data dir); on request also the
multiprocessing forkserver, or the daemon alone. Clients reconnect and
log in again after any break, and retry a Send whose answer was lost (the
connection broke, or Error "unavailable") with the SAME client_id until it
is acknowledged; each keeps up to `RunConfig.pipeline` Sends in flight.

Several servers (issue 18): with `servers=N` and `storage=` a PostgreSQL URL,
N servers share that database (and a files directory; the first server's
key files are copied to the others), each client connects to a server
picked at random at every (re)connection, as behind a TCP balancer, each
kill hits a server picked at random, and the kind "postgres" is a SIGKILL
of the PostgreSQL cluster itself (`postgres=`, a `Tests.support.postgres`
cluster), started again at once. The promise checked is the same.

Acknowledgements: an `Ack` has no reply, so a client sends each `Ack`
together with an `Inbox` request in one write (the *barrier*): the user
process forwards both in order on one database connection and the database
process answers the Inbox only after the Ack's transaction committed. Only
when the barrier gets its `Result` are those ids *confirmed*; a repeat of a
confirmed id is a duplicate delivery (a violation), a repeat of an
unconfirmed one is an allowed re-push that the client drops by id.

At the end: every client stops, the server is stopped with SIGTERM, a clean
server is started on the same data dir, every user logs in, drains its
backlog and confirms its acknowledgements; a second login must find nothing;
the server is stopped and `storage.check_consistency()` and the stored rows
are checked against the `Ledger` the clients kept.

How it fails: nothing here raises for a broken promise. Every broken promise
(lost, duplicated, phantom, reordered message; an inconsistency; a server
that exits on its own or does not stop; a run that does not finish in time)
becomes a line in `Report.violations`. Every loop is bounded in count or
time; every server started is killed (process group) in `finally`.
"""

import dataclasses
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter

from Modules.database import backends, storage
from Modules.wire import channel as channel_mod
from Modules.wire import protocol
from Modules.wire.errors import ProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import Packet
from Tests.support import PASSWORD, ServerProcess, parent_of

HOST = "127.0.0.1"
CONNECT_TIMEOUT = 5.0
BUSY_TRIES = 30          # a password sent again after "busy, retry after N s", at most
SEND_TIMEOUT = 10.0
STEP_TIMEOUT = 15.0          # one login step or one reply
POLL = 0.05                  # how long a client waits for an event per turn
KINDS = ("database", "user", "login", "tree")   # what issue 5 names
EXTRA_KINDS = ("forkserver", "daemon", "postgres")   # also killable on request
KEY_FILES = ("server_key", "server_key.pub", "storage_key")   # one deployment's keys


class Disconnected(Exception):
    """The connection ended (closed, reset, timed out or broke the protocol)."""

    def __init__(self, reason, protocol_code=None):
        super().__init__(reason)
        self.reason, self.protocol_code = reason, protocol_code


class AccountMissing(Exception):
    """The server offered to create an account that should exist."""


# -- one connection ------------------------------------------------------------

class Link:
    """A TCP connection with a client-side `protocol.Connection` on it."""

    def __init__(self, port):
        try:
            self.sock = socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT)
        except OSError as error:
            raise Disconnected(f"cannot connect: {error}") from None
        self.conn = protocol.Connection.client()

    def send(self, *packets):
        """Every packet in ONE write (an Ack and its barrier travel together)."""
        try:
            data = b"".join(self.conn.send(p) for p in packets)
        except ProtocolError as error:
            raise Disconnected(f"cannot send: {error}", error.code) from None
        self._write(data)

    def _write(self, data):
        try:
            self.sock.settimeout(SEND_TIMEOUT)
            self.sock.sendall(data)
        except OSError as error:
            raise Disconnected(f"write failed: {error}") from None

    def start_handshake(self):
        self._write(self.conn.start())

    def poll(self, timeout):
        """The next event, or None if nothing came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._next_event()
            if event is not NEED_DATA:
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._receive(remaining)

    def _next_event(self):
        try:
            event = self.conn.next_event()
        except ProtocolError as error:
            raise Disconnected(f"protocol error: {error}", error.code) from None
        if event is CLOSED:
            raise Disconnected("closed by the server")
        return event

    def _receive(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            return
        except OSError:
            data = b""
        try:
            self.conn.receive_data(data)
        except ProtocolError as error:
            raise Disconnected(f"protocol error: {error}", error.code) from None

    def expect(self, timeout=STEP_TIMEOUT):
        """The next event, waiting at most `timeout`; Disconnected if none."""
        event = self.poll(timeout)
        if event is None:
            raise Disconnected("no answer in time")
        return event

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def log_in(link, name, allow_create=False, password=PASSWORD):
    """Handshake, Version and the login dialogue; returns the Welcome packet."""
    link.start_handshake()
    if not isinstance(link.expect(), channel_mod.HandshakeDone):
        raise Disconnected("no handshake (server full?)")
    link.send(protocol.version_offer())
    _expect_op(link, "Version")
    _expect_op(link, "Login")
    link.send(Packet("Login", {"username": name}))
    prompt = _expect_op(link, "Login").data["prompt"]
    if prompt == "new_password" and not allow_create:
        raise AccountMissing(f"the server offers to create '{name}', which should exist")
    field = "password" if prompt == "password" else "new_password"
    for _ in range(BUSY_TRIES):
        link.send(Packet("Login", {field: password}))
        answer = _expect_op(link, "Welcome", "Login")
        retry_after = answer.data.get("retry_after")
        if answer.op == "Welcome" or answer.data.get("prompt") != prompt \
                or type(retry_after) is not int:   # noqa: E721
            break
        time.sleep(min(retry_after, 5))   # "busy with other logins": as the client does
    if answer.op != "Welcome":
        raise Disconnected(f"expected Welcome, got {answer!r:.200}")
    return answer


def _expect_op(link, *ops):
    event = link.expect()
    while isinstance(event, Packet) and event.op == "System":
        event = link.expect()
    if not isinstance(event, Packet) or event.op not in ops:
        raise Disconnected(f"expected {' or '.join(ops)}, got {event!r:.200}")
    return event


# -- a blocking session for targeted tests ---------------------------------------

class Session:
    """A logged-in connection driven step by step (targeted tests, the drain)."""

    def __init__(self, port, name, create=False):
        self.name = name
        self.link = Link(port)
        self.rid = 0
        self.pushed = []              # Message data not yet taken by next_message()
        try:
            self.welcome = log_in(self.link, name, allow_create=create)
            self.backlog = self._until_ready()
        except BaseException:
            self.link.close()
            raise

    def _until_ready(self):
        backlog = []
        while True:
            event = self.link.expect()
            if isinstance(event, Packet) and event.op == "Message":
                backlog.append(event.data)
            elif isinstance(event, Packet) and event.op == "System" \
                    and event.data["event"] == "ready":
                return backlog

    def request(self, op, extra_packets=(), **fields):
        """Send `extra_packets` then op{rid}; the Result or Error, keeping pushes."""
        self.rid += 1
        self.link.send(*extra_packets, Packet(op, {"rid": self.rid, **fields}))
        while True:
            event = self.link.expect()
            if not isinstance(event, Packet):
                continue
            if event.op == "Message":
                self.pushed.append(event.data)
            elif event.op in ("Result", "Error") and event.data.get("rid") == self.rid:
                return event

    def send_message(self, to, subject, client_id, body="hello"):
        return self.request("Send", to=to, subject=subject, body=body, client_id=client_id)

    def ack_confirmed(self, ids):
        """Ack `ids` with an Inbox barrier; True when the server confirmed it."""
        answer = self.request("Inbox", extra_packets=[Packet("Ack", {"ids": list(ids)})],
                              limit=1)
        return answer.op == "Result"

    def next_message(self, timeout=STEP_TIMEOUT):
        """The next pushed Message's data, or None if none came in time."""
        deadline = time.monotonic() + timeout
        while not self.pushed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            event = self.link.poll(remaining)
            if isinstance(event, Packet) and event.op == "Message":
                self.pushed.append(event.data)
        return self.pushed.pop(0)

    def logout(self):
        try:
            self.link.send(Packet("Logout", {}))
        except Disconnected:
            pass
        self.link.close()

    close = logout


# -- what the clients saw --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SendSpec:
    client_id: str
    sender: str
    to: str
    subject: str
    body: str


class Ledger:
    """Every acknowledgement and every receipt, shared by all client threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.specs = {}                 # client_id -> SendSpec
        self.acked = {}                 # client_id -> message id
        self.by_id = {}                 # message id -> client_id
        self.first_seen = {}            # user -> [ids in order of first receipt]
        self.seen = {}                  # user -> {id: (from, subject, confirmed)}
        self.violations = []
        self.counts = Counter()

    def plan(self, specs):
        self.specs.update((spec.client_id, spec) for spec in specs)

    def violation(self, text):
        with self.lock:
            self.violations.append(text)

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def record_result(self, spec, data):
        """A Send's Result: the id must never change for one client_id."""
        with self.lock:
            self.counts["send results"] += 1
            self.counts["duplicate results"] += bool(data.get("duplicate"))
            message_id = data["id"]
            known = self.acked.setdefault(spec.client_id, message_id)
            if known != message_id:
                self.violations.append(f"client_id {spec.client_id} was acknowledged as "
                                       f"message {known} and again as {message_id}")
            owner = self.by_id.setdefault(message_id, spec.client_id)
            if owner != spec.client_id:
                self.violations.append(f"message {message_id} acknowledged for two sends: "
                                       f"{owner} and {spec.client_id}")

    def record_message(self, user, data):
        """A pushed Message; flags repeats of confirmed ids and order breaks."""
        with self.lock:
            self.counts["messages received"] += 1
            seen = self.seen.setdefault(user, {})
            order = self.first_seen.setdefault(user, [])
            message_id = data["id"]
            if data.get("kind") != "message" or data.get("to") != user:
                self.violations.append(f"{user} got an unexpected {data.get('kind')} "
                                       f"{message_id} addressed to {data.get('to')}")
            if message_id in seen:
                self._repeat(user, message_id, seen[message_id])
                return
            if order and message_id < order[-1]:
                self.violations.append(f"{user} got message {message_id} after "
                                       f"{order[-1]}: not in acceptance order")
            order.append(message_id)
            seen[message_id] = (data.get("from"), data.get("subject"), False)

    def _repeat(self, user, message_id, entry):
        if entry[2]:
            self.violations.append(f"{user} got message {message_id} again after its "
                                   f"acknowledgement was confirmed (duplicate delivery)")
        else:
            self.counts["re-pushes of unconfirmed"] += 1

    def confirm(self, user, ids):
        with self.lock:
            seen = self.seen.setdefault(user, {})
            for message_id in ids:
                if message_id in seen:
                    sender, subject, _ = seen[message_id]
                    seen[message_id] = (sender, subject, True)

    def unconfirmed(self, user):
        with self.lock:
            return [i for i, entry in self.seen.get(user, {}).items() if not entry[2]]

    def acks(self):
        with self.lock:
            return self.counts["send results"]

    # -- the final verdict ---------------------------------------------------------
    def final_problems(self):
        """Lost, phantom, mismatched, unacknowledged and unconfirmed messages."""
        with self.lock:
            return (self._unacknowledged() + self._lost() + self._phantoms()
                    + self._unconfirmed())

    def _unacknowledged(self):
        missing = sorted(set(self.specs) - set(self.acked))
        return [f"the send {cid} was never acknowledged" for cid in missing]

    def _lost(self):
        problems = []
        for cid, message_id in sorted(self.acked.items()):
            recipient = self.specs[cid].to
            if message_id not in self.seen.get(recipient, {}):
                problems.append(f"message {message_id} ({cid}) was acknowledged to "
                                f"{self.specs[cid].sender} but never reached {recipient}")
        return problems

    def _phantoms(self):
        problems = []
        for user, seen in sorted(self.seen.items()):
            for message_id, (sender, subject, _) in sorted(seen.items()):
                spec = self.specs.get(self.by_id.get(message_id))
                if spec is None:
                    problems.append(f"{user} got message {message_id} that no "
                                    f"acknowledged send produced")
                elif (spec.sender, spec.to, spec.subject) != (sender, user, subject):
                    problems.append(f"{user} got message {message_id} as ({sender}, "
                                    f"{subject!r}); it was sent as {spec}")
        return problems

    def _unconfirmed(self):
        return [f"{user} could not get message {i} acknowledged"
                for user, seen in sorted(self.seen.items())
                for i, entry in sorted(seen.items()) if not entry[2]]


# -- the stored files --------------------------------------------------------------

def storage_problems(data_dir, ledger, key=None, storage_url=None):
    """check_consistency() plus: every acknowledged send stored exactly once (in the
    data dir's SQLite files, or in the PostgreSQL database at `storage_url`)."""
    backend = backends.open_backend(storage_url, data_dir, key)
    db = backend.open_unlocked()
    try:
        problems = [f"check_consistency: {p}" for p in storage.check_consistency(db)]
        rows = db.execute("SELECT id, sender, recipient, subject, kind, delivered_at "
                          "FROM msg.messages").fetchall()
        sent_ids = db.execute("SELECT sender, client_id, message_id FROM msg.sent_ids"
                              ).fetchall()
    finally:
        backend.close(db)
    return problems + _row_problems(rows, ledger) + _sent_id_problems(sent_ids, ledger)


def _row_problems(rows, ledger):
    problems = []
    stored = {row[0]: row for row in rows}
    for cid, message_id in sorted(ledger.acked.items()):
        spec, row = ledger.specs[cid], stored.get(message_id)
        if row is None:
            problems.append(f"acknowledged message {message_id} ({cid}) is not stored")
        elif tuple(row[1:5]) != (spec.sender, spec.to, spec.subject, "message"):
            problems.append(f"stored message {message_id} is {tuple(row[1:5])}, "
                            f"not {spec}")
        elif row[5] is None:
            problems.append(f"message {message_id} was received and acknowledged "
                            f"but is still undelivered")
    extra = sorted(set(stored) - set(ledger.by_id))
    if extra:
        problems.append(f"{len(extra)} stored messages were never acknowledged to "
                        f"anyone (stored twice or phantom): ids {extra[:10]}")
    return problems


def _sent_id_problems(rows, ledger):
    recorded = {(sender, cid): message_id for sender, cid, message_id in rows}
    return [f"sent_ids holds {recorded.get((spec.sender, cid))} for {cid}, "
            f"acknowledged as {ledger.acked[cid]}"
            for cid, spec in sorted(ledger.specs.items())
            if cid in ledger.acked
            and recorded.get((spec.sender, cid)) != ledger.acked[cid]]


# -- the simulated users -------------------------------------------------------------

class Client(threading.Thread):
    """One user: sends its plan, receives and acknowledges; reconnects forever."""

    def __init__(self, run, name, plan, seed):
        super().__init__(name=f"client-{name}", daemon=True)
        self.run_, self.name_, self.plan = run, name, list(plan)
        self.rng = random.Random(seed)
        self.ledger = run.ledger
        self.done_sending = threading.Event()
        self.relogin = threading.Event()
        self.waiting = list(range(len(self.plan)))   # plan indices not yet acknowledged
        self.to_ack = []
        self._reset_connection_state()

    def _reset_connection_state(self):
        self.rid = 0
        self.in_flight = {}           # rid -> plan index of a Send awaiting its answer
        self.barrier = None           # (rid, ids) of the Ack barrier in flight
        self.retry_at = 0.0

    def request_relogin(self):
        self.relogin.set()

    def run(self):
        for _ in range(100_000):
            if self.run_.should_stop_clients() or time.monotonic() > self.run_.deadline:
                return
            try:
                self._one_connection()
            except Disconnected as broken:
                self._count_break(broken)
            except AccountMissing as error:
                self.ledger.violation(str(error))
                return
            time.sleep(self.rng.uniform(0.02, 0.1))

    def _count_break(self, broken):
        refused = broken.reason.startswith("cannot connect")
        self.ledger.count("connect attempts refused" if refused else "connections broken")
        if broken.protocol_code is not None:
            self.ledger.count(f"protocol error {broken.protocol_code}")
            if broken.protocol_code not in ("truncated",):
                self.ledger.violation(f"{self.name_}: the server broke the protocol: "
                                      f"{broken.reason}")

    def _one_connection(self):
        self._reset_connection_state()
        self.relogin.clear()
        link = Link(self.rng.choice(self.run_.trees).port)   # any server of the balancer
        try:
            log_in(link, self.name_)
            self.ledger.count("logins")
            self._session(link)
        finally:
            self._requeue_barrier()
            link.close()

    def _requeue_barrier(self):
        if self.barrier is not None:
            self.to_ack = self.barrier[1] + self.to_ack
            self.barrier = None

    def _session(self, link):
        while not self.run_.should_stop_clients():
            if time.monotonic() > self.run_.deadline:
                return
            if self.relogin.is_set():
                raise Disconnected("relogin requested")
            self._maybe_send(link)
            self._maybe_ack(link)
            event = link.poll(POLL)
            if event is not None:
                self._on_event(event)

    # -- sending -----------------------------------------------------------------
    def _maybe_send(self, link):
        """Keep up to `pipeline` Sends in flight, oldest unacknowledged first."""
        if not self.waiting:
            self.done_sending.set()
            return
        if time.monotonic() < self.retry_at:
            return
        busy = set(self.in_flight.values())
        for index in self.waiting:
            if len(self.in_flight) >= self.run_.config.pipeline:
                return
            if index not in busy:
                self._send(link, index)

    def _send(self, link, index):
        spec = self.plan[index]
        self.rid += 1
        self.in_flight[self.rid] = index
        link.send(Packet("Send", {"rid": self.rid, "to": spec.to, "subject": spec.subject,
                                  "body": spec.body, "client_id": spec.client_id}))
        self.ledger.count("send attempts")

    def _on_send_answer(self, packet):
        index = self.in_flight.pop(packet.data["rid"])
        spec = self.plan[index]
        if packet.op == "Result":
            self.ledger.record_result(spec, packet.data)
            if index in self.waiting:
                self.waiting.remove(index)
            if self.rng.random() < self.run_.config.relogin_chance:
                self.relogin.set()
            return
        code = packet.data.get("code")
        self.ledger.count(f"send error {code}")
        if code != "unavailable":
            self.ledger.violation(f"{self.name_}: Send {spec.client_id} failed with "
                                  f"{code}: {packet.data.get('reason')}")
        self.retry_at = time.monotonic() + 0.02

    # -- receiving ---------------------------------------------------------------
    def _maybe_ack(self, link):
        if not self.to_ack or self.barrier is not None:
            return
        ids = list(dict.fromkeys(self.to_ack))
        self.to_ack = []
        self.rid += 1
        self.barrier = (self.rid, ids)
        link.send(Packet("Ack", {"ids": ids}),
                  Packet("Inbox", {"rid": self.rid, "limit": 1}))

    def _on_barrier_answer(self, packet):
        ids = self.barrier[1]
        self.barrier = None
        if packet.op == "Result":
            self.ledger.confirm(self.name_, ids)
        else:
            self.to_ack = ids + self.to_ack

    def _on_event(self, event):
        if isinstance(event, protocol.BadPacket):
            self.ledger.violation(f"{self.name_}: bad packet from the server: {event}")
        elif not isinstance(event, Packet):
            return
        elif event.op == "Message":
            self.ledger.record_message(self.name_, event.data)
            self.to_ack.append(event.data["id"])
        elif event.op in ("Result", "Error"):
            self._on_answer(event)
        elif event.op == "Login":
            self.ledger.violation(f"{self.name_}: a login prompt in the middle of a session")
            raise Disconnected("unexpected login prompt")

    def _on_answer(self, packet):
        rid = packet.data.get("rid")
        if rid in self.in_flight:
            self._on_send_answer(packet)
        elif self.barrier is not None and rid == self.barrier[0]:
            self._on_barrier_answer(packet)
        elif packet.op == "Error" and packet.data.get("fatal"):
            self.ledger.count(f"fatal error {packet.data.get('code')}")


# -- the server tree and the killer --------------------------------------------------------

class ServerTree:
    """The current server of one data dir: start, find processes, kill, restart."""

    def __init__(self, base_dir, runtime_dir, ledger, extra_args=()):
        self.base_dir, self.ledger = base_dir, ledger
        self.env = {"TMPDIR": runtime_dir}
        self.extra_args = list(extra_args)
        self.lock = threading.RLock()
        self.started = []
        self.server = None
        self._log_offset = self._ready_seen = 0

    @property
    def port(self):
        return self.server.port

    @property
    def data_dir(self):
        return os.path.join(self.base_dir, "data")

    def start(self):
        with self.lock:
            server = ServerProcess(_as_path(self.base_dir), *self.extra_args, env=self.env)
            self.started.append(server)
            self.server = server.start()
            self.ledger.count("server starts")
            return self.server

    def pids(self, prefix, match=""):
        found = [pid for pid, title in self.server.processes().items()
                 if title.startswith(prefix) and match in title]
        if match == "multiprocessing.forkserver":   # not a child it forked a moment ago
            found = [pid for pid in found if parent_of(pid) == self.server.proc.pid]
        return sorted(found)

    def ready_count(self):
        """How many times a database process has said 'ready' in this data dir."""
        with self.lock:
            path = self.server.log_path
        try:
            with open(path, "rb") as log_file:
                log_file.seek(self._log_offset)
                new = log_file.read()
        except OSError:
            return self._ready_seen
        complete = new[:new.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        self._ready_seen += complete.count(b"[parley: database] - database ready (")
        return self._ready_seen

    def kill_tree(self):
        with self.lock:
            self.server.kill_group()      # SIGKILL to the whole process group
            self.start()

    def kill_daemon_only(self):
        """SIGKILL the daemon alone; its children must end; then start a new server."""
        with self.lock:
            old = self.server
            os.kill(old.proc.pid, signal.SIGKILL)
            old.proc.wait(10)
            deadline = time.monotonic() + 5.0
            while old.processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            orphans = old.processes()
            if orphans:
                self.ledger.violation(f"processes of a killed daemon kept running (a new "
                                      f"server would share the files with them): "
                                      f"{_titles(orphans)}")
            old.kill_group()
            self.start()

    def check_alive(self):
        """A daemon that exited although nobody killed it is a violation; restart it."""
        with self.lock:
            status = self.server.proc.poll()
            if status is None:
                return True
            tail = self.server.log()[-600:]
            self.ledger.violation(f"the daemon exited on its own (status {status}); "
                                  f"log ends: {tail}")
            self.server.kill_group()
            self.start()
            return False

    def stop(self):
        """SIGTERM: the daemon must exit 0 and leave no process of its tree behind."""
        with self.lock:
            status, survivors = stop_and_list_survivors(self.server)
            if status != 0:
                self.ledger.violation(f"the server did not stop cleanly: status {status}")
            if survivors:
                self.ledger.violation(f"processes left running after the server stopped: "
                                      f"{_titles(survivors)}")

    def kill_all(self):
        for server in self.started:
            server.kill_group()


def _titles(processes):
    """'pid title, ...' with long command lines cut short, for one-line reports."""
    return ", ".join(f"{pid} {title[:48]}" for pid, title in sorted(processes.items()))


def stop_and_list_survivors(server, timeout=30.0):
    """SIGTERM the daemon; (exit status, {pid: title} still running after 5 s)."""
    try:
        server.proc.send_signal(signal.SIGTERM)
        try:
            status = server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = f"no exit within {timeout:.0f} s"
        deadline = time.monotonic() + 5.0
        while server.processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        return status, server.processes()
    finally:
        server.kill_group()


def _as_path(directory):
    import pathlib
    return pathlib.Path(directory)


@dataclasses.dataclass
class KillStep:
    at: int           # fire once this many Send results have come back
    kind: str
    delay: float      # then wait this long (a random moment)


def kill_plan(rng, kills, messages, kinds=KINDS, ordered=False):
    """Seeded steps; with enough kills every kind appears at least once (`ordered`:
    in the order given, so the first kind is the first kill, which always happens)."""
    chosen = list(kinds)[:kills] + [rng.choice(kinds) for _ in range(kills - len(kinds))]
    if not ordered:
        rng.shuffle(chosen)
    points = sorted(int(rng.uniform(0.05, 0.85) * messages) for _ in chosen)
    return [KillStep(at, kind, rng.uniform(0.0, 0.05)) for at, kind in zip(points, chosen)]


class Killer(threading.Thread):
    """Carries out the kill plan, one step at a time.

    After each kill it waits for recovery (a database that died has been
    replaced by one that said "ready", and one more Send got its Result), so
    two kills never overlap: a database killed while the daemon is still
    starting its successor is a separate, targeted test.
    """

    def __init__(self, run, plan, seed):
        super().__init__(name="killer", daemon=True)
        self.run_, self.plan = run, plan
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done = Counter()
        self.missed = Counter()

    def run(self):
        for step in self.plan:
            if not self._carry_out(step):
                return

    def _carry_out(self, step):
        """Wait for the step's point, kill, wait for recovery; False to give up."""
        if not self._wait_for(lambda: self._acks() >= step.at):
            return False
        time.sleep(step.delay)
        tree = self.rng.choice(self.run_.trees)      # with several servers: any of them
        ready_before, acks_before = tree.ready_count(), self._acks()
        killed = self._kill(tree, step.kind)
        if killed or not self.stop.is_set():     # a kill cut short by the end is no miss
            (self.done if killed else self.missed)[step.kind] += 1
        return self._wait_for(lambda: self._recovered(tree, step.kind, ready_before,
                                                      acks_before))

    def _recovered(self, tree, kind, ready_before, acks_before):
        """A new database said 'ready' (if one died) and a Send succeeded since."""
        restarted = ("database", "tree", "daemon")
        if kind in restarted and tree.ready_count() <= ready_before:
            return False
        return self._acks() > acks_before

    def _acks(self):
        return self.run_.ledger.acks()

    def _wait_for(self, condition):
        while not condition():
            if self.stop.is_set() or time.monotonic() > self.run_.deadline:
                return False
            self.run_.check_alive()
            time.sleep(0.01)
        return True

    def _kill(self, tree, kind):
        if kind == "postgres":                # the shared database's crash, and its restart
            self.run_.config.postgres.kill()
            self.run_.config.postgres.start()
            return True
        if kind == "tree":
            tree.kill_tree()
            return True
        if kind == "daemon":
            tree.kill_daemon_only()
            return True
        if kind == "login":
            return self._kill_a_login()
        if kind == "forkserver":
            return self._kill_one(tree, "", patience=0.0, match="multiprocessing.forkserver")
        return self._kill_one(tree, "parley: database" if kind == "database"
                              else "parley: user ", patience=3.0)

    def _kill_one(self, tree, prefix, patience=0.0, match=""):
        """SIGKILL one process titled `prefix` (containing `match`), waiting up to
        `patience` s for one to exist."""
        deadline = time.monotonic() + patience
        while True:
            pids = tree.pids(prefix, match)
            if pids:
                try:
                    os.kill(self.rng.choice(pids), signal.SIGKILL)
                    return True
                except ProcessLookupError:
                    pass
            if time.monotonic() >= deadline or self.stop.is_set():
                if not self.stop.is_set():
                    self.run_.ledger.count(f"no '{prefix or match}' process to kill")
                return False
            time.sleep(0.002)

    def _kill_a_login(self):
        """Make a random client log in again and kill its login process."""
        for _ in range(3):
            self.rng.choice(self.run_.clients).request_relogin()
            if any(self._kill_one(tree, "parley: login", patience=3.0 / len(self.run_.trees))
                   for tree in self.run_.trees):
                return True
        return False


# -- one whole run ---------------------------------------------------------------------

@dataclasses.dataclass
class RunConfig:
    users: int = 6
    messages: int = 150
    kills: int = 6
    seed: int = 1
    kinds: tuple = KINDS
    relogin_chance: float = 0.02   # a client logs in again after a Result
    pipeline: int = 1               # Sends each client keeps in flight
    timeout: float = 120.0          # the whole sending phase
    body_words: int = 20
    server_args: tuple = ()         # more options for the server (e.g. a --key-file)
    ordered: bool = False           # kills in the order of `kinds` (else shuffled)
    servers: int = 1                # several servers on one PostgreSQL (issue 18) ...
    storage: str = None             # ... its URL (`--storage`)
    postgres: object = None         # ... and its cluster, for the "postgres" kill


@dataclasses.dataclass
class Report:
    config: RunConfig
    seconds: float
    kills: Counter
    missed: Counter
    counts: Counter
    violations: list

    def ok(self):
        return not self.violations

    def figures(self):
        title = (f"seed {self.config.seed}: {self.config.users} users, "
                 f"{self.config.messages} messages, {sum(self.kills.values())} kills "
                 f"({_by_kind(self.kills)}; missed: {_by_kind(self.missed)}) "
                 f"in {self.seconds:.1f} s")
        lines = [title]
        lines += [f"  {key}: {value}" for key, value in sorted(self.counts.items())]
        lines.append(f"  violations: {len(self.violations)}")
        lines += [f"    {text}" for text in self.violations[:50]]
        return "\n".join(lines)


def _by_kind(counter):
    return ", ".join(f"{kind} {counter[kind]}" for kind in KINDS + EXTRA_KINDS
                     if counter[kind]) or "none"


def make_plan(rng, names, messages, seed, body_words):
    """The seeded plan: who sends what to whom, with unique client_ids."""
    specs = []
    for index in range(messages):
        sender = rng.choice(names)
        to = rng.choice([n for n in names if n != sender])
        body = " ".join(rng.choice(("crash", "safe", "parley", "ünïcode", "x"))
                        for _ in range(rng.randint(1, body_words)))
        specs.append(SendSpec(f"s{seed}-m{index}", sender, to,
                              f"m{index} {sender} to {to}", body))
    return specs


class CrashRun:
    """One whole run in `base_dir`: start, send under fire, stop, drain, check."""

    def __init__(self, base_dir, config):
        self.base_dir, self.config = str(base_dir), config
        self.rng = random.Random(config.seed)
        self.ledger = Ledger()
        self.runtime_dir = tempfile.mkdtemp(prefix="pcrash-")
        args = ["--log-level", "INFO", *config.server_args]
        if config.storage:
            args += ["--storage", config.storage,
                     "--files-dir", os.path.join(self.base_dir, "shared-files")]
        bases = [self.base_dir] if config.servers == 1 else \
            [os.path.join(self.base_dir, f"server{n}") for n in range(config.servers)]
        for base in bases:
            os.makedirs(base, exist_ok=True)
        self.trees = [ServerTree(base, self.runtime_dir, self.ledger, extra_args=args)
                      for base in bases]
        self.tree = self.trees[0]             # the one that makes the accounts and drains
        self.names = [f"user{i}" for i in range(config.users)]
        self.clients = []
        self.clients_stop = threading.Event()
        self.deadline = float("inf")

    def should_stop_clients(self):
        return self.clients_stop.is_set()

    def check_alive(self):
        for tree in self.trees:
            tree.check_alive()

    def _start_servers(self):
        """The first server, then the others with copies of its key files (as an
        operator gives every server of one deployment the same keys)."""
        self.tree.start()
        for tree in self.trees[1:]:
            os.makedirs(tree.data_dir, mode=0o700, exist_ok=True)
            for name in KEY_FILES:
                shutil.copy2(os.path.join(self.tree.data_dir, name), tree.data_dir)
            tree.start()

    def run(self):
        """Run it all; a Report. Every process started is killed before returning."""
        started = time.monotonic()
        killer = None
        try:
            self._start_servers()
            self._create_accounts()
            killer = self._send_under_fire()
            self._stop_clients(killer)
            self._final_drain()
            self.ledger.violations += self.ledger.final_problems()
            self.ledger.violations += storage_problems(self.tree.data_dir, self.ledger,
                                                       self._db_key(), self.config.storage)
        finally:
            if killer is not None:
                killer.stop.set()
            self.clients_stop.set()
            for tree in self.trees:
                tree.kill_all()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return Report(self.config, time.monotonic() - started,
                      killer.done if killer else Counter(),
                      killer.missed if killer else Counter(),
                      self.ledger.counts, self.ledger.violations)

    def _create_accounts(self):
        for name in self.names:
            Session(self.tree.port, name, create=True).logout()

    def _send_under_fire(self):
        specs = make_plan(self.rng, self.names, self.config.messages, self.config.seed,
                          self.config.body_words)
        self.ledger.plan(specs)
        self.deadline = time.monotonic() + self.config.timeout
        self.clients = [Client(self, name, [s for s in specs if s.sender == name],
                               seed=self.rng.random()) for name in self.names]
        plan = kill_plan(self.rng, self.config.kills, self.config.messages,
                         self.config.kinds, self.config.ordered)
        killer = Killer(self, plan, seed=self.rng.random())
        for thread in (*self.clients, killer):
            thread.start()
        self._wait_for_senders()
        return killer

    def _wait_for_senders(self):
        while not all(c.done_sending.is_set() for c in self.clients):
            if time.monotonic() > self.deadline:
                self.ledger.violation(f"the sending phase did not finish within "
                                      f"{self.config.timeout:.0f} s (a hang?)")
                return
            self.check_alive()
            time.sleep(0.05)

    def _stop_clients(self, killer):
        killer.stop.set()
        killer.join(30)
        self.clients_stop.set()
        for client in self.clients:
            client.join(30)
            if client.is_alive():
                self.ledger.violation(f"{client.name_} did not stop")
        self.check_alive()
        for tree in self.trees:
            tree.stop()

    def _db_key(self):
        return db_key_of(self.config.server_args)

    def _final_drain(self):
        """A clean server: every user drains its backlog; a second pass finds nothing."""
        self.tree.start()
        for name in self.names:
            self._drain(name, first=True)
        for name in self.names:
            self._drain(name, first=False)
        self.tree.stop()

    def _drain(self, name, first):
        for _ in range(5):
            try:
                return self._drain_once(name, first)
            except Disconnected as broken:
                self.ledger.violation(f"the drain of {name} broke on a clean server: "
                                      f"{broken.reason}")
            except AccountMissing as error:
                self.ledger.violation(str(error))
                return None
        return None

    def _drain_once(self, name, first):
        session = Session(self.tree.port, name)
        try:
            for message in session.backlog:
                self.ledger.record_message(name, message)
            if not first and session.backlog:
                self.ledger.violation(f"{name} still had {len(session.backlog)} messages "
                                      f"after draining everything")
            ids = [m["id"] for m in session.backlog] + self.ledger.unconfirmed(name)
            if ids and session.ack_confirmed(ids):
                self.ledger.confirm(name, ids)
            for message in session.pushed:   # nothing is sent any more: none expected
                self.ledger.record_message(name, message)
        finally:
            session.logout()


def db_key_of(server_args):
    """The database key a `--key-file` among the server's options holds, or None."""
    args = list(server_args)
    if "--key-file" not in args:
        return None
    with open(args[args.index("--key-file") + 1]) as handle:
        return bytes.fromhex(handle.read().strip())


def run_crash_test(base_dir, **options):
    """Convenience: one run with RunConfig(**options); the Report."""
    return CrashRun(base_dir, RunConfig(**options)).run()
