"""Crash safety of the real server: SIGKILL anything, lose nothing, repeat nothing.

What it checks (docs/RELIABILITY.md lists each promise beside its test):
* a short seeded random run of `Tests/support/crash_harness.py`: clients sending and
  receiving while database, user and login processes and the whole daemon
  tree are killed; every acknowledged send delivered exactly once, in
  acceptance order, nothing phantom, the three files consistent;
* the same across two servers on one PostgreSQL (issue 18), PostgreSQL itself
  killed and restarted among the kills;
* SIGKILL of the database process in the middle of bursts of sends (each
  client keeps 8 Sends in flight);
* a recipient whose client freezes (SIGSTOP, or stops reading) loses
  nothing, and gets exactly once what it never acknowledged;
* a recipient logging in while messages keep arriving sees backlog and live
  messages in acceptance order with no gap and no repeat;
* account deletion stopped after each of its steps (and with step 2 torn
  across files), finished by the real server's start-up recovery;
* one transaction torn across the files (SQLite in WAL mode commits
  attached files one by one: users.db first), recovered at start-up, or
  torn by a COMMIT that fails on a later file (a full disk);
* the supervisor: a database process killed while the daemon restarts it,
  a killed forkserver, a killed daemon (nothing may outlive it).

What it talks to: real daemons (`make_server`, or the harness's own
`ServerProcess`es), always killed by process group at the end, even on
failure. Crash images are prepared with `Modules.database.storage` on the closed
files, with no server running, as test_storage.py does.

Seeds: PARLEY_CRASH_SEED overrides the random run's seed to reproduce a run.
No timing assertions: waits are bounded, and only outcomes are checked.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import pytest

from Modules.database import storage
from Tests.support import CODE_DIR, BatchClient, parent_of, wait_until
from Tests.support.crash_harness import (
    AccountMissing,
    Disconnected,
    Link,
    Session,
    log_in,
    run_crash_test,
    stop_and_list_survivors,
)
from Tests.support.storage import run_committed

FILES = ("users.db", "passwords.db", "messages.db")
SEED = int(os.environ.get("PARLEY_CRASH_SEED", "20261121"))


# -- the harness, short and seeded ------------------------------------------------

def assert_promise_kept(report):
    assert report.ok(), report.figures()


def test_random_kills_of_every_kind_lose_and_repeat_nothing(tmp_path):
    report = run_crash_test(tmp_path, users=6, messages=150, kills=6, seed=SEED,
                            timeout=90)
    assert_promise_kept(report)
    for kind in ("database", "user", "tree"):      # these always find a victim
        assert report.kills[kind] >= 1, report.figures()


def test_database_killed_during_bursts_of_sends_stores_each_acknowledged_once(tmp_path):
    report = run_crash_test(tmp_path, users=4, messages=400, kills=3, seed=SEED + 1,
                            kinds=("database",), relogin_chance=0.0, pipeline=8,
                            timeout=90)
    assert_promise_kept(report)
    # Kill points are counted in acknowledgements; a fast server can finish the
    # last sends while the killer waits, so only the first kill is certain.
    assert report.kills["database"] >= 1, report.figures()


def test_random_kills_with_the_data_dir_encrypted_lose_and_repeat_nothing(tmp_path):
    """SQLCipher under synchronous=FULL keeps the same promise (issue 15)."""
    key_file = str(tmp_path / "parley.key")
    report = run_crash_test(tmp_path, users=4, messages=120, kills=4,
                            seed=SEED + 2, kinds=("database", "user", "tree"),
                            timeout=90, server_args=("--key-file", key_file))
    assert_promise_kept(report)
    assert report.kills["database"] + report.kills["tree"] >= 1, report.figures()
    with open(os.path.join(tmp_path, "data", "messages.db"), "rb") as handle:
        assert not handle.read(16).startswith(b"SQLite format 3")   # it was encrypted


def test_random_kills_while_sessions_park_and_wake_lose_and_repeat_nothing(tmp_path):
    """Issue 16: with a tiny --park-after, sessions park and wake all the time while
    the daemon tree, user processes and the database are killed at random points."""
    report = run_crash_test(tmp_path, users=6, messages=150, kills=6, seed=SEED + 3,
                            kinds=("database", "user", "tree"), timeout=120,
                            server_args=("--park-after", "0.05"))
    assert_promise_kept(report)
    logs = "".join(open(path, errors="replace").read()
                   for path in glob.glob(os.path.join(tmp_path, "**", "*.log"), recursive=True))
    assert " parked" in logs and "woken (message)" in logs, report.figures()
    assert report.kills["database"] + report.kills["tree"] >= 1, report.figures()


def test_random_kills_across_two_servers_on_postgresql_lose_and_repeat_nothing(
        tmp_path, pg_dsn, postgres):
    """Issue 18: two servers on one PostgreSQL, clients on either (any reconnect may go
    to the other one); the database process, user processes and a whole server tree of
    either killed, and PostgreSQL itself killed and restarted."""
    report = run_crash_test(tmp_path, users=6, messages=200, kills=4, seed=SEED + 4,
                            kinds=("postgres", "database", "user", "tree"), ordered=True,
                            timeout=120, servers=2, storage=pg_dsn, postgres=postgres)
    assert_promise_kept(report)
    assert report.kills["postgres"] >= 1, report.figures()        # the first kill
    assert report.counts["logins"] > 6, report.figures()


# -- a frozen recipient --------------------------------------------------------------

def send_many(sender, to, count, tag):
    """Send `count` messages; their ids in acceptance order."""
    ids = []
    for i in range(count):
        answer = sender.send_message(to, f"{tag} {i}", client_id=f"{tag}-{i}")
        assert answer.op == "Result", answer
        ids.append(answer.data["id"])
    return ids


def test_a_frozen_client_gets_everything_again_exactly_once(server):
    frozen = BatchClient(server, "bob", create=True)
    try:
        frozen.wait_type("ready")
        os.kill(frozen.proc.pid, signal.SIGSTOP)      # connection open, nothing read
        alice = Session(server.port, "alice", create=True)
        ids = send_many(alice, "bob", 10, "frozen")
        again = Session(server.port, "bob")
        assert [m["id"] for m in again.backlog] == ids
        assert again.ack_confirmed(ids)
        again.logout()
        assert Session(server.port, "bob").backlog == []
    finally:
        frozen.kill()
    assert consistency_after_stop(server) == ([], [])


def test_what_a_recipient_never_acknowledged_comes_again_once(server):
    alice = Session(server.port, "alice", create=True)
    bob = Session(server.port, "bob", create=True)
    first = send_many(alice, "bob", 5, "early")
    shown = [bob.next_message()["id"] for _ in first]
    assert shown == first
    assert bob.ack_confirmed(first[:2])
    later = send_many(alice, "bob", 5, "late")         # bob stops reading: frozen
    again = Session(server.port, "bob")
    assert [m["id"] for m in again.backlog] == first[2:] + later
    assert again.ack_confirmed(first[2:] + later)
    again.logout()
    assert Session(server.port, "bob").backlog == []
    bob.close()
    assert consistency_after_stop(server) == ([], [])


# -- logging in while messages keep arriving --------------------------------------------

class ContinuousSender:
    """alice sends to bob, one after another, until told to stop (at most 1000)."""

    def __init__(self, port):
        self.session = Session(port, "alice")
        self.ids, self.stop, self.error = [], threading.Event(), None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for i in range(1000):
                if self.stop.is_set():
                    return
                answer = self.session.send_message("bob", f"live {i}", f"live-{i}")
                assert answer.op == "Result", answer
                self.ids.append(answer.data["id"])
        except BaseException as error:  # noqa: BLE001 -- reported by finish()
            self.error = error

    def finish(self):
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error
        self.session.logout()
        return self.ids


def one_round(port, live_wanted):
    """Log in as bob, take the backlog and a few live messages, ack them all."""
    bob = Session(port, "bob")
    got = [m["id"] for m in bob.backlog]
    for _ in range(live_wanted):
        message = bob.next_message()
        assert message is not None, "no live message while alice keeps sending"
        got.append(message["id"])
    assert bob.ack_confirmed(got)
    bob.logout()
    return got


def test_logging_in_during_a_stream_sees_it_in_order_no_gap_no_repeat(server):
    Session(server.port, "bob", create=True).logout()
    alice = Session(server.port, "alice", create=True)
    backlog = send_many(alice, "bob", 20, "before")
    alice.logout()
    sender = ContinuousSender(server.port)
    received = []
    try:
        for _ in range(3):
            received += one_round(server.port, live_wanted=5)
    finally:
        sent = backlog + sender.finish()
    bob = Session(server.port, "bob")
    received += [m["id"] for m in bob.backlog]
    assert received == sent       # acceptance order, no gap, no repeat
    assert bob.ack_confirmed([m["id"] for m in bob.backlog])
    bob.logout()
    assert consistency_after_stop(server) == ([], [])


# -- crash images prepared on the files ----------------------------------------------------

def offline(data_dir, *calls):
    """Run storage calls on the closed files, each in its own committed transaction."""
    db = storage.open_databases(data_dir)
    try:
        return [run_committed(db, fn, *args) for fn, *args in calls]
    finally:
        storage.close_databases(db)


def torn(data_dir, fn, *args, committed=("users.db",)):
    """Apply one transaction, then keep only the files in `committed` from it.

    SQLite in WAL mode commits attached files one after another (users.db,
    then passwords.db, then messages.db, each synced), so a SIGKILL during
    COMMIT can leave users.db with the transaction and the others without.
    """
    before = tempfile.mkdtemp(prefix="pcrash-before-")
    try:
        for name in FILES:
            shutil.copy2(os.path.join(data_dir, name), before)
        offline(data_dir, (fn, *args))
        for name in FILES:
            if name not in committed:
                shutil.copy2(os.path.join(before, name), os.path.join(data_dir, name))
    finally:
        shutil.rmtree(before)


def consistency_after_stop(server):
    assert server.stop() == 0, server.log()[-2000:]
    db = storage.open_databases(server.data_dir)
    try:
        return storage.check_consistency(db), storage.accounts_being_deleted(db)
    finally:
        storage.close_databases(db)


def login_outcome(port, name):
    """'welcome', 'free' (no account) or 'refused' (half an account)."""
    link = Link(port)
    try:
        log_in(link, name, allow_create=False)
        return "welcome"
    except AccountMissing:
        return "free"
    except Exception:  # noqa: BLE001 -- a refused login is the outcome here
        return "refused"
    finally:
        link.close()



# -- account deletion stopped after each step ------------------------------------------

def deletion_steps(name):
    return [(storage.mark_deleting, name),
            (storage.bounce_and_clear_inbox, name, time.time()),
            (storage.remove_password, name),
            (storage.remove_account, name)]


VICTIMS = {"vone": 1, "vtwo": 2, "vthree": 3, "vfour": 4, "vtorn": "2 torn"}


def populate_victims(port):
    """Each victim: an unread message from alice and bob, a read one, one it sent."""
    alice = Session(port, "alice", create=True)
    bob = Session(port, "bob", create=True)
    for victim in VICTIMS:
        victim_session = Session(port, victim, create=True)
        alice.send_message(victim, f"unread {victim}", f"a-unread-{victim}")
        bob.send_message(victim, f"unread {victim}", f"b-unread-{victim}")
        read_id = alice.send_message(victim, f"read {victim}", f"a-read-{victim}").data["id"]
        assert victim_session.request("Read", id=read_id).op == "Result"
        victim_session.send_message("alice", f"from {victim}", f"from-{victim}")
        victim_session.logout()
    alice.logout()
    bob.logout()


def stop_deletions(data_dir):
    """vone..vfour stop after step 1..4; vtorn's step 2 commits users.db only."""
    for victim, done in VICTIMS.items():
        steps = deletion_steps(victim)
        if done == "2 torn":
            offline(data_dir, steps[0])
            torn(data_dir, *steps[1])
        else:
            offline(data_dir, *steps[:done])


