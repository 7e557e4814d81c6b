"""Network abuse against a real daemon: each test is one kind of hostile client.

What it does: starts a real `server_daemon.py` (through the `make_server`
fixture, which kills its whole process group at the end, even on failure)
and attacks it over loopback TCP with slow, silent, non-reading,
numerous, oversize and password-guessing clients. During and after every
attack a well-behaved client (a `Witness`: one session logged in before
the attack, plus fresh logins) must keep working.

What it talks to: only 127.0.0.0/8 (the password-guessing attacker binds
127.0.0.2 or 127.0.0.3 as its source address so that the per-address
throttle does not hit the well-behaved client on 127.0.0.1), and /proc to
read process titles, memory (VmRSS) and open file descriptors.

How it fails: an assertion names the promise that broke (a hostile client
not cut off, a witness not served, memory or file descriptors not bounded).
No assertion is about elapsed time: every loop is bounded by a count, and
socket timeouts (30 s) only keep a broken server from hanging the suite.
"""

import os
import resource
import selectors
import socket
import time

from Modules.wire import channel, protocol
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import Packet
from Tests.support import PASSWORD, WAIT, RawClient, read_to_end, session, wait_until

LOGIN_TIMEOUT = "3"          # seconds, for the slow and silent clients
BURST = 500                  # connections opened at once
BODY = "x" * 60_000          # a large but legal message body
FLOOD_MAX = 400              # messages sent to a client that never reads (bound)
RSS_GROWTH_BOUND_KIB = 64 * 1024
GUESSES = 30                 # wrong passwords in the login flood


# ------------------------------------------------------------------ clients


class Client(RawClient):
    """A RawClient that numbers its own requests."""

    rid = 0

    def request(self, op, **data):
        """One request; its Result or Error (pushed messages are skipped)."""
        self.rid += 1
        self.send(op, rid=self.rid, **data)
        events = self.events_until(lambda e: e.op in ("Result", "Error")
                                   and e.data.get("rid") == self.rid)
        assert events[-1] is not CLOSED, f"connection closed waiting for {op}"
        return events[-1]


def logged_in(server, name, create=True, **options):
    """A Client logged in as `name`, past System ready."""
    return session(server, name, create=create, client_class=Client, **options)[0]


class Witness:
    """A well-behaved user: one long session plus fresh logins on demand, from an
    address of its own (127.0.0.9), so that an attack from 127.0.0.1 that the
    server answers by limiting that address does not limit the witness too."""

    def __init__(self, server, name="witness", source="127.0.0.9"):
        self.server, self.name, self.source = server, name, source
        self.session = logged_in(server, name, source=source)
        self.logins = 0

    def check(self):
        """The old session answers a request and a new connection can log in."""
        assert self.session.request("Inbox").op == "Result"
        self.login_again()

    def login_again(self):
        self.logins += 1
        fresh = logged_in(self.server, self.name, create=False, source=self.source)
        assert fresh.request("Inbox").op == "Result"
        fresh.close()


# ------------------------------------------------------------------ helpers


def raise_fd_limit(wanted):
    """Raise our soft RLIMIT_NOFILE (the daemon inherits it) to `wanted` if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid):
    """Resident memory of a process in KiB, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def events_of(conn, data):
    """Feed `data` and then the end of stream to `conn`; every event until CLOSED."""
    events = []
    conn.receive_data(data)
    conn.receive_data(b"")
    for _ in range(10_000):
        event = conn.next_event()
        if event is CLOSED:
            return events
        if event is not NEED_DATA:
            events.append(event)
    raise AssertionError("too many events")


def count_in_log(server, text):
    return sum(text in line for line in server.log().splitlines())


# ---------------------------------------------------------------- slowloris


