"""Files between people end to end, under the faults the issue names (issue 14).

Real daemons, the real client, files of tens of MiB. A 50 MiB file goes
there and back with a matching SHA-256 while a scanner reads every file
under the data dir over and over and never finds a piece of its
plaintext; --json shows its progress. Each transfer is then interrupted
in the middle, and must carry on from where it stopped (the client says
so, the server logs the chunk it resumed at) and end with the same bytes:

* the connection cut by a relay, at the interactive prompt: the client
  reconnects by itself and the transfer goes on;
* the user process SIGKILLed under a batch client: that run fails, and
  running the same command again carries on;
* the database process SIGKILLed: the supervisor starts it again, and
  the same batch command rides through its `unavailable` answers.
"""

import os
import re
import signal
import threading

import pytest

from Tests.support import BatchClient, of_type, run_client, run_ok, wait_until
from Tests.support.files import MARK, known_bytes, plaintext_on_disk, sha256
from Tests.support.processes import WAIT, unread_by
from Tests.support.relay import Relay
from Tests.support.terminal import ClientPty

MIB = 1024 * 1024
TRANSFER_WAIT = WAIT * 6        # tens of MiB on a busy machine
CUT_AT = 2 * MIB                # interrupt once this much has moved


class Via:
    """Just enough of a ServerProcess for run_client: the relay's port."""

    def __init__(self, server, port):
        self.port, self.tmp_path = port, server.tmp_path


def _accounts(server, *names):
    for name in names:
        run_ok(server, name, create=True)


def _file(tmp_path, name, size):
    """A file of recognisable content (`known_bytes`), with a few bytes that vary."""
    data = known_bytes(size)
    data = data[:1000] + os.urandom(16) + data[1016:]
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def _alice_and_bob_with(server, tmp_path, name, size=24 * MIB):
    """Both accounts, and alice's file `name` of `size` bytes for bob."""
    _accounts(server, "alice", "bob")
    return _file(tmp_path, name, size)


def _download_dir(tmp_path):
    target = tmp_path / "got"
    target.mkdir()
    return target


@pytest.fixture
def relays():
    """Relays a test opens; every one is closed afterwards, whatever happened."""
    opened = []
    yield lambda server: opened.append(Relay(server.port)) or opened[-1]
    for relay in opened:
        relay.close()


def _transfer_under_way(server, relays, user, line, moved, pause=None):
    """A batch client of `user` that runs `line` through a relay, paused once
    `moved()` has reached CUT_AT. The relay itself stops forwarding at twice
    that, so on a busy machine the transfer cannot end before the test has
    seen it under way and paused it. `pause(client)` pauses it: by default
    the client is stopped (SIGSTOP; `_go_on(client)` lets it carry on); the
    relay then forwards again."""
    relay = relays(server)
    client = BatchClient(Via(server, relay.port), user)
    try:
        client.wait_type("ready")
        relay.hold_at(relay.forwarded + 2 * CUT_AT)
        client.send(line)
        wait_until(lambda: moved() >= CUT_AT, timeout=TRANSFER_WAIT, interval=0.01,
                   message="the transfer under way")
        (pause or (lambda c: os.kill(c.proc.pid, signal.SIGSTOP)))(client)
        relay.release()
    except BaseException:
        client.kill()
        raise
    return client


def _go_on(client):
    os.kill(client.proc.pid, signal.SIGCONT)


def _part_bytes(server):
    """How much of an upload the server holds so far (its .part files)."""
    directory = os.path.join(server.data_dir, "files")
    try:
        return sum(os.path.getsize(os.path.join(directory, name))
                   for name in os.listdir(directory) if name.endswith(".part"))
    except FileNotFoundError:
        return 0


def _partial_bytes(directory):
    """How much of a download the client holds so far (its .part beside the target)."""
    return sum(os.path.getsize(os.path.join(directory, name))
               for name in os.listdir(directory) if name.endswith(".part"))


def _resumed_chunks(server):
    return [int(n) for n in re.findall(r"upload \d+ resumed at chunk (\d+)", server.log())]


def _kill_one(server, prefix):
    (pid,) = server.pids_titled(prefix)
    os.kill(pid, signal.SIGKILL)
    return pid