def bounces(backlog):
    return Counter((m["original_to"], m["subject"]) for m in backlog if m["kind"] == "bounce")


def test_deletion_stopped_after_each_step_is_finished_at_start(make_server):
    first = make_server(subdir="deletion")
    populate_victims(first.port)
    assert first.stop() == 0
    stop_deletions(first.data_dir)
    server = make_server(subdir="deletion")           # start-up recovery runs here
    expected = Counter({(victim, f"unread {victim}"): 1 for victim in VICTIMS})
    for sender in ("alice", "bob"):
        session = Session(server.port, sender)
        assert bounces(session.backlog) == expected, sender     # each exactly once
        assert session.ack_confirmed([m["id"] for m in session.backlog])
        session.logout()
    assert all(login_outcome(server.port, victim) == "free" for victim in VICTIMS)
    problems, deleting = consistency_after_stop(server)
    assert (problems, deleting) == ([], [])


# -- one transaction torn across the files -----------------------------------------------

def prepare_torn_image(make_server, operation):
    """alice, bob and one message waiting for bob; then `operation` torn."""
    first = make_server(subdir="torn")
    alice = Session(first.port, "alice", create=True)
    Session(first.port, "bob", create=True).logout()
    waiting = alice.send_message("bob", "waiting", "waiting-1").data["id"]
    alice.logout()
    assert first.stop() == 0
    data_dir = first.data_dir
    db = storage.open_databases(data_dir)
    alice_hash = storage.password_hash(db, "alice")
    storage.close_databases(db)
    calls = {
        "create_account": (storage.create_account, "newbie", alice_hash, time.time()),
        "store_message": (storage.store_message, "alice", "bob", "torn send", "hi",
                          "torn-1", time.time()),
        "mark_delivered": (storage.mark_delivered, "bob", [waiting], time.time()),
    }
    torn(data_dir, *calls[operation])
    return waiting


