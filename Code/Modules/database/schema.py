"""Opens, checks, creates and migrates Parley's three SQLite files.

Talks to: the local file system (the data directory) and SQLite, nothing
else. Only the database process imports it, through `Modules.database.storage`.

`open_reader(data_dir)` returns a read-only connection for a reader thread.
`open_databases(data_dir)` returns one `sqlite3.Connection` (autocommit
mode, usable from the one writer thread) whose main schema is `users.db`,
with `passwords.db` attached as `pw` and `messages.db` as `msg`, all three
in WAL mode with `synchronous=FULL`. `close_databases(db)` checkpoints and
closes it.

Safety at open:
* The data directory is created with mode 0700; an existing one that is
  group- or world-accessible is tightened to 0700 (and a warning logged).
* Missing files are created empty with mode 0600 before SQLite sees them,
  and the process umask is 0o077 while SQLite creates `-wal`, `-shm` and
  journal files, so those are 0600 too (the umask is restored afterwards).
* Every existing file is checked before anything is created or written:
  it must start with the SQLite header and carry Parley's application_id
  (0x50524C59, "PRLY") in it, its user_version must not be newer than this
  code knows, and `PRAGMA quick_check` must pass. A new file gets its
  application_id written while still in rollback-journal mode, so the id
  always sits in the main file's header, where the raw check can see it.

How it fails: any refusal raises `StorageError` with a message naming the
file and directory and the reason, and the file is left as it was (no
pragma is written to a file that has not passed the checks). SQLite errors
during opening are turned into `StorageError` too. Messages never contain
data from the files beyond header numbers and SQLite's own error text.

Migrations: `MIGRATIONS[name]` is the list of steps of that file; step i
takes user_version i to i + 1 and runs in its own transaction together
with the new user_version, so a failed step leaves the file at the last
good version.
"""

import logging
import os
import stat

from Modules.database import at_rest

log = logging.getLogger(__name__)

APPLICATION_ID = 0x50524C59  # "PRLY"
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
APPLICATION_ID_OFFSET = 68

# file name (without .db) -> schema name on the connection; main first.
SCHEMAS = {"users": "main", "passwords": "pw", "messages": "msg"}

USERS_V1 = """
CREATE TABLE main.users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deleting')),
    created_at REAL,
    undelivered INTEGER NOT NULL DEFAULT 0,
    messages_sent INTEGER NOT NULL DEFAULT 0,
    messages_received INTEGER NOT NULL DEFAULT 0,
    logins INTEGER NOT NULL DEFAULT 0,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    last_login REAL,
    last_failed_login REAL
);
CREATE INDEX main.users_deleting ON users(username) WHERE state = 'deleting';
"""

PASSWORDS_V1 = """
CREATE TABLE pw.passwords (
    username TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    updated_at REAL
);
"""

MESSAGES_V1 = """
CREATE TABLE msg.messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sent_at REAL NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('message', 'bounce')),
    note TEXT,
    original_to TEXT,
    delivered_at REAL,
    read_at REAL
);
CREATE INDEX msg.messages_by_recipient ON messages(recipient, id);
CREATE INDEX msg.messages_undelivered ON messages(recipient, id)
    WHERE delivered_at IS NULL;
CREATE INDEX msg.messages_unread ON messages(recipient)
    WHERE read_at IS NULL;
CREATE TABLE msg.sent_ids (
    sender TEXT NOT NULL,
    client_id TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    bounced INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sender, client_id)
);
CREATE INDEX msg.sent_ids_by_age ON sent_ids(created_at);
"""

# Version 2: the operator's statistics, the IP ledger, settings, suspension,
# one-time passwords (issue 12).
USERS_V2 = """
ALTER TABLE main.users ADD COLUMN logoffs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE main.users ADD COLUMN messages_bounced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE main.users ADD COLUMN broadcasts_received INTEGER NOT NULL DEFAULT 0;
ALTER TABLE main.users ADD COLUMN last_login_address TEXT;
ALTER TABLE main.users ADD COLUMN last_failed_address TEXT;
ALTER TABLE main.users ADD COLUMN suspended_at REAL;
ALTER TABLE main.users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
CREATE TABLE main.ledger (
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_success REAL,
    PRIMARY KEY (username, address)
);
CREATE INDEX main.ledger_by_age ON ledger(last_seen);
CREATE TABLE main.settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    changed_at REAL,
    changed_by TEXT
);
CREATE TABLE main.totals (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
);
"""

