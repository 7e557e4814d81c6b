"""Parley's client-server connection, sans-IO: one state table, both roles.

A `Connection` sits on a `SecureChannel` (Noise NX + framing) and turns the
channel's decrypted payloads into `Packet`s (operation + data) with the
serializer chosen in the Version exchange, checking every move against the
one transition table `TRANSITIONS` and every packet against `SCHEMAS`.

    client                           server
    HANDSHAKE  -- Noise NX -->       HANDSHAKE
    VERSION    -- Version offer -->  VERSION      (always JSON)
    OFFERED    <-- Version choice -- OFFERED      (always JSON)
    LOGIN      <-- Login / Login --> LOGIN        (chosen serializer from here)
    SESSION    <-- Welcome --        SESSION
    SESSION    <-- Login (prompt) -- LOGIN        (after the account is deleted)

A move not in the table raises `LocalProtocolError` (we tried it) or
`RemoteProtocolError` (the peer did), naming role, state and operation, and
the connection stays in ERROR. A packet whose operation is legal but whose
fields are wrong is not fatal: `next_event()` returns `BadPacket` so the
caller can answer with an Error and go on. No sockets here.

Batching: the client's Version offer may list `features: ["batch"]`; the
server's choice echoes the features it agrees to. Once "batch" is agreed
both ends may put several packets in one encrypted frame: `queue(packet)`
checks and serializes a packet, `flush()` returns the bytes of everything
queued (one frame per burst), and `send(packet)` is both at once.
"""

from typing import NamedTuple

from Modules import operations
from Modules.wire import channel as channel_mod
from Modules.wire import machine as machine_mod
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import JSON, Packet, get_serializer

PROTOCOL_VERSION = 1
SERIALIZER_PREFERENCE = ("binary", "json")
FEATURES = ("batch",)
PRE_LOGIN_MAX_PAYLOAD = 16 * 1024
SESSION_MAX_PAYLOAD = 1024 * 1024   # a 64 KiB body JSON-escaped is up to 384 KiB

HANDSHAKE, VERSION, OFFERED, LOGIN, SESSION, CLOSED_STATE, ERROR = (
    "HANDSHAKE", "VERSION", "OFFERED", "LOGIN", "SESSION", "CLOSED", machine_mod.ERROR)

_SERVER_ANY_TIME = ("System", "Error")

# (sender, state, op) -> next state.  Every legal move is here; "Handshake" is
# a Noise handshake message (the server's, message 2, completes it).
TRANSITIONS = {
    ("client", HANDSHAKE, "Handshake"): HANDSHAKE,
    ("server", HANDSHAKE, "Handshake"): VERSION,
    ("client", VERSION, "Version"): OFFERED,
    ("server", OFFERED, "Version"): LOGIN,
    ("client", LOGIN, "Login"): LOGIN,
    ("client", LOGIN, "Ack"): LOGIN,      # late Acks after DeleteAccount; ignored
    ("server", LOGIN, "Login"): LOGIN,
    ("server", LOGIN, "Welcome"): SESSION,
    ("server", SESSION, "Message"): SESSION,
    ("server", SESSION, "Result"): SESSION,
    ("server", SESSION, "Login"): LOGIN,
    **{("client", SESSION, op.name): SESSION for op in operations.CLIENT_OPERATIONS},
    **{("server", state, op): state
       for state in (VERSION, OFFERED, LOGIN, SESSION) for op in _SERVER_ANY_TIME},
}
# The same moves as the Machine's table: (state, (sender, op)) -> next state.
_MOVES = {(state, (sender, op)): target for (sender, state, op), target in TRANSITIONS.items()}

_STR, _INT, _BOOL, _LIST, _DICT, _NUM = str, int, bool, list, dict, (int, float)
_OPT = False
_REQ = True
_RID = {"required": {"rid": (_INT, _REQ)}, "optional": {"rid": (_INT, _OPT)}, "none": {}}


