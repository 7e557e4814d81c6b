"""The daemon as a supervisor: start-up, capacity, shutdown, restarts.

Real daemons on port 0 in temporary data dirs; clients are `RawClient`s.
Covers the readiness line, process titles, `--max-clients`, the SIGTERM
sequence (clients told, exit 0, WAL checkpointed), a restart with nothing
lost, a killed database process being restarted under live sessions, a
corrupt or foreign data file refused at start, and `--fingerprint`. The
server's lifetime: SIGTERM to the daemon or to its whole process group
gives the same clean stop; `--exit-when-idle`; TCP keepalive ending a
client that vanished without closing (in a private network namespace whose
loopback then drops every packet, `Tests/support/netns.py`).
"""

import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

from Modules import identity
from Modules.server.daemon import Daemon
from Modules.server.options import parse_server_options
from Modules.wire import channel
from Modules.wire.framing import CLOSED
from Tests.support import (
    CODE_DIR,
    SERVER,
    WAIT,
    RawClient,
    child_env,
    netns,
    next_message,
    proc_stat,
    request,
    send,
    session,
    wait_until,
)


def test_ready_line_and_process_titles(server):
    assert any("listening on 127.0.0.1:" in line for line in server.stdout_lines)
    titles = server.processes().values()
    assert "parley: daemon" in titles and "parley: database" in titles


def test_one_over_max_clients_is_told_the_server_is_full(make_server):
    server = make_server("--max-clients", "1")
    first = RawClient(server.port)
    first.handshake()
    second = RawClient(server.port)
    second.write(second.conn.start())
    notice = second.next_event()
    assert isinstance(notice, channel.Notice) and "server full" in notice.text
    first.close()
    wait_until(lambda: _can_log_in(server), message="a free place after the first left")


def _can_log_in(server, sock=None):
    client = RawClient(server.port, sock=sock)
    client.write(client.conn.start())
    event = client.next_event()
    client.close()
    return isinstance(event, channel.HandshakeDone)


def test_sigterm_tells_clients_and_exits_cleanly(server):
    alice, _ = session(server, "alice")
    waiting = RawClient(server.port)
    waiting.handshake()
    assert server.stop(signal.SIGTERM) == 0
    event = alice.next_event()
    assert event.op == "System" and event.data["event"] == "shutdown"
    assert alice.next_event() is CLOSED
    assert waiting.next_event().data["event"] == "shutdown"
    leftovers = [f for f in os.listdir(server.data_dir) if f.endswith("-wal")]
    assert all(os.path.getsize(os.path.join(server.data_dir, f)) == 0 for f in leftovers)


def test_restart_loses_nothing(make_server):
    server = make_server(subdir="run")
    alice, _ = session(server, "alice")
    session(server, "bob")[0].close()
    sent = [send(alice, "bob", f"m{i}").data["id"] for i in range(3)]
    assert server.stop() == 0
    server = make_server(subdir="run")      # same data dir
    _, backlog = session(server, "bob", create=False)
    assert [m["id"] for m in backlog] == sent


def test_killed_database_process_is_restarted_under_live_sessions(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    (old_pid,) = server.pids_titled("parley: database")
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: [p for p in server.pids_titled("parley: database") if p != old_pid],
               message="a new database process")
    result = None
    for _ in range(50):                  # 'unavailable' until the user process reconnects
        result = send(alice, "bob", "after the crash", client_id="after-crash")
        if result.op == "Result":
            break
        assert result.data["code"] == "unavailable"
    assert result.op == "Result"
    message = next_message(bob)
    while message["subject"] != "after the crash":
        message = next_message(bob)
    carol, _ = session(server, "carol")    # new logins work too
    assert request(carol, "Inbox").op == "Result"
    assert "restarting it" in server.log()