# Version 2: a third kind of message, the operator's broadcast. SQLite cannot
# change a CHECK constraint in place: the table is rebuilt, ids and the
# AUTOINCREMENT sequence kept (an id is never used twice).
MESSAGES_V2 = """
CREATE TABLE msg.messages_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sent_at REAL NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('message', 'bounce', 'broadcast')),
    note TEXT,
    original_to TEXT,
    delivered_at REAL,
    read_at REAL
);
INSERT INTO msg.messages_v2 SELECT id, sender, recipient, sent_at, subject, body, kind,
    note, original_to, delivered_at, read_at FROM msg.messages;
INSERT INTO msg.sqlite_sequence (name, seq)
    SELECT 'messages_v2', seq FROM msg.sqlite_sequence WHERE name = 'messages'
    AND NOT EXISTS (SELECT 1 FROM msg.sqlite_sequence WHERE name = 'messages_v2');
UPDATE msg.sqlite_sequence SET seq = max(seq,
    (SELECT seq FROM msg.sqlite_sequence WHERE name = 'messages')) WHERE name = 'messages_v2';
DROP TABLE msg.messages;
ALTER TABLE msg.messages_v2 RENAME TO messages;
CREATE INDEX msg.messages_by_recipient ON messages(recipient, id);
CREATE INDEX msg.messages_undelivered ON messages(recipient, id)
    WHERE delivered_at IS NULL;
CREATE INDEX msg.messages_unread ON messages(recipient)
    WHERE read_at IS NULL;
"""

# Version 3: people and conversations (issue 13): presence, blocks, names of
# deleted accounts kept back, the mailbox's size for its limits.
USERS_V3 = """
ALTER TABLE main.users ADD COLUMN presence_hidden INTEGER NOT NULL DEFAULT 0;
ALTER TABLE main.users ADD COLUMN last_seen REAL;
ALTER TABLE main.users ADD COLUMN stored_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE main.users ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE main.blocks (
    owner TEXT NOT NULL,
    blocked TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, blocked)
) WITHOUT ROWID;
CREATE INDEX main.blocks_by_blocked ON blocks(blocked);
CREATE TABLE main.reserved_names (
    username TEXT PRIMARY KEY,
    deleted_at REAL NOT NULL
);
"""

# Version 3: one row holds both copies of a message, the recipient's and the
# sender's, each kept until its owner deletes it (the row goes with the last
# one); the full-text index of subjects and bodies (FTS5, external content,
# detail=none and columnsize=0: it answers "which rows hold these words", no
# phrases or ranks). The index is brought up to date in batches, off the Send's
# transaction (`mailbox.index_pending`; `text_index_state` says how far), because
# an FTS5 insert in every small commit cost more than the rest of a relayed
# message (docs/PERFORMANCE.md 4.03). Existing messages keep a sender's copy.
MESSAGES_V3 = """
ALTER TABLE msg.messages ADD COLUMN recipient_copy INTEGER NOT NULL DEFAULT 1;
ALTER TABLE msg.messages ADD COLUMN sender_copy INTEGER NOT NULL DEFAULT 0;
UPDATE msg.messages SET sender_copy = 1 WHERE kind = 'message';
CREATE INDEX msg.messages_by_sender ON messages(sender, id) WHERE sender_copy;
CREATE INDEX msg.messages_by_pair ON messages(sender, recipient, id);
CREATE VIRTUAL TABLE msg.messages_text USING fts5(
    subject, body, content='messages', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2', detail=none, columnsize=0);
INSERT INTO msg.messages_text(messages_text) VALUES ('rebuild');
CREATE TABLE msg.text_index_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_through INTEGER NOT NULL
);
INSERT INTO msg.text_index_state (id, indexed_through)
    SELECT 1, coalesce(max(id), 0) FROM msg.messages;
CREATE TRIGGER msg.messages_text_delete AFTER DELETE ON messages
    WHEN old.id <= (SELECT indexed_through FROM text_index_state) BEGIN
    INSERT INTO messages_text(messages_text, rowid, subject, body)
        VALUES ('delete', old.id, old.subject, old.body);
END;
"""

