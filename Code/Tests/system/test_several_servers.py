"""Several Parley servers on one PostgreSQL database (issue 18), end to end.

Real daemons (each with its own data dir and port) started with `--storage`
pointing at one database of the tests' own PostgreSQL cluster (the
`pg_dsn` fixture), the second one given a copy of the first one's server
key and storage key, and both one files directory, as docs/postgresql.md
tells an operator to do. The real client in
batch mode on either. Checked: accounts made on one server log in on the
other; a message sent on one server reaches a session on the other live,
and both sessions of a person logged in on both; `who` (the person's and
the operator's) lists the sessions of every server, and someone coming
and going on another server is told as presence; a file sent through
one server downloads through the other, verified; a server with another
key, or another storage key, is refused at start with both named.
"""

import os
import shutil

import pytest

from Tests.support import BatchClient, ServerProcess, of_type, run_admin, run_ok, wait_until
from Tests.support.files import known_bytes, sha256
from Tests.support.relay import Relay
from Tests.support.terminal import ClientPty


KEY_FILES = ("server_key", "server_key.pub", "storage_key")   # as docs/postgresql.md says


def _ok(server, user, lines=(), create=False):
    return run_ok(server, user, lines, create=create)


@pytest.fixture
def start_server(tmp_path, pg_dsn):
    """Factory: start_server(name, key_from=None) -> a ServerProcess on the shared
    database; `key_from`: a server whose key files this one's data dir gets first."""
    started = []

    shared_files = tmp_path / "shared-files"         # one directory every server mounts

    def start(name, key_from=None, key_files=KEY_FILES):
        server = ServerProcess(_directory(tmp_path, name), "--storage", pg_dsn,
                               "--files-dir", str(shared_files))
        if key_from is not None:
            os.makedirs(server.data_dir, mode=0o700)
            for file_name in key_files:
                shutil.copy2(os.path.join(key_from.data_dir, file_name), server.data_dir)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill_group()


def _directory(tmp_path, name):
    directory = tmp_path / name
    directory.mkdir()
    return directory


@pytest.fixture
def two_servers(start_server):
    first = start_server("a")
    return first, start_server("b", key_from=first)


def test_an_account_made_on_one_server_logs_in_on_the_other(two_servers):
    first, second = two_servers
    _ok(first, "alice", create=True)
    objects = _ok(second, "alice", ["inbox"])
    assert any(o["type"] == "ready" for o in objects)


def test_a_message_sent_on_one_server_reaches_a_session_on_the_other_live(two_servers):
    first, second = two_servers
    _ok(first, "alice", create=True)
    bob = BatchClient(second, "bob", create=True)
    try:
        bob.wait_type("ready")
        _ok(first, "alice", ['send bob "Across" "From server A"'])
        pushed = bob.wait_type("message", via="push")
        assert (pushed["from"], pushed["body"]) == ("alice", "From server A")
        assert bob.close() == 0
    finally:
        bob.kill()
    later = [o for o in _ok(first, "bob") if o["type"] == "message"]
    assert later == []                  # acknowledged on B: not shown again on A


def test_a_person_logged_in_on_both_servers_gets_the_push_on_both(two_servers):
    first, second = two_servers
    _ok(first, "alice", create=True)
    _ok(first, "bob", create=True)
    on_first, on_second = BatchClient(first, "bob"), BatchClient(second, "bob")
    try:
        on_first.wait_type("ready")
        on_second.wait_type("ready")
        _ok(second, "alice", ['send bob "Both" "To every session"'])
        for client in (on_first, on_second):
            assert client.wait_type("message", via="push")["subject"] == "Both"
    finally:
        on_first.kill()
        on_second.kill()


def test_who_lists_the_sessions_of_every_server(two_servers):
    first, second = two_servers
    _ok(first, "alice", create=True)
    bob = BatchClient(second, "bob", create=True)
    try:
        bob.wait_type("ready")

        def people_seen_by_alice():
            objects = _ok(first, "alice", ["who"])
            return [p["user"] for o in objects if o["type"] == "who" for p in o["people"]]
        wait_until(lambda: "bob" in people_seen_by_alice(), message="bob in alice's who")

        def operator_sees_bob():
            status, out, _ = run_admin(first, "who", as_json=True)
            assert status == 0, out
            sessions = out["sessions"]
            return [s for s in sessions if s["user"] == "bob" and "server" in s]
        wait_until(operator_sees_bob, message="bob on the other server in admin who")
    finally:
        bob.kill()


def test_a_server_with_another_key_is_refused_naming_both_fingerprints(start_server, pg_dsn,
                                                                       tmp_path):
    start_server("a")
    stranger = ServerProcess(_directory(tmp_path, "c"), "--storage", pg_dsn)
    try:
        with pytest.raises(RuntimeError) as refused:
            stranger.start()
    finally:
        stranger.kill_group()
    assert "is not the one the other servers of this database use" in str(refused.value)
    assert str(refused.value).count("SHA256:") >= 2


