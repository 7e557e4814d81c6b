"""The data dir encrypted at rest: SQLCipher connections, conversion and rekey.

`connect(path, key=None, **kw)` is the one way a database file is opened:
with a 32-byte `key` an `sqlcipher3` connection keyed with the raw key
(`PRAGMA key = "x'..'"`, so no key derivation per connection), without one
a plain `sqlite3` connection. `attach(db, path, schema, key)` attaches a
second file the same way. `check_key(db, schema, label)` reads sqlite_master,
so a wrong key is one clear `AtRestError` instead of a later surprise.
`ERRORS`/`DATABASE_ERRORS` catch both libraries' exceptions and `row_type(db)`
is the Row class that fits a connection.

Conversion (a plaintext data dir started with a key) and rekey (one key to
another) share one atomic procedure, `convert(data_dir, old_key, new_key)`:

1. each `X.db` is checkpointed and exported (`sqlcipher_export` through
   `ATTACH ... KEY`) into `X.db.new` beside it, which is fsynced, and
   `storage_key` is rewrapped (`wrap`, AES-256-GCM) into `storage_key.new`;
2. the commit point: `at_rest.commit` is written, fsynced and renamed into
   place (its text says which key the new files use: its check value);
3. each `X.db.new` replaces `X.db` (its old `-wal`/`-shm` removed first),
   then `storage_key.new` replaces `storage_key` (rekey's `after_replace`
   then puts the new key file in place);
4. `at_rest.commit` is removed.

`recover(data_dir)` runs before every open: with `at_rest.commit` present it
finishes step 3 and 4 (roll forward), without it removes any `X.db.new`
(roll back). A SIGKILL anywhere leaves the old files intact or the new ones
finished. `PARLEY_AT_REST_DIE_AFTER=N` (tests only) makes the procedure end
the process after its step N, so the tests can kill it at every step.

Talks to: the data dir's files and SQLite/SQLCipher only. How it fails:
`AtRestError` with one sentence naming the file; no file is changed before
the commit point except the `.new` files, which recovery removes.
"""

import hashlib
import os
import sqlite3

import sqlcipher3
from Crypto.Cipher import AES

from Modules.identity import fsync_path   # the one fsync by path, here for the package

KEY_SIZE = 32
NAMES = ("users", "passwords", "messages")
COMMIT_NAME = "at_rest.commit"
SQLITE_MAGIC = b"SQLite format 3\x00"
ERRORS = (sqlite3.Error, sqlcipher3.Error)
DATABASE_ERRORS = (sqlite3.DatabaseError, sqlcipher3.DatabaseError)
DIE_AFTER_ENV = "PARLEY_AT_REST_DIE_AFTER"
WRAPPED_FILES = ("storage_key", "server_key")   # small key files kept wrapped under the db key
WRAPPED_TAG = b"parley-wrapped-v1"


class AtRestError(Exception):
    """The data dir cannot be opened or converted with the key given."""


class _PlainConnection(sqlite3.Connection):
    """sqlite3's connection, able to carry the single writer's `deferred`
    totals for its batch (`statistics.DeferredTotals`; None elsewhere)."""
    deferred = None


class _CipherConnection(sqlcipher3.Connection):
    """The same for SQLCipher."""
    deferred = None


def connect(path, key=None, **kw):
    """A connection to `path`: SQLCipher keyed with `key`, or plain SQLite."""
    if key is None:
        return sqlite3.connect(path, factory=_PlainConnection, **kw)
    db = sqlcipher3.connect(path, factory=_CipherConnection, **kw)
    db.execute("PRAGMA cipher_log_level = NONE")     # errors reach us as exceptions
    db.execute(f"PRAGMA key = \"{_key_literal(key)}\"")
    return db


def attach(db, path, schema, key=None):
    """ATTACH `path` as `schema`, with the same key when there is one."""
    if key is None:
        db.execute(f"ATTACH DATABASE ? AS {schema}", (path,))
        return
    try:
        db.execute(f"ATTACH DATABASE ? AS {schema} KEY ?", (path, _key_literal(key)))
    except DATABASE_ERRORS:      # SQLCipher reads the first page as it attaches
        raise AtRestError(f"the database key does not open {path}: wrong key, "
                          "or the file is not a Parley database") from None