# Version 4: files between people (issue 14). One row per file sent: who to whom,
# the name its sender gave, its size and SHA-256, its key wrapped by the storage
# key (the content is in `files/<id>.blob`, `Modules/database/filestore.py`), and
# its state: uploading (invisible to everyone), offered, downloaded, declined.
# `stored` says whether the content is still on disk; `message_id` is the message
# that offered it. The users' quota is the sum of what they sent that is stored.
MESSAGES_V4 = """
CREATE TABLE msg.files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    note TEXT,
    wrapped_key BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('uploading', 'offered', 'downloaded',
                                         'declined')),
    stored INTEGER NOT NULL DEFAULT 1,
    message_id INTEGER,
    created_at REAL NOT NULL,
    changed_at REAL
);
CREATE INDEX msg.files_by_recipient ON files(recipient, id);
CREATE INDEX msg.files_by_sender ON files(sender, id);
CREATE INDEX msg.files_uploading ON files(id) WHERE state = 'uploading';
"""

# Version 5: the rest of a file's life (issue 14, `Modules/database/file_upkeep.py`):
# two more states, "returned" (back to its sender: not downloaded in time, or its
# recipient's account deleted) and "deleted" (its recipient deleted the offer
# before downloading it), so the sender's `sent` can tell them apart; SQLite
# cannot change a CHECK, so the table is rebuilt, ids and id sequence kept. The
# offer's message is looked up by `message_id`, and the upkeep walks stored files.
MESSAGES_V5 = """
CREATE TABLE msg.files_v5 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    note TEXT,
    wrapped_key BLOB NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('uploading', 'offered', 'downloaded',
                                         'declined', 'returned', 'deleted')),
    stored INTEGER NOT NULL DEFAULT 1,
    message_id INTEGER,
    created_at REAL NOT NULL,
    changed_at REAL
);
INSERT INTO msg.files_v5 SELECT id, sender, recipient, name, size, sha256, note,
    wrapped_key, state, stored, message_id, created_at, changed_at FROM msg.files;
INSERT INTO msg.sqlite_sequence (name, seq)
    SELECT 'files_v5', seq FROM msg.sqlite_sequence WHERE name = 'files'
    AND NOT EXISTS (SELECT 1 FROM msg.sqlite_sequence WHERE name = 'files_v5');
UPDATE msg.sqlite_sequence SET seq = max(seq,
    (SELECT seq FROM msg.sqlite_sequence WHERE name = 'files')) WHERE name = 'files_v5';
DROP TABLE msg.files;
ALTER TABLE msg.files_v5 RENAME TO files;
CREATE INDEX msg.files_by_recipient ON files(recipient, id);
CREATE INDEX msg.files_by_sender ON files(sender, id);
CREATE INDEX msg.files_uploading ON files(id) WHERE state = 'uploading';
CREATE INDEX msg.files_by_message ON files(message_id);
CREATE INDEX msg.files_stored ON files(id) WHERE stored;
"""

MIGRATIONS = {
    "users": [USERS_V1, USERS_V2, USERS_V3],
    "passwords": [PASSWORDS_V1],
    "messages": [MESSAGES_V1, MESSAGES_V2, MESSAGES_V3, MESSAGES_V4, MESSAGES_V5],
}


class StorageError(Exception):
    """The databases cannot be used as asked; the message says why."""


def open_databases(data_dir, key=None):
    """One connection to all three files, checked, created and migrated;
    encrypted with `key` (32 bytes, `Modules/database/at_rest.py`) if given."""
    data_dir = os.path.abspath(os.fspath(data_dir))
    _prepare_directory(data_dir)
    check_writable(data_dir)
    paths = {name: os.path.join(data_dir, f"{name}.db") for name in SCHEMAS}
    new_files = {name for name in SCHEMAS if _check_raw_file(name, paths[name], key)}
    old_umask = os.umask(0o077)
    try:
        _create_empty_files(paths, new_files, data_dir)
        db = _connect(paths, new_files, data_dir, key)
    finally:
        os.umask(old_umask)
    _tighten_file_modes(paths)
    return db