def test_a_person_not_logged_in_anywhere_gets_mail_sent_on_either_server(two_servers):
    first, second = two_servers
    _ok(first, "alice", create=True)
    _ok(second, "bob", create=True)
    _ok(first, "alice", ['send bob "One" "from A"'])
    _ok(second, "alice", ['send bob "Two" "from B"'])
    bodies = [o["body"] for o in _ok(first, "bob") if o["type"] == "message"]
    assert sorted(bodies) == ["from A", "from B"]


def test_a_file_sent_through_one_server_downloads_through_the_other(two_servers, tmp_path):
    first, second = two_servers
    _ok(first, "alice", create=True)
    _ok(second, "bob", create=True)
    data = known_bytes(3 * 1024 * 1024 + 5)
    path = tmp_path / "report.bin"
    path.write_bytes(data)
    (sent,) = of_type(_ok(first, "alice", [f"send-file bob {path}"]), "file_sent")
    target = tmp_path / "got"
    target.mkdir()
    (got,) = of_type(_ok(second, "bob", [f"download {sent['id']} {target}"]),
                     "file_downloaded")
    assert got["verified"] and got["sha256"] == sha256(data)
    assert (target / "report.bin").read_bytes() == data


def test_a_server_with_another_storage_key_is_refused(start_server, tmp_path):
    first = start_server("a")
    with pytest.raises(RuntimeError) as refused:
        start_server("d", key_from=first, key_files=("server_key", "server_key.pub"))
    assert "storage key" in str(refused.value) and "copy storage_key" in str(refused.value)


def test_three_servers_deliver_live_and_show_everyone_online(start_server):
    first = start_server("a")
    second, third = start_server("b", key_from=first), start_server("c", key_from=first)
    for server, name in ((first, "alice"), (second, "bob"), (third, "carol")):
        _ok(server, name, create=True)
    bob, carol = BatchClient(second, "bob"), BatchClient(third, "carol")
    try:
        bob.wait_type("ready")
        carol.wait_type("ready")
        _ok(first, "alice", ['send bob "To B" "via A"', 'send carol "To C" "via A"'])
        assert bob.wait_type("message", via="push")["subject"] == "To B"
        assert carol.wait_type("message", via="push")["subject"] == "To C"

        def online_seen_on_first():
            objects = _ok(first, "alice", ["who"])
            return {p["user"] for o in objects if o["type"] == "who" for p in o["people"]}
        wait_until(lambda: {"bob", "carol"} <= online_seen_on_first(),
                   message="bob (on B) and carol (on C) online as seen on A")
    finally:
        bob.kill()
        carol.kill()


def test_a_client_whose_server_dies_carries_on_through_the_balancer_with_the_other(
        two_servers, tmp_path):
    """The real interactive client behind a balancer (a relay that fails over to the
    next server): its server is killed while a message is being written; the client
    reconnects by itself, lands on the other server, sends the message once and gets
    mail sent there."""
    first, second = two_servers
    _ok(first, "alice", create=True)
    _ok(first, "bob", create=True)
    balancer = Relay([first.port, second.port])
    pty = ClientPty(tmp_path, balancer.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("send bob")
        pty.expect(r"Subject \(to bob\):")
        pty.line("Through the balancer")
        pty.expect_editor()
        pty.line("written on A")
        first.kill_group()                               # server A dies
        pty.expect(r"Connection lost")
        pty.send("\x04")                                 # Ctrl-D: finish the body
        pty.expect(rf"Reconnected to 127\.0\.0\.1:{balancer.port} as alice\.", timeout=60)
        pty.expect(r"Sent message #\d+ to bob\.")
        got = [o for o in _ok(second, "bob", ['send alice "Hello B" "from bob"'])
               if o["type"] == "message"]
        pty.expect("Hello B")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
        balancer.close()
    assert [m["body"] for m in got if m["subject"] == "Through the balancer"] == ["written on A"]


def test_someone_coming_and_going_on_another_server_is_told_as_presence(two_servers):
    first, second = two_servers
    _ok(first, "alice", create=True)
    _ok(second, "bob", create=True)
    alice = BatchClient(first, "alice")
    try:
        alice.wait_type("ready")
        bob = BatchClient(second, "bob")
        try:
            bob.wait_type("ready")
            assert alice.wait_type("system", event="presence")["message"] == "bob is online"
            assert bob.close() == 0
        finally:
            bob.kill()
        assert alice.wait_type("system", event="presence")["message"] == "bob went offline"
    finally:
        alice.kill()