def check_after_torn(server, operation, waiting):
    if operation == "create_account":
        assert login_outcome(server.port, "newbie") in ("welcome", "free"), \
            "the account 'newbie' is half there: it exists but cannot log in"
    elif operation == "store_message":
        alice = Session(server.port, "alice")
        retry = alice.send_message("bob", "torn send", "torn-1", body="hi")
        assert retry.op == "Result"
        alice.logout()
        bob = Session(server.port, "bob")
        assert [m["subject"] for m in bob.backlog].count("torn send") == 1
        bob.logout()
    else:
        bob = Session(server.port, "bob")
        assert [m["id"] for m in bob.backlog] == [waiting]   # the Ack was not kept
        assert bob.ack_confirmed([waiting])
        bob.logout()


@pytest.mark.parametrize("operation", ["create_account", "store_message", "mark_delivered"])
def test_a_transaction_torn_across_the_files_is_repaired_at_start(make_server, operation):
    waiting = prepare_torn_image(make_server, operation)
    server = make_server(subdir="torn")
    check_after_torn(server, operation, waiting)
    problems, _ = consistency_after_stop(server)
    assert problems == []


FULL_PASSWORDS_FILE = """
import asyncio, json, os, resource, signal, sys
from Modules.database import storage
from Modules.database.writer import CommitFailed, SingleWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # as the database process does
data_dir = sys.argv[1]

async def main():
    repaired = []
    writer = SingleWriter(asyncio.get_running_loop(),
                          lambda: storage.open_databases(data_dir), storage.close_databases,
                          repair=storage.repair_torn_writes, on_repaired=repaired.append)
    writer.start()
    await writer.submit(storage.create_account, "alice", "h", 1.0)
    for i in range(80):                          # passwords.db-wal outgrows users.db-wal
        await writer.submit(storage.set_password_hash, "alice", "h" * 3000 + str(i), 2.0)
    users_wal = os.path.getsize(os.path.join(data_dir, "users.db-wal"))
    assert os.path.getsize(os.path.join(data_dir, "passwords.db-wal")) > users_wal + 16 * 4120
    room = users_wal + 8 * 4120                  # users.db's part of the commit fits
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
    try:
        await writer.submit(storage.create_account, "newbie", "h", 3.0)
        failed = False
    except CommitFailed:
        failed = True
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    exists = await writer.submit(storage.user_exists, "newbie")   # the next batch repairs
    problems = await writer.submit(storage.check_consistency)
    writer.stop()
    print(json.dumps({"failed": failed, "problems": problems, "newbie_exists": exists,
                      "repaired": repaired}))

asyncio.run(main())
"""


