"""Long fuzz runs of Parley's network parsers with atheris (coverage-guided, libFuzzer).

The suite's hypothesis tests (`Code/Tests/test_fuzz.py`) run a few hundred
examples in seconds; this script is for runs of minutes or hours. Each
target feeds the fuzzer's bytes to one parser, in process, and fails only
when an exception escapes that the parser does not document:

    framing     FrameDecoder: the input split into chunks     RemoteProtocolError
    json        JSON serializer loads (then re-dumps)         RemoteProtocolError(bad_encoding)
    binary      binary serializer loads (then re-dumps)       RemoteProtocolError(bad_encoding)
    handshake1  a SecureChannel responder fed message 1       RemoteProtocolError
    handshake2  a Noise NX initiator fed message 2            RemoteProtocolError
    dialogue    LoginDialogue: Login answers + db outcomes    RemoteProtocolError
    connection  a server Connection in VERSION/LOGIN/SESSION  Local/RemoteProtocolError
    session     the user process's UserSession (fake db)      nothing (it must cope)
    database    the database process's MonitorConnection      nothing (it must cope)
                (real SQLite files in a temporary directory)

Install (not in requirements.txt: it is a long-run tool, and a large wheel):

    python -m pip install atheris

Run, from the repository root:

    python tools/fuzz_atheris.py binary                     # until stopped (Ctrl-C)
    python tools/fuzz_atheris.py dialogue -max_total_time=60
    python tools/fuzz_atheris.py session -max_total_time=3600 -jobs=2 -workers=2

Everything after the target name goes to libFuzzer (`-help=1` lists its
options). Without a corpus directory the script uses
`$TMPDIR/parley-fuzz/<target>/`, seeded with a few genuine inputs, so
coverage found in one run is kept for the next. A crash is written by
libFuzzer as `crash-<sha1>` in the current directory; replay it with
`python tools/fuzz_atheris.py <target> crash-<sha1>`. Talks to nothing but
its temporary directory (the `database` target's SQLite files); stops by
itself at `-max_total_time` or `-runs`.
"""

import asyncio
import logging
import os
import sys
import tempfile
import time

CODE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Code")
sys.path.insert(0, CODE_DIR)

import atheris  # noqa: E402  (after the path set-up, like the modules below)

with atheris.instrument_imports():
    from Modules.database import auth  # noqa: E402
    from Modules.wire import channel  # noqa: E402
    from Modules.database import connection  # noqa: E402
    from Modules.database import monitor as database_process  # noqa: E402
    from Modules.wire import protocol  # noqa: E402
    from Modules import rules  # noqa: E402
    from Modules.database import storage  # noqa: E402
    from Modules.server import login_dialogue as ld  # noqa: E402
    from Modules.server import user_process  # noqa: E402
    from Modules.database import codec  # noqa: E402
    from Modules.database.link import DbProtocol  # noqa: E402
    from Modules.database.readers import ReaderPool  # noqa: E402
    from Modules.database.writer import SingleWriter  # noqa: E402
    from Modules.wire.errors import LocalProtocolError, RemoteProtocolError  # noqa: E402
    from Modules.wire.framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame  # noqa: E402
    from Modules.wire.noise import HandshakeState, KeyPair  # noqa: E402
    from Modules.wire.serializers import BINARY, JSON, Packet  # noqa: E402

SERVER_KEY = KeyPair(bytes(range(32)))
FIXED_EPHEMERAL = bytes(range(32, 64))
EVENT_BOUND = 10_000
PASSWORD = "correct horse battery"


# ------------------------------------------------------------------- helpers


def drain(source):
    """Every event of a sans-IO object up to NEED_DATA or CLOSED."""
    events = []
    for _ in range(EVENT_BOUND):
        event = source.next_event()
        if event is NEED_DATA or event is CLOSED:
            return events
        events.append(event)
    raise AssertionError("endless events")


def chunks_of(provider, most=8):
    """A few byte strings taken from the fuzzer's input."""
    count = provider.ConsumeIntInRange(1, most)
    return [provider.ConsumeBytes(provider.ConsumeIntInRange(0, 300)) for _ in range(count)]


