"""Storage calls made the way the database process makes them, for tests.

`run_committed(db, function, *args)` runs one `Modules.database.storage`
function in its own transaction and SAVEPOINT (rolled back alone if it
raises), then COMMITs, as the single writer does for every job;
`make_users` and `send_stored` build a little state with it, at the fixed
time `T0`. `change_account_offline` writes what the operator's suspend and
reset-password leave behind straight into a stopped server's files.
"""

import os
import sqlite3
import time

from Modules.database import auth, storage

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


def change_account_offline(data_dir, username, suspended=None, one_time_password=None):
    """Suspend an account, or give it a one-time password it must change at its next
    login, in the files of a server that is not running."""
    users = sqlite3.connect(os.path.join(data_dir, "users.db"))
    with users:
        if suspended is not None:
            users.execute("UPDATE users SET suspended_at = ? WHERE username = ?",
                          (time.time() if suspended else None, username))
        if one_time_password is not None:
            users.execute("UPDATE users SET must_change_password = 1 WHERE username = ?",
                          (username,))
    users.close()
    if one_time_password is not None:
        hasher = auth.PasswordHasher(memory_kib=1024, time_cost=1)
        hashed = hasher.context.hash(one_time_password)
        hasher.close()
        passwords = sqlite3.connect(os.path.join(data_dir, "passwords.db"))
        with passwords:
            passwords.execute("UPDATE passwords SET hash = ? WHERE username = ?",
                              (hashed, username))
        passwords.close()
