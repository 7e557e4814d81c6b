"""Server identity and client key pinning (trust on first use, like SSH).

The server's long-term X25519 key lives in `<data dir>/server_key`, created
on first start with mode 0600 and written atomically (temporary file opened
with O_EXCL, fsync, then linked into place so a concurrent creator can never
replace a key already in use). With the data dir encrypted at rest the
database process keeps that file wrapped under the database key (issue
15), and the daemon reads only the public half, `server_key.pub`
(`daemon_key`, `load_server_identity`). Clients remember each server's public key in
a known-hosts file, one line per server: `host:port base64key`, with `#`
comments and blank lines allowed; `KnownHosts.check()` says whether a key
is the remembered one, new, or changed. `fingerprint()` gives the short
form shown to users ("SHA256:" + unpadded base64 of the key's SHA-256).

Talks only to the file system; no sockets. Fails with `IdentityError`
(a `ValueError`) whose message names the file, the line for known-hosts
entries, and what is wrong, but never the key material itself. A key file
with bad content is never overwritten: the server refuses to start until
an operator restores or removes it.
"""

import base64
import binascii
import hashlib
import hmac
import os
import secrets

from Modules.wire.noise import DHLEN, DelegatedKey, KeyPair

__all__ = [
    "IdentityError", "KeyPair", "KnownHosts", "load_or_create_server_key", "fingerprint",
    "host_id", "default_known_hosts_path", "MATCH", "NEW", "CHANGED",
]

KEY_FILE_NAME = "server_key"
KEY_FILE_TAG = "parley-server-key-v1"
PUBLIC_FILE_NAME = "server_key.pub"          # its public half, for the daemon (issue 15)
PUBLIC_FILE_TAG = "parley-server-public-key-v1"
WRAPPED_PREFIX = b"parley-wrapped-v1"        # `database/at_rest.py`'s WRAPPED_TAG
MAX_KEY_FILE_SIZE = 4096
MATCH, NEW, CHANGED = "match", "new", "changed"


class IdentityError(ValueError):
    """A key or known-hosts file that cannot be used as it is."""


# ------------------------------------------------------------ server key


def load_or_create_server_key(data_dir):
    """The server's KeyPair from `data_dir/server_key`, created on first use."""
    path = os.path.join(data_dir, KEY_FILE_NAME)
    try:
        return _load_key_file(path)
    except FileNotFoundError:
        pass
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    return _create_key_file(path)


def load_server_identity(data_dir):
    """(public key, KeyPair or None): the server key as far as the daemon may have it.

    A plain `server_key` (created on first use) gives both, and its public half
    is written to `server_key.pub`. One wrapped under the data dir's database
    key (issue 15: the database process wraps it) gives only the public half,
    from `server_key.pub`: the private key is the database process's alone."""
    path = os.path.join(data_dir, KEY_FILE_NAME)
    if is_wrapped_key_file(path):
        return load_public_file(data_dir), None
    keypair = load_or_create_server_key(data_dir)
    public_path = os.path.join(data_dir, PUBLIC_FILE_NAME)
    if not os.path.exists(public_path):
        temp_path = _write_private_temp(data_dir, _encode_public_file(keypair.public))
        os.replace(temp_path, public_path)
        fsync_path(data_dir)
    return keypair.public, keypair


def daemon_key(data_dir):
    """The daemon's server key: the KeyPair, or only its public half (a
    `DelegatedKey`) when the database process keeps it wrapped."""
    public, keypair = load_server_identity(data_dir)
    return keypair or DelegatedKey(public)


def is_wrapped_key_file(path):
    try:
        with open(path, "rb") as key_file:
            return key_file.read(len(WRAPPED_PREFIX)) == WRAPPED_PREFIX
    except FileNotFoundError:
        return False
    except OSError as error:
        raise IdentityError(f"{path}: cannot read the server key ({error.strerror})") from None


def load_public_file(data_dir):
    path = os.path.join(data_dir, PUBLIC_FILE_NAME)
    try:
        with open(path, "rb") as public_file:
            fields = public_file.read(MAX_KEY_FILE_SIZE).split()
    except OSError as error:
        raise IdentityError(f"{path}: cannot read the server's public key "
                            f"({error.strerror}); the server key beside it is encrypted "
                            "at rest, and the daemon needs its public half") from None
    public = _b64decode(fields[1]) if len(fields) == 2 and \
        fields[0] == PUBLIC_FILE_TAG.encode("ascii") else None
    if public is None or len(public) != DHLEN:
        raise IdentityError(f"{path}: not a valid Parley public key (expected one line "
                            f"'{PUBLIC_FILE_TAG} <base64 of 32 bytes>')")
    return public


def _encode_public_file(public):
    return f"{PUBLIC_FILE_TAG} {base64.b64encode(bytes(public)).decode('ascii')}\n".encode()


def decode_private_key(path, content):
    """The private key in a (plain) key file's content, or IdentityError."""
    return _decode_key_file(path, content)


