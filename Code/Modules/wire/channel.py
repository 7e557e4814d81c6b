"""The secure channel Parley runs on TCP: framing + Noise NX + chunking, sans-IO.

`SecureChannel` turns a byte stream into events and application payloads
into bytes; the caller owns the socket. On the wire every frame of
`Modules.wire.framing` (4-byte big-endian length) carries one kind byte and a
body:

* 0x01 handshake: a Noise_NX_25519_ChaChaPoly_SHA256 handshake message
  (message 1 client to server, message 2 server to client, empty payloads);
* 0x02 transport: one Noise transport message whose plaintext is a flag
  byte (0x00 last chunk, 0x01 more follows) and a chunk of the payload, so
  payloads larger than one Noise message (65535 bytes) are split; or the
  flag 0x02 (batch) and several whole payloads, each behind a 4-byte
  big-endian length, so that a burst of small payloads costs one AEAD
  operation and one frame (`send_many()`; a sender uses it only when the
  peer announced it can read batches, and a receiver refuses one unless
  `accept_batches` is set, see protocol.py);
* 0x03 notice: plaintext UTF-8 text, server to client, before the handshake
  completes only (used for "server full").

The prologue binds the wire-protocol version, so a peer speaking another
version fails the handshake. The client is the initiator and learns the
server's static key in `HandshakeDone`; it must check it against its pin
before sending anything. `export_state()` / `from_state()` move a live
connection to another process with its nonce counters intact.

Failures: the peer's misbehaviour (illegal or unknown frame kind, failed
authentication, replay, reordering, truncation, oversize payloads) raises
`RemoteProtocolError`; our own misuse (wrong call for the state, nonce
counter at its limit) raises `LocalProtocolError`. The first error sticks:
every later call raises it again. Errors never carry keys or plaintext.
"""

import struct
from collections import deque
from dataclasses import dataclass

from Modules.wire.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    illegal_move,
    sticky,
)
from Modules.wire.framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from Modules.wire.noise import (
    MAX_MESSAGE,
    MAX_NONCE,
    TAGLEN,
    CipherState,
    DelegatedKey,
    HandshakeState,
    KeyPair,
)

__all__ = [
    "SecureChannel", "ClientHello", "HandshakeDone", "Data", "Notice",
    "NEED_DATA", "CLOSED", "PROLOGUE", "NOISE_PROTOCOL", "MAX_FRAME", "CHUNK_SIZE",
]

NOISE_PROTOCOL = "Noise_NX_25519_ChaChaPoly_SHA256"
PROLOGUE = b"Parley wire protocol 1 / Noise_NX_25519_ChaChaPoly_SHA256"
STATE_FORMAT = "parley-secure-channel/1"

HANDSHAKE, TRANSPORT, NOTICE = 0x01, 0x02, 0x03
KIND_NAMES = {HANDSHAKE: "handshake", TRANSPORT: "transport", NOTICE: "notice"}
MAX_FRAME = 1 + MAX_MESSAGE
CHUNK_SIZE = MAX_MESSAGE - TAGLEN - 1  # payload bytes per transport message
FLAG_LAST, FLAG_MORE, FLAG_BATCH = 0x00, 0x01, 0x02
_LAST, _MORE, _BATCH = bytes([FLAG_LAST]), bytes([FLAG_MORE]), bytes([FLAG_BATCH])
_ITEM = struct.Struct(">I")   # length of one payload inside a batch
_KIND_BYTES = {kind: bytes([kind]) for kind in KIND_NAMES}

INITIATOR, RESPONDER = "initiator", "responder"
START = "START"                # nothing exchanged yet
AWAIT_REPLY = "AWAIT_REPLY"    # initiator: message 1 sent
GOT_HELLO = "GOT_HELLO"        # responder: message 1 received, accept() due
OPEN = "OPEN"                  # handshake complete: transport messages only

SENT, RECEIVED = "send", "receive"