def open_reader(data_dir, key=None):
    """A read-only connection to the three files, for a reader thread.

    The writer must have opened (checked, created, migrated) them first.
    `PRAGMA query_only` makes SQLite refuse any write on it; in WAL mode it
    sees every transaction committed before each of its statements starts.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    paths = {name: os.path.join(data_dir, f"{name}.db") for name in SCHEMAS}
    db = at_rest.connect(paths["users"], key, isolation_level=None, check_same_thread=False)
    try:
        for name, schema in SCHEMAS.items():
            if schema != "main":
                at_rest.attach(db, paths[name], schema, key)
        db.execute("PRAGMA query_only = ON")
    except at_rest.AtRestError as error:
        db.close()
        raise StorageError(str(error)) from None
    except at_rest.DATABASE_ERRORS as error:
        db.close()
        raise StorageError(f"cannot open the databases in {data_dir} to read: {error}") \
            from error
    return db


def check_writable(data_dir):
    """StorageError unless this process may write in `data_dir` (even as root)."""
    if not os.access(data_dir, os.W_OK):   # false for root too on a read-only mount
        raise StorageError(f"the data directory {data_dir} is read-only or not writable "
                           "by this user; Parley must be able to write there")


def close_databases(db):
    """Checkpoint every WAL into its file (and truncate it), then close."""
    try:
        for schema in SCHEMAS.values():
            db.execute(f"PRAGMA {schema}.wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def file_label(name, path):
    """How messages name a file: 'users.db in /data/dir'."""
    return f"{name}.db in {os.path.dirname(path)}"


# -- the directory and the raw files -----------------------------------------

def _prepare_directory(data_dir):
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    info = os.stat(data_dir)
    if not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"data directory {data_dir} is not a directory")
    if stat.S_IMODE(info.st_mode) != 0o700:
        log.warning("tightening data directory %s from mode %o to 0700",
                    data_dir, stat.S_IMODE(info.st_mode))
        os.chmod(data_dir, 0o700)


def _check_raw_file(name, path, key=None):
    """Refuse a file that is not Parley's; True if it is missing or empty.
    An encrypted file's header is checked after its key opened it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    label = file_label(name, path)
    if not stat.S_ISREG(info.st_mode):
        raise StorageError(f"{label} is not a regular file; refusing to touch it")
    if info.st_size == 0:
        _refuse_orphan_wal(label, path)
        return True
    with open(path, "rb") as handle:
        header = handle.read(HEADER_SIZE)
    if key is not None and header.startswith(SQLITE_MAGIC):
        raise StorageError(f"{label} is not encrypted but a database key was given; "
                           f"refusing to mix plaintext and encrypted files")
    if key is None:
        _check_header(label, header)
    return False


def _refuse_orphan_wal(label, path):
    wal = path + "-wal"
    if os.path.exists(wal) and os.path.getsize(wal) > 0:
        raise StorageError(f"{label} is empty but has a write-ahead log "
                           f"it did not write; refusing to touch it")


def _check_header(label, header):
    if len(header) < HEADER_SIZE or not header.startswith(SQLITE_MAGIC):
        raise StorageError(f"{label} is not an SQLite database (file is not a "
                           f"database); refusing to touch it")
    found = int.from_bytes(header[APPLICATION_ID_OFFSET:APPLICATION_ID_OFFSET + 4], "big")
    if found != APPLICATION_ID:
        raise StorageError(f"{label} is not a Parley database (application_id "
                           f"0x{found:08X}, expected 0x{APPLICATION_ID:08X}); "
                           f"refusing to touch it")


