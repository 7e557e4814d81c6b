"""ChaCha20-Poly1305 (RFC 8439) without a Python object per message.

What it does: `seal(key, nonce, ad, plaintext)` and `open_(key, nonce, ad,
ciphertext_and_tag)` for the Noise CipherState (noise.py). pycryptodome's
public `ChaCha20_Poly1305.new()` builds three Python objects per call
(cipher, ChaCha20, Poly1305) and costs ~23 µs for a 120-byte message; the
relay does four of these per message. This module calls the same C
functions pycryptodome's objects call (`chacha20_*` from
`Crypto.Cipher.ChaCha20`, `poly1305_*` from `Crypto.Hash.Poly1305`) through
cffi, with buffers reused per thread, for ~4 µs. All the cryptography is
still pycryptodome's; only the RFC 8439 composition is here, and it is
short: the Poly1305 key is the first 32 bytes of ChaCha20 block 0, the
ciphertext starts at block 1, the tag covers ad, ciphertext, padding and
both lengths.

What it talks to: pycryptodome's raw libraries, which are not public API.
At import the module checks that they are there, that pycryptodome uses
its cffi backend, and that the composition agrees with the public
`ChaCha20_Poly1305` on known inputs (including RFC 8439 section 2.8.2's
vector). If any of that fails, `seal`/`open_` are the public API instead
(slower, same results): `FAST` says which one is in use.

How it fails: `open_` raises `AuthenticationFailed` (a ValueError) when the
tag does not verify and returns nothing of the plaintext; a C function
that reports an error raises `RuntimeError` naming it.
"""

import hmac
import struct
import threading

from Crypto.Cipher import ChaCha20_Poly1305

TAGLEN = 16
_LENGTHS = struct.Struct("<QQ")
_ZEROS = bytes(64)


class AuthenticationFailed(ValueError):
    """The tag did not verify: the message was altered or the key/nonce differ."""