# The one table of legal moves: (role, state, direction, frame kind) -> the
# state after the move. Anything missing is an illegal move.
MOVES = {
    (INITIATOR, START, SENT, HANDSHAKE): AWAIT_REPLY,
    (INITIATOR, START, RECEIVED, NOTICE): START,
    (INITIATOR, AWAIT_REPLY, RECEIVED, NOTICE): AWAIT_REPLY,
    (INITIATOR, AWAIT_REPLY, RECEIVED, HANDSHAKE): OPEN,
    (INITIATOR, OPEN, SENT, TRANSPORT): OPEN,
    (INITIATOR, OPEN, RECEIVED, TRANSPORT): OPEN,
    (RESPONDER, START, SENT, NOTICE): START,
    (RESPONDER, START, RECEIVED, HANDSHAKE): GOT_HELLO,
    (RESPONDER, GOT_HELLO, SENT, NOTICE): GOT_HELLO,
    (RESPONDER, GOT_HELLO, SENT, HANDSHAKE): OPEN,
    (RESPONDER, OPEN, SENT, TRANSPORT): OPEN,
    (RESPONDER, OPEN, RECEIVED, TRANSPORT): OPEN,
}


# ------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class ClientHello:
    """Responder: the client's handshake message 1 arrived; call accept()."""


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    """Initiator: the handshake is complete. Check `remote_static` first."""

    remote_static: bytes | None
    handshake_hash: bytes


@dataclass(frozen=True, slots=True, repr=False)
class Data:
    """One whole application payload (its repr hides the content)."""

    payload: bytes

    def __repr__(self):
        return f"Data(<{len(self.payload)} bytes>)"


@dataclass(frozen=True, slots=True)
class Notice:
    """Plaintext text from the server before the handshake ("server full")."""

    text: str




def _frame(kind, body):
    return encode_frame(_KIND_BYTES[kind] + body, MAX_FRAME)


def _kind_name(kind):
    return KIND_NAMES.get(kind, f"unknown kind 0x{kind:02x}")


# ----------------------------------------------------------------- channel


