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

With SQLite (one server) none of this runs: the ticket secret is the
daemon's, and the key is the data dir's.

Talks to: the storage connection of the single writer (one job at start).
How it fails: a mismatched key raises `StorageError` with one sentence;
database errors propagate to the start-up, which stops.
"""

from Modules.database.schema import StorageError
from Modules.identity import fingerprint

def _shared(db, name, proposed):
    """The stored value of `name`, storing `proposed` if there is none yet."""
    db.execute("INSERT INTO pw.deployment (name, value) VALUES (?, ?) "
               "ON CONFLICT (name) DO NOTHING", (name, proposed))
    return bytes(db.execute("SELECT value FROM pw.deployment WHERE name = ?",
                            (name,)).fetchone()[0])


def join(db, ticket_secret, public_key):
    """Writer job at start: the deployment's ticket secret, after checking that this
    server's key is the deployment's (the first server's becomes it). The table
    `pw.deployment` is `backends/pg_schema.py`'s."""
    ours = fingerprint(public_key).encode("ascii")
    theirs = _shared(db, "server_key_fingerprint", ours)
    if theirs != ours:
        raise StorageError(
            f"this server's key ({ours.decode()}) is not the one the other servers of "
            f"this database use ({theirs.decode()}); copy server_key and server_key.pub "
            "from another server's data dir into this one's (docs/postgresql.md)")
    return _shared(db, "ticket_secret", bytes(ticket_secret))
