"""Hypothesis fuzzing of every parser that sees network bytes.

What it does, in two halves:

* In-process, many examples each: the frame decoder, both serializers,
  the Noise handshake messages (random and mutated message 1 fed to a
  responder, message 2 to an initiator), the login dialogue (random
  answers and random database outcomes) and the user process's handling
  of session commands (a real `UserSession` with a fake database link).
  No input may raise anything but the documented error types, and what the
  server sends back must itself be legal.
* Against real processes, fewer examples: random login dialogues and
  random session commands over TCP to a real daemon (`server` fixture),
  and random requests over the Unix socket to a real database process in
  each phase. No input may harm anything but its own connection: the
  database process keeps its pid, no process logs a traceback, and after
  the run a well-behaved client (logged in before it started) and a fresh
  login still work.

What it talks to: 127.0.0.1 and a Unix socket in the test's temporary
directory. Real processes are always killed at the end (the `server`
fixture kills the daemon's process group; the `database` fixture kills
its process), even on failure.

How it fails: hypothesis reports the smallest input that broke a
promise. Inputs that found real bugs are pinned with `@example` so they
are tried first, every run.
"""

import itertools
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from Modules import operations, rules
from Modules.database import codec
from Modules.database.connection import MAX_FRAME as MONITOR_MAX_FRAME
from Modules.database.link import DbLink
from Modules.server import login_dialogue as ld
from Modules.server import user_process
from Modules.wire import channel as channel_mod
from Modules.wire import protocol
from Modules.wire.errors import RemoteProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from Modules.wire.noise import KeyPair
from Modules.wire.serializers import BINARY, JSON, Packet
from Tests.support import PASSWORD, WAIT, RawClient, running_database, session
from Tests.support.pairs import user_session

SERVER_KEY = KeyPair.generate()
IN_PROCESS = settings(max_examples=100, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])
REAL_PROCESS = settings(max_examples=12, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck))
EVENT_BOUND = 10_000        # events read per step, at most

# ---------------------------------------------------------------- strategies

INT64 = st.integers(-2**63, 2**63 - 1)
SCALARS = (st.none() | st.booleans() | INT64 | st.integers(-3, 300)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                      max_leaves=10)
NAMES = st.sampled_from(["alice", "Bob", "fuzzer", "x", "parley", "a" * 40, " carol "])
TYPED = {
    str: NAMES | st.text(max_size=40),
    int: st.integers(-3, 300) | INT64,
    bool: st.booleans(),
    list: st.lists(st.integers(-3, 300) | INT64, max_size=8) | st.lists(VALUES, max_size=3),
    dict: st.dictionaries(st.text(max_size=5), VALUES, max_size=3),
    (int, float): INT64 | st.floats(allow_nan=False, allow_infinity=False),
}
ALL_OPS = sorted({op for _, op in protocol.SCHEMAS})
OP_NAMES = st.sampled_from(ALL_OPS) | st.text("AZaz", min_size=1, max_size=8)
FIELD_NAMES = st.sampled_from(sorted({f for s in protocol.SCHEMAS.values() for f in s}))
SESSION_OPS = ["Send", "Inbox", "Read", "Delete", "DeleteAccount", "Ack", "Logout"]


@st.composite
def packets(draw, ops=ALL_OPS, sender="client"):
    """A packet, usually of one of `ops`, its fields often of the right type."""
    op = draw(st.sampled_from(ops) | OP_NAMES)
    data = {}
    for field, (kind, _required) in protocol.SCHEMAS.get((sender, op), {}).items():
        if draw(st.integers(0, 9)) < 8:
            data[field] = draw(TYPED[kind] if draw(st.booleans()) else VALUES)
    data.update(draw(st.dictionaries(FIELD_NAMES | st.text(max_size=5), VALUES, max_size=2)))
    return Packet(op, data)