def _create_empty_files(paths, new_files, data_dir):
    existing = set(SCHEMAS) - new_files
    for name in sorted(new_files):
        fd = os.open(paths[name], os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        if existing:
            log.warning("creating a new %s.db in %s beside existing databases",
                        name, data_dir)


def _tighten_file_modes(paths):
    for path in paths.values():
        for suffix in ("", "-wal", "-shm"):
            try:
                if stat.S_IMODE(os.lstat(path + suffix).st_mode) & 0o077:
                    os.chmod(path + suffix, 0o600)
            except FileNotFoundError:
                pass


# -- SQLite ------------------------------------------------------------------

def _connect(paths, new_files, data_dir, key=None):
    db = at_rest.connect(paths["users"], key, isolation_level=None,
                         check_same_thread=False)
    try:
        if key is not None and "users" not in new_files:
            at_rest.check_key(db, "main", paths["users"])
        for name, schema in SCHEMAS.items():
            if schema != "main":
                at_rest.attach(db, paths[name], schema, key)
        if key is not None:
            _check_encrypted(db, paths, new_files)
        _check_existing(db, paths, new_files)
        _initialise(db, paths, new_files)
        for name in SCHEMAS:
            _migrate(db, name, paths[name])
    except at_rest.AtRestError as error:
        db.close()
        raise StorageError(str(error)) from None
    except at_rest.DATABASE_ERRORS as error:
        db.close()
        raise StorageError(f"cannot open the databases in {data_dir}: {error}") from error
    except BaseException:
        db.close()
        raise
    return db


def _check_encrypted(db, paths, new_files):
    """The key opens every old file, and each is Parley's (its application_id)."""
    for name, schema in SCHEMAS.items():
        if name in new_files:
            continue
        label = os.path.join(os.path.dirname(paths[name]), f"{name}.db")
        at_rest.check_key(db, schema, label)
        found = db.execute(f"PRAGMA {schema}.application_id").fetchone()[0]
        if found != APPLICATION_ID:
            raise StorageError(f"{label} is not a Parley database (application_id "
                               f"0x{found:08X}); refusing to touch it")


def _check_existing(db, paths, new_files):
    """Version and integrity of every old file, before anything is written."""
    for name, schema in SCHEMAS.items():
        if name in new_files:
            continue
        label = file_label(name, paths[name])
        try:
            _check_version(db, name, schema, label)
            _quick_check(db, schema, label)
        except at_rest.DATABASE_ERRORS as error:
            raise StorageError(f"{label} cannot be read ({error}); "
                               f"refusing to touch it") from error


def _check_version(db, name, schema, label):
    version = schema_version(db, schema)
    known = len(MIGRATIONS[name])
    if version > known:
        raise StorageError(f"{label} has schema version {version}, newer than "
                           f"the {known} this Parley knows; refusing to touch it")


def _quick_check(db, schema, label):
    problems = [row[0] for row in db.execute(f"PRAGMA {schema}.quick_check")]
    if problems != ["ok"]:
        first = " ".join(problems[0].split())[:200]
        raise StorageError(f"{label} failed its integrity check ({len(problems)} "
                           f"problems, first: {first}); refusing to open it")


def _initialise(db, paths, new_files):
    """Stamp new files (before WAL, so the id is in the main file), then WAL."""
    for name, schema in SCHEMAS.items():
        if name in new_files:
            db.execute(f"PRAGMA {schema}.application_id = {APPLICATION_ID}")
        mode = db.execute(f"PRAGMA {schema}.journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"{file_label(name, paths[name])} cannot use "
                               f"write-ahead logging (journal mode {mode})")
        db.execute(f"PRAGMA {schema}.synchronous = FULL")


def schema_version(db, schema):
    """The user_version of one schema ('main', 'pw' or 'msg')."""
    return db.execute(f"PRAGMA {schema}.user_version").fetchone()[0]


def _migrate(db, name, path):
    schema = SCHEMAS[name]
    steps = MIGRATIONS[name]
    for version in range(schema_version(db, schema), len(steps)):
        _run_step(db, schema, steps[version], version + 1, file_label(name, path))


def _run_step(db, schema, sql, new_version, label):
    script = (f"BEGIN IMMEDIATE;\n{sql}\n;\n"
              f"PRAGMA {schema}.user_version = {new_version};\nCOMMIT;")
    try:
        db.executescript(script)
    except at_rest.DATABASE_ERRORS as error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StorageError(f"migrating {label} to schema version {new_version} "
                           f"failed: {error}") from error
    log.info("migrated %s to schema version %d", label, new_version)
