"""The server's log file, end to end: what an operator reads in `--log-file`.

Real daemons with `--log-file` in a temporary directory, driven by the real
client. Checks the header line of each start (version, pid, data dir, the
Unix user), one session followed by its connection id from accept to logout
(login, send, delivery, a vanished client, the database's own line, the
daemon's close), no
colour codes, refusals and failed logins carrying their connection's id,
no secret at any level (the password, a wrong password, the subject, the
body, the password hash, the server's private key), appending across two
runs, a failed start's reason, logrotate's rename then SIGHUP (new lines in a new file at the old
path, the daemon still serving), and a path that cannot be written being
one sentence at start with nothing made.
"""

import base64
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys

import pytest

from Modules import identity
from Modules.server.instance import VERSION
from Tests.support import (
    SERVER,
    BatchClient,
    RawClient,
    child_env,
    run_client,
    wait_until,
)

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) +\[([^\]]+)\] (\S+) (.*)$")


def records(path):
    """[(level, process, connection id, message)] of every record in the log file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [match.groups() for match in map(RECORD.match, text.splitlines()) if match]


def conn_of(path, pattern):
    """The connection id of the first record whose message matches `pattern`."""
    for _level, _process, conn, message in records(path):
        if re.search(pattern, message):
            return conn
    return None


def messages_of(path, conn):
    """The messages of the records carrying `conn`, and of the database's about it."""
    return [message for _level, _process, each, message in records(path)
            if each == conn or re.search(rf"\bfrom {conn} ", message)]


def in_order(patterns, messages):
    """Whether each pattern matches one of `messages`, in this order."""
    rest = iter(messages)
    return all(any(re.search(pattern, message) for message in rest) for pattern in patterns)


def logged(path, pattern):
    return lambda: any(re.search(pattern, message) for *_rest, message in records(path))