def _start_and_fail(tmp_path, data_dir):
    done = subprocess.run([sys.executable, SERVER, "--port", "0", "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=60, env=child_env())
    return done.returncode, done.stderr


def test_foreign_database_file_is_refused_and_kept(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    foreign = data_dir / "messages.db"
    foreign.write_bytes(b"this is somebody's notes, not a database" * 20)
    code, stderr = _start_and_fail(tmp_path, str(data_dir))
    assert code != 0 and "messages.db" in stderr
    assert foreign.read_bytes() == b"this is somebody's notes, not a database" * 20


def test_fingerprint_option_prints_the_key_fingerprint(tmp_path):
    data_dir = str(tmp_path / "data")
    done = subprocess.run([sys.executable, SERVER, "--fingerprint", "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=60, env=child_env())
    key = identity.load_or_create_server_key(data_dir)
    assert done.returncode == 0
    assert done.stdout.strip() == identity.fingerprint(key.public)
    assert "had no server key; this is a new one" in done.stderr     # made just now
    again = subprocess.run([sys.executable, SERVER, "--fingerprint", "--data-dir", data_dir],
                           capture_output=True, text=True, timeout=60, env=child_env())
    assert (again.stdout, again.stderr) == (done.stdout, "")


def test_bad_option_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, SERVER, "--port", "seventy"], capture_output=True,
                          text=True, timeout=60, env=child_env())
    assert done.returncode == 2 and "--port" in done.stderr
    env = child_env({"PARLEY_MAX_CLIENTS": "-3"})
    done = subprocess.run([sys.executable, SERVER], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 2 and "PARLEY_MAX_CLIENTS" in done.stderr


def test_server_key_survives_restarts(make_server):
    first = make_server(subdir="k")
    key_one = RawClient(first.port)
    key_one.handshake()
    first.stop()
    second = make_server(subdir="k")
    key_two = RawClient(second.port)
    key_two.handshake()
    assert key_one.server_key == key_two.server_key
    mode = os.stat(os.path.join(second.data_dir, "server_key")).st_mode & 0o777
    assert mode == 0o600


def test_a_read_only_data_dir_is_refused_at_start_with_a_clear_message(make_server, tmp_path):
    first = make_server(subdir="ro")
    first.stop()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a private mount namespace here (needs root)")
    data_dir = first.data_dir       # root ignores file modes: use a read-only bind mount
    script = (f"mount --bind {data_dir} {data_dir} && "
              f"mount -o remount,ro,bind {data_dir} && exec \"$@\"")
    command = ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, SERVER,
               "--port", "0", "--data-dir", data_dir]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 1
    assert "is read-only or not writable" in done.stderr


def test_a_second_signal_forces_the_exit(server):
    alice, _ = session(server, "alice")
    (frozen,) = server.pids_titled("parley: user alice")
    os.kill(frozen, signal.SIGSTOP)              # it cannot finish, so shutdown waits
    try:
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down" in server.log(), message="the first signal")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 1
        wait_until(lambda: not server.processes(), message="every child killed")
    finally:
        alice.close()
        server.kill_group()


def nice_of(pid, thread=None):
    return int(proc_stat(pid, thread)[16])   # field 19 of stat: nice


def test_logins_and_hashing_yield_the_cpu_to_live_sessions(server):
    alice, _ = session(server, "alice")            # a live session, and hashes done
    waiting = RawClient(server.port)
    waiting.handshake()                            # a login process, mid-dialogue
    try:
        (login,) = server.pids_titled("parley: login")
        (user,) = server.pids_titled("parley: user alice")
        (database,) = server.pids_titled("parley: database")
        assert nice_of(login) == 10 and nice_of(user) == 0 and nice_of(database) == 0
        niceness = [nice_of(database, tid) for tid in os.listdir(f"/proc/{database}/task")]
        assert nice_of(database, database) == 0        # the main thread and the writer...
        assert niceness.count(0) >= 2
        assert 1 <= niceness.count(10) <= 2            # ...but not the 2 hashing workers
        assert set(niceness) == {0, 10}
    finally:
        waiting.close()
        alice.close()


def test_a_second_server_on_a_data_dir_in_use_is_refused_at_once(server, tmp_path):
    done = subprocess.run([sys.executable, SERVER, "--port", "0", "--data-dir",
                           server.data_dir], capture_output=True, text=True, timeout=60,
                          env=child_env())
    assert done.returncode == 1
    assert f"another Parley server (pid {server.proc.pid}) is using" in done.stderr
    assert "listening on" not in done.stdout
    assert request(session(server, "still")[0], "Inbox").op == "Result"   # the first serves on


SENDS_IN_FLIGHT = 50


def _events_to_the_end(client):
    """Every event until the server closes the connection (CLOSED not included)."""
    events = client.events_until(lambda event: False)
    assert events[-1] is CLOSED
    return events[:-1]


@pytest.mark.parametrize("target", ["daemon", "group"])
def test_sigterm_to_the_daemon_or_its_whole_group_stops_cleanly(make_server, target):
    server = make_server(subdir="stop")
    session(server, "bob")[0].close()
    alice, _ = session(server, "alice")
    accepted = [send(alice, "bob", "just before the stop").data["id"]]
    for i in range(SENDS_IN_FLIGHT):                # and more in flight as the signal comes
        alice.send("Send", rid=1000 + i, to="bob", subject=f"in flight {i}", body="x",
                   client_id=f"flight-{i}")
    if target == "group":                     # what systemd, timeout and kill -TERM -PGID do
        os.killpg(server.proc.pid, signal.SIGTERM)
    else:
        server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(WAIT) == 0
    # The daemon waited for its database: it is gone, and said so before "stopped".
    assert not server.pids_titled("parley: database"), server.processes()
    log = server.log()
    assert "database closed cleanly" in log.split("[parley: daemon] stopped")[0]
    assert "restarting it" not in log and "died" not in log
    events = _events_to_the_end(alice)
    said = [(e.op, e.data.get("event") or e.data.get("code")) for e in events
            if e.op != "Result"]
    assert said == [("System", "shutdown")], said          # the goodbye, no "unavailable"
    accepted += [event.data["id"] for event in events if event.op == "Result"]
    wait_until(lambda: not server.processes(), message="nothing of the server left running")
    server.kill_group()
    again = make_server(subdir="stop")      # same data dir
    _, backlog = session(again, "bob", create=False)
    assert [m["id"] for m in backlog] == accepted


def test_the_forkserver_and_its_children_have_a_process_group_of_their_own(server):
    (database,) = server.pids_titled("parley: database")
    fields = proc_stat(database)
    assert int(fields[2]) != server.proc.pid          # not the daemon's group...
    assert int(fields[3]) == server.proc.pid          # ...but still the daemon's session


def test_exit_when_idle_stops_cleanly_once_no_connection_is_left(make_server):
    server = make_server("--exit-when-idle", "1")
    alice, _ = session(server, "alice")
    held_until = time.monotonic() + 3                  # three times the limit, connected
    while time.monotonic() < held_until:               # answered (or told to slow down)
        answer = request(alice, "Inbox")
        assert answer.op == "Result" or answer.data["code"] == "rate_limited", answer
    assert server.proc.poll() is None
    alice.send("Logout")
    assert _events_to_the_end(alice)[-1].data["event"] == "goodbye"
    assert server.proc.wait(WAIT) == 0                 # by itself: no signal was sent
    log = server.log()
    assert "stopping (--exit-when-idle)" in log and "database closed cleanly" in log


def test_keepalive_ends_a_client_that_vanished_and_frees_its_place(make_server):
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    network = netns.PrivateNetwork()
    try:
        server = make_server("--max-clients", "1", "--keepalive", "1",
                             prefix=network.prefix())
        alice, _ = session(server, "alice", sock=network.socket())
        (user,) = server.pids_titled("parley: user alice")
        network.lose_every_packet()          # alice vanishes: no FIN, no RST, nothing
        wait_until(lambda: user not in server.processes(), message="alice's process ended")
        network.restore()
        wait_until(lambda: _can_log_in(server, network.socket()),
                   message="her place free for someone else")
        alice.close()
    finally:
        network.close()


def test_an_event_made_stale_earlier_in_the_same_turn_is_not_dispatched(tmp_path):
    """A database death, dispatched first, drops the parking link; the link's own
    readable event of that same select() must not reach the dropped link (it killed
    the daemon with an AttributeError: found by bench/crash_soak.py)."""
    daemon = Daemon(parse_server_options(["--data-dir", str(tmp_path / "data"), "--port", "0",
                                          "--no-console"]))
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        for name, (ours, theirs) in zip(("db", "parking", "listen"), pairs):
            daemon.selector.register(ours, selectors.EVENT_READ, name)
            theirs.send(b"x")
        dispatched = []

        def dispatch(key):
            dispatched.append(key.data)
            if key.data == "db":                    # as _database_died drops the link
                daemon.selector.unregister(pairs[1][0])
                daemon.selector.modify(pairs[2][0], selectors.EVENT_READ | selectors.EVENT_WRITE,
                                       "listen")     # only its events change: still current
        daemon._dispatch = dispatch
        events = daemon.selector.select(timeout=5)
        events.sort(key=lambda event: ("db", "parking", "listen").index(event[0].data))
        daemon._dispatch_ready(events)
        assert dispatched == ["db", "listen"]
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
        daemon.lifeline.close()
        os.rmdir(daemon.runtime_dir)


# A daemon whose loop fails with an error nobody expected, after its children started.
FAILING_DAEMON = """
import sys
from Modules.server import daemon
from Modules.server.options import parse_server_options

def serve(self):
    raise RuntimeError("an unexpected failure in the daemon's loop")

daemon.Daemon.serve = serve
sys.exit(daemon.run(parse_server_options(sys.argv[1:])))
"""


def test_a_daemon_failing_unexpectedly_exits_and_leaves_no_process(tmp_path):
    """It used to hang in multiprocessing's exit handler, joining spares that waited
    for a job on pipes it still held: no exit, so no supervisor could restart it."""
    script = tmp_path / "failing_daemon.py"
    script.write_text(FAILING_DAEMON)
    proc = subprocess.Popen([sys.executable, str(script), "--data-dir", str(tmp_path / "data"),
                             "--port", "0", "--no-console"], cwd=tmp_path, start_new_session=True,
                            env=child_env({"PYTHONPATH": CODE_DIR}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1
    assert "an unexpected failure in the daemon's loop" in err

    def group_gone():
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False
    wait_until(group_gone, message="every process of the failed daemon gone")