def reencodable(serializer, data):
    try:
        packet = serializer.loads(data)
    except RemoteProtocolError as error:
        assert error.code == "bad_encoding", error.code
        return
    for other in (JSON, BINARY):
        assert other.loads(other.dumps(packet)) == packet


# ------------------------------------------------------------ simple targets


def fuzz_framing(data):
    provider = atheris.FuzzedDataProvider(data)
    decoder = FrameDecoder(provider.ConsumeIntInRange(0, 70_000))
    try:
        for chunk in [c for c in chunks_of(provider) if c] + [b""]:   # b"" is the end
            decoder.receive_data(chunk)
            drain(decoder)
    except RemoteProtocolError as error:
        assert error.code in ("frame_too_large", "truncated"), error.code


def fuzz_json(data):
    reencodable(JSON, data)


def fuzz_binary(data):
    reencodable(BINARY, data)


def fuzz_handshake1(data):
    responder = channel.SecureChannel("responder", SERVER_KEY)
    try:
        responder.receive_data(data)
        if drain(responder):
            responder.accept()
    except RemoteProtocolError:
        pass


def initiator_after_message_1():
    state = HandshakeState("NX", True, channel.PROLOGUE, e=FIXED_EPHEMERAL)
    state.write_message(b"")
    return state


def fuzz_handshake2(data):
    state = initiator_after_message_1()
    try:
        state.read_message(data)
    except RemoteProtocolError:
        pass


# ------------------------------------------------------------ login dialogue

_ANSWER_FIELDS = ["username", "password", "new_password", "cancel", "other"]
_OUTCOMES = {ld.CheckUser: ["exists", "missing"],
             ld.VerifyPassword: ["verified", "wrong_password", "throttled"],
             ld.CreateAccount: ["created", "create_failed"]}


def login_answer(provider):
    field = provider.PickValueInList(_ANSWER_FIELDS)
    kind = provider.ConsumeIntInRange(0, 3)
    value = [lambda: provider.ConsumeUnicodeNoSurrogates(40), lambda: True,
             lambda: provider.ConsumeIntInRange(-5, 5), lambda: None][kind]()
    return {field: value}


def fuzz_dialogue(data):
    provider = atheris.FuzzedDataProvider(data)
    dialogue = ld.LoginDialogue()
    dialogue.start()
    while provider.remaining_bytes():
        try:
            outputs = dialogue.receive(Packet("Login", login_answer(provider)))
        except RemoteProtocolError:
            return
        if finish_actions(dialogue, outputs, provider):
            return


def finish_actions(dialogue, outputs, provider):
    """Answer every action with a fuzzed outcome; True once logged in or refused."""
    pending = list(outputs)
    for _ in range(EVENT_BOUND):
        if not pending:
            return False
        item = pending.pop(0)
        if isinstance(item, (ld.LoggedIn, ld.Refused)):
            return True
        if not isinstance(item, Packet):
            assert rules.check_username(item.username) == item.username
            outcome = provider.PickValueInList(_OUTCOMES[type(item)])
            pending = dialogue.outcome(outcome) + pending
    raise AssertionError("endless outputs")


# ------------------------------------------------------ protocol connection


_PAIRS = {}   # (state, serializer) -> the exported states of a connected pair


def connected_pair(state, serializer="binary"):
    """A client and a server Connection in `state`, restored from a cached pair.

    The handshake runs once per (state, serializer); every input then starts
    from the same keys and nonces, which is faster and keeps runs repeatable.
    """
    if (state, serializer) not in _PAIRS:
        client, server = handshaken_pair(state, serializer)
        _PAIRS[state, serializer] = (client.export_state(), server.export_state())
    client_state, server_state = _PAIRS[state, serializer]
    return (protocol.Connection.from_state(client_state),
            protocol.Connection.from_state(server_state))