@pytest.fixture
def log_path(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder / "parley.log"


def test_one_session_is_followed_by_its_connection_id(make_server, log_path):
    server = make_server("--log-file", str(log_path), "--log-level", "INFO")
    assert run_client(server, "bob", create=True)[0] == 0
    subject, body = "Café", "naïve ☕ at noon"
    code, objects, _ = run_client(server, "alice", [f'send bob "{subject}" "{body}"'],
                                  create=True)
    assert code == 0
    (sent,) = [o for o in objects if o["type"] == "sent"]
    size = len(subject.encode()) + len(body.encode())
    bob_client = BatchClient(server, "bob")               # the message reaches bob
    bob_client.wait_type("message", id=sent["id"])
    wait_until(logged(log_path, rf"^delivered #{sent['id']} "), message="the delivery")
    bob_client.kill()                                     # and bob vanishes
    wait_until(lambda: len(re.findall(r"closed \(user bob\)", log_path.read_text())) == 2,
               message="both of bob's sessions closed")

    level, process, conn, header = records(log_path)[0]
    assert (level, process, conn) == ("INFO", "parley: daemon", "-")
    assert re.fullmatch(rf"parley {re.escape(VERSION)} starting: pid {server.proc.pid}, data "
                        rf"dir {re.escape(os.path.abspath(server.data_dir))}, run by Unix "
                        rf"user \S+ \(uid {os.getuid()}\)", header), header

    alice = conn_of(log_path, r"^alice logged in from ")
    assert re.fullmatch(r"c\d+", alice)
    trace = messages_of(log_path, alice)
    expected = [r"^connection from 127\.0\.0\.1:\d+$",
                rf"^account alice created from {alice} 127\.0\.0\.1:\d+$",
                r"^alice logged in from 127\.0\.0\.1:\d+$",
                rf"^alice sent #{sent['id']} to bob \({size} bytes\)$",
                r"^alice logged out \(after \d+ s: 1 sent, 0 delivered\)$",
                r"^connection from 127\.0\.0\.1:\d+ closed \(user alice\)$"]
    assert in_order(expected, trace), trace

    bob = conn_of(log_path, rf"^delivered #{sent['id']} ")
    assert bob not in (alice, None)
    assert any(re.fullmatch(rf"delivered #{sent['id']} from alice to bob \({size} bytes\)", m)
               for m in messages_of(log_path, bob))
    assert in_order([r"^bob disconnected: the client closed the connection \(after \d+ s: "
                     r"0 sent, 1 delivered\)$", r"closed \(user bob\)$"],
                    messages_of(log_path, bob))
    text = log_path.read_text(encoding="utf-8")
    assert "\x1b" not in text and subject not in text and body not in text
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600


def test_refusals_and_failed_logins_carry_their_connection_id(make_server, log_path):
    server = make_server("--log-file", str(log_path), "--max-clients", "1")
    assert run_client(server, "alice", create=True)[0] == 0
    assert run_client(server, "alice", password="not the password")[0] != 0
    failed_login = r"^failed login for alice from (c\d+) 127\.0\.0\.1:\d+$"
    wait_until(logged(log_path, failed_login), message="the database's failed login line")
    (failed,) = [re.match(failed_login, m).group(1) for *_rest, m in records(log_path)
                 if re.match(failed_login, m)]
    ours = messages_of(log_path, failed)                 # the login process's and daemon's
    assert any(m.startswith("connection from 127.0.0.1:") for m in ours)
    assert conn_of(log_path, r"^alice logged in from ") not in (failed, None)

    holder = RawClient(server.port)
    holder.handshake()                                   # the one place there is
    refused = RawClient(server.port)
    refused.write(refused.conn.start())
    refused.next_event()                                 # the "server full" notice
    wait_until(logged(log_path, r"^refusing 127\.0\.0\.1:\d+ \("), message="the refusal")
    (conn,) = [c for level, _p, c, m in records(log_path)
               if level == "WARNING" and m.startswith("refusing")]
    assert re.fullmatch(r"c\d+", conn) and conn != failed
    holder.close()
    refused.close()


def test_the_log_holds_no_secret_at_any_level(make_server, log_path):
    password, wrong = "unique-password-7f3a9c41", "unique-wrong-password-52be10d8"
    subject, body = "subject-c0ffee-91ab", "body-deadbeef-3e7d secret words"
    server = make_server("--log-file", str(log_path), "--debug")
    assert run_client(server, "bob", password=password, create=True)[0] == 0
    code, _, _ = run_client(server, "alice", [f'send bob "{subject}" "{body}"'],
                            password=password, create=True)
    assert code == 0
    assert run_client(server, "alice", password=wrong)[0] != 0
    assert run_client(server, "bob", ["inbox"], password=password)[0] == 0
    assert server.stop() == 0
    with sqlite3.connect(os.path.join(server.data_dir, "passwords.db")) as db:
        hashes = [row[0] for row in db.execute("SELECT hash FROM passwords")]
    private = identity.load_or_create_server_key(server.data_dir).private
    secrets = [password, wrong, subject, body, *hashes, private.hex(),
               base64.b64encode(private).decode()]
    secrets += [h.rsplit("$", 1)[-1] for h in hashes] + ["$argon2"]   # any hash at all
    assert len(hashes) == 2 and all(secrets)
    for text in (log_path.read_text(encoding="utf-8"), server.log()):   # file and stderr
        assert "sent #" in text and "delivered #" in text
        assert [secret for secret in secrets if secret in text] == []


def test_the_log_file_grows_across_runs(make_server, log_path):
    first = make_server("--log-file", str(log_path), subdir="run")
    assert run_client(first, "bob", create=True)[0] == 0
    assert first.stop() == 0
    after_first = log_path.read_text(encoding="utf-8")
    second = make_server("--log-file", str(log_path), subdir="run")
    assert run_client(second, "alice", create=True)[0] == 0
    assert second.stop() == 0
    text = log_path.read_text(encoding="utf-8")
    assert text.startswith(after_first)
    headers = [m for *_rest, m in records(log_path) if " starting: pid " in m]
    assert [f"pid {first.proc.pid}," in headers[0], f"pid {second.proc.pid}," in headers[1]] \
        == [True, True] and len(headers) == 2
    assert "alice logged in" in text[len(after_first):]


def test_a_start_that_fails_says_why_in_the_log_file_too(make_server, log_path):
    running = make_server("--log-file", str(log_path), subdir="run")
    done = subprocess.run([sys.executable, SERVER, "--port", "0", "--data-dir",
                           running.data_dir, "--log-file", str(log_path)],
                          capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 1
    why = f"another Parley server (pid {running.proc.pid}) is using {running.data_dir}"
    assert done.stderr.count(why) == 1                  # said once on standard error
    (failed,) = [r for r in records(log_path) if r[0] == "ERROR"]
    assert failed[1:3] == ("parley: daemon", "-")
    assert failed[3].startswith(f"cannot run the server: {why}")
    headers = [m for *_rest, m in records(log_path) if " starting: pid " in m]
    assert len(headers) == 2 and f"pid {running.proc.pid}," not in headers[1]


def test_sighup_after_logrotate_moved_the_file_writes_a_new_one(make_server, log_path):
    server = make_server("--log-file", str(log_path))
    assert run_client(server, "alice", create=True)[0] == 0
    wait_until(logged(log_path, r"closed \(user alice\)$"), message="alice's close")
    rotated = log_path.with_name("parley.log.1")
    os.rename(log_path, rotated)                       # what logrotate does first
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_until(logged(log_path, r"^SIGHUP: log file reopened$"), message="the reopen")
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600
    assert run_client(server, "bob", create=True)[0] == 0      # still serving
    wait_until(logged(log_path, r"closed \(user bob\)$"), message="bob's close in the new file")
    new, old = log_path.read_text(encoding="utf-8"), rotated.read_text(encoding="utf-8")
    assert "bob logged in" in new and "account bob created" in new   # login, database
    assert "bob logged in" not in old and " starting: pid " in old
    assert "alice logged in" in old and "alice logged in" not in new
    assert server.proc.poll() is None                  # SIGHUP did not stop it
    assert server.stop() == 0


def _start(tmp_path, log_file):
    data_dir = tmp_path / "data"
    done = subprocess.run([sys.executable, SERVER, "--port", "0", "--data-dir", str(data_dir),
                           "--log-file", str(log_file)], capture_output=True, text=True,
                          timeout=60, env=child_env())
    return done, data_dir


@pytest.mark.parametrize("where, why", [
    ("missing/parley.log", "the directory {tmp}/missing does not exist"),
    ("", "that is a directory"),
])
def test_a_log_file_that_cannot_be_written_is_one_sentence_and_nothing_starts(
        tmp_path, where, why):
    log_file = os.path.normpath(str(tmp_path / where))
    done, data_dir = _start(tmp_path, log_file)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"parley: cannot run the server: cannot write the log file "
                           f"{log_file}: {why.format(tmp=tmp_path)}\n")
    assert not data_dir.exists()


@pytest.mark.skipif(os.getuid() == 0, reason="root may write anywhere")
def test_a_log_file_in_a_directory_not_writable_is_one_sentence(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    done, data_dir = _start(tmp_path, folder / "parley.log")
    assert done.returncode == 1 and "may not write there" in done.stderr
    assert done.stderr.count("\n") == 1 and not data_dir.exists()