LOGIN_VALUES = NAMES | st.sampled_from([PASSWORD, "short", True, False]) | VALUES
LOGIN_FIELDS = st.sampled_from(["username", "password", "new_password", "cancel"])
LOGIN_ANSWERS = (st.builds(lambda k, v: {k: v}, LOGIN_FIELDS, LOGIN_VALUES)
                 | st.dictionaries(LOGIN_FIELDS | st.text(max_size=4), LOGIN_VALUES,
                                   max_size=3))


@st.composite
def mutated(draw, original):
    """`original` with one to four random byte edits (flip, insert, delete, cut)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if edit == "flip" and data:
            data[where] ^= draw(st.integers(1, 255))
        elif edit == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete" and data:
            del data[where]
        elif edit == "cut":
            del data[where:]
    return bytes(data)


# ------------------------------------------------------------------- framing


@IN_PROCESS
@given(chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=8),
       limit=st.integers(0, 64),
       eof=st.booleans())
def test_frame_decoder_splits_any_stream_or_raises_its_two_errors(chunks, limit, eof):
    decoder, payloads = FrameDecoder(limit), []
    try:
        for chunk in chunks + ([b""] if eof else []):
            decoder.receive_data(chunk)
            while (event := decoder.next_event()) not in (NEED_DATA, CLOSED):
                payloads.append(event)
    except RemoteProtocolError as error:
        assert error.code in ("frame_too_large", "truncated")
        with pytest.raises(RemoteProtocolError):
            decoder.next_event()                   # the error sticks
    stream = b"".join(chunks)
    rebuilt = b"".join(encode_frame(p, limit) for p in payloads)
    assert stream.startswith(rebuilt) and all(len(p) <= limit for p in payloads)


# --------------------------------------------------------------- serializers


SERIALIZERS = st.sampled_from([JSON, BINARY])


def assert_bad_encoding_or_reencodable(serializer, data):
    """Decoding gives bad_encoding or a packet both serializers can send back."""
    try:
        packet = serializer.loads(data)
    except RemoteProtocolError as error:
        assert error.code == "bad_encoding"
        return
    for other in (JSON, BINARY):                   # a rid is echoed in either form
        assert other.loads(other.dumps(packet)) == packet


@IN_PROCESS
@given(serializer=SERIALIZERS, data=st.binary(max_size=200))
def test_serializers_decode_random_bytes_or_say_bad_encoding(serializer, data):
    assert_bad_encoding_or_reencodable(serializer, data)


@IN_PROCESS
@given(serializer=SERIALIZERS, packet=packets(), edits=st.data())
def test_serializers_decode_mutated_packets_or_say_bad_encoding(serializer, packet, edits):
    data = edits.draw(mutated(serializer.dumps(packet)))
    assert_bad_encoding_or_reencodable(serializer, data)


# ------------------------------------------------------- Noise handshake


def events_until_waiting(chan):
    """Every event up to NEED_DATA or CLOSED."""
    events = []
    for _ in range(EVENT_BOUND):
        event = chan.next_event()
        if event is NEED_DATA or event is CLOSED:
            return events
        events.append(event)
    raise AssertionError("endless events")


def genuine_message_1():
    return channel_mod.SecureChannel("initiator").initiate()


def genuine_message_2():
    initiator = channel_mod.SecureChannel("initiator")
    responder = channel_mod.SecureChannel("responder", SERVER_KEY)
    responder.receive_data(initiator.initiate())
    assert events_until_waiting(responder) == [channel_mod.ClientHello()]
    return initiator, responder.accept()


MESSAGE_1 = (st.binary(max_size=80).map(lambda b: encode_frame(b"\x01" + b, 1 << 20))
             | st.binary(max_size=80)
             | st.builds(genuine_message_1).flatmap(mutated))


@IN_PROCESS
@given(message=MESSAGE_1, eof=st.booleans())
def test_a_responder_takes_any_message_1_or_raises_remote_errors(message, eof):
    responder = channel_mod.SecureChannel("responder", SERVER_KEY)
    try:
        responder.receive_data(message)
        events = events_until_waiting(responder)
        if events:
            assert events == [channel_mod.ClientHello()]
            assert responder.accept()              # a hostile key may fail here, remotely
        if eof:
            responder.receive_data(b"")
            events_until_waiting(responder)
    except RemoteProtocolError:
        pass                                        # refused: the documented outcome


@IN_PROCESS
@given(edits=st.data(), notice=st.binary(max_size=20), eof=st.booleans())
def test_an_initiator_completes_only_with_the_genuine_message_2(edits, notice, eof):
    initiator, message = genuine_message_2()
    forged = edits.draw(mutated(message) | st.binary(max_size=120))
    try:
        initiator.receive_data(encode_frame(b"\x03" + notice, 1 << 20) + forged)
        events = events_until_waiting(initiator)
        if eof:
            initiator.receive_data(b"")
            events += events_until_waiting(initiator)
    except RemoteProtocolError:
        return
    done = [e for e in events if isinstance(e, channel_mod.HandshakeDone)]
    assert not done or forged.startswith(message), "a forged message 2 was accepted"


# ---------------------------------------------------------- login dialogue

OUTCOMES = {ld.CheckUser: ["exists", "missing"],
            ld.VerifyPassword: ["verified", "wrong_password", "throttled"],
            ld.CreateAccount: ["created", "create_failed"]}


def check_action(action):
    """The dialogue asks the database only about checked values."""
    assert rules.check_username(action.username) == action.username
    if isinstance(action, ld.VerifyPassword):
        assert isinstance(action.password, str)
        assert len(action.password) <= rules.PASSWORD_MAX
    if isinstance(action, ld.CreateAccount):
        assert rules.check_password(action.password) == action.password


def run_outputs(dialogue, outputs, choose):
    """Carry out every action with a chosen outcome; the final LoggedIn/Refused or None."""
    pending = list(outputs)
    for _ in range(EVENT_BOUND):
        if not pending:
            return None
        item = pending.pop(0)
        if isinstance(item, Packet):
            assert item.op == "Login" and protocol.schema_problem("server", item) is None
            BINARY.dumps(item)
        elif isinstance(item, (ld.LoggedIn, ld.Refused)):
            assert not pending
            return item
        else:
            check_action(item)
            pending = dialogue.outcome(choose(OUTCOMES[type(item)])) + pending
    raise AssertionError("endless outputs")


@IN_PROCESS
@given(answers=st.lists(LOGIN_ANSWERS, max_size=40), choices=st.data())
def test_the_login_dialogue_takes_any_answers_or_raises_remote_errors(answers, choices):
    dialogue = ld.LoginDialogue()
    run_outputs(dialogue, dialogue.start(), None)

    def choose(options):
        return choices.draw(st.sampled_from(options))

    for number, answer in enumerate(answers, 1):
        try:
            outputs = dialogue.receive(Packet("Login", answer))
        except RemoteProtocolError:
            assert dialogue.state == ld.ERROR
            return
        if run_outputs(dialogue, outputs, choose) is not None:
            return
        assert number <= ld.MAX_STEPS, "the dialogue went on past MAX_STEPS"


# -------------------------------------------------- session commands, in process


def server_packets(client, data):
    """What the user process sent, decoded by the client (BadPacket if malformed)."""
    client.receive_data(data)
    events = events_until_waiting(client)
    for event in events:
        assert isinstance(event, (Packet, protocol.BadPacket)), event
    return events


def fields_of(event):
    """A decoded packet's data; for a BadPacket, what can be read of it."""
    if isinstance(event, protocol.BadPacket):
        return {"rid": event.rid}
    return event.data


