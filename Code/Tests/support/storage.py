"""Storage calls made the way the database process makes them, for tests.

`run_committed(db, function, *args)` runs one `Modules.database.storage`
function in its own transaction and SAVEPOINT (rolled back alone if it
raises), then COMMITs, as the single writer does for every job;
`make_users` and `send_stored` build a little state with it, at the fixed
time `T0`. `change_account_offline` and `broadcast_offline` write what the operator's
suspend, reset-password and broadcast leave behind straight into a stopped
server's files (a test cannot open an admin connection: only the daemon's
pid may).
"""

import time

from Modules.database import administration, auth, backends, storage

T0 = 1_700_000_000.0


def run_committed(db, function, *args):
    """One operation in its own transaction and savepoint, as the writer runs it."""
    db.execute("BEGIN")
    db.execute("SAVEPOINT op")
    try:
        result = function(db, *args)
    except BaseException:
        db.execute("ROLLBACK TO op")
        db.execute("RELEASE op")
        db.execute("COMMIT")
        raise
    db.execute("RELEASE op")
    db.execute("COMMIT")
    return result


def make_users(db, *names):
    for name in names:
        run_committed(db, storage.create_account, name, f"$argon2id$fake${name}", T0)


def send_stored(db, sender, recipient, client_id=None, subject="hi", body="secret body"):
    return run_committed(db, storage.store_message, sender, recipient, subject, body,
                         client_id, T0 + 1)



def offline(place, function, *args):
    """One storage (or administration) function on the storage of a server that is
    not running, committed as the writer would; its result. `place`: its data dir,
    or the ServerProcess (then its `--storage`, SQLite or PostgreSQL, is used)."""
    backend = backends.open_backend(_storage_option(place), getattr(place, "data_dir", place))
    db = backend.open_unlocked()
    try:
        return run_committed(db, function, *args)
    finally:
        backend.close(db)


def _storage_option(place):
    args = list(getattr(place, "args", ()))
    return args[args.index("--storage") + 1] if "--storage" in args else None


def change_account_offline(data_dir, username, suspended=None, one_time_password=None):
    """What the operator's suspend, or reset-password with `one_time_password`
    (which must then be changed at the next login), leaves in the files."""
    if suspended is not None:
        offline(data_dir, administration.set_suspended, username, suspended, time.time())
    if one_time_password is not None:
        hasher = auth.PasswordHasher(memory_kib=1024, time_cost=1)
        hashed = hasher.context.hash(one_time_password)
        hasher.close()
        offline(data_dir, storage.set_password_hash, username, hashed, time.time(), True)


def broadcast_offline(data_dir, text):
    """The operator's broadcast, stored for every account as the admin role does it."""
    return offline(data_dir, administration.store_broadcast, text, time.time())
