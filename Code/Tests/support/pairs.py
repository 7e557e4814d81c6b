"""In-memory endpoint pairs for the sans-IO layers, joined as h11's tests join them.

Each side's output bytes are fed to the other side's `receive_data` (whole,
or `step` bytes at a time) and the events that come out are returned; no
socket, no thread. `channel_pair()` gives two handshaken SecureChannels,
`connection_pair(state)` a client and a server `Connection` both in
`state` (HANDSHAKE ... SESSION), through the real handshake, Version
exchange and a login; `handshake`, `negotiate` and `log_in` are the steps,
each checking that both ends agree on the state they reach.
"""

from Modules.wire import protocol
from Modules.wire.channel import ClientHello, HandshakeDone, SecureChannel
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.noise import KeyPair
from Modules.wire.protocol import Connection, choose_version, version_offer
from Modules.wire.serializers import Packet

SERVER_KEY = KeyPair.generate()


def drain(endpoint):
    """Every event up to NEED_DATA or CLOSED (CLOSED is kept, NEED_DATA is not)."""
    events = []
    while True:
        event = endpoint.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if event is CLOSED:
            return events


def deliver(data, endpoint, step=None):
    """Feed `data` to `endpoint` in `step`-byte pieces; the events it produced.

    Empty `data` is fed once: b"" is the end of the stream.
    """
    events = []
    step = step or max(len(data), 1)
    for start in range(0, max(len(data), 1), step):
        endpoint.receive_data(data[start:start + step])
        events += drain(endpoint)
    return events


def one(events):
    assert len(events) == 1, events
    return events[0]


# -- the secure channel --------------------------------------------------------

def channel_handshake(client, server, step=None):
    """Noise NX between two SecureChannels; the initiator's HandshakeDone."""
    assert deliver(client.initiate(), server, step) == [ClientHello()]
    done = one(deliver(server.accept(), client, step))
    assert isinstance(done, HandshakeDone)
    return done


def channel_pair(**server_options):
    """A handshaken initiator and responder."""
    client = SecureChannel("initiator")
    server = SecureChannel("responder", SERVER_KEY, **server_options)
    channel_handshake(client, server)
    return client, server


# -- the connection ------------------------------------------------------------

def handshake(client, server, step=None):
    assert deliver(client.start(), server, step) == [ClientHello()]
    assert server.state == "HANDSHAKE"
    done = one(deliver(server.accept(), client, step))
    assert isinstance(done, HandshakeDone)
    assert done.remote_static == SERVER_KEY.public
    assert client.state == server.state == "VERSION"


def exchange(sender, receiver, op, step=None, **data):
    """Send one packet from `sender`; the single event `receiver` gets for it."""
    return one(deliver(sender.send(Packet(op, data)), receiver, step))


def negotiate(client, server, serializers=("binary", "json"), step=None):
    offer = exchange(client, server, "Version", step, **version_offer(serializers).data)
    assert offer.op == "Version" and client.state == server.state == "OFFERED"
    reply = choose_version(offer)
    assert reply.op == "Version"
    got = one(deliver(server.send(reply), client, step))
    assert got == reply
    assert client.state == server.state == "LOGIN"
    return reply.data["serializer"]


def log_in(client, server, step=None, user="alice"):
    prompt = exchange(server, client, "Login", step, prompt="username", message="Username:")
    assert prompt.data["prompt"] == "username"
    answer = exchange(client, server, "Login", step, username=user)
    assert answer == Packet("Login", {"username": user})
    exchange(server, client, "Login", step, prompt="password", message="Password:",
             attempts_left=3, username=user)
    answer = exchange(client, server, "Login", step, password="hunter22")
    assert answer.data == {"password": "hunter22"}
    welcome = exchange(server, client, "Welcome", step, user=user, created=False)
    assert welcome == Packet("Welcome", {"user": user, "created": False})
    assert client.state == server.state == "SESSION"


def connection_pair(state=protocol.SESSION, serializers=("binary", "json"), user="alice"):
    """A client and a server Connection, both in `state`."""
    client, server = Connection.client(), Connection.server(SERVER_KEY)
    if state == "HANDSHAKE":
        return client, server
    handshake(client, server)
    if state == "VERSION":
        return client, server
    if state == "OFFERED":
        exchange(client, server, "Version", **version_offer(serializers).data)
        return client, server
    negotiate(client, server, serializers)
    if state == "SESSION":
        log_in(client, server, user=user)
    return client, server


# -- a user process's session, in memory ------------------------------------------

class FakeDatabase:
    """Stands for DbLink in a UserSession: records requests, encodes them for real."""

    def __init__(self):
        from Modules.database.link import DbProtocol

        self.protocol = DbProtocol()
        self.requests = []
        self.sock = None
        self.out = b""

    def send_request(self, op, now=True, **fields):
        rid, _frame = self.protocol.request(op, fields)
        self.requests.append((op, fields))
        return rid


def user_session(serializer="binary"):
    """(client Connection, UserSession) joined in memory; the database is a FakeDatabase.

    Feed the session with `session._process_client_bytes(client.channel.send(...))`
    and read what it sent from `session.out`.
    """
    from Modules.server import user_process

    client, server = connection_pair(protocol.SESSION, serializers=(serializer,), user="fuzzer")
    handoff = {"user": "fuzzer", "ticket": "1:fuzzer:0", "state": server.export_state()}
    session = user_process.UserSession(None, handoff, {"db_socket": "/nonexistent"})
    session.db = FakeDatabase()
    return client, session