def expected_answers(sent):
    """Request ids the session must answer (or forward) for well-formed requests."""
    answered = {op.name for op in operations.CLIENT_OPERATIONS if op.relayed and op.replies}
    return {p.data["rid"] for p in sent if p.op in answered
            and protocol.schema_problem("client", p) is None}


def check_relayed(requests, sent):
    """The database sees only relayed ops with their registry fields, never more."""
    for op, fields in requests:
        operation = operations.get(op)
        assert operation.relayed, op
        assert set(fields) <= {field.name for field in operation.fields}, (op, fields)


SESSION_INPUT = st.lists(packets(SESSION_OPS) | st.binary(max_size=60), min_size=1, max_size=6)
TEXT_RID = Packet("Inbox", {"rid": "one"})


class BigSend(NamedTuple):
    """A Send whose body has `size` bytes (kept short in hypothesis's reports)."""

    size: int

    def packet(self):
        return Packet("Send", {"rid": 1, "to": "alice", "subject": "s",
                               "body": "b" * self.size, "client_id": "c1"})


def feed_session(serializer, inputs, eof):
    """Run `inputs` through a UserSession; (the session, its replies decoded)."""
    client, session = user_session(serializer)
    try:
        for item in inputs:
            item = item.packet() if isinstance(item, BigSend) else item
            payload = session.conn.serializer.dumps(item) if isinstance(item, Packet) else item
            session._process_client_bytes(client.channel.send(payload))
            session._encode_queued()   # what the loop does at the end of each turn
            if session.state != user_process.RUNNING:
                break
        if eof and session.state == user_process.RUNNING:
            session._process_client_bytes(b"")
        session._encode_queued()
        return session, server_packets(client, bytes(session.out))
    finally:
        session.selector.close()