def _load_key_file(path):
    try:
        with open(path, "rb") as key_file:
            content = key_file.read(MAX_KEY_FILE_SIZE + 1)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise IdentityError(f"{path}: cannot read the server key "
                            f"({error.strerror})") from None
    return KeyPair(_decode_key_file(path, content))


def _decode_key_file(path, content):
    """The private key in a key file, or IdentityError (content never shown)."""
    fields = content.split() if len(content) <= MAX_KEY_FILE_SIZE else []
    if len(fields) == 2 and fields[0] == KEY_FILE_TAG.encode("ascii"):
        private = _b64decode(fields[1])
        if private is not None and len(private) == DHLEN:
            return private
    raise IdentityError(
        f"{path}: not a valid Parley server key (expected one line "
        f"'{KEY_FILE_TAG} <base64 of 32 bytes>'). The file was left untouched; "
        "restore it from a backup, or move it away to generate a new key "
        "(clients will then see the server key as changed).")


def _encode_key_file(private):
    return f"{KEY_FILE_TAG} {base64.b64encode(private).decode('ascii')}\n".encode()


def _create_key_file(path):
    keypair = KeyPair.generate()
    temp_path = _write_private_temp(os.path.dirname(path) or ".",
                                    _encode_key_file(keypair.private))
    try:
        os.link(temp_path, path)  # atomic, and never replaces an existing key
    except FileExistsError:
        return _load_key_file(path)  # another process created it first
    finally:
        os.unlink(temp_path)
    fsync_path(os.path.dirname(path) or ".")
    return keypair


def _write_private_temp(directory, data):
    """A new file (mode 0600) holding `data`, flushed to disk; its path."""
    temp_path = os.path.join(directory,
                             f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temp_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp_path)
        raise
    os.close(fd)
    return temp_path


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_path(path):
    """fsync a file or a directory by its path (the database package uses it too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------ fingerprints


def fingerprint(public_key):
    """SSH-style fingerprint: "SHA256:" + unpadded base64 of sha256(key)."""
    digest = hashlib.sha256(bytes(public_key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_id(host, port):
    """The known-hosts name of a server: "host:port", IPv6 in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _b64decode(text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# ------------------------------------------------------------ known hosts


def default_known_hosts_path():
    """$XDG_CONFIG_HOME/parley/known_hosts, else ~/.config/parley/known_hosts."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "parley", "known_hosts")


class KnownHosts:
    """The client's remembered server keys, read fresh on every call.

    When a host appears on several lines the last one wins, so `add()` after
    the user accepts a changed key takes effect.
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def entries(self):
        """{host_id: public key} for every entry in the file."""
        try:
            with open(self.path, "rb") as hosts_file:
                lines = hosts_file.read().splitlines()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise IdentityError(f"{self.path}: cannot read ({error.strerror})") from None
        entries = {}
        for number, line in enumerate(lines, start=1):
            entry = self._parse_line(number, line)
            if entry is not None:
                entries[entry[0]] = entry[1]
        return entries

    def _parse_line(self, number, line):
        text = line.strip()
        if not text or text.startswith(b"#"):
            return None
        fields = text.split()
        key = _b64decode(fields[1]) if len(fields) == 2 else None
        if key is None or len(key) != DHLEN or not _valid_host_id(fields[0]):
            raise IdentityError(f"{self.path}, line {number}: malformed entry "
                                "(expected 'host:port base64key')")
        return fields[0].decode("utf-8"), key

    def known_key(self, host_id):
        """The remembered public key of `host_id`, or None."""
        return self.entries().get(host_id)

    def check(self, host_id, public_key):
        """"match", "new" (never seen) or "changed" (a different key is pinned)."""
        _check_public_key(public_key)
        known = self.known_key(host_id)
        if known is None:
            return NEW
        return MATCH if hmac.compare_digest(known, bytes(public_key)) else CHANGED

    def add(self, host_id, public_key):
        """Pin `public_key` for `host_id` (appends one line; file mode 0600)."""
        _check_public_key(public_key)
        if not _valid_host_id(host_id.encode("utf-8")):
            raise IdentityError(f"not a usable known-hosts name: {host_id!r}")
        if self.known_key(host_id) == bytes(public_key):
            return
        key_text = base64.b64encode(bytes(public_key)).decode("ascii")
        _append_line(self.path, f"{host_id} {key_text}\n".encode("utf-8"))


def _valid_host_id(name):
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(text) and not text.startswith("#") and text.split() == [text]


def _check_public_key(public_key):
    if not isinstance(public_key, (bytes, bytearray)) or len(public_key) != DHLEN:
        raise IdentityError(f"a server public key must be {DHLEN} bytes")


def _append_line(path, line):
    _make_private_dirs(os.path.dirname(path))
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # the last entry lacked its newline
        _write_all(fd, line)  # one write with O_APPEND: never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private_dirs(directory):
    """Create `directory` and any missing parents with mode 0700."""
    if not directory or os.path.isdir(directory):
        return
    _make_private_dirs(os.path.dirname(os.path.abspath(directory)))
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        return
    os.chmod(directory, 0o700)