def _public_seal(key, nonce, ad, plaintext):
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    if ad:
        cipher.update(ad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def _public_open(key, nonce, ad, sealed):
    view = memoryview(sealed)
    if len(view) < TAGLEN:
        raise AuthenticationFailed("ciphertext shorter than its tag")
    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    if ad:
        cipher.update(ad)
    try:
        return cipher.decrypt_and_verify(view[:-TAGLEN], view[-TAGLEN:])
    except ValueError:
        raise AuthenticationFailed("message failed authentication") from None


class _Raw:
    """The C entry points and per-thread scratch buffers."""

    def __init__(self):
        from Crypto.Cipher import ChaCha20
        from Crypto.Hash import Poly1305
        from Crypto.Util import _raw_api
        if _raw_api.backend != "cffi":
            raise ImportError("pycryptodome is not using cffi")
        self.ffi = _raw_api.ffi
        self.chacha = ChaCha20._raw_chacha20_lib
        self.poly = Poly1305._raw_poly1305
        self.local = threading.local()

    def scratch(self):
        local = self.local
        try:
            return local.buffers
        except AttributeError:
            ffi = self.ffi
            local.buffers = (ffi.new("void **"), ffi.new("uint8_t[64]"),
                             ffi.new("uint8_t[16]"))
            return local.buffers

    def keystream_block0(self, key, nonce, handle, block0):
        """Start ChaCha20 at block 0, leave it at block 1; block 0 in `block0`."""
        check(self.chacha.chacha20_init(handle, key, 32, nonce, 12), "chacha20_init")
        state = handle[0]
        check(self.chacha.chacha20_encrypt(state, _ZEROS, block0, 64), "chacha20_encrypt")
        return state

    def xor(self, state, data):
        """ChaCha20 of `data` from the current block; destroys the state."""
        ffi = self.ffi
        out = bytearray(len(data))
        try:
            if data:
                source = data if type(data) is bytes else ffi.from_buffer(data)
                check(self.chacha.chacha20_encrypt(state, source,
                                                   ffi.from_buffer(out), len(data)),
                      "chacha20_encrypt")
        finally:
            self.chacha.chacha20_destroy(state)
        return out

    def tag(self, handle, block0, tag_buffer, ad, ciphertext):
        """Poly1305 over ad || pad || ciphertext || pad || lengths."""
        poly = self.poly
        data = b"".join(_mac_parts(ad, ciphertext))
        check(poly.poly1305_init(handle, block0, 16, block0 + 16, 16), "poly1305_init")
        state = handle[0]
        try:
            check(poly.poly1305_update(state, data, len(data)), "poly1305_update")
            check(poly.poly1305_digest(state, tag_buffer, 16), "poly1305_digest")
        finally:
            poly.poly1305_destroy(state)
        return self.ffi.buffer(tag_buffer, 16)[:]


def _mac_parts(ad, ciphertext):
    parts = []
    for data in (ad, ciphertext):
        if data:
            parts.append(data)
            if len(data) % 16:
                parts.append(_ZEROS[:16 - len(data) % 16])
    parts.append(_LENGTHS.pack(len(ad), len(ciphertext)))
    return parts


def check(result, function):
    if result:
        raise RuntimeError(f"pycryptodome's {function} failed with error {result}")


def _raw_seal(key, nonce, ad, plaintext):
    handle, block0, tag_buffer = _RAW.scratch()
    state = _RAW.keystream_block0(key, nonce, handle, block0)
    ciphertext = _RAW.xor(state, plaintext)
    ciphertext += _RAW.tag(handle, block0, tag_buffer, ad, ciphertext)
    return bytes(ciphertext)


def _raw_open(key, nonce, ad, sealed):
    view = memoryview(sealed)
    if len(view) < TAGLEN:
        raise AuthenticationFailed("ciphertext shorter than its tag")
    ciphertext, received = view[:-TAGLEN], view[-TAGLEN:]
    handle, block0, tag_buffer = _RAW.scratch()
    state = _RAW.keystream_block0(key, nonce, handle, block0)
    try:
        expected = _RAW.tag(handle, block0, tag_buffer, ad, ciphertext)
    except BaseException:
        _RAW.chacha.chacha20_destroy(state)
        raise
    if not hmac.compare_digest(expected, received):
        _RAW.chacha.chacha20_destroy(state)
        raise AuthenticationFailed("message failed authentication")
    return bytes(_RAW.xor(state, ciphertext))


# RFC 8439 section 2.8.2: the AEAD test vector (the tests use it too).
RFC_8439_VECTOR = {
    "key": bytes(range(0x80, 0xa0)),
    "nonce": bytes.fromhex("070000004041424344454647"),
    "ad": bytes.fromhex("50515253c0c1c2c3c4c5c6c7"),
    "plaintext": (b"Ladies and Gentlemen of the class of '99: If I could offer you "
                  b"only one tip for the future, sunscreen would be it."),
    "tag": bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691"),
}


def _agrees_with_public_api():
    """The raw composition gives the public API's bytes, and RFC 8439's tag."""
    v = RFC_8439_VECTOR
    key, nonce = v["key"], v["nonce"]
    if _raw_seal(key, nonce, v["ad"], v["plaintext"])[-TAGLEN:] != v["tag"]:
        return False
    for size in (0, 1, 15, 16, 17, 63, 64, 65, 200):
        for ad in (b"", b"a", bytes(range(33))):
            message = bytes(range(size % 256)) * (size // 256 + 1)
            message = message[:size]
            sealed = _raw_seal(key, nonce, ad, message)
            if sealed != _public_seal(key, nonce, ad, message):
                return False
            if _raw_open(key, nonce, ad, sealed) != message:
                return False
    return True


def _choose():
    global _RAW
    try:
        _RAW = _Raw()
        if _agrees_with_public_api():
            return True, _raw_seal, _raw_open
    except (ImportError, AttributeError, TypeError, RuntimeError):
        pass
    return False, _public_seal, _public_open


_RAW = None
FAST, seal, open_ = _choose()