@IN_PROCESS
@given(serializer=st.sampled_from(["binary", "json"]), inputs=SESSION_INPUT,
       eof=st.booleans())
@example(serializer="binary", inputs=[TEXT_RID], eof=False)
@example(serializer="binary", inputs=[Packet("Ack", {"ids": [[]], "read": []})], eof=False)
def test_the_user_process_answers_any_command_with_legal_packets(serializer, inputs, eof):
    session, replies = feed_session(serializer, inputs, eof)
    malformed = [r for r in replies if isinstance(r, protocol.BadPacket)]
    assert not malformed, f"the server sent packets outside its own schema: {malformed}"
    check_relayed(session.db.requests, [p for p in inputs if isinstance(p, Packet)])


@IN_PROCESS
@given(serializer=st.sampled_from(["binary", "json"]), inputs=SESSION_INPUT)
@example(serializer="binary", inputs=[BigSend(600_000)])
def test_the_user_process_answers_every_request_or_says_why_it_closes(serializer, inputs):
    session, replies = feed_session(serializer, inputs, eof=False)
    if session.state == user_process.RUNNING:
        sent = [p for p in inputs if isinstance(p, Packet)]
        answered = {fields_of(r).get("rid") for r in replies if r.op == "Error"}
        answered |= {rid for _op, rid in session.pending.values()}
        assert expected_answers(sent) <= answered, "a request got no answer"
    else:
        last = replies[-1] if replies else None
        assert last is not None and (fields_of(last).get("fatal") is True or
                                     fields_of(last).get("event") == "goodbye"), \
            "the session closed without telling the client why"


# ------------------------------------------------------ against real processes


def logged_in(server, name, create=True):
    """A RawClient logged in as `name`, past System ready."""
    return session(server, name, create=create)[0]


PROBE = -2**62 + 7       # a request id the fuzzer is unlikely to use


def is_answer(rid):
    return lambda e: e.op in ("Result", "Error") and fields_of(e).get("rid") == rid


def assert_unharmed(server, witness, database_pids):
    """The database kept its pid, no traceback, the witness and a new login work."""
    witness.send("Inbox", rid=-7)
    assert witness.events_until(is_answer(-7))[-1].op == "Result"
    newcomer = logged_in(server, f"newcomer{len(server.log())}")
    newcomer.send_raw(Packet("Send", {"rid": -8, "to": "witness", "subject": "still here",
                                      "body": "hello", "client_id": "after-fuzz"}))
    assert newcomer.events_until(is_answer(-8))[-1].op == "Result"
    pushed = witness.events_until(lambda e: e.op == "Message"
                                  and e.data["subject"] == "still here")[-1]
    assert pushed is not CLOSED
    assert server.pids_titled("parley: database") == database_pids
    assert "Traceback" not in server.log()