class SlowClient:
    """Sends its bytes one at a time and collects whatever the server says."""

    def __init__(self, port, conn, message, already=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.conn, self.message, self.sent = conn, message, 0
        self.received = bytearray()
        self.closed = False
        if already:
            self.sock.sendall(already)

    def drip(self):
        if self.closed or self.sent >= len(self.message):
            return
        try:
            self.sock.send(self.message[self.sent:self.sent + 1])
            self.sent += 1
        except OSError:
            self.closed = True

    def poll(self):
        """Read what is there without blocking; note when the server has closed."""
        if self.closed:
            return
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.closed = True
                    return
                self.received += chunk
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True
        finally:
            self.sock.setblocking(True)


def slow_handshake_client(port):
    """Dribbles handshake message 1 (37 bytes)."""
    conn = protocol.Connection.client()
    return SlowClient(port, conn, conn.start())


def slow_version_client(port):
    """Completes the handshake at once, then dribbles its Version offer."""
    fast = RawClient(port)
    fast.write(fast.conn.start())
    assert isinstance(fast.next_event(), channel.HandshakeDone)
    slow = SlowClient.__new__(SlowClient)
    slow.sock, slow.conn, slow.sent = fast.sock, fast.conn, 0
    slow.message = fast.conn.send(protocol.version_offer())
    slow.received, slow.closed = bytearray(), False
    return slow


def test_slowloris_is_cut_off_at_the_login_deadline(make_server):
    server = make_server("--login-timeout", LOGIN_TIMEOUT)
    witness = Witness(server)
    slow = [slow_handshake_client(server.port), slow_version_client(server.port)]
    longest = max(len(client.message) for client in slow)
    for _ in range(longest):                       # one byte per second each
        for client in slow:
            client.drip()
        time.sleep(1.0)
        for client in slow:
            client.poll()
        witness.session.request("Inbox")
        if all(client.closed for client in slow):
            break
    assert all(client.closed for client in slow), "a slow client was never cut off"
    for client in slow:
        assert client.sent < len(client.message), "the server waited for the whole message"
    hello_events = events_of(slow[0].conn, bytes(slow[0].received))
    assert isinstance(hello_events[0], channel.Notice) and "time" in hello_events[0].text
    version_events = events_of(slow[1].conn, bytes(slow[1].received))
    assert [e.data.get("event") for e in version_events] == ["timeout"]
    witness.check()


# ---------------------------------------------------------------- silent


def test_a_client_that_never_speaks_is_cut_off_and_others_are_served(make_server):
    server = make_server("--login-timeout", LOGIN_TIMEOUT)
    witness = Witness(server)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    title = f"parley: login 127.0.0.1:{silent.getsockname()[1]}"
    wait_until(lambda: server.pids_titled(title), message="its login process")
    witness.check()                                   # served while it stays silent
    events = events_of(protocol.Connection.client().channel, read_to_end(silent))
    assert len(events) == 1 and isinstance(events[0], channel.Notice), events
    assert "time" in events[0].text
    wait_until(lambda: not server.pids_titled(title), message="its login process to end")
    witness.check()


# ------------------------------------------------------- never reads pushes


def test_a_client_that_never_reads_is_disconnected_with_bounded_memory(server):
    witness = Witness(server)
    victim = logged_in(server, "victim", rcvbuf=4096)   # then never reads again
    pid = server.pids_titled("parley: user victim")[0]
    baseline = peak = rss_kib(pid)
    flooder = logged_in(server, "flooder")
    sent = 0
    while sent < FLOOD_MAX and rss_kib(pid) is not None:
        sent += 1
        result = flooder.request("Send", to="victim", subject=f"flood {sent}", body=BODY,
                                 client_id=f"flood-{sent}")
        assert result.op == "Result" and not result.data["bounced"], result
        peak = max(peak, rss_kib(pid) or 0)
        if sent % 50 == 0:
            witness.session.request("Inbox")
    assert rss_kib(pid) is None, f"still connected after {sent} unread messages"
    assert peak - baseline < RSS_GROWTH_BOUND_KIB, f"user process grew {peak - baseline} KiB"
    assert count_in_log(server, "victim: client is not reading; disconnecting") == 1
    read_to_end(victim.sock)                          # the server has closed it
    witness.check()
    again = Client(server.port)
    assert again.login("victim", PASSWORD).op == "Welcome"
    assert len(again.until_ready()) == sent           # nothing was lost meanwhile


def test_pipelined_large_requests_all_get_an_answer_from_the_database(server):
    """A client may pipeline requests; each must reach the database intact."""
    sender = logged_in(server, "sender")
    count = 40
    sender.write(b"".join(                       # one burst: 40 requests, 2.4 MB
        sender.conn.send(Packet("Send", {"rid": number, "to": "sender", "subject": "p",
                                         "body": BODY, "client_id": f"pipe-{number}"}))
        for number in range(1, count + 1)))
    answers = {}
    for _ in range(100_000):
        event = sender.next_event()
        assert event is not CLOSED, "connection closed"
        if event.op in ("Result", "Error") and "rid" in event.data:
            answers[event.data["rid"]] = event
        if len(answers) == count:
            break
    failed = {rid: e.data for rid, e in answers.items() if e.op != "Result"}
    assert not failed, f"{len(failed)} of {count} pipelined sends failed, e.g. " \
                       f"{next(iter(failed.values()))}"
    assert "database connection lost" not in server.log()


# ------------------------------------------------------- 500 connections


def test_500_connections_at_once_are_all_served_or_closed(make_server):
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    raise_fd_limit(4 * BURST + 1024)
    try:
        burst_of_connections(make_server())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def burst_of_connections(server):
    witness = Witness(server)
    daemon_fds = open_fds(server.proc.pid)
    burst = [protocol.Connection.client() for _ in range(BURST)]
    sockets = []
    try:
        for conn in burst:
            sockets.append(socket.create_connection(("127.0.0.1", server.port), timeout=WAIT))
            sockets[-1].sendall(conn.start())
        assert witness.session.request("Inbox").op == "Result"   # served during the burst
        outcomes = wait_for_outcomes(sockets, burst)
        assert sum(outcomes.values()) == BURST, outcomes
        witness.check()
    finally:
        for sock in sockets:
            sock.close()
    wait_until(lambda: not server.pids_titled("parley: login"), timeout=120,
               message="every login process of the burst to end")
    witness.check()         # the daemon releases ended processes at its next spawn
    wait_until(lambda: open_fds(server.proc.pid) <= daemon_fds + 8, timeout=WAIT,
               message="the daemon's file descriptors to come back")


def wait_for_outcomes(sockets, conns, timeout=180.0):
    """Count connections 'served' (handshake answered) or 'closed' (notice/EOF)."""
    outcomes = {"served": 0, "closed": 0}
    selector = selectors.DefaultSelector()
    for sock, conn in zip(sockets, conns):
        selector.register(sock, selectors.EVENT_READ, conn)
    deadline = time.monotonic() + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            outcome = first_outcome(key.fileobj, key.data)
            if outcome is not None:
                outcomes[outcome] += 1
                selector.unregister(key.fileobj)
    selector.close()
    return outcomes


def first_outcome(sock, conn):
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    conn.receive_data(data)
    event = conn.next_event()
    if isinstance(event, channel.HandshakeDone):
        return "served"
    if event is CLOSED or isinstance(event, channel.Notice):
        return "closed"
    return None


# ------------------------------------------------------- oversize prefixes


def assert_refused_as_too_large(client, prefix):
    """Only the prefix is sent: the server must answer without waiting for a body."""
    client.write(prefix)
    error = client.next_event()
    assert error.op == "Error" and error.data["code"] == "frame_too_large", error
    assert error.data["fatal"] is True
    assert client.next_event() is CLOSED


def test_oversize_length_prefixes_close_only_that_connection(server):
    witness = Witness(server)
    before_handshake = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    before_handshake.sendall(b"\xff\xff\xff\xff")               # 4 GiB, body never sent
    said = events_of(protocol.Connection.client().channel, read_to_end(before_handshake))
    assert all(isinstance(event, channel.Notice) for event in said), said
    witness.check()
    after_handshake = Client(server.port)
    after_handshake.write(after_handshake.conn.start())
    assert isinstance(after_handshake.next_event(), channel.HandshakeDone)
    assert_refused_as_too_large(after_handshake, (65_537).to_bytes(4, "big"))
    witness.check()
    after_login = logged_in(server, "oversize")
    assert_refused_as_too_large(after_login, b"\xff\xff\xff\xff")
    witness.check()
    assert count_in_log(server, "exceeds the limit") >= 3


# ------------------------------------------------------------ login flood


def guess(client, password):
    """Send one password; the reply's kind: 'throttled', 'wrong', 'closed' or 'in'."""
    client.send("Login", password=password)
    return reply_kind(client.next_event())


def reply_kind(reply):
    if reply is CLOSED or reply.op == "Error":
        return "closed"
    if reply.op == "Welcome":
        return "in"
    assert reply.op == "Login" and reply.data["prompt"] == "password", reply
    return "throttled" if "try again in" in reply.data["message"] else "wrong"


def attacker_at_password_prompt(server, source, username):
    client = Client(server.port, source=source)
    assert client.handshake().data["prompt"] == "username"
    client.send("Login", username=username)
    assert client.next_event().data["prompt"] == "password"
    return client


def test_a_login_flood_against_one_user_is_rate_limited_and_others_get_in(server):
    witness = Witness(server)
    logged_in(server, "target").close()
    attacker, kinds = None, []
    while len(kinds) < GUESSES:
        if attacker is None:
            attacker = attacker_at_password_prompt(server, "127.0.0.2", "target")
        kinds.append(guess(attacker, f"guess number {len(kinds)}"))
        if kinds[-1] == "closed":
            attacker.close()
            attacker = None
        if len(kinds) % 10 == 0:
            witness.session.request("Inbox")
            logged_in(server, f"bystander{len(kinds)}").close()   # other users get in
    checked = count_in_log(server, "failed login for target")
    assert "throttled" in kinds, kinds
    assert "in" not in kinds
    assert checked <= GUESSES // 2, f"{checked} of {GUESSES} guesses were checked"
    witness.check()


def test_a_guesser_from_one_address_does_not_lock_the_owner_out(server):
    """The owner, logging in from elsewhere, is not made to wait for a guesser."""
    logged_in(server, "owner").close()
    attacker, kinds = None, []
    while "throttled" not in kinds:                    # until the guesser is slowed
        if attacker is None:
            attacker = attacker_at_password_prompt(server, "127.0.0.2", "owner")
        kinds.append(guess(attacker, f"guess number {len(kinds)}"))
        if kinds[-1] == "closed":
            attacker.close()
            attacker = None
        assert len(kinds) < GUESSES, kinds
    owner = attacker_at_password_prompt(server, "127.0.0.1", "owner")
    assert guess(owner, PASSWORD) == "in"              # at once, from another address
    if attacker is not None:
        assert guess(attacker, PASSWORD) == "throttled"   # the guesser still waits
        attacker.close()


def test_failed_logins_from_one_address_are_throttled_across_users(server):
    """SECURITY.md: failed logins are throttled per source address after 10."""
    witness = Witness(server)
    names = [f"member{i}" for i in range(5)]
    for name in names:
        logged_in(server, name).close()
    for name in names[:3]:                           # 3 users x 3 wrong = 9 failures
        attacker = attacker_at_password_prompt(server, "127.0.0.3", name)
        assert [guess(attacker, "not the password") for _ in range(3)] == \
               ["wrong", "wrong", "closed"]
        attacker.close()
    attacker = attacker_at_password_prompt(server, "127.0.0.3", names[3])
    # the 10th failure is the last free one; the 11th starts the delay
    assert [guess(attacker, "not the password") for _ in range(3)] == \
           ["wrong", "wrong", "throttled"]
    attacker.close()
    attacker = attacker_at_password_prompt(server, "127.0.0.3", names[4])
    outcome = guess(attacker, PASSWORD)              # even the right one must wait
    assert outcome == "throttled", f"12th guess from one address: {outcome}"
    witness.check()                                  # 127.0.0.1 is not throttled


# ------------------------------------------------------------ batch frames


def test_a_malformed_batch_frame_closes_only_that_connection_with_a_reason(server):
    """Correctly encrypted, wrongly framed inside: item lengths that overrun."""
    witness = Witness(server)
    for name, body in (("overrun", b"\x00\x00\x00\x09abc"), ("empty", b"")):
        client = logged_in(server, f"batch{name}")
        chan = client.conn.channel
        client.write(chan._transport_frame(bytes([channel.FLAG_BATCH]), body))
        error = client.next_event()
        assert error.op == "Error" and error.data["code"] == "bad_batch", error
        assert error.data["fatal"] is True
        assert client.next_event() is CLOSED
        witness.check()


class NoFeatures(Client):
    features = ()


def test_a_batch_frame_before_the_feature_was_agreed_is_refused(server):
    witness = Witness(server)
    client = session(server, "nobatch", client_class=NoFeatures)[0]
    assert client.conn.batching is False
    packets = [client.conn.serializer.dumps(Packet("Inbox", {"rid": n})) for n in (1, 2)]
    client.write(client.conn.channel.send_many(packets))     # a well-formed batch frame
    error = client.next_event()
    assert error.op == "Error" and error.data["code"] == "bad_batch", error
    assert error.data["fatal"] is True and "agreed" in error.data["reason"]
    assert client.next_event() is CLOSED
    witness.check()


def test_one_address_holding_its_login_cap_does_not_keep_others_out(make_server):
    """Idle handshakes from one address fill only that address's share."""
    server = make_server("--max-clients", "12", "--max-startups-per-address", "5")
    idle = []
    for _ in range(5):                                   # handshake, then say nothing
        client = Client(server.port, source="127.0.0.2")
        client.handshake()
        idle.append(client)
    sixth = Client(server.port, source="127.0.0.2")
    notice = sixth.next_event()
    assert isinstance(notice, channel.Notice) and "your address" in notice.text
    newcomer = logged_in(server, "newcomer")            # from 127.0.0.1, at once
    assert newcomer.request("Inbox").op == "Result"
    for client in idle:
        client.close()


def end_a_login_badly(server, source):
    """A login that breaks the dialogue; the Notice instead if refused at the door."""
    broken = Client(server.port, source=source)
    broken.write(broken.conn.start())
    event = broken.next_event()
    if isinstance(event, channel.Notice):
        return event
    assert isinstance(event, channel.HandshakeDone), event
    broken.send("Version", **protocol.version_offer().data)
    assert broken.next_event().op == "Version"
    assert broken.next_event().data["prompt"] == "username"
    broken.send("Login", username="x", password="y")    # two fields at once: bad_login
    assert broken.next_event().data["code"] == "bad_login"
    broken.close()
    return None


def served(server, source):
    probe = Client(server.port, source=source)
    probe.write(probe.conn.start())
    event = probe.next_event()
    probe.close()
    return isinstance(event, channel.HandshakeDone)


def test_an_address_whose_logins_keep_breaking_is_refused_for_a_while(make_server):
    """Two bad endings are free, later ones refuse the address for 1 s, 2 s, 4 s..."""
    server = make_server()
    witness = Witness(server)
    for _ in range(2):
        assert end_a_login_badly(server, "127.0.0.5") is None    # free
    refused = None
    for _ in range(8):          # the daemon hears of an ending just after its close
        refused = end_a_login_badly(server, "127.0.0.5")
        if refused is not None:
            break
    assert refused is not None and "for a while" in refused.text, refused
    witness.check()                             # other addresses are not refused
    wait_until(lambda: served(server, "127.0.0.5"), timeout=WAIT * 3,
               message="the penalty to end")
