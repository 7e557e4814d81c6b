"""The Noise Protocol Framework, revision 34, for Parley's secure channel.

Implements the objects of the specification, sections 5.1 to 5.3:
`CipherState`, `SymmetricState` and `HandshakeState`, plus `KeyPair`. The
handshake is general over the patterns in `PATTERNS` (NN, NK, NX, XX) with
one fixed suite: DH `25519` (X25519), cipher `ChaChaPoly` (ChaCha20-Poly1305,
96-bit nonce = 4 zero bytes + 64-bit little-endian counter) and hash
`SHA256` (HMAC-based HKDF). All cryptography comes from pycryptodome
(the AEAD through aead.py, which calls its C primitives directly); no
sockets or files are touched here, the caller moves the bytes.

Failures: misuse by our own code (wrong turn, missing key, message too
large to send, nonce counter exhausted) raises `LocalProtocolError`; bytes
from the peer that are too short, too long, carry an invalid public key or
fail authentication raise `RemoteProtocolError` (`code="decrypt_failed"` for
authentication failures). Every object keeps the first error and raises it
again on every later call. Messages never contain key material or
plaintext. Ephemeral keys can be injected (`HandshakeState(e=...)`) so the
published test vectors can be replayed byte for byte.

A static key whose private half is held by another process (issue 15: the
server's, in the database process) is a `DelegatedKey`: its public half,
and the one agreement (DH with a peer's key) its holder made for this
handshake, handed in with `agree()` before the message that needs it.
"""

import struct

from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol import DH
from Crypto.Random import get_random_bytes

from Modules.wire import aead
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError, sticky

DHLEN = 32
HASHLEN = 32
TAGLEN = 16
MAX_MESSAGE = 65535
MAX_NONCE = 2**64 - 1  # reserved by the specification; never used as a nonce
SUITE = ("25519", "ChaChaPoly", "SHA256")

# Handshake patterns: (initiator pre-message, responder pre-message,
# messages). Messages alternate, starting with the initiator.
PATTERNS = {
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": ((), (), (("e",), ("e", "ee", "s", "es"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
}

_NONCE = struct.Struct("<4xQ")
_ZEROS = bytes(32)




def protocol_name(pattern):
    """The full Noise protocol name of one of our patterns."""
    return "Noise_" + pattern + "_" + "_".join(SUITE)


def parse_pattern(name):
    """The pattern ("NX") named by "NX" or "Noise_NX_25519_ChaChaPoly_SHA256"."""
    parts = name.split("_")
    if len(parts) == 1 and name in PATTERNS:
        return name
    if len(parts) == 5 and parts[0] == "Noise" and parts[1] in PATTERNS \
            and tuple(parts[2:]) == SUITE:
        return parts[1]
    raise LocalProtocolError(f"unsupported Noise protocol {name!r}",
                             code="unsupported_protocol")


# ---------------------------------------------------------------- DH 25519


def _check_key_bytes(value, what):
    if not isinstance(value, (bytes, bytearray)) or len(value) != DHLEN:
        raise LocalProtocolError(f"{what} must be {DHLEN} bytes", code="bad_key")
    return bytes(value)


class KeyPair:
    """An X25519 key pair; the private key object is parsed once and cached."""

    __slots__ = ("private", "public", "_key")

    def __init__(self, private):
        self.private = _check_key_bytes(private, "an X25519 private key")
        self._key = DH.import_x25519_private_key(self.private)
        self.public = self._key.public_key().export_key(format="raw")

    @classmethod
    def generate(cls):
        """A fresh key pair from the operating system's random source."""
        return cls(get_random_bytes(DHLEN))

    def dh(self, public_key):
        """The X25519 shared secret with a peer's raw public key."""
        peer = _import_public(public_key)
        try:
            return bytes(DH.key_agreement(static_priv=self._key, static_pub=peer,
                                          kdf=_identity))
        except ValueError:
            raise _bad_public_key() from None

    def __reduce__(self):
        return (KeyPair, (self.private,))

    def __repr__(self):
        return f"KeyPair(public={self.public.hex()})"