def fresh_addresses():
    """127.0.1.1, 127.0.1.2, ...: each a source address of its own (loopback)."""
    for n in itertools.count():
        yield f"127.0.{1 + n // 250}.{1 + n % 250}"


def test_random_login_dialogues_harm_no_other_connection(server):
    witness = logged_in(server, "witness")
    sources = fresh_addresses()
    database_pids = server.pids_titled("parley: database")

    @REAL_PROCESS
    @given(answers=st.lists(st.builds(Packet, st.just("Login"), LOGIN_ANSWERS)
                            | packets(["Login"]), min_size=1, max_size=6))
    def dialogue(answers):
        client = RawClient(server.port, source=next(sources))   # every one ends badly:
        client.handshake()                                      # the daemon penalises
        for answer in answers + [Packet("Probe", {})]:   # an illegal move ends it all
            if not client.send_raw(answer):
                break
        events = client.events_until(lambda e: False)
        assert_closed_with_a_reason(client, events)
        client.close()

    dialogue()
    assert_unharmed(server, witness, database_pids)


def assert_closed_with_a_reason(client, events):
    """The server ended this connection, and said why just before (unless reset)."""
    assert events[-1] is CLOSED
    if client.reset:
        return
    last = events[-2] if len(events) > 1 else None
    assert last is not None and last.op in ("Error", "System"), events[-3:]


def test_random_session_commands_harm_no_other_connection(server):
    witness = logged_in(server, "witness")
    database_pids = server.pids_titled("parley: database")
    accounts = iter(range(1_000_000))

    @REAL_PROCESS
    @given(inputs=st.lists(packets(SESSION_OPS) | st.binary(max_size=40), min_size=1,
                           max_size=6))
    def commands(inputs):
        client = logged_in(server, f"fuzz{next(accounts)}")
        for item in inputs:
            if not client.send_raw(item):
                break
        client.send_raw(Packet("Inbox", {"rid": PROBE}))  # the probe: answered or closed
        events = client.events_until(is_answer(PROBE))
        if events[-1] is CLOSED:
            assert_closed_with_a_reason(client, events)
        client.close()

    commands()
    assert_unharmed(server, witness, database_pids)


# ------------------------------------------------------ the database process


@pytest.fixture
def database(tmp_path):
    """A real database process; (process, config, log path). Always killed."""
    log_path = tmp_path / "database.log"
    with running_database(tmp_path, log_path) as (proc, config):
        yield proc, config, log_path


class RawDbLink:
    """A Unix-socket connection that sends any frame and reads every reply."""

    def __init__(self, config):
        link = DbLink(config["socket_path"])
        self.sock = link.connect()
        self.sock.settimeout(WAIT)
        self.decoder = FrameDecoder(MONITOR_MAX_FRAME)

    def send(self, item):
        """Send a packet or raw frame; False if the database has closed the connection."""
        payload = codec.dumps(item) if isinstance(item, Packet) else item
        try:
            self.sock.sendall(encode_frame(payload, MONITOR_MAX_FRAME))
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def replies(self, count):
        """Up to `count` Reply packets (pushes are skipped); fewer if it closes.

        After an account is deleted the connection answers nothing more, so
        reading stops at that reply.
        """
        replies = []
        while len(replies) < count:
            frame = self.decoder.next_event()
            if frame is CLOSED:
                return replies
            if frame is NEED_DATA:
                self.decoder.receive_data(self._recv())
                continue
            packet = codec.loads_reply(frame)
            assert packet.op in ("Reply", "Push", "Notice"), packet
            if packet.op == "Reply":
                replies.append(packet)
                if packet.data.get("deleted") is True:
                    return replies
        return replies

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def call(self, op, **fields):
        self.send(Packet(op, {"rid": 1, **fields}))
        (reply,) = self.replies(1)
        assert reply.data["ok"], reply
        return reply.data

    def close(self):
        self.sock.close()