def _key_literal(key):
    if len(key) != KEY_SIZE:
        raise AtRestError(f"a database key is {KEY_SIZE} bytes, not {len(key)}")
    return f"x'{key.hex()}'"


def check_key(db, schema, label):
    """AtRestError unless the key opens `schema` (it reads sqlite_master)."""
    try:
        db.execute(f"SELECT count(*) FROM {schema}.sqlite_master").fetchone()
    except DATABASE_ERRORS:
        raise AtRestError(f"the database key does not open {label}: wrong key, "
                          "or the file is not a Parley database") from None


def row_type(db):
    """The Row class of `db`'s library (a PostgreSQL connection names its own)."""
    own = getattr(db, "row_class", None)
    if own is not None:
        return own
    return sqlcipher3.Row if isinstance(db, sqlcipher3.Connection) else sqlite3.Row


def key_check_value(key):
    """A short public fingerprint of a key (for the commit file): not the key."""
    if key is None:
        return "plain"
    return hashlib.sha256(b"parley at-rest check\x00" + key).hexdigest()[:16]


def is_plaintext(path):
    """True if `path` is a plain SQLite file (missing or empty counts as neither)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except FileNotFoundError:
        return False


def encrypted_file(data_dir):
    """The first database file in `data_dir` that holds data but no SQLite header."""
    for name in NAMES:
        path = os.path.join(data_dir, f"{name}.db")
        if os.path.exists(path) and os.path.getsize(path) > 0 and not is_plaintext(path):
            return path
    return None


def has_encrypted_file(data_dir):
    return encrypted_file(data_dir) is not None


def has_plaintext_file(data_dir):
    return any(is_plaintext(os.path.join(data_dir, f"{name}.db")) for name in NAMES)


# -- small files wrapped under the database key ------------------------------

def wrap(key, name, content):
    """`content` of the data dir's file `name` sealed with AES-GCM under `key`."""
    nonce = os.urandom(12)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(name.encode("ascii"))
    sealed, tag = cipher.encrypt_and_digest(content)
    return WRAPPED_TAG + b" " + (nonce + sealed + tag).hex().encode("ascii") + b"\n"


def is_wrapped(content):
    return content.startswith(WRAPPED_TAG + b" ")


def unwrap(key, name, content, label):
    """The content `wrap` sealed; AtRestError for a wrong key or a damaged file."""
    try:
        raw = bytes.fromhex(content[len(WRAPPED_TAG) + 1:].decode("ascii").strip())
        cipher = AES.new(key, AES.MODE_GCM, nonce=raw[:12])
        cipher.update(name.encode("ascii"))
        return cipher.decrypt_and_verify(raw[12:-16], raw[-16:])
    except (ValueError, UnicodeDecodeError):
        raise AtRestError(f"the database key does not open {label}: wrong key, "
                          "or the file is damaged") from None


def wrap_in_place(data_dir, name, key):
    """`name` wrapped under `key` if it is still plain: a new file renamed over it."""
    path = os.path.join(data_dir, name)
    if not os.path.exists(path):
        return False
    with open(path, "rb") as handle:
        if is_wrapped(handle.read(4096)):
            return False
    _rewrap(data_dir, name, None, key)
    os.replace(path + ".new", path)
    fsync_path(data_dir)
    return True


def _rewrap(data_dir, name, old_key, new_key):
    """`name.new` beside `name`: its content under `new_key` (None: plain)."""
    path = os.path.join(data_dir, name)
    with open(path, "rb") as handle:
        content = handle.read(4096)
    if old_key is not None and is_wrapped(content):   # (a server_key the daemon just made is plain)
        content = unwrap(old_key, name, content, path)
    if new_key is not None:
        content = wrap(new_key, name, content)
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the atomic conversion ---------------------------------------------------