class DelegatedKey:
    """A static key pair whose private half is elsewhere: `public`, and the
    agreements its holder computed, one per peer key (`agree`). `dh()` with
    a peer key nobody agreed on is a LocalProtocolError."""

    __slots__ = ("public", "_agreed")

    def __init__(self, public):
        self.public = _check_key_bytes(public, "an X25519 public key")
        self._agreed = {}

    def agree(self, peer_public, shared):
        """The holder's DH of the private key with `peer_public` is `shared`."""
        self._agreed[bytes(peer_public)] = _check_key_bytes(shared, "a DH result")

    def dh(self, public_key):
        try:
            return self._agreed.pop(bytes(public_key))
        except KeyError:
            raise LocalProtocolError("the static key's holder made no agreement with "
                                     "this peer key", code="no_agreement") from None

    def __repr__(self):
        return f"DelegatedKey(public={self.public.hex()})"


def _identity(secret):
    return secret


def _bad_public_key():
    return RemoteProtocolError("invalid X25519 public key", code="bad_public_key")


def _import_public(public_key):
    try:
        return DH.import_x25519_public_key(bytes(public_key))
    except ValueError:
        raise _bad_public_key() from None


def check_public_key(public_key):
    """Refuse (RemoteProtocolError) a peer key that is not a usable X25519 point."""
    _import_public(_check_key_bytes(public_key, "an X25519 public key"))


def _as_keypair(value, what):
    if value is None or isinstance(value, (KeyPair, DelegatedKey)):
        return value
    return KeyPair(_check_key_bytes(value, what))


# ------------------------------------------------------------ CipherState


class CipherState:
    """A ChaChaPoly key and its nonce counter (Noise section 5.1).

    `nonce_limit` lets a caller stop earlier than the specification's
    2**64-1: a call with `n >= nonce_limit` raises `nonce_exhausted`.
    """

    def __init__(self, key=None, nonce=0, nonce_limit=MAX_NONCE):
        self._key = None if key is None else _check_key_bytes(key, "a cipher key")
        self._n = nonce
        self.nonce_limit = min(nonce_limit, MAX_NONCE)
        self._error = None

    def initialize_key(self, key):
        self._key = None if key is None else _check_key_bytes(key, "a cipher key")
        self._n = 0

    def has_key(self):
        return self._key is not None

    @property
    def key(self):
        """The raw key, for handing a live connection to another process."""
        return self._key

    @property
    def n(self):
        return self._n

    def set_nonce(self, nonce):
        self._n = nonce

    @sticky
    def encrypt_with_ad(self, ad, plaintext):
        """ENCRYPT(k, n++, ad, plaintext); the plaintext itself without a key."""
        if self._key is None:
            return bytes(plaintext)
        if len(plaintext) + TAGLEN > MAX_MESSAGE:
            raise LocalProtocolError("Noise message would exceed 65535 bytes",
                                     code="message_too_large")
        sealed = aead.seal(self._key, self._nonce_bytes(), ad, plaintext)
        self._n += 1
        return sealed

    @sticky
    def decrypt_with_ad(self, ad, ciphertext):
        """DECRYPT(k, n++, ad, ciphertext); decrypt_failed if it does not verify."""
        if len(ciphertext) > MAX_MESSAGE:
            raise RemoteProtocolError("Noise message exceeds 65535 bytes",
                                      code="message_too_large")
        if self._key is None:
            return bytes(ciphertext)
        if len(ciphertext) < TAGLEN:
            raise RemoteProtocolError("ciphertext shorter than its tag",
                                      code="decrypt_failed")
        return self._open(ad, memoryview(ciphertext))

    def _open(self, ad, view):
        try:
            plaintext = aead.open_(self._key, self._nonce_bytes(), ad, view)
        except aead.AuthenticationFailed:
            raise RemoteProtocolError("message failed authentication",
                                      code="decrypt_failed") from None
        self._n += 1
        return plaintext

    def _nonce_bytes(self):
        if self._n >= self.nonce_limit:
            raise LocalProtocolError("nonce counter exhausted; the connection "
                                     "must be closed", code="nonce_exhausted")
        return _NONCE.pack(self._n)

    @sticky
    def rekey(self):
        """REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64-1, empty, zeros)."""
        cipher = ChaCha20_Poly1305.new(key=self._key, nonce=_NONCE.pack(MAX_NONCE))
        self._key = cipher.encrypt(_ZEROS)

    def __repr__(self):
        return f"CipherState(has_key={self.has_key()}, n={self._n})"