def handshaken_pair(state, serializer):
    """A client and a server Connection, in memory, the server in `state`."""
    client = protocol.Connection.client()
    server = protocol.Connection.server(SERVER_KEY)
    server.receive_data(client.start())
    drain(server)
    client.receive_data(server.accept())
    drain(client)
    if state == protocol.VERSION:
        return client, server
    server.receive_data(client.send(protocol.version_offer((serializer,))))
    (offer,) = drain(server)
    client.receive_data(server.send(protocol.choose_version(offer)))
    if state == protocol.SESSION:
        client.receive_data(server.send(Packet("Welcome", {"user": "fuzzer",
                                                           "created": False})))
    drain(client)
    return client, server


def fuzz_connection(data):
    provider = atheris.FuzzedDataProvider(data)
    state = provider.PickValueInList([protocol.VERSION, protocol.LOGIN, protocol.SESSION])
    client, server = connected_pair(state, provider.PickValueInList(["binary", "json"]))
    try:
        for payload in chunks_of(provider):
            server.receive_data(client.channel.send(payload))
            drain(server)
    except (LocalProtocolError, RemoteProtocolError):
        pass


# ------------------------------------------------------------ user process


class FakeDatabase:
    """Stands for the user process's DbLink: encodes requests, sends nothing."""

    def __init__(self):
        self.protocol = DbProtocol()
        self.sock = None

    def send_request(self, op, **fields):
        return self.protocol.request(op, fields)[0]


def fuzz_session(data):
    provider = atheris.FuzzedDataProvider(data)
    client, server = connected_pair(protocol.SESSION, provider.PickValueInList(["binary",
                                                                                "json"]))
    handoff = {"user": "fuzzer", "ticket": "1:fuzzer:0", "state": server.export_state()}
    session = user_process.UserSession(None, handoff, {"db_socket": "/nonexistent"})
    session.db = FakeDatabase()
    try:
        for payload in chunks_of(provider):
            session._process_client_bytes(client.channel.send(payload))
            if session.state != user_process.RUNNING:
                break
        client.receive_data(bytes(session.out))
        replies = drain(client)
        for reply in replies:              # what the server sent must be legal
            assert not isinstance(reply, protocol.BadPacket), reply
        if session.state == user_process.CLOSING:   # and it never closes without saying why
            assert replies and replies[-1].op in ("Error", "System"), replies[-1:]
    finally:
        session.selector.close()


# ------------------------------------------------------------ database process


class CountingMonitor(database_process.Monitor):
    """A Monitor that knows how many database jobs are still running."""

    outstanding = 0

    def job(self, fn, *args, after=None, lazy=False, owner=None):
        future = super().job(fn, *args, after=after, lazy=lazy, owner=owner)
        self.outstanding += 1
        future.add_done_callback(self._done)
        return future

    def _done(self, _future):
        self.outstanding -= 1


class FakeTransport:
    """Checks what a MonitorConnection writes: whole frames, no 'internal' failure."""

    def __init__(self):
        self.closing = False

    def write(self, data):
        decoder = FrameDecoder(connection.MAX_FRAME)
        decoder.receive_data(data)
        for frame in drain(decoder):
            packet = codec.loads_reply(frame)
            assert packet.data.get("code") != "internal", packet

    def close(self):
        self.closing = True

    def is_closing(self):
        return self.closing

    def get_write_buffer_size(self):
        return 0


