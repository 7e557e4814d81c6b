"""Tests for Modules/wire/noise.py: every published vector byte for byte, plus misuse."""

import json
import os
from collections import Counter

import pytest

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.noise import (
    MAX_MESSAGE,
    PATTERNS,
    CipherState,
    HandshakeState,
    KeyPair,
    parse_pattern,
)

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
VECTORS_PATH = os.path.join(DATA_DIR, "noise_vectors.json")
# shared/ sits beside the repository root (for developers and CI), not inside it.
SHARED_PATH = os.path.join(DATA_DIR, "..", "..", "..", "..", "shared", "vectors", "noise",
                           "vectors.json")
EXPECTED_PER_PATTERN = {"NN": 6, "NK": 6, "NX": 6, "XX": 6}
EXPECTED_WITH_HASH = {"NN": 2, "NK": 2, "NX": 2, "XX": 2}

with open(VECTORS_PATH, encoding="utf-8") as vector_file:
    ALL_VECTORS = json.load(vector_file)["vectors"]


def supported(vector):
    """The pattern of a vector we can run, or None (PSK, fallback, other suites)."""
    if any(key in vector for key in ("psks", "init_psks", "resp_psks", "fallback",
                                     "fallback_pattern")):
        return None
    try:
        return parse_pattern(vector["protocol_name"])
    except LocalProtocolError:
        return None


SUPPORTED = [v for v in ALL_VECTORS if supported(v)]


def vector_id(vector):
    index = ALL_VECTORS.index(vector)
    origin = vector["_source"].split("@")[0].split("/")[-1]
    return f"{index}-{supported(vector)}-{origin}"


def unhex(vector, key):
    value = vector.get(key)
    return None if value is None else bytes.fromhex(value)


def make_pair(vector):
    initiator = HandshakeState(
        vector["protocol_name"], True, unhex(vector, "init_prologue"),
        s=unhex(vector, "init_static"), e=unhex(vector, "init_ephemeral"),
        rs=unhex(vector, "init_remote_static"))
    responder = HandshakeState(
        vector["protocol_name"], False, unhex(vector, "resp_prologue"),
        s=unhex(vector, "resp_static"), e=unhex(vector, "resp_ephemeral"),
        rs=unhex(vector, "resp_remote_static"))
    return initiator, responder


def initiator_sends_transport(vector, index, handshake_length):
    """Who sends transport message `index` (see the file's notes)."""
    if vector.get("_transport_sender_convention", "").startswith("flynn"):
        return (index - handshake_length) % 2 == 0
    return index % 2 == 0


def run_handshake(vector, initiator, responder, handshake_length):
    for index, message in enumerate(vector["messages"][:handshake_length]):
        sender, receiver = ((initiator, responder) if index % 2 == 0
                            else (responder, initiator))
        payload = bytes.fromhex(message["payload"])
        ciphertext = sender.write_message(payload)
        assert ciphertext.hex() == message["ciphertext"], f"handshake message {index}"
        assert receiver.read_message(ciphertext) == payload


def run_transport(vector, ciphers, handshake_length):
    (init_send, init_recv), (resp_send, resp_recv) = ciphers
    for index, message in enumerate(vector["messages"]):
        if index < handshake_length:
            continue
        sender, receiver = ((init_send, resp_recv)
                            if initiator_sends_transport(vector, index, handshake_length)
                            else (resp_send, init_recv))
        payload = bytes.fromhex(message["payload"])
        ciphertext = sender.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"], f"transport message {index}"
        assert receiver.decrypt_with_ad(b"", ciphertext) == payload


@pytest.mark.parametrize("vector", SUPPORTED, ids=vector_id)
def test_vector(vector):
    initiator, responder = make_pair(vector)
    handshake_length = len(PATTERNS[supported(vector)][2])
    assert len(vector["messages"]) > handshake_length
    run_handshake(vector, initiator, responder, handshake_length)
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash == responder.handshake_hash
    if "handshake_hash" in vector:
        assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    if "resp_static" in vector and supported(vector) != "NN":
        assert initiator.remote_static == KeyPair(unhex(vector, "resp_static")).public
    c1, c2 = initiator.split()
    r1, r2 = responder.split()
    run_transport(vector, ((c1, c2), (r2, r1)), handshake_length)