DB_FIELDS = {
    "rid": INT64 | VALUES, "role": st.sampled_from(["login", "user"]) | VALUES,
    "peer": st.text(max_size=80) | VALUES, "username": TYPED[str] | VALUES,
    "password": st.sampled_from([PASSWORD, "short"]) | VALUES,
    "ticket": st.sampled_from(["1:alice:" + "0" * 64, "garbage", ""]) | VALUES,
    "to": TYPED[str] | VALUES, "subject": TYPED[str] | VALUES, "body": TYPED[str] | VALUES,
    "client_id": st.text("abc:-", max_size=70) | VALUES, "ids": TYPED[list] | VALUES,
    "before": TYPED[int] | VALUES, "limit": TYPED[int] | VALUES, "id": TYPED[int] | VALUES,
}
DB_OPS = sorted({op.name for op in operations.OPERATIONS} | {"Reply", "Push"})
NO_REPLY = {op.name for op in operations.OPERATIONS if not op.replies}


@st.composite
def db_requests(draw):
    op = draw(st.sampled_from(DB_OPS) | OP_NAMES)
    names = draw(st.lists(st.sampled_from(sorted(DB_FIELDS)), max_size=5, unique=True))
    data = {name: draw(DB_FIELDS[name]) for name in names}
    if draw(st.integers(0, 9)) < 8:
        data["rid"] = draw(st.integers(0, 1000))
    return Packet(op, data)


DB_INPUT = st.lists(db_requests() | st.binary(max_size=40), min_size=1, max_size=5)
HUGE_RID = Packet("Hello", {"rid": "r" * (MONITOR_MAX_FRAME - 40)})
KNOWN_BAD = {   # inputs that found bugs, tried first in their phase
    "new": [[HUGE_RID]],
    "login": [],
    "user": [[Packet("Inbox", {"rid": 1, "before": [1]})]],
}


class PhaseLinks:
    """Opens a fuzzed link in a given phase; a fresh account for each user link."""

    def __init__(self, config, phase):
        self.config, self.phase, self.count = config, phase, 0
        self.maker = RawDbLink(config)
        self.maker.call("Hello", role="login", peer="maker")

    def open(self):
        link = RawDbLink(self.config)
        if self.phase == "login":
            link.call("Hello", role="login", peer="127.0.0.1:9")
        elif self.phase == "user":
            self.count += 1
            ticket = self.maker.call("Create", username=f"fz{self.count}",
                                     password=PASSWORD)["ticket"]
            link.call("Bind", ticket=ticket)
        return link


def witness_link(links):
    links.maker.call("Create", username="dbwitness", password=PASSWORD)
    ticket = links.maker.call("Verify", username="dbwitness", password=PASSWORD)["ticket"]
    witness = RawDbLink(links.config)
    witness.call("Bind", ticket=ticket)
    return witness


@pytest.mark.parametrize("phase", ["new", "login", "user"])
def test_random_requests_harm_only_their_own_database_connection(database, phase):
    proc, config, log_path = database
    links = PhaseLinks(config, phase)
    witness = witness_link(links)

    @REAL_PROCESS
    @given(inputs=DB_INPUT)
    def requests(inputs):
        link = links.open()
        sent = 0
        while sent < len(inputs) and link.send(inputs[sent]):
            sent += 1
        answered = [item for item in inputs[:sent] if not (
            phase == "user" and isinstance(item, Packet)
            and item.op in NO_REPLY)]   # Acks get no reply
        for reply in link.replies(len(answered)):
            assert reply.data.get("code") != "internal", (reply, inputs)
        link.close()

    for inputs in KNOWN_BAD[phase]:
        requests = example(inputs=inputs)(requests)
    requests()
    assert proc.is_alive()
    assert witness.call("Inbox")["messages"] == []
    assert links.maker.call("Exists", username="dbwitness")["outcome"] == "exists"
    assert_log_clean(log_path.read_text(errors="replace"))


def assert_log_clean(log):
    """No exception escaped a handler: no traceback, no 'internal' failure logged."""
    for sign in ("Traceback", "Fatal error", "request failed"):
        if sign in log:
            at = log.index(sign)
            pytest.fail(f"the database logged {sign!r}:\n{log[max(0, at - 200):at + 1800]}")
