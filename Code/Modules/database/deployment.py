"""What the servers of one deployment share through PostgreSQL (issue 18).

Several Parley servers behind one TCP balancer are one service to a
client: a client pins one server key, and the login ticket it was given
by server A must resume its session on server B after A fails. So:

* **The ticket secret** (which signs login tickets, `auth.issue_ticket`)
  is the deployment's, not the server's: the first database process to
  start with an empty database stores its own (random, 32 bytes) in
  `pw.deployment`, and every later one adopts the stored one. It lives
  beside the password hashes, in the schema only the monitors read, and
  never leaves the database process.
* **The server key** is distributed by the operator, as for an SSH host
  key behind a balancer: copy `server_key` and `server_key.pub` from the
  first server's data dir into each new server's data dir before its
  first start (docs/postgresql.md). The first server records the key's
  fingerprint; a server started with another key is refused at start
  with both fingerprints named, instead of making clients behind the
  balancer see a changed key at random.
* **The storage key** (which wraps each file's own key, `filestore.py`)
  is copied the same way (`storage_key`), and checked the same way by a
  check value that is not the key; the files themselves are in a directory
  every server mounts (`--files-dir`), so a file uploaded through one
  server downloads through any other.

With SQLite (one server) none of this runs: the ticket secret is the
daemon's, and the key is the data dir's.

Talks to: the storage connection of the single writer (one job at start).
How it fails: a mismatched key raises `StorageError` with one sentence;
database errors propagate to the start-up, which stops.
"""

import hashlib

from Modules.database.schema import StorageError
from Modules.identity import fingerprint

def _shared(db, name, proposed):
    """The stored value of `name`, storing `proposed` if there is none yet."""
    db.execute("INSERT INTO pw.deployment (name, value) VALUES (?, ?) "
               "ON CONFLICT (name) DO NOTHING", (name, proposed))
    return bytes(db.execute("SELECT value FROM pw.deployment WHERE name = ?",
                            (name,)).fetchone()[0])


def storage_key_check(storage_key):
    """A public check value of a storage key (never the key): 16 hex digits."""
    return hashlib.sha256(b"parley storage key check\x00" + storage_key).hexdigest()[:16]


def _same(db, name, ours, what, files):
    theirs = _shared(db, name, ours.encode("ascii")).decode("ascii")
    if theirs != ours:
        raise StorageError(
            f"this server's {what} ({ours}) is not the one the other servers of this "
            f"database use ({theirs}); copy {files} from another server's data dir into "
            "this one's (docs/postgresql.md)")


def join(db, ticket_secret, public_key, storage_key=None):
    """Writer job at start: the deployment's ticket secret, after checking that this
    server's key, and its storage key (which wraps every file's key), are the
    deployment's (the first server's become them). The table `pw.deployment` is
    `backends/pg_schema.py`'s."""
    _same(db, "server_key_fingerprint", fingerprint(public_key), "key",
          "server_key and server_key.pub")
    if storage_key is not None:
        _same(db, "storage_key_check", storage_key_check(storage_key), "storage key",
              "storage_key")
    return _shared(db, "ticket_secret", bytes(ticket_secret))