class SecureChannel:
    """One end of a Parley connection: "initiator" (client) or "responder"."""

    def __init__(self, role, static_keypair=None, max_payload=256 * 1024,
                 nonce_limit=2**64 - 2, prologue=PROLOGUE):
        self._setup(role, max_payload, nonce_limit)
        if role == RESPONDER and not isinstance(static_keypair, (KeyPair, DelegatedKey)):
            raise LocalProtocolError("the responder needs its static KeyPair (or a "
                                     "DelegatedKey)",
                                     code="missing_key")
        self._handshake = HandshakeState(NOISE_PROTOCOL, role == INITIATOR,
                                         bytes(prologue), s=static_keypair)

    def _setup(self, role, max_payload, nonce_limit):
        if role not in (INITIATOR, RESPONDER):
            raise LocalProtocolError(f"unknown role {role!r}", code="bad_argument")
        self.role = role
        self.max_payload = max_payload
        self.nonce_limit = min(nonce_limit, MAX_NONCE)
        self._state = START
        self._error = None
        self._eof = False
        self._decoder = FrameDecoder(MAX_FRAME)
        self._handshake = None
        self._send_cipher = self._recv_cipher = None
        self._handshake_hash = self._remote_static = None
        self._chunks = None  # memoryviews of a payload being reassembled
        self._partial_size = 0
        self._ready = deque()  # payloads of a batch not yet returned
        # A batch frame from the peer is refused unless this is True; the
        # connection (protocol.py) keeps it False until both ends agreed on it.
        self.accept_batches = True

    # -- properties

    @property
    def state(self):
        return self._state

    @property
    def handshake_complete(self):
        return self._state == OPEN

    @property
    def handshake_hash(self):
        """The Noise handshake hash (channel binding), once complete."""
        return self._handshake_hash

    @property
    def remote_static(self):
        """The server's static public key as seen by the initiator, else None."""
        return self._remote_static

    @property
    def remote_ephemeral(self):
        """Responder, after ClientHello: the client's ephemeral public key (what a
        `noise.DelegatedKey`'s holder must agree with before `accept()`)."""
        return self._handshake.remote_ephemeral

    # -- moves of our own

    @sticky
    def initiate(self):
        """Initiator: the bytes of handshake message 1."""
        self._move(SENT, HANDSHAKE)
        return _frame(HANDSHAKE, self._handshake.write_message(b""))

    @sticky
    def accept(self):
        """Responder, after ClientHello: handshake message 2; then transport mode."""
        self._move(SENT, HANDSHAKE)
        message = self._handshake.write_message(b"")
        self._finish_handshake()
        return _frame(HANDSHAKE, message)

    @sticky
    def notice(self, text):
        """Responder, before accept(): a plaintext notice such as "server full"."""
        self._move(SENT, NOTICE)
        return _frame(NOTICE, text.encode("utf-8"))

    @sticky
    def send(self, payload):
        """The frames carrying one application payload, encrypted and chunked."""
        self._move(SENT, TRANSPORT)
        view = memoryview(payload)
        size = len(view)
        if size <= CHUNK_SIZE:
            self._reserve_nonces(1)
            return self._transport_frame(_LAST, view)
        starts = range(0, size, CHUNK_SIZE)
        self._reserve_nonces(len(starts))
        frames = [self._transport_frame(_MORE, view[start:start + CHUNK_SIZE])
                  for start in starts[:-1]]
        frames.append(self._transport_frame(_LAST, view[starts[-1]:]))
        return b"".join(frames)

    @sticky
    def send_many(self, payloads):
        """The frames carrying several payloads; small ones share a batch frame."""
        frames = []
        for group in _batches(payloads):
            if len(group) == 1:
                frames.append(self.send(group[0]))
                continue
            self._move(SENT, TRANSPORT)
            self._reserve_nonces(1)
            frames.append(self._transport_frame(_BATCH, _join_batch(group)))
        return b"".join(frames)

    def _transport_frame(self, flag, chunk):
        return _frame(TRANSPORT, self._send_cipher.encrypt_with_ad(b"", flag + chunk))

    def farewell(self, payload, before=()):
        """After the peer broke the protocol: one last payload telling it why
        (after `before`, payloads that were due before it).

        Only our send direction is used, so this works when the peer's
        frames failed (tampered, replayed, garbage) but not after our own
        misuse or before the handshake. The channel is unusable afterwards.
        """
        error = self._error
        if self._state != OPEN or isinstance(error, LocalProtocolError):
            raise LocalProtocolError("no farewell is possible now", code="bad_state")
        self._error = None
        try:
            return b"".join(self.send(item) for item in [*before, payload])
        finally:
            self._error = error or LocalProtocolError("the channel was closed after a "
                                                      "farewell", code="closed")

    def _reserve_nonces(self, count):
        """Refuse up front a payload whose chunks would pass the nonce limit."""
        if self._send_cipher.n + count > self.nonce_limit:
            raise LocalProtocolError("send nonce counter exhausted; close the "
                                     "connection", code="nonce_exhausted")

    # -- bytes from the peer

    @sticky
    def receive_data(self, data):
        """Bytes from the peer; b"" means the stream ended."""
        self._decoder.receive_data(data)
        if not data:
            self._eof = True

    @sticky
    def next_event(self):
        """ClientHello, HandshakeDone, Data, Notice, NEED_DATA or CLOSED."""
        if self._ready:
            return Data(self._ready.popleft())
        while True:
            frame = self._decoder.next_event()
            if frame is NEED_DATA:
                return NEED_DATA
            if frame is CLOSED:
                return self._on_closed()
            event = self._on_frame(frame)
            if event is not None:
                return event

    def _on_closed(self):
        if self._chunks is not None:
            raise RemoteProtocolError("connection closed in the middle of a "
                                      "chunked payload", code="truncated")
        return CLOSED

    def _on_frame(self, frame):
        if not frame:
            raise RemoteProtocolError(f"{self.role}: empty frame in state "
                                      f"{self._state}", code="bad_frame")
        kind = frame[0]
        self._move(RECEIVED, kind)
        body = memoryview(frame)[1:]
        if kind == TRANSPORT:
            return self._on_transport(body)
        if kind == NOTICE:
            return self._on_notice(body)
        return self._on_handshake(body)

    def _on_handshake(self, body):
        payload = self._handshake.read_message(body)
        if payload:
            raise RemoteProtocolError("unexpected handshake payload",
                                      code="bad_handshake")
        if self.role == RESPONDER:
            return ClientHello()
        self._finish_handshake()
        return HandshakeDone(self._remote_static, self._handshake_hash)

    def _on_notice(self, body):
        try:
            return Notice(str(body, "utf-8"))
        except UnicodeDecodeError:
            raise RemoteProtocolError("notice is not valid UTF-8",
                                      code="bad_notice") from None

    def _on_transport(self, body):
        plaintext = self._recv_cipher.decrypt_with_ad(b"", body)
        if not plaintext or plaintext[0] > FLAG_BATCH:
            raise RemoteProtocolError("bad chunk flag", code="bad_chunk")
        if plaintext[0] == FLAG_BATCH:
            return self._unbatch(memoryview(plaintext)[1:])
        size = self._partial_size + len(plaintext) - 1
        if size > self.max_payload:
            raise RemoteProtocolError(f"payload exceeds {self.max_payload} bytes",
                                      code="payload_too_large")
        if plaintext[0] == FLAG_LAST and self._chunks is None:
            return Data(plaintext[1:])
        return self._reassemble(memoryview(plaintext)[1:], plaintext[0], size)

    def _unbatch(self, body):
        if not self.accept_batches:
            raise RemoteProtocolError("a batch frame, but the batch feature was not agreed",
                                      code="bad_batch")
        if self._chunks is not None:
            raise RemoteProtocolError("batch frame inside a chunked payload",
                                      code="bad_chunk")
        items = _split_batch(body)
        if any(len(item) > self.max_payload for item in items):
            raise RemoteProtocolError(f"payload exceeds {self.max_payload} bytes",
                                      code="payload_too_large")
        self._ready.extend(items[1:])
        return Data(items[0])

    def _reassemble(self, chunk, flag, size):
        if self._chunks is None:
            self._chunks = []
        self._chunks.append(chunk)
        self._partial_size = size
        if flag == FLAG_MORE:
            return None
        payload = b"".join(self._chunks)
        self._chunks, self._partial_size = None, 0
        return Data(payload)

    # -- state machine

    def _move(self, direction, kind):
        key = (self.role, self._state, direction, kind)
        if key not in MOVES:
            error_class = LocalProtocolError if direction == SENT else RemoteProtocolError
            raise illegal_move(error_class, self.role, self._state,
                               f"{direction} {_kind_name(kind)} frame")
        self._state = MOVES[key]

    def _finish_handshake(self):
        first, second = self._handshake.split(self.nonce_limit)
        if self.role == INITIATOR:
            self._send_cipher, self._recv_cipher = first, second
        else:
            self._send_cipher, self._recv_cipher = second, first
        self._handshake_hash = self._handshake.handshake_hash
        self._remote_static = self._handshake.remote_static
        self._handshake = None

    # -- moving a live connection to another process

    @sticky
    def export_state(self):
        """A picklable dict of the open connection; this object is then retired.

        Retiring it guarantees the two processes never both encrypt with the
        same key and nonce.
        """
        if self._state != OPEN or self._eof:
            raise LocalProtocolError(f"{self.role}: cannot export in state "
                                     f"{self._state}" + (" after end of stream"
                                                         if self._eof else ""),
                                     code="bad_state")
        state = self._snapshot()
        self._error = LocalProtocolError("this channel was exported to another "
                                         "process", code="exported")
        return state

    def _snapshot(self):
        return {
            "format": STATE_FORMAT,
            "role": self.role,
            "max_payload": self.max_payload,
            "nonce_limit": self.nonce_limit,
            "send_key": self._send_cipher.key,
            "send_nonce": self._send_cipher.n,
            "recv_key": self._recv_cipher.key,
            "recv_nonce": self._recv_cipher.n,
            "handshake_hash": self._handshake_hash,
            "remote_static": self._remote_static,
            "pending": self._decoder.pending(),
            "partial": None if self._chunks is None else b"".join(self._chunks),
            "ready": _join_batch(self._ready),   # batch payloads not yet returned
        }

    @classmethod
    def from_state(cls, state):
        """The channel exported by `export_state()`, continuing where it left off."""
        _validate_state(state)
        channel = cls.__new__(cls)
        channel._setup(state["role"], state["max_payload"], state["nonce_limit"])
        channel._restore(state)
        return channel

    def _restore(self, state):
        self._state = OPEN
        self._send_cipher = CipherState(state["send_key"], state["send_nonce"],
                                        self.nonce_limit)
        self._recv_cipher = CipherState(state["recv_key"], state["recv_nonce"],
                                        self.nonce_limit)
        self._handshake_hash = state["handshake_hash"]
        self._remote_static = state["remote_static"]
        if state["pending"]:
            self._decoder.receive_data(state["pending"])
        if state["ready"]:
            self._ready.extend(_split_batch(memoryview(state["ready"])))
        if state["partial"] is not None:
            self._chunks = [memoryview(state["partial"])]
            self._partial_size = len(state["partial"])

    def __repr__(self):
        return f"<SecureChannel {self.role} {self._state}>"