def convert(data_dir, old_key, new_key, after_replace=None):
    """Re-write every existing database under `new_key` (None: plaintext).

    `after_replace()`, if given, runs past the commit point once every file
    is replaced, before the commit file goes (rekey puts the new key file in
    place there, so recovery can still tell which key the files need)."""
    existing = [name for name in NAMES
                if os.path.exists(_path(data_dir, name))
                and os.path.getsize(_path(data_dir, name)) > 0]
    small = [name for name in WRAPPED_FILES if os.path.exists(os.path.join(data_dir, name))]
    step = 0
    for name in existing:
        _export(_path(data_dir, name), old_key, new_key)
        step = _step_done(step)
    for name in small:
        _rewrap(data_dir, name, old_key, new_key)
        step = _step_done(step)
    _write_commit(data_dir, new_key)
    step = _step_done(step)
    for name in existing:
        _replace(data_dir, name)
        step = _step_done(step)
    for name in small:
        _replace_small(data_dir, name)
        step = _step_done(step)
    if after_replace is not None:
        after_replace()
        step = _step_done(step)
    _remove_commit(data_dir)
    _step_done(step)


def recover(data_dir):
    """Finish a conversion past its commit point, or undo one before it."""
    commit = os.path.join(data_dir, COMMIT_NAME)
    if os.path.exists(commit):
        for name in NAMES:
            if os.path.exists(_path(data_dir, name) + ".new"):
                _replace(data_dir, name)
        for name in WRAPPED_FILES:
            if os.path.exists(os.path.join(data_dir, name) + ".new"):
                _replace_small(data_dir, name)
        _remove_commit(data_dir)
        return "forward"
    undone = False
    leftovers = [_path(data_dir, name) + suffix for name in NAMES
                 for suffix in (".new", ".new-journal")]
    for path in leftovers + [os.path.join(data_dir, name) + ".new" for name in WRAPPED_FILES]:
        try:
            os.unlink(path)
            undone = True
        except FileNotFoundError:
            pass
    return "back" if undone else None


def committed_check_value(data_dir):
    """The key check value of a conversion past its commit point, else None."""
    try:
        with open(os.path.join(data_dir, COMMIT_NAME), encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _path(data_dir, name):
    return os.path.join(data_dir, f"{name}.db")


def _export(path, old_key, new_key):
    new_path = path + ".new"
    for leftover in ("", "-journal"):
        if os.path.exists(new_path + leftover):
            os.unlink(new_path + leftover)
    db = sqlcipher3.connect(path, isolation_level=None)
    db.execute("PRAGMA cipher_log_level = NONE")
    try:
        if old_key is not None:
            db.execute(f"PRAGMA key = \"{_key_literal(old_key)}\"")
        check_key(db, "main", path)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        literal = _key_literal(new_key) if new_key is not None else ""
        db.execute("ATTACH DATABASE ? AS converted KEY ?", (new_path, literal))
        db.execute("SELECT sqlcipher_export('converted')")
        for pragma in ("user_version", "application_id"):
            value = db.execute(f"PRAGMA main.{pragma}").fetchone()[0]
            db.execute(f"PRAGMA converted.{pragma} = {int(value)}")
        db.execute("DETACH DATABASE converted")
    except sqlcipher3.DatabaseError as error:
        raise AtRestError(f"cannot convert {path}: {error}") from None
    finally:
        db.close()
    os.chmod(new_path, 0o600)
    fsync_path(new_path)


def _replace(data_dir, name):
    path = _path(data_dir, name)
    for suffix in ("-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    os.replace(path + ".new", path)
    fsync_path(data_dir)


def _replace_small(data_dir, name):
    os.replace(os.path.join(data_dir, name) + ".new", os.path.join(data_dir, name))
    fsync_path(data_dir)


def _write_commit(data_dir, new_key):
    final = os.path.join(data_dir, COMMIT_NAME)
    temporary = final + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key_check_value(new_key).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    fsync_path(data_dir)


def _remove_commit(data_dir):
    try:
        os.unlink(os.path.join(data_dir, COMMIT_NAME))
    except FileNotFoundError:
        pass
    fsync_path(data_dir)


def _step_done(step):
    """Step `step + 1` is done; the test hook may end the process here."""
    step += 1
    if os.environ.get(DIE_AFTER_ENV) == str(step):
        os._exit(86)
    return step