class DatabaseHarness:
    """A real Monitor on SQLite files in a temporary directory, one loop, no socket."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        data_dir = tempfile.mkdtemp(prefix="parley-fuzz-db-")
        writer = SingleWriter(self.loop, lambda: storage.open_databases(data_dir),
                              storage.close_databases)
        writer.start()
        hasher = auth.PasswordHasher(memory_kib=1024, time_cost=1, parallelism=1, workers=1)
        self.secret = os.urandom(32)
        self.monitor = CountingMonitor(writer, hasher, auth.LoginThrottle(), self.secret)
        self.monitor.readers = ReaderPool(self.loop, lambda: storage.open_reader(data_dir),
                                          storage.close_databases, workers=1)
        self.monitor.readers.start()

    def run(self, call):
        """`call()` on the loop, then run it until every job and task has finished."""
        async def call_then_settle():
            call()
            for _ in range(EVENT_BOUND):
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not self.monitor.outstanding and all(t.done() for t in others):
                    return
                await asyncio.sleep(0.001)
        self.loop.run_until_complete(call_then_settle())

    def ticket(self):
        """A ticket for the account 'fuzzer', created again if a fuzz input deleted it."""
        async def make():
            if not await self.monitor.job(storage.user_exists, "fuzzer"):
                password_hash = await self.monitor.hasher.hash(PASSWORD)
                await self.monitor.job(storage.create_account, "fuzzer", password_hash,
                                       time.time())
            account = await self.monitor.job(storage.account, "fuzzer")
            return auth.issue_ticket(self.secret, account["id"], "fuzzer", time.time())
        return self.loop.run_until_complete(make())

    def connection(self, phase):
        conn = connection.MonitorConnection(self.monitor)
        conn.connection_made(FakeTransport())
        if phase == "login":
            hello = Packet("Hello", {"rid": 0, "role": "login", "peer": "fuzz"})
            self.run(lambda: conn.receive(hello))
        elif phase == "user":
            bind = Packet("Bind", {"rid": 0, "ticket": self.ticket()})
            self.run(lambda: conn.receive(bind))
        return conn


_DATABASE = None


def fuzz_database(data):
    global _DATABASE
    if _DATABASE is None:
        logging.disable(logging.CRITICAL)       # refusals are expected; failures assert
        _DATABASE = DatabaseHarness()
    provider = atheris.FuzzedDataProvider(data)
    conn = _DATABASE.connection(provider.PickValueInList(["new", "login", "user"]))
    frames = b"".join(encode_frame(chunk, 1 << 20) for chunk in chunks_of(provider, 4))
    _DATABASE.run(lambda: conn.data_received(frames))
    _DATABASE.run(lambda: conn.connection_lost(None))


# ------------------------------------------------------------------- seeds


def seeds(target):
    """A few genuine inputs for a fresh corpus."""
    request = Packet("Send", {"rid": 1, "to": "bob", "subject": "s", "body": "b",
                              "client_id": "c1"})
    login = Packet("Login", {"username": "alice"})
    if target in ("json", "binary"):
        serializer = JSON if target == "json" else BINARY
        return [serializer.dumps(request), serializer.dumps(login)]
    if target == "framing":
        return [b"\x10" + encode_frame(b"hello", 100) * 2]
    if target == "database":   # the monitor's Unix socket speaks msgpack (database/codec.py)
        return [b"\x00\x01" + codec.dumps(request), b"\x01\x02" + codec.dumps(login)]
    if target == "handshake1":
        return [channel.SecureChannel("initiator").initiate()]
    if target == "handshake2":
        responder = HandshakeState("NX", False, channel.PROLOGUE, s=SERVER_KEY)
        responder.read_message(initiator_after_message_1_bytes())
        return [responder.write_message(b"")]
    return [b"\x00\x01" + BINARY.dumps(request), b"\x01\x02" + BINARY.dumps(login)]


def initiator_after_message_1_bytes():
    return HandshakeState("NX", True, channel.PROLOGUE, e=FIXED_EPHEMERAL).write_message(b"")


def default_corpus(target):
    directory = os.path.join(tempfile.gettempdir(), "parley-fuzz", target)
    if not os.path.isdir(directory):
        os.makedirs(directory)
        for number, seed in enumerate(seeds(target)):
            with open(os.path.join(directory, f"seed-{number}"), "wb") as f:
                f.write(seed)
    return directory


TARGETS = {"framing": fuzz_framing, "json": fuzz_json, "binary": fuzz_binary,
           "handshake1": fuzz_handshake1, "handshake2": fuzz_handshake2,
           "dialogue": fuzz_dialogue, "connection": fuzz_connection,
           "session": fuzz_session, "database": fuzz_database}


def main(argv):
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: {argv[0]} TARGET [libFuzzer options] [corpus dir or crash file]\n"
              f"targets: {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    target, rest = argv[1], argv[2:]
    if not any(not arg.startswith("-") for arg in rest):
        rest.append(default_corpus(target))
    atheris.Setup([argv[0]] + rest, TARGETS[target])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