def _session_schema(operation):
    """A client operation's fields from the registry: (type, required) each."""
    return {**_RID[operation.rid],
            **{field.name: (field.kind, field.required) for field in operation.fields}}


# (sender, op) -> {field: (type, required)}.  Unknown fields are ignored.  The
# session operations come from the registry (`Modules/operations.py`); these
# are the packets of the connection itself.
SCHEMAS = {
    ("client", "Version"): {"versions": (_LIST, _REQ), "serializers": (_LIST, _REQ),
                            "software": (_STR, _OPT), "features": (_LIST, _OPT)},
    ("server", "Version"): {"version": (_INT, _REQ), "serializer": (_STR, _REQ),
                            "software": (_STR, _OPT), "features": (_LIST, _OPT)},
    ("client", "Login"): {"username": (_STR, _OPT), "password": (_STR, _OPT),
                          "new_password": (_STR, _OPT), "cancel": (_BOOL, _OPT)},
    ("server", "Login"): {"prompt": (_STR, _REQ), "message": (_STR, _REQ),
                          "attempts_left": (_INT, _OPT), "username": (_STR, _OPT),
                          "retry_after": (_INT, _OPT), "greeting": (_STR, _OPT)},
    ("server", "Welcome"): {"user": (_STR, _REQ), "created": (_BOOL, _REQ),
                            "motd": (_STR, _OPT)},
    **{("client", op.name): _session_schema(op) for op in operations.CLIENT_OPERATIONS},
    ("server", "Result"): {"rid": (_INT, _REQ)},
    ("server", "Message"): {"id": (_INT, _REQ), "from": (_STR, _REQ), "to": (_STR, _REQ),
                            "subject": (_STR, _REQ), "body": (_STR, _REQ),
                            "sent_at": (_NUM, _REQ), "kind": (_STR, _REQ),
                            "note": (_STR, _OPT), "original_to": (_STR, _OPT),
                            "read": (_BOOL, _OPT)},
    ("server", "System"): {"event": (_STR, _REQ), "message": (_STR, _REQ)},
    ("server", "Error"): {"code": (_STR, _REQ), "reason": (_STR, _REQ),
                          "rid": (_INT, _OPT), "fatal": (_BOOL, _OPT),
                          "retry_after": (_INT, _OPT)},
}


class BadPacket(NamedTuple):
    """A legal operation with wrong fields; answer with an Error and go on."""

    op: str
    rid: object
    reason: str


def schema_problem(sender, packet):
    """A sentence naming the first wrong field of `packet`, or None."""
    for field, (kind, required) in SCHEMAS.get((sender, packet.op), {}).items():
        if field not in packet.data:
            if required:
                return f"{packet.op}: the field '{field}' is missing"
            continue
        value = packet.data[field]
        if not isinstance(value, kind) or (kind is not _BOOL and isinstance(value, bool)):
            return f"{packet.op}: the field '{field}' has the wrong type"
    return None


def _other(role):
    return "server" if role == "client" else "client"