_STATE_FIELDS = {
    "format": str, "role": str, "max_payload": int, "nonce_limit": int,
    "send_key": bytes, "send_nonce": int, "recv_key": bytes, "recv_nonce": int,
    "handshake_hash": bytes, "remote_static": (bytes, type(None)),
    "pending": bytes, "partial": (bytes, type(None)), "ready": bytes,
}


def _validate_state(state):
    """Refuse an exported state that is not one `export_state()` could produce."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise LocalProtocolError("not an exported channel state", code="bad_state")
    for name, kind in _STATE_FIELDS.items():
        if not isinstance(state.get(name), kind):
            raise LocalProtocolError(f"exported channel state: bad field {name!r}",
                                     code="bad_state")
    nonces_ok = all(0 <= state[name] <= MAX_NONCE
                    for name in ("send_nonce", "recv_nonce", "nonce_limit"))
    keys_ok = len(state["send_key"]) == len(state["recv_key"]) == 32
    if not (nonces_ok and keys_ok and state["role"] in (INITIATOR, RESPONDER)):
        raise LocalProtocolError("exported channel state: values out of range",
                                 code="bad_state")


def _batches(payloads):
    """Groups of payloads that fit one batch frame; a large payload goes alone."""
    group, size = [], 0
    for payload in payloads:
        weight = _ITEM.size + len(payload)
        if group and size + weight > CHUNK_SIZE:
            yield group
            group, size = [], 0
        group.append(payload)
        size += weight
    if group:
        yield group


def _join_batch(payloads):
    return b"".join(_ITEM.pack(len(item)) + item for item in payloads)


def _split_batch(body):
    """The payloads of a batch frame's body; at least one, none empty."""
    items, offset, end = [], 0, len(body)
    while offset < end:
        if end - offset < _ITEM.size:
            raise RemoteProtocolError("truncated length in a batch frame", code="bad_batch")
        (size,) = _ITEM.unpack_from(body, offset)
        offset += _ITEM.size
        if size == 0 or size > end - offset:
            raise RemoteProtocolError("bad item length in a batch frame", code="bad_batch")
        items.append(bytes(body[offset:offset + size]))
        offset += size
    if not items:
        raise RemoteProtocolError("empty batch frame", code="bad_batch")
    return items