def test_a_commit_failing_on_a_later_file_leaves_no_half_account(tmp_path):
    """A full disk (here a file-size limit) only for passwords.db during COMMIT."""
    done = subprocess.run([sys.executable, "-c", FULL_PASSWORDS_FILE, str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60, cwd=CODE_DIR)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["failed"], "the limit did not make the COMMIT fail"
    assert outcome["problems"] == [] and outcome["newbie_exists"] is False
    assert outcome["repaired"][0]["torn_accounts"] == ["newbie"]


# -- the supervisor itself ----------------------------------------------------------------

@pytest.fixture
def runtime_dir():
    """A short TMPDIR for the daemon's runtime dir (its socket), removed after the
    server is killed (request it before make_server)."""
    directory = tempfile.mkdtemp(prefix="pcrash-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def db_socket_identity(runtime_dir):
    """(inode, change time) of the database socket: a new bind changes it."""
    (path,) = glob.glob(os.path.join(runtime_dir, "parley-*", "jail", "db.sock"))
    info = os.stat(path)
    return info.st_ino, info.st_ctime_ns


def kill_database_during_its_start(server, runtime_dir):
    """Kill the database, then its successor before it listens; False if too late."""
    socket_before = db_socket_identity(runtime_dir)
    (old,) = server.pids_titled("parley: database")
    os.kill(old, signal.SIGKILL)
    (new, *_) = wait_until(lambda: [p for p in server.pids_titled("parley: database")
                                    if p != old], interval=0.001,
                           message="the database process to be restarted")
    os.kill(new, signal.SIGSTOP)
    if db_socket_identity(runtime_dir) == socket_before:   # it has not bound its socket yet
        os.kill(new, signal.SIGKILL)
        return True
    os.kill(new, signal.SIGCONT)
    return False


def serves(port):
    """True if alice can log in (her account is made if need be) and send."""
    try:
        alice = Session(port, "alice", create=True)
    except Disconnected:
        return False
    try:
        return alice.send_message("alice", "still here", f"still-{time.time()}").op == "Result"
    except Disconnected:
        return False
    finally:
        alice.logout()


def assert_still_serving(server):
    wait_until(lambda: server.proc.poll() is not None or serves(server.port),
               message="the daemon to exit or serve again")
    assert server.proc.poll() is None, f"the daemon exited:\n{server.log()[-1500:]}"


def test_a_database_killed_while_it_restarts_does_not_stop_the_server(runtime_dir,
                                                                     make_server):
    server = make_server(env={"TMPDIR": runtime_dir})
    Session(server.port, "alice", create=True).logout()
    for _ in range(10):
        if kill_database_during_its_start(server, runtime_dir):
            break
        Session(server.port, "alice").logout()    # it came up; try again
    else:
        pytest.skip("never caught the database process before it listened")
    assert_still_serving(server)


def forkserver_pid(server):
    """The daemon's forkserver (a child it forked a moment ago has the same
    command line until it names itself, but its parent is the forkserver)."""
    (pid,) = [pid for pid, title in server.processes().items()
              if "multiprocessing.forkserver" in title and parent_of(pid) == server.proc.pid]
    return pid



def kernel_wait_channel(pid):
    with open(f"/proc/{pid}/wchan") as wchan:
        return wchan.read().strip()


def test_a_forkserver_dying_while_a_process_starts_does_not_stop_the_server(runtime_dir,
                                                                           make_server):
    server = make_server(env={"TMPDIR": runtime_dir})
    try:
        wait_until(lambda: kernel_wait_channel(server.proc.pid) == "do_epoll_wait",
                   timeout=5.0, message="the idle daemon's wait channel")
    except AssertionError:
        pytest.skip("this kernel does not show where a process waits")
    forkserver = forkserver_pid(server)
    os.kill(forkserver, signal.SIGSTOP)
    waiting = socket.create_connection(("127.0.0.1", server.port))
    wait_until(lambda: kernel_wait_channel(server.proc.pid) not in ("do_epoll_wait", "0"),
               message="the daemon to wait for the forkserver")    # inside Process.start()
    os.kill(forkserver, signal.SIGKILL)
    waiting.close()
    assert_still_serving(server)


def test_a_killed_forkserver_leaves_one_database_and_nothing_behind(runtime_dir,
                                                                    make_server):
    server = make_server(env={"TMPDIR": runtime_dir})
    alice = Session(server.port, "alice", create=True)
    os.kill(forkserver_pid(server), signal.SIGKILL)
    bob = Session(server.port, "bob", create=True)      # needs a new forkserver
    assert bob.send_message("alice", "after", "after-1").op == "Result"
    assert len(server.pids_titled("parley: database")) == 1, server.processes()
    pushed = alice.next_message()
    assert pushed is not None and pushed["subject"] == "after", "not pushed to alice"
    assert stop_and_list_survivors(server) == (0, {})


def processes_after(server, seconds):
    deadline = time.monotonic() + seconds
    while server.processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.processes()


def test_a_killed_daemon_takes_its_children_with_it(runtime_dir, make_server):
    server = make_server(env={"TMPDIR": runtime_dir})
    Session(server.port, "alice", create=True)            # a user process lives
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    survivors = processes_after(server, 5.0)
    assert survivors == {}, f"still running without their daemon: {survivors}"
    left = glob.glob(os.path.join(runtime_dir, "parley-*"))   # (pymp-* is multiprocessing's)
    assert left == [], "the daemon's runtime dir was left behind"
