"""Tests for Modules/wire/aead.py: RFC 8439's vector, agreement with pycryptodome's
public ChaCha20_Poly1305 on any input, and rejection of any altered byte."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from Modules.wire import aead

VECTOR = aead.RFC_8439_VECTOR
KEY, NONCE = VECTOR["key"], VECTOR["nonce"]
RFC_CIPHERTEXT_START = bytes.fromhex("d31a8d34648e60db7b86afbc53ef7ec2")   # from the RFC

BOTH = [(aead.seal, aead.open_), (aead._public_seal, aead._public_open)]


def test_the_fast_path_is_in_use_with_the_pinned_pycryptodome():
    assert aead.FAST


@pytest.mark.parametrize("seal, open_", BOTH)
def test_rfc_8439_section_2_8_2_vector(seal, open_):
    sealed = seal(KEY, NONCE, VECTOR["ad"], VECTOR["plaintext"])
    assert sealed[:16] == RFC_CIPHERTEXT_START
    assert sealed[-16:] == VECTOR["tag"] == bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")
    assert open_(KEY, NONCE, VECTOR["ad"], sealed) == VECTOR["plaintext"]


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=12, max_size=12),
       ad=st.binary(max_size=80), plaintext=st.binary(max_size=300))
def test_same_bytes_as_the_public_api(key, nonce, ad, plaintext):
    sealed = aead.seal(key, nonce, ad, plaintext)
    assert sealed == aead._public_seal(key, nonce, ad, plaintext)
    assert aead.open_(key, nonce, ad, memoryview(sealed)) == plaintext
    assert aead.open_(key, nonce, ad, bytearray(sealed)) == plaintext


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=100), data=st.data())
def test_any_flipped_bit_is_rejected(plaintext, data):
    sealed = bytearray(aead.seal(KEY, NONCE, b"", plaintext))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(aead.AuthenticationFailed):
        aead.open_(KEY, NONCE, b"", bytes(sealed))


@pytest.mark.parametrize("seal, open_", BOTH)
def test_wrong_nonce_key_or_ad_and_short_input_are_rejected(seal, open_):
    sealed = seal(KEY, NONCE, b"ad", b"hello")
    for key, nonce, ad in ((bytes(32), NONCE, b"ad"), (KEY, bytes(12), b"ad"),
                           (KEY, NONCE, b"other")):
        with pytest.raises(aead.AuthenticationFailed):
            open_(key, nonce, ad, sealed)
    with pytest.raises(aead.AuthenticationFailed):
        open_(KEY, NONCE, b"", b"short")


def test_the_self_check_refuses_a_composition_that_disagrees(monkeypatch):
    monkeypatch.setattr(aead, "_public_seal", lambda *args: b"different")
    assert aead._agrees_with_public_api() is False