# --------------------------------------------------------- SymmetricState


def _hmac(key, data):
    return HMAC.new(key, data, digestmod=SHA256).digest()


def hkdf(chaining_key, input_key_material, outputs):
    """Noise's HKDF: two or three 32-byte outputs."""
    temp_key = _hmac(chaining_key, input_key_material)
    output = _hmac(temp_key, b"\x01")
    results = [output]
    for index in range(2, outputs + 1):
        output = _hmac(temp_key, output + bytes([index]))
        results.append(output)
    return results


def _hash(data):
    return SHA256.new(data).digest()


class SymmetricState:
    """The chaining key, the handshake hash and a CipherState (Noise 5.2)."""

    def __init__(self, name):
        name = name.encode("ascii") if isinstance(name, str) else name
        if len(name) <= HASHLEN:
            self.h = name + bytes(HASHLEN - len(name))
        else:
            self.h = _hash(name)
        self.ck = self.h
        self.cipher_state = CipherState()

    def mix_key(self, input_key_material):
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher_state.initialize_key(temp_k)

    def mix_hash(self, data):
        self.h = _hash(self.h + data)

    def mix_key_and_hash(self, input_key_material):
        self.ck, temp_h, temp_k = hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cipher_state.initialize_key(temp_k)

    def get_handshake_hash(self):
        return self.h

    def encrypt_and_hash(self, plaintext):
        ciphertext = self.cipher_state.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext):
        plaintext = self.cipher_state.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self, nonce_limit=MAX_NONCE):
        """Two CipherStates: initiator-to-responder, then responder-to-initiator."""
        key1, key2 = hkdf(self.ck, b"", 2)
        return (CipherState(key1, nonce_limit=nonce_limit),
                CipherState(key2, nonce_limit=nonce_limit))


# --------------------------------------------------------- HandshakeState