def test_every_supported_vector_is_run():
    """The parametrized test cannot pass silently on zero vectors."""
    counts = Counter(supported(v) for v in SUPPORTED)
    assert dict(counts) == EXPECTED_PER_PATTERN
    assert len(SUPPORTED) == len(ALL_VECTORS) == 24
    with_hash = Counter(supported(v) for v in SUPPORTED if "handshake_hash" in v)
    assert dict(with_hash) == EXPECTED_WITH_HASH


def test_vector_file_is_the_shared_copy():
    if not os.path.exists(SHARED_PATH):
        pytest.skip("shared vector directory not present")
    with open(VECTORS_PATH, "rb") as ours, open(SHARED_PATH, "rb") as shared:
        assert ours.read() == shared.read()


# ----------------------------------------------------------------- KeyPair


def test_x25519_rfc7748_vector():
    alice = KeyPair(bytes.fromhex(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    bob = KeyPair(bytes.fromhex(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    assert alice.public.hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert alice.dh(bob.public).hex() == shared == bob.dh(alice.public).hex()


def test_generated_keys_differ_and_repr_hides_private():
    first, second = KeyPair.generate(), KeyPair.generate()
    assert first.private != second.private and len(first.public) == 32
    assert first.private.hex() not in repr(first)


def test_low_order_public_key_is_remote_error():
    with pytest.raises(RemoteProtocolError) as info:
        KeyPair.generate().dh(bytes(32))
    assert info.value.code == "bad_public_key"


def test_private_key_of_wrong_length_is_refused():
    with pytest.raises(LocalProtocolError):
        KeyPair(b"short")


# ------------------------------------------------------------- CipherState


def test_cipher_nonce_layout_and_counter():
    cipher = CipherState(bytes(range(32)))
    first = cipher.encrypt_with_ad(b"ad", b"hello")
    assert cipher.n == 1 and len(first) == 5 + 16
    again = CipherState(bytes(range(32)))
    assert again.encrypt_with_ad(b"ad", b"hello") == first
    assert again.encrypt_with_ad(b"ad", b"hello") != first


def test_cipher_refuses_the_reserved_nonce():
    cipher = CipherState(bytes(32), nonce=2**64 - 2)
    cipher.encrypt_with_ad(b"", b"last")
    with pytest.raises(LocalProtocolError) as info:
        cipher.encrypt_with_ad(b"", b"one too many")
    assert info.value.code == "nonce_exhausted"


def test_cipher_custom_nonce_limit():
    cipher = CipherState(bytes(32), nonce_limit=1)
    cipher.encrypt_with_ad(b"", b"")
    with pytest.raises(LocalProtocolError):
        cipher.encrypt_with_ad(b"", b"")


def test_decrypt_failure_is_remote_and_sticky():
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    ciphertext = bytearray(sender.encrypt_with_ad(b"", b"payload"))
    ciphertext[0] ^= 1
    with pytest.raises(RemoteProtocolError) as info:
        receiver.decrypt_with_ad(b"", bytes(ciphertext))
    assert info.value.code == "decrypt_failed"
    with pytest.raises(RemoteProtocolError):
        receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"fine"))


def test_wrong_associated_data_fails():
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    with pytest.raises(RemoteProtocolError):
        receiver.decrypt_with_ad(b"b", sender.encrypt_with_ad(b"a", b"x"))


def test_cipher_message_size_limit():
    cipher = CipherState(bytes(32))
    assert len(cipher.encrypt_with_ad(b"", bytes(MAX_MESSAGE - 16))) == MAX_MESSAGE
    with pytest.raises(LocalProtocolError):
        cipher.encrypt_with_ad(b"", bytes(MAX_MESSAGE - 15))
    with pytest.raises(RemoteProtocolError):
        CipherState(bytes(32)).decrypt_with_ad(b"", bytes(MAX_MESSAGE + 1))


def test_short_ciphertext_fails_decryption():
    with pytest.raises(RemoteProtocolError) as info:
        CipherState(bytes(32)).decrypt_with_ad(b"", b"tiny")
    assert info.value.code == "decrypt_failed"


def test_rekey_changes_key_both_sides():
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    sender.rekey()
    receiver.rekey()
    assert sender.key != bytes(32)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"x")) == b"x"