class Connection:
    """One end of a Parley connection: bytes in, events out, packets in, bytes out."""

    def __init__(self, role, chan, state=HANDSHAKE, serializer=JSON, batching=False):
        if role not in ("client", "server"):
            raise LocalProtocolError(f"unknown role {role!r}")
        self.role = role
        self.peer_role = _other(role)
        self.channel = chan
        self.machine = machine_mod.Machine(f"connection ({role})", _MOVES, state)
        self.serializer = serializer
        self._queued = []           # serialized payloads waiting for flush()
        self.batching = batching    # both ends agreed on "batch" in the Version exchange

    @property
    def state(self):
        """HANDSHAKE, VERSION, OFFERED, LOGIN, SESSION, CLOSED or ERROR."""
        return self.machine.state

    @property
    def batching(self):
        return self._batching

    @batching.setter
    def batching(self, agreed):
        """Agreed in the Version exchange: send batches, and accept the peer's."""
        self._batching = agreed
        self.channel.accept_batches = agreed

    # -- construction -------------------------------------------------------
    @classmethod
    def client(cls, **channel_options):
        chan = channel_mod.SecureChannel("initiator", max_payload=SESSION_MAX_PAYLOAD,
                                         **channel_options)
        return cls("client", chan)

    @classmethod
    def server(cls, static_keypair, **channel_options):
        chan = channel_mod.SecureChannel("responder", static_keypair=static_keypair,
                                         max_payload=PRE_LOGIN_MAX_PAYLOAD, **channel_options)
        return cls("server", chan)

    def export_state(self):
        """Everything needed to carry the live connection into another process."""
        self.machine.check()
        if self._queued:
            raise LocalProtocolError("flush() the queued packets before exporting",
                                     code="bad_state")
        return {"role": self.role, "state": self.state, "serializer": self.serializer.name,
                "batching": self.batching, "channel": self.channel.export_state()}

    @classmethod
    def from_state(cls, state):
        chan = channel_mod.SecureChannel.from_state(state["channel"])
        return cls(state["role"], chan, state["state"], get_serializer(state["serializer"]),
                   batching=state.get("batching") is True)

    # -- the handshake ------------------------------------------------------
    def start(self):
        """Client: the first handshake message."""
        self.machine.next_state(("client", "Handshake"), LocalProtocolError, "client",
                                "Handshake")
        return self.channel.initiate()

    def accept(self):
        """Server, after ClientHello: the second handshake message."""
        self.machine.next_state(("server", "Handshake"), LocalProtocolError, "server",
                                "Handshake")
        data = self.channel.accept()
        self._move("server", "Handshake", LocalProtocolError)
        return data

    def notice(self, text):
        """Server, before accept(): a plaintext notice such as 'server full'."""
        return self.channel.notice(text)

    # -- receiving ----------------------------------------------------------
    def receive_data(self, data):
        self.machine.check()
        self.channel.receive_data(data)

    def next_event(self):
        """A Packet, BadPacket, a channel event, NEED_DATA or CLOSED."""
        self.machine.check()
        try:
            return self._next_event()
        except (LocalProtocolError, RemoteProtocolError) as error:
            raise self.machine.fail(error) from None

    def _next_event(self):
        event = self.channel.next_event()
        if event is CLOSED:
            self.machine.state = CLOSED_STATE   # the end of the stream ends every state
            return CLOSED
        if event is NEED_DATA or not isinstance(event, channel_mod.Data):
            if isinstance(event, channel_mod.HandshakeDone):
                self._move("server", "Handshake", RemoteProtocolError)
            return event
        return self._received_packet(event.payload)

    def _received_packet(self, payload):
        packet = self._serializer_for_receiving().loads(payload)
        self._next_state(self.peer_role, packet.op, RemoteProtocolError)
        problem = schema_problem(self.peer_role, packet)
        if problem:   # a legal move with bad fields changes nothing
            return BadPacket(packet.op, packet.data.get("rid"), problem)
        if packet.op == "Version" and self.role == "client":
            self._adopt_serializer(packet.data.get("serializer"))
            self.batching = "batch" in packet.data.get("features", ())
        self._move(self.peer_role, packet.op, RemoteProtocolError)
        return packet

    # -- sending ------------------------------------------------------------
    def send(self, packet):
        """The bytes that carry `packet` (and anything queued before it) to the peer."""
        self.queue(packet)
        return self.flush()

    def queue(self, packet):
        """Check and serialize `packet`; its bytes come out of the next flush()."""
        self.machine.check()
        try:
            self._queued.append(self._serialize(packet))
        except (LocalProtocolError, RemoteProtocolError) as error:
            raise self.machine.fail(error) from None

    def flush(self):
        """The bytes of every queued packet, several per frame once batching is agreed."""
        self.machine.check()
        payloads, self._queued = self._queued, []
        try:
            if len(payloads) == 1 or not self.batching:
                return b"".join(self.channel.send(payload) for payload in payloads)
            return self.channel.send_many(payloads)
        except (LocalProtocolError, RemoteProtocolError) as error:
            raise self.machine.fail(error) from None

    def _serialize(self, packet):
        serializer = self._serializer_for_sending(packet)
        self._next_state(self.role, packet.op, LocalProtocolError)   # legal at all?
        chosen = self._chosen_serializer(packet)
        payload = serializer.dumps(packet)
        self._move(self.role, packet.op, LocalProtocolError)
        if chosen is not None:
            self.serializer = chosen
            self.batching = "batch" in packet.data.get("features", ())
        return payload

    def _chosen_serializer(self, packet):
        """Server's Version choice: the serializer to switch to after sending it."""
        if packet.op != "Version" or self.role != "server":
            return None
        name = packet.data.get("serializer")
        if name not in SERIALIZER_PREFERENCE:
            raise LocalProtocolError(f"cannot choose unknown serializer {name!r}",
                                     code="unsupported_serializer")
        return get_serializer(name)

    def farewell(self, packet):
        """The bytes of a last packet (a fatal Error) after the peer broke the protocol."""
        failed_in = self.machine.failed_in
        if self.state != ERROR or not isinstance(self.machine.error, RemoteProtocolError) \
                or failed_in == HANDSHAKE:
            raise LocalProtocolError("a farewell follows only the peer's protocol error")
        serializer = JSON if failed_in in (VERSION, OFFERED) else self.serializer
        queued, self._queued = self._queued, []
        return self.channel.farewell(serializer.dumps(packet), before=queued)

    def _serializer_for_sending(self, packet):
        return JSON if self.machine.state in (VERSION, OFFERED) else self.serializer

    def _serializer_for_receiving(self):
        return JSON if self.machine.state in (VERSION, OFFERED) else self.serializer

    def _adopt_serializer(self, name):
        if name not in SERIALIZER_PREFERENCE:
            raise RemoteProtocolError(f"server chose unknown serializer {name!r}",
                                      code="unsupported_serializer")
        self.serializer = get_serializer(name)

    def _next_state(self, sender, op, error_class):
        # The machine's table, looked up here first: this runs for every packet.
        target = _MOVES.get((self.machine.state, (sender, op)))
        if target is None:
            target = self.machine.next_state((sender, op), error_class, sender, op)
        return target

    def _move(self, sender, op, error_class):
        previous = self.machine.state
        next_state = self.machine.move((sender, op), error_class, sender, op)
        if self.role == "server" and next_state != previous:
            self.channel.max_payload = (SESSION_MAX_PAYLOAD if next_state == SESSION
                                        else PRE_LOGIN_MAX_PAYLOAD)