class HandshakeState:
    """One side of a Noise handshake (Noise section 5.3).

    `pattern` is "NX" or a full name such as
    "Noise_NX_25519_ChaChaPoly_SHA256". `s` and `e` are KeyPairs (or raw
    32-byte private keys); `rs` is the peer's raw static public key when the
    pattern has it as a pre-message. An injected `e` replaces the ephemeral
    key that "e" would otherwise generate (for test vectors).
    """

    def __init__(self, pattern, initiator, prologue=b"", s=None, e=None, rs=None):
        self.pattern = parse_pattern(pattern)
        self.initiator = bool(initiator)
        self.s = _as_keypair(s, "a static private key")
        self.e = _as_keypair(e, "an ephemeral private key")
        self.rs = None if rs is None else _check_key_bytes(rs, "a remote static key")
        self.re = None
        self._error = None
        self._index = 0
        pre_initiator, pre_responder, self._messages = PATTERNS[self.pattern]
        self._check_keys(pre_initiator, pre_responder)
        self._symmetric = SymmetricState(protocol_name(self.pattern))
        self._symmetric.mix_hash(bytes(prologue))
        self._mix_pre_messages(pre_initiator, pre_responder)

    def _own_tokens(self, pre_own):
        first = 0 if self.initiator else 1
        tokens = set(pre_own)
        for message in self._messages[first::2]:
            tokens.update(message)
        return tokens

    def _check_keys(self, pre_initiator, pre_responder):
        pre_own, pre_peer = ((pre_initiator, pre_responder) if self.initiator
                             else (pre_responder, pre_initiator))
        if "s" in self._own_tokens(pre_own) and self.s is None:
            raise LocalProtocolError(f"Noise {self.pattern} needs our static key",
                                     code="missing_key")
        if "s" in pre_peer and self.rs is None:
            raise LocalProtocolError(f"Noise {self.pattern} needs the peer's "
                                     "static key", code="missing_key")
        if "e" in pre_own + pre_peer:
            raise LocalProtocolError("ephemeral pre-messages are not supported",
                                     code="unsupported_protocol")

    def _mix_pre_messages(self, pre_initiator, pre_responder):
        initiator_s = self.s if self.initiator else None
        responder_s = None if self.initiator else self.s
        if "s" in pre_initiator:
            self._symmetric.mix_hash(initiator_s.public if initiator_s else self.rs)
        if "s" in pre_responder:
            self._symmetric.mix_hash(responder_s.public if responder_s else self.rs)

    # -- public interface

    @property
    def complete(self):
        """True once every handshake message has been written or read."""
        return self._index >= len(self._messages)

    @property
    def handshake_hash(self):
        """h: the channel binding value, final once the handshake is complete."""
        return self._symmetric.get_handshake_hash()

    @property
    def remote_static(self):
        return self.rs

    @property
    def remote_ephemeral(self):
        return self.re

    @sticky
    def write_message(self, payload=b""):
        """The next handshake message, carrying `payload`."""
        tokens = self._next_tokens(sending=True)
        parts = [self._write_token(token) for token in tokens]
        parts.append(self._symmetric.encrypt_and_hash(bytes(payload)))
        message = b"".join(parts)
        if len(message) > MAX_MESSAGE:
            raise LocalProtocolError("handshake message would exceed 65535 bytes",
                                     code="message_too_large")
        self._index += 1
        return message

    @sticky
    def read_message(self, message):
        """Process the peer's next handshake message; returns its payload."""
        if len(message) > MAX_MESSAGE:
            raise RemoteProtocolError("handshake message exceeds 65535 bytes",
                                      code="message_too_large")
        tokens = self._next_tokens(sending=False)
        view = memoryview(bytes(message))
        for token in tokens:
            view = self._read_token(token, view)
        payload = self._symmetric.decrypt_and_hash(bytes(view))
        self._index += 1
        return payload

    @sticky
    def split(self, nonce_limit=MAX_NONCE):
        """(initiator-to-responder, responder-to-initiator) CipherStates."""
        if not self.complete:
            raise LocalProtocolError("split() before the handshake is complete",
                                     code="handshake_incomplete")
        return self._symmetric.split(nonce_limit)

    # -- tokens

    def _next_tokens(self, sending):
        if self.complete:
            raise LocalProtocolError("the handshake is already complete",
                                     code="handshake_complete")
        initiator_turn = self._index % 2 == 0
        if sending != (initiator_turn == self.initiator):
            verb = "write" if sending else "read"
            raise LocalProtocolError(f"not our turn to {verb} handshake message "
                                     f"{self._index + 1}", code="wrong_turn")
        return self._messages[self._index]

    def _write_token(self, token):
        if token == "e":
            if self.e is None:
                self.e = KeyPair.generate()
            self._symmetric.mix_hash(self.e.public)
            return self.e.public
        if token == "s":
            return self._symmetric.encrypt_and_hash(self.s.public)
        self._mix_dh(token)
        return b""

    def _read_token(self, token, view):
        if token == "e":
            self.re = self._take(view, DHLEN)
            check_public_key(self.re)
            self._symmetric.mix_hash(self.re)
            return view[DHLEN:]
        if token == "s":
            size = DHLEN + TAGLEN if self._symmetric.cipher_state.has_key() else DHLEN
            self.rs = self._symmetric.decrypt_and_hash(self._take(view, size))
            return view[size:]
        self._mix_dh(token)
        return view

    def _take(self, view, size):
        if len(view) < size:
            raise RemoteProtocolError("handshake message too short",
                                      code="bad_handshake")
        return bytes(view[:size])

    def _mix_dh(self, token):
        local, remote = _DH_TOKENS[token]
        if not self.initiator:
            local, remote = remote, local
        keypair = self.e if local == "e" else self.s
        public = self.re if remote == "e" else self.rs
        self._symmetric.mix_key(keypair.dh(public))

    def __repr__(self):
        role = "initiator" if self.initiator else "responder"
        return (f"HandshakeState({self.pattern}, {role}, "
                f"message={self._index}/{len(self._messages)})")


# For each DH token, the initiator's key then the responder's key; the
# responder swaps them.
_DH_TOKENS = {"ee": ("e", "e"), "es": ("e", "s"), "se": ("s", "e"), "ss": ("s", "s")}
