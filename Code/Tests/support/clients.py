"""Clients for tests: the real client in batch mode, and a raw protocol driver.

`BatchClient` runs the real `Code/client.py --batch --json` with its
standard input held open, and reads its JSON lines as they come;
`run_client` runs one to the end of its input (`run_ok`: and it must
succeed; `of_type` picks its records of one type). `RawClient` speaks the wire
protocol directly through the sans-IO `Connection`, for tests that must
send what a well-behaved client would not; `session`, `request`, `send`
and `next_message` drive one through a login and its requests.
"""

import json
import queue
import socket
import subprocess
import sys
import threading
import time

from Modules.wire import protocol
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import Packet
from Tests.support.processes import CLIENT, PASSWORD, WAIT, child_env


def client_command(server, user, *extra, known_hosts=None, batch=True, as_json=True):
    command = [sys.executable, CLIENT, "--port", str(server.port), "--user", user,
               "--password-env", "PARLEY_TEST_PASSWORD", "--accept-new-host-key",
               "--known-hosts", known_hosts or str(server.tmp_path / "known_hosts")]
    if batch:
        command.append("--batch")
    if as_json:
        command.append("--json")
    return command + list(extra)


def run_client(server, user, lines=(), password=PASSWORD, create=False, extra=(),
               timeout=WAIT):
    """Run a batch client to the end of `lines`; (returncode, json objects, stderr)."""
    command = client_command(server, user, *(["--create"] if create else []), *extra)
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True,
                          text=True, timeout=timeout,
                          env=child_env({"PARLEY_TEST_PASSWORD": password}))
    return done.returncode, parse_json_lines(done.stdout), done.stderr


def run_ok(server, user, lines=(), create=False, password=PASSWORD):
    """Run a batch client that must succeed; its JSON objects."""
    code, objects, stderr = run_client(server, user, lines, password=password, create=create)
    assert code == 0, stderr
    return objects


def of_type(objects, kind):
    """The JSON objects of one `type`."""
    return [o for o in objects if o["type"] == kind]


def parse_json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class BatchClient:
    """A batch client kept running: send lines, read JSON objects as they arrive."""

    def __init__(self, server, user, password=PASSWORD, create=False, extra=()):
        command = client_command(server, user, *(["--create"] if create else []), *extra)
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=child_env({"PARLEY_TEST_PASSWORD": password}))
        self.objects = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.objects.put(json.loads(line))
        self.objects.put(None)

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout=WAIT):
        """The first object (not yet consumed) for which predicate is true."""
        deadline = time.monotonic() + timeout
        while True:
            for obj in self.seen:
                if predicate(obj):
                    self.seen.remove(obj)
                    return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; got {self.seen}")
            try:
                obj = self.objects.get(timeout=remaining)
            except queue.Empty:
                continue
            if obj is None:
                raise AssertionError(f"client ended; got {self.seen}; "
                                     f"stderr: {self.proc.stderr.read()}")
            self.seen.append(obj)

    def wait_type(self, kind, timeout=WAIT, **fields):
        return self.wait_for(lambda o: o.get("type") == kind and all(
            o.get(k) == v for k, v in fields.items()), timeout)

    def close(self, timeout=WAIT):
        """End standard input (logs out) and wait; the exit status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


EVENT_BOUND = 100_000      # events read while waiting for one, at most


class RawClient:
    """Speaks the wire protocol directly, for tests of misbehaviour.

    `source` binds the connection to a local address (127.0.0.2 is another
    host to the server's throttle); `rcvbuf` shrinks the socket's receive
    buffer (a client that stops reading fills it quickly); `sock` is a socket
    to connect instead of a new one (one made in a private network).
    """

    def __init__(self, port, host="127.0.0.1", timeout=WAIT, source=None, rcvbuf=None,
                 sock=None):
        sock = sock or socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
        self.sock = sock
        self.conn = protocol.Connection.client()
        self.server_key = None

    def send_raw(self, item):
        """A packet (any op, any fields) or raw payload bytes, encrypted, past
        the protocol's own checks. False if the server has already closed."""
        payload = self.conn.serializer.dumps(item) if isinstance(item, Packet) else item
        try:
            self.write(self.conn.channel.send(payload))
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def events_until(self, predicate):
        """Events up to the first that satisfies predicate, or up to CLOSED."""
        events = []
        for _ in range(EVENT_BOUND):
            event = self.next_event()
            events.append(event)
            if event is CLOSED or predicate(event):
                return events
        raise AssertionError("endless events")

    def until_ready(self):
        """Events up to System ready: the backlog of Message packets."""
        events = self.events_until(lambda e: e.op == "System" and e.data["event"] == "ready")
        assert events[-1] is not CLOSED, "closed before System ready"
        backlog = events[:-1]
        assert all(event.op == "Message" for event in backlog), backlog
        return backlog

    def write(self, data):
        self.sock.sendall(data)

    def send(self, op, **data):
        self.write(self.conn.send(Packet(op, data)))

    reset = False   # a server that closes with our later packets unread resets us

    # Presence notices ("bob is online", issue 13) come whenever people come and go;
    # they are kept aside in `presence` unless a test wants them in the stream.
    skip_presence = True

    def next_event(self):
        """The next event; CLOSED when the server closed the connection."""
        while True:
            event = self.conn.next_event()
            if self.skip_presence and isinstance(event, Packet) and event.op == "System" \
                    and event.data.get("event") == "presence":
                self.__dict__.setdefault("presence", []).append(event.data["message"])
                continue
            if event is not NEED_DATA:
                return event
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                self.reset, data = True, b""
            self.conn.receive_data(data)

    features = protocol.FEATURES        # what the Version offer asks for

    def handshake(self):
        self.write(self.conn.start())
        done = self.next_event()
        self.server_key = done.remote_static
        self.send("Version", **{**protocol.version_offer().data,
                                "features": list(self.features)})
        version = self.next_event()
        assert version.op == "Version", version
        return self.next_event()   # the first Login prompt

    def login(self, username, password, create=False):
        """Handshake and login; the events up to and including the outcome."""
        prompt = self.handshake()
        assert prompt.data["prompt"] == "username", prompt
        self.send("Login", username=username)
        prompt = self.next_event()
        field = "new_password" if create else "password"
        assert prompt.data["prompt"] == field, prompt
        self.send("Login", **{field: password})
        return self.next_event()

    def close(self):
        self.sock.close()


def read_to_end(sock, limit=64 * 1024 * 1024):
    """Every byte until the server closes (EOF or reset); bounded in size."""
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def session(server, name, create=True, client_class=None, **options):
    """A logged-in RawClient (or `client_class`) and the messages delivered
    before 'ready'; `options` go to the client (source, rcvbuf, ...)."""
    client = (client_class or RawClient)(server.port, **options)
    welcome = client.login(name, PASSWORD, create=create)
    assert welcome.op == "Welcome", welcome
    return client, [event.data for event in client.until_ready()]


def request(client, op, **data):
    """Send one request and return its Result/Error, collecting pushes meanwhile."""
    request.rid = getattr(request, "rid", 0) + 1
    client.send(op, rid=request.rid, **data)
    pushed = []
    while True:
        event = client.next_event()
        if event.op in ("Result", "Error") and event.data.get("rid") == request.rid:
            request.pushed = pushed
            return event
        pushed.append(event)


def send(client, to, subject="Hello", body="Hi there", client_id=None):
    request.count = getattr(request, "count", 0) + 1
    return request(client, "Send", to=to, subject=subject, body=body,
                   client_id=client_id or f"cid-{request.count}")


def next_message(client):
    event = client.next_event()
    assert event.op == "Message", event
    return event.data