# ---------------------------------------------------------- HandshakeState


def nx_pair(prologue=b"p", responder_prologue=None):
    server = KeyPair.generate()
    initiator = HandshakeState("NX", True, prologue)
    responder = HandshakeState("Noise_NX_25519_ChaChaPoly_SHA256", False,
                               prologue if responder_prologue is None
                               else responder_prologue, s=server)
    return initiator, responder, server


def test_random_nx_handshake_and_payloads():
    initiator, responder, server = nx_pair()
    assert responder.read_message(initiator.write_message(b"hi")) == b"hi"
    assert initiator.read_message(responder.write_message(b"there")) == b"there"
    assert initiator.remote_static == server.public
    assert initiator.handshake_hash == responder.handshake_hash
    c1, c2 = initiator.split()
    r1, r2 = responder.split()
    assert r1.decrypt_with_ad(b"", c1.encrypt_with_ad(b"", b"up")) == b"up"
    assert c2.decrypt_with_ad(b"", r2.encrypt_with_ad(b"", b"down")) == b"down"


def test_prologue_mismatch_fails_handshake():
    initiator, responder, _ = nx_pair(b"one", b"two")
    responder.read_message(initiator.write_message())
    with pytest.raises(RemoteProtocolError) as info:
        initiator.read_message(responder.write_message())
    assert info.value.code == "decrypt_failed"


def test_tampered_handshake_message_fails_and_sticks():
    initiator, responder, _ = nx_pair()
    responder.read_message(initiator.write_message())
    reply = bytearray(responder.write_message())
    reply[40] ^= 0x80
    with pytest.raises(RemoteProtocolError):
        initiator.read_message(bytes(reply))
    with pytest.raises(RemoteProtocolError):
        initiator.split()


def test_short_handshake_message_is_remote_error():
    _, responder, _ = nx_pair()
    with pytest.raises(RemoteProtocolError) as info:
        responder.read_message(b"\x01" * 31)
    assert info.value.code == "bad_handshake"


def test_wrong_turn_and_early_split_are_local_errors():
    initiator, responder, _ = nx_pair()
    with pytest.raises(LocalProtocolError):
        responder.write_message()
    with pytest.raises(LocalProtocolError):
        HandshakeState("NX", True).read_message(b"x" * 32)
    with pytest.raises(LocalProtocolError):
        initiator.split()


def test_write_after_completion_is_local_error():
    initiator, responder, _ = nx_pair()
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    with pytest.raises(LocalProtocolError) as info:
        initiator.write_message()
    assert info.value.code == "handshake_complete"


def test_missing_keys_are_refused():
    with pytest.raises(LocalProtocolError):
        HandshakeState("NX", False)
    with pytest.raises(LocalProtocolError):
        HandshakeState("NK", True)
    with pytest.raises(LocalProtocolError):
        HandshakeState("XX", True)


def test_unsupported_protocols_are_refused():
    for name in ("IK", "Noise_NX_448_ChaChaPoly_SHA256", "Noise_NX_25519_AESGCM_SHA256",
                 "Noise_NXpsk0_25519_ChaChaPoly_SHA256", "Noise_NX_25519_ChaChaPoly"):
        with pytest.raises(LocalProtocolError):
            HandshakeState(name, True)


def test_oversize_handshake_payloads():
    initiator, responder, _ = nx_pair()
    with pytest.raises(RemoteProtocolError):
        responder.read_message(bytes(MAX_MESSAGE + 1))
    with pytest.raises(LocalProtocolError):
        initiator.write_message(bytes(MAX_MESSAGE - 31))


def test_largest_handshake_payload_fits():
    initiator, responder, _ = nx_pair()
    message = initiator.write_message(bytes(MAX_MESSAGE - 32))
    assert len(message) == MAX_MESSAGE
    assert responder.read_message(message) == bytes(MAX_MESSAGE - 32)


def test_keypair_pickles_without_losing_the_key():
    import pickle
    key = KeyPair.generate()
    copy = pickle.loads(pickle.dumps(key))
    assert copy.private == key.private and copy.public == key.public
