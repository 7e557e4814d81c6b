"""Storage calls made the way the database process makes them, for tests.

`run_committed(db, function, *args)` runs one `Modules.database.storage`
function in its own transaction and SAVEPOINT (rolled back alone if it
raises), then COMMITs, as the single writer does for every job;
`make_users` and `send_stored` build a little state with it, at the fixed
time `T0`.
"""

from Modules.database import storage

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
