"""The database key: where it comes from, first-start creation, rekey.

The daemon hands the database process a *source* (`{"file": --key-file,
"hex": $PARLEY_DB_KEY, "credentials": $CREDENTIALS_DIRECTORY}`); only this
process reads the key itself. `prepare(data_dir, source)` runs before the
databases open: it loads the key (a key file of 64 hex digits, created 0400
with `os.urandom` on a first start, which is logged with the warning that
losing it loses the data; the env var's hex; or the systemd credential
`parley-db-key`), finishes or undoes an interrupted conversion or rekey, and
encrypts a plaintext data dir when a key is given (`Modules/database/at_rest.py`).
Without any key it logs one warning that the data dir is not encrypted at rest.

`rekey(data_dir, key_file, old_key)` (the server stopped) writes a new key to
`KEY_FILE.new`, converts every file to it, and renames the new key file into
place after the commit point, before the commit file goes; `prepare` then
finishes it (the commit file names the key's check value, so the key file and
the databases can never disagree without it being noticed).

Talks to: the file system (the key file, the data dir) and at_rest. Never
logs a key. How it fails: `at_rest.AtRestError` with one sentence; a wrong,
missing or malformed key changes no file.
"""

import logging
import os

from Modules.database import at_rest
from Modules.database.at_rest import AtRestError

log = logging.getLogger(__name__)

ENV_NAME = "PARLEY_DB_KEY"
CREDENTIAL_NAME = "parley-db-key"
HOW_TO_ENCRYPT = (f"start with --key-file PATH (outside the data dir), ${ENV_NAME} or the "
                  f"systemd credential {CREDENTIAL_NAME} to encrypt it")


def parse_key(text, where):
    """32 bytes from 64 hex digits (spaces and newlines around them allowed)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            text = ""
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != at_rest.KEY_SIZE or len(text) != 2 * at_rest.KEY_SIZE:
        raise AtRestError(f"{where} is malformed: it must hold one database key, "
                          f"{2 * at_rest.KEY_SIZE} hex digits")
    return key


def load(data_dir, source):
    """The key from `source`, or None; creates a missing key file if it may."""
    source = source or {}
    if source.get("file") and source.get("hex"):
        raise AtRestError(f"give one database key: --key-file or ${ENV_NAME}, not both")
    if source.get("file"):
        return _from_key_file(data_dir, os.path.abspath(source["file"]))
    if source.get("hex"):
        return parse_key(source["hex"], f"${ENV_NAME}")
    credential = os.path.join(source.get("credentials") or "", CREDENTIAL_NAME)
    if source.get("credentials") and os.path.exists(credential):
        return parse_key(_read(credential), f"the credential {credential}")
    return None


def _from_key_file(data_dir, path):
    data_dir = os.path.abspath(data_dir)
    if _inside(data_dir, path):
        raise AtRestError(f"the key file {path} is inside the data dir {data_dir}; it must "
                          "be kept elsewhere, or the data dir alone would open")
    if os.path.exists(path):
        return parse_key(_read(path), f"the key file {path}")
    if at_rest.has_encrypted_file(data_dir):
        raise AtRestError(f"the key file {path} does not exist but the data dir {data_dir} "
                          "is encrypted at rest: give the key file it was encrypted with")
    key = os.urandom(at_rest.KEY_SIZE)
    write_key_file(path, key)
    log.warning("created the database key file %s (mode 0400): the data dir %s is "
                "encrypted with it; losing this file loses the data, so keep a copy "
                "apart from the data dir's backups", path, data_dir)
    return key


def _inside(directory, path):
    return os.path.commonpath([directory, path]) == directory


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(1024)
    except OSError as error:
        raise AtRestError(f"cannot read the key file {path}: {error.strerror}") from None


def write_key_file(path, key):
    """A new key file, 0400, fsynced with its directory; never over an old one."""
    directory = os.path.dirname(path) or "."
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except OSError as error:
        raise AtRestError(f"cannot create the key file {path}: {error.strerror}") from None
    try:
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    at_rest.fsync_path(directory)


def prepare(data_dir, source, log_file=None):
    """The key to open `data_dir` with (None: plaintext), the dir made consistent.
    With a key, a `log_file` inside the data dir is refused: the log names users."""
    data_dir = os.path.abspath(data_dir)
    key = load(data_dir, source)
    if key is not None and log_file and _inside(data_dir, os.path.abspath(log_file)):
        raise AtRestError(f"the log file {log_file} is inside the data dir {data_dir}, which "
                          "is encrypted at rest; the log names users: keep it elsewhere")
    key = _finish_rekey(data_dir, (source or {}).get("file"), key)
    committed = at_rest.committed_check_value(data_dir)
    if committed is not None and committed != at_rest.key_check_value(key):
        raise AtRestError(f"the data dir {data_dir} was being converted to another key "
                          "than the one given; give that key")
    if at_rest.recover(data_dir) == "forward":
        log.info("finished the interrupted conversion of %s", data_dir)
    if key is None:
        encrypted = at_rest.encrypted_file(data_dir)
        if encrypted:
            raise AtRestError(f"{encrypted} is not a plain SQLite file: the data dir is "
                              "encrypted at rest but no database key was given "
                              f"({HOW_TO_ENCRYPT.split(' to ')[0]}), or the file is not "
                              "Parley's; refusing to touch it")
        log.warning("the data dir %s is not encrypted at rest; %s", data_dir, HOW_TO_ENCRYPT)
        return None
    if at_rest.has_plaintext_file(data_dir):
        log.warning("encrypting the plaintext data dir %s at rest (once)", data_dir)
        at_rest.convert(data_dir, None, key)
    if at_rest.wrap_in_place(data_dir, "server_key", key):   # the daemon made it plain
        log.info("the server key in %s is now kept under the database key", data_dir)
    return key


def _finish_rekey(data_dir, key_file, key):
    """A `KEY_FILE.new` left by rekey: in place if its conversion committed."""
    if not key_file:
        return key
    pending = os.path.abspath(key_file) + ".new"
    if not os.path.exists(pending):
        return key
    if at_rest.committed_check_value(data_dir) is None:   # before the commit point
        os.unlink(pending)
        return key
    new_key = parse_key(_read(pending), f"the key file {pending}")
    if at_rest.committed_check_value(data_dir) == at_rest.key_check_value(new_key):
        os.replace(pending, os.path.abspath(key_file))
        at_rest.fsync_path(os.path.dirname(os.path.abspath(key_file)))
        return new_key
    return key      # committed to another key: prepare says so


def rekey(data_dir, key_file, old_key):
    """Every database and the key file moved to a new key (the server stopped)."""
    data_dir, key_file = os.path.abspath(data_dir), os.path.abspath(key_file)
    pending = key_file + ".new"
    if os.path.exists(pending):
        os.unlink(pending)
    new_key = os.urandom(at_rest.KEY_SIZE)
    write_key_file(pending, new_key)

    def key_file_in_place():
        os.replace(pending, key_file)
        at_rest.fsync_path(os.path.dirname(key_file))

    at_rest.convert(data_dir, old_key, new_key, after_replace=key_file_in_place)
    log.warning("rekeyed the data dir %s; the new key is in %s", data_dir, key_file)
    return new_key