class Scanner:
    """Reads every file under the data dir again and again, looking for plaintext."""

    def __init__(self, directory):
        self.directory, self.found, self.rounds = directory, set(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.found.update(plaintext_on_disk(self.directory, MARK))
            self.rounds += 1

    def stop(self):
        self._stop.set()
        self._thread.join(WAIT)
        return self.found


def test_a_50_mib_file_goes_there_and_back_and_no_plaintext_ever_touches_the_disk(
        server, tmp_path):
    path, data = _alice_and_bob_with(server, tmp_path, "big.bin", 50 * MIB)
    target = _download_dir(tmp_path)
    scanner = Scanner(server.data_dir)
    try:
        sent = run_ok(server, "alice", [f"send-file bob {path}"])
        (done,) = of_type(sent, "file_sent")
        got = of_type(run_ok(server, "bob", [f"download {done['id']} {target}"]),
                      "file_downloaded")[0]
    finally:
        found = scanner.stop()
    assert found == set() and scanner.rounds >= 2
    assert done["sha256"] == sha256(data) and got["verified"]
    assert (target / "big.bin").read_bytes() == data and os.listdir(target) == ["big.bin"]
    progress = [o for o in of_type(sent, "progress") if o["direction"] == "upload"]
    assert progress[0]["done"] == 0 and progress[-1]["done"] == len(data)
    assert [o["done"] for o in progress] == sorted(o["done"] for o in progress)
    assert all(o["size"] == len(data) and o["name"] == "big.bin" for o in progress)


def test_an_upload_cut_off_by_the_network_carries_on_by_itself_at_the_prompt(
        server, tmp_path):
    path, data = _alice_and_bob_with(server, tmp_path, "cut.bin")
    relay = Relay(server.port)
    pty = ClientPty(tmp_path, relay.port, login="alice")
    try:
        pty.expect("alice>")
        relay.hold_at(relay.forwarded + 2 * CUT_AT)         # it cannot end before the cut
        pty.line(f"send-file bob {path}")
        pty.expect(r"cut\.bin \[[#-]{20}\] +\d+%  [\d.]+ of 24\.0 MiB  [\d.]+ MiB/s")
        wait_until(lambda: _part_bytes(server) >= CUT_AT, timeout=TRANSFER_WAIT,
                   message="the upload under way")
        relay.cut()
        relay.release()
        pty.expect(r"The connection was lost during the upload")
        pty.expect(r"Resuming the upload of cut\.bin at \d+%", timeout=TRANSFER_WAIT)
        pty.expect(r"Sent cut\.bin \(24\.0 MiB\) to bob as file #(\d+)",
                   timeout=TRANSFER_WAIT)
    finally:
        pty.close()
        relay.close()
    assert [chunk for chunk in _resumed_chunks(server) if chunk > 0]
    _download_matches(server, tmp_path, data)


def test_a_download_cut_off_by_the_network_carries_on_by_itself_at_the_prompt(
        server, tmp_path):
    path, data = _alice_and_bob_with(server, tmp_path, "cut.bin")
    file_id = _sent(server, path)
    relay = Relay(server.port)
    target = _download_dir(tmp_path)
    pty = ClientPty(tmp_path, relay.port, login="bob")
    try:
        pty.expect("bob>")
        relay.hold_at(relay.forwarded + 2 * CUT_AT)         # it cannot end before the cut
        pty.line(f"download {file_id} {target}")
        wait_until(lambda: _partial_bytes(target) >= CUT_AT, timeout=TRANSFER_WAIT,
                   message="the download under way")
        relay.cut()
        relay.release()
        pty.expect(r"The connection was lost during the download")
        pty.expect(r"Resuming the download of cut\.bin at \d+%", timeout=TRANSFER_WAIT)
        pty.expect(r"Saved file #\d+ as .*cut\.bin", timeout=TRANSFER_WAIT)
    finally:
        pty.close()
        relay.close()
    assert (target / "cut.bin").read_bytes() == data
    assert os.listdir(target) == ["cut.bin"]


def _sent(server, path):
    return of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")[0]["id"]


def _download_matches(server, tmp_path, data):
    (listed,) = [f for f in of_type(run_ok(server, "bob", ["files"]), "files")[0]["files"]
                 if f["direction"] == "received"]
    target = tmp_path / f"check-{listed['id']}"
    target.mkdir()
    got = of_type(run_ok(server, "bob", [f"download {listed['id']} {target}"]),
                  "file_downloaded")[0]
    assert got["verified"] and open(got["path"], "rb").read() == data


def test_an_upload_whose_user_process_is_killed_carries_on_when_sent_again(
        server, tmp_path, relays):
    path, data = _alice_and_bob_with(server, tmp_path, "kill.bin")
    first = _transfer_under_way(server, relays, "alice", f"send-file bob {path}",
                                lambda: _part_bytes(server))
    try:
        _kill_one(server, "parley: user alice")
        _go_on(first)
        assert first.proc.wait(WAIT) == 1                   # this run failed ...
        assert "run the same command again" in first.proc.stderr.read()
    finally:
        first.kill()
    again = run_ok(server, "alice", [f"send-file bob {path}"])   # ... this one carries on
    (resumed,) = of_type(again, "transfer_resumed")
    assert resumed["direction"] == "upload" and resumed["done"] >= CUT_AT // 2
    assert of_type(again, "file_sent")[0]["sha256"] == sha256(data)
    _download_matches(server, tmp_path, data)


def test_a_download_whose_user_process_is_killed_carries_on_when_run_again(
        server, tmp_path, relays):
    path, data = _alice_and_bob_with(server, tmp_path, "kill.bin")
    file_id = _sent(server, path)
    target = _download_dir(tmp_path)
    first = _transfer_under_way(server, relays, "bob", f"download {file_id} {target}",
                                lambda: _partial_bytes(target))
    try:
        _kill_one(server, "parley: user bob")
        _go_on(first)
        assert first.proc.wait(WAIT) == 1
    finally:
        first.kill()
    assert _partial_bytes(target) >= CUT_AT // 2            # kept for the next run
    again = run_ok(server, "bob", [f"download {file_id} {target}"])
    (resumed,) = of_type(again, "transfer_resumed")
    assert resumed["direction"] == "download" and resumed["done"] >= CUT_AT // 2
    assert of_type(again, "file_downloaded")[0]["verified"]
    assert (target / "kill.bin").read_bytes() == data and os.listdir(target) == ["kill.bin"]


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_transfer_rides_through_the_database_process_being_killed(server, tmp_path,
                                                                    relays, direction):
    path, data = _alice_and_bob_with(server, tmp_path, "db.bin")
    target = _download_dir(tmp_path)
    if direction == "upload":
        user, line, moved = "alice", f"send-file bob {path}", lambda: _part_bytes(server)
    else:
        file_id = _sent(server, path)
        user, line, moved = "bob", f"download {file_id} {target}", \
            lambda: _partial_bytes(target)
    (old,) = server.pids_titled("parley: database")
    # The database is stopped, not the client: the client's next requests then wait in
    # the user process, which must answer them `unavailable` when the database dies.
    client = _transfer_under_way(server, relays, user, line, moved,
                                 pause=lambda _client: os.kill(old, signal.SIGSTOP))
    try:
        # Killed only once a request of the transfer waits in it: one that reached the
        # user process after the kill would go to the new database, and nothing resumes.
        wait_until(lambda: unread_by(old) > 0, timeout=TRANSFER_WAIT,
                   message="a request waiting in the stopped database")
        os.kill(old, signal.SIGKILL)
        resumed = client.wait_type("transfer_resumed", timeout=TRANSFER_WAIT)
        assert resumed["direction"] == direction and resumed["done"] > 0
        finished = client.wait_for(lambda o: o.get("type") in ("file_sent", "file_downloaded"),
                                   timeout=TRANSFER_WAIT)
        assert client.close() == 0
    finally:
        client.kill()
    assert old not in server.pids_titled("parley: database")
    if direction == "upload":
        assert finished["sha256"] == sha256(data)
        _download_matches(server, tmp_path, data)
    else:
        assert finished["verified"] and (target / "db.bin").read_bytes() == data


def test_the_progress_of_a_download_in_json_ends_at_its_size(server, tmp_path):
    path, data = _alice_and_bob_with(server, tmp_path, "p.bin", 3 * MIB)
    file_id = _sent(server, path)
    code, objects, _ = run_client(server, "bob", [f"download {file_id} {tmp_path}/p2.bin"])
    assert code == 0
    progress = of_type(objects, "progress")
    assert progress and progress[-1]["done"] == len(data) == progress[-1]["size"]
    assert {o["direction"] for o in progress} == {"download"}
    assert of_type(objects, "transfer_resumed") == []


def test_an_upload_left_unfinished_goes_after_its_expiry_and_then_starts_over(
        make_server, tmp_path, relays):
    server = make_server("--upload-expiry-hours", "0.0003")       # about a second
    path, data = _alice_and_bob_with(server, tmp_path, "left.bin")
    first = _transfer_under_way(server, relays, "alice", f"send-file bob {path}",
                                lambda: _part_bytes(server))
    first.kill()                                    # the sender walks away
    wait_until(lambda: _part_bytes(server) == 0, timeout=TRANSFER_WAIT,
               message="the unfinished upload removed")
    again = run_ok(server, "alice", [f"send-file bob {path}"])
    assert of_type(again, "transfer_resumed") == []               # nothing left to resume
    assert of_type(again, "file_sent")[0]["sha256"] == sha256(data)
