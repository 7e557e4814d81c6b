"""Security promises checked end to end, across modules (see docs/SECURITY.md).

A relay between the real client and the real server records every byte:
no password, subject or body may appear in it. A whole session at
`--debug` leaves no password, hash, key or body in the server's log.
Changing the argon2 parameters upgrades a user's hash at the next login.
The server's static private key is in the database process's memory and
nowhere in a live login process's (nor a spare's, nor the forkserver's),
read through /proc/PID/mem.
"""

import base64
import sqlite3

from Modules import identity
from Tests.support import RawClient, run_client, wait_until
from Tests.support.relay import Relay

SECRET_PASSWORD = "Tr0ub4dor&3-horse"
SECRET_BODY = "the launch code is 0000-SECRET-BODY"
SECRET_SUBJECT = "SUBJECT-NOBODY-SHOULD-SEE"


class Via:
    """Just enough of a ServerProcess for run_client: another port, same tmp dir."""

    def __init__(self, server, port):
        self.port, self.tmp_path = port, server.tmp_path


def test_a_relay_recording_every_byte_sees_no_password_or_body(server):
    relay = Relay(server.port, record=True)
    via = Via(server, relay.port)
    assert run_client(via, "bob", [], password=SECRET_PASSWORD, create=True)[0] == 0
    code, _, _ = run_client(via, "alice", [f'send bob "{SECRET_SUBJECT}" "{SECRET_BODY}"'],
                            password=SECRET_PASSWORD, create=True)
    assert code == 0
    code, objects, _ = run_client(via, "bob", ["inbox", "read 1"], password=SECRET_PASSWORD)
    assert code == 0
    assert any(o.get("body") == SECRET_BODY for o in objects)   # it did travel
    relay.close()
    recorded = bytes(relay.recorded)
    assert len(recorded) > 1000
    for secret in (SECRET_PASSWORD, SECRET_BODY, SECRET_SUBJECT, "alice"):
        assert secret.encode() not in recorded
        assert secret.encode("utf-16-le") not in recorded


def test_debug_logs_hold_no_secrets(make_server):
    server = make_server("--debug")
    run_client(server, "bob", [], password=SECRET_PASSWORD, create=True)
    run_client(server, "alice", [f'send bob "{SECRET_SUBJECT}" "{SECRET_BODY}"'],
               password=SECRET_PASSWORD, create=True)
    run_client(server, "bob", ["read 1", "delete 1"], password=SECRET_PASSWORD)
    run_client(server, "bob", [], password="a wrong password guess")
    server.stop()
    log = server.log()
    assert "logged in" in log            # the log is really there
    key_line = open(f"{server.data_dir}/server_key").read().split()[1]
    private = base64.b64decode(key_line)
    for secret in (SECRET_PASSWORD, "a wrong password guess", SECRET_BODY, "$argon2",
                   key_line, private.hex(), base64.b64encode(private).decode()):
        assert secret not in log, f"secret found in the log: {secret[:6]}..."


def _stored_hash(data_dir, name):
    db = sqlite3.connect(f"file:{data_dir}/passwords.db?mode=ro", uri=True)
    try:
        return db.execute("SELECT hash FROM passwords WHERE username = ?", (name,)).fetchone()[0]
    finally:
        db.close()


def test_changed_argon2_parameters_upgrade_the_hash_at_login(make_server):
    first = make_server(subdir="same", env={"PARLEY_ARGON2_TIME_COST": "1"})
    assert run_client(first, "carol", [], password=SECRET_PASSWORD, create=True)[0] == 0
    first.stop()
    old = _stored_hash(first.data_dir, "carol")
    assert old.startswith("$argon2id$") and ",t=1," in old
    second = make_server(subdir="same", env={"PARLEY_ARGON2_TIME_COST": "2"})
    assert run_client(second, "carol", [], password=SECRET_PASSWORD)[0] == 0
    second.stop()
    new = _stored_hash(second.data_dir, "carol")
    assert new != old and ",t=2," in new


def memory_holds(pid, needle):
    """Whether the readable memory of process `pid` holds `needle` anywhere."""
    with open(f"/proc/{pid}/maps") as maps:
        regions = [line.split() for line in maps]
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as memory:
        for fields in regions:
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5] == "[vvar]"):
                continue
            start, end = (int(value, 16) for value in fields[0].split("-"))
            try:
                memory.seek(start)
                if needle in memory.read(end - start):
                    return True
            except OSError:
                continue          # a region that went or cannot be read
    return False


def test_the_static_key_is_held_by_the_database_process_and_no_login_process(server):
    key = identity.load_or_create_server_key(server.data_dir).private
    waiting = RawClient(server.port)          # handshake done, at the username prompt
    waiting.handshake()
    wait_until(lambda: server.pids_titled("parley: login"), message="a live login process")
    (database,) = server.pids_titled("parley: database")
    assert memory_holds(database, key)           # the scan finds the key where it is
    logins = server.pids_titled("parley: login")
    others = [pid for pid, title in server.processes().items()
              if "forkserver" in title or title.startswith("parley: spare")]
    for pid in logins + others:
        assert not memory_holds(pid, key), server.processes()[pid]
    waiting.close()