def choose_version(offer):
    """Server side of the Version exchange: the reply packet, or an Error packet."""
    versions = [v for v in offer.data.get("versions") or []
                if type(v) is int]   # noqa: E721 -- True and 1.0 are not version 1
    offered = [s for s in offer.data.get("serializers") or [] if isinstance(s, str)]
    if PROTOCOL_VERSION not in versions:
        return Packet("Error", {"code": "unsupported_version", "fatal": True,
                                "reason": f"this server speaks protocol version "
                                          f"{PROTOCOL_VERSION} only"})
    features = [f for f in FEATURES if f in (offer.data.get("features") or ())]
    for name in SERIALIZER_PREFERENCE:
        if name in offered:
            return Packet("Version", {"version": PROTOCOL_VERSION, "serializer": name,
                                      "software": "parley-server/1.0", "features": features})
    return Packet("Error", {"code": "unsupported_serializer", "fatal": True,
                            "reason": "no common serializer (this server has "
                                      "binary and json)"})


def version_offer(serializers=SERIALIZER_PREFERENCE):
    """Client side: the Version offer packet."""
    return Packet("Version", {"versions": [PROTOCOL_VERSION], "serializers": list(serializers),
                              "software": "parley-client/1.0", "features": list(FEATURES)})


__all__ = ["Connection", "BadPacket", "Packet", "TRANSITIONS", "SCHEMAS", "NEED_DATA",
           "CLOSED", "choose_version", "version_offer", "schema_problem"]
