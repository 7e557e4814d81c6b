"""The real client (`Code/client.py`) against a real server, end to end.

Batch/JSON mode as scripts use it: accounts, live and offline delivery,
bounces, read/unread, deletion of messages and accounts, exit codes, and
server key pinning (a new key needs consent, a changed key is refused and
nothing is sent). One interactive run in a pseudo-terminal checks that
the password is not echoed and pushed messages appear. The operator's
side as people meet it: the greeting and the message of the day
(--greeting, --motd), a broadcast, a suspended account, a password the
administrator reset (changed at a terminal), and a session the server
ended (idle timeout) that the client does not reconnect by itself. The
account states and the broadcast are written into the stopped server's
files (`Tests/support/storage.py`): only the daemon may be an admin.
"""

import io
import os
import re
import subprocess
import sys

import pexpect
import pytest

from Modules import identity
from Tests.support import (
    CLIENT,
    PASSWORD,
    BatchClient,
    child_env,
    client_command,
    run_client,
)
from Tests.support.clients import of_type
from Tests.support.clients import run_ok as ok
from Tests.support.storage import broadcast_offline, change_account_offline

pytestmark = pytest.mark.both_backends     # SQLite and PostgreSQL storage (issue 18)



def test_create_login_and_wrong_password(server):
    created = ok(server, "alice", create=True)
    assert created[0] == {"type": "login", "user": "alice", "created": True}
    assert ok(server, "alice")[0]["created"] is False
    code, objects, stderr = run_client(server, "alice", password="not the password")
    assert code == 1 and "Wrong password" in stderr
    code, _, stderr = run_client(server, "nobody-here")
    assert code == 1 and "--create" in stderr


def test_offline_delivery_then_read_unread_and_delete(server):
    ok(server, "bob", create=True)
    sent = of_type(ok(server, "alice", ['send bob "Lunch" "At noon?"', 'send bob "Two" "2"'],
                      create=True), "sent")
    assert [s["bounced"] for s in sent] == [False, False]
    objects = ok(server, "bob", ["inbox", f"read {sent[0]['id']}", "inbox",
                                 f"delete {sent[1]['id']}", "inbox"])
    ready = objects.index({"type": "ready", "user": "bob"})
    backlog = [o for o in objects[:ready] if o["type"] == "message"]
    assert [m["subject"] for m in backlog] == ["Lunch", "Two"]
    assert all(m["via"] == "login" and m["from"] == "alice" for m in backlog)
    first, second, third = of_type(objects, "inbox")
    assert [e["unread"] for e in first["messages"]] == [True, True]
    assert [e["unread"] for e in second["messages"]] == [True, False]
    assert [e["subject"] for e in third["messages"]] == ["Lunch"]
    read = [o for o in objects if o["type"] == "message" and o["via"] == "read"][0]
    assert read["body"] == "At noon?" and read["sent_at"].endswith("Z")
    assert not [o for o in ok(server, "bob") if o["type"] == "message"]   # acked: not again


def test_live_push_while_connected(server):
    ok(server, "alice", create=True)
    bob = BatchClient(server, "bob", create=True)
    try:
        bob.wait_type("ready")
        ok(server, "alice", ['send bob "Now" "Are you there?"'])
        pushed = bob.wait_type("message", via="push")
        assert (pushed["from"], pushed["body"]) == ("alice", "Are you there?")
        assert bob.close() == 0
    finally:
        bob.kill()


def test_bounce_to_unknown_user(server):
    objects = ok(server, "alice", ['send ghost "Boo" "Anyone?"'], create=True)
    assert of_type(objects, "sent")[0]["bounced"] is True
    bounce = [o for o in of_type(objects, "message") if o["kind"] == "bounce"][0]
    assert bounce["original_to"] == "ghost" and "ghost" in bounce["note"]
    assert bounce["body"] == "Anyone?"


def test_delete_account_bounces_unread_messages_to_each_sender(server):
    for name in ("alice", "bob", "carol"):
        ok(server, name, create=True)
    ok(server, "alice", ['send carol "From alice" "a"'])
    ok(server, "bob", ['send carol "From bob" "b"', 'send carol "Read this" "c"'])
    inbox = of_type(ok(server, "carol", ["inbox"]), "inbox")[0]["messages"]
    read_id = [e["id"] for e in inbox if e["subject"] == "Read this"][0]
    objects = ok(server, "carol", [f"read {read_id}", "delete-account"])
    assert of_type(objects, "account_deleted")[0]["bounced"] == 2
    for sender, subject in (("alice", "From alice"), ("bob", "From bob")):
        bounces = [m for m in of_type(ok(server, sender), "message") if m["kind"] == "bounce"]
        assert [b["subject"] for b in bounces] == [subject]
        assert "deleted before this message was read" in bounces[0]["note"]
    code, _, stderr = run_client(server, "carol")
    assert code == 1 and "no account" in stderr.lower()


def test_bad_command_in_batch_is_an_error_and_the_rest_runs(server):
    code, objects, stderr = run_client(server, "alice", ["sned bob x y", "inbox"], create=True)
    assert code == 1
    error = of_type(objects, "error")[0]
    assert error["command"] == "sned bob x y" and "send" in error["error"]
    assert of_type(objects, "inbox")


def test_unknown_server_key_needs_consent(server):
    command = [c for c in client_command(server, "alice") if c != "--accept-new-host-key"]
    done = _run(command)
    assert done.returncode == 1 and "--accept-new-host-key" in done.stderr


def test_a_changed_server_key_is_refused(server, tmp_path):
    known_hosts = str(tmp_path / "pinned")
    pins = identity.KnownHosts(known_hosts)
    pins.add(f"127.0.0.1:{server.port}", identity.KeyPair.generate().public)
    command = client_command(server, "alice", "--create", known_hosts=known_hosts)
    done = _run(command)
    assert done.returncode == 1
    assert "CHANGED" in done.stderr.upper() and done.stderr.count("SHA256:") >= 2
    assert " logged in from " not in server.log()   # nothing was sent after the handshake
    assert "account alice created" not in server.log()


def _run(command):
    import subprocess
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=60,
                          env=child_env({"PARLEY_TEST_PASSWORD": PASSWORD}))


def test_cannot_connect_is_exit_status_2(tmp_path):
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _run([sys.executable, CLIENT, "--port", str(port), "--user", "a", "--batch",
                 "--password-env", "PARLEY_TEST_PASSWORD"])
    assert done.returncode == 2 and "127.0.0.1" in done.stderr


def test_server_going_away_is_said_plainly(server):
    bob = BatchClient(server, "bob", create=True)
    try:
        bob.wait_type("ready")
        server.stop()
        event = bob.wait_type("system")
        assert event["event"] == "shutdown"
        assert bob.proc.wait(30) == 1
    finally:
        bob.kill()


def test_interactive_login_hides_the_password_and_shows_pushes(server, tmp_path):
    ok(server, "alice", create=True)
    env = child_env({"NO_COLOR": "1", "TERM": "dumb"})
    child = pexpect.spawn(sys.executable, [CLIENT, "--port", str(server.port), "--known-hosts",
                                           str(tmp_path / "kh")], env=env, encoding="utf-8",
                          timeout=30, dimensions=(40, 120))
    try:
        child.expect("Trust this server")
        child.sendline("y")
        child.expect("Username")
        child.sendline("dave")
        child.expect("Create")
        child.sendline("y")
        for _ in range(2):
            child.expect("assword")
            child.sendline(PASSWORD)
        child.expect("dave")
        ok(server, "alice", ['send dave "Hi dave" "welcome aboard"'])
        child.expect("Hi dave")
        child.sendline("quit")
        child.expect(pexpect.EOF)
        assert PASSWORD not in child.before + "".join(child.buffer or "")
    finally:
        child.close(force=True)
    assert os.path.exists(tmp_path / "kh")


# ------------------------------------------------------------ the operator's side


def test_greeting_before_the_login_and_the_motd_after_it(make_server, tmp_path):
    (tmp_path / "greeting.txt").write_text("Lab server \u202e\nBe kind.\n")
    server = make_server("--greeting", f"@{tmp_path / 'greeting.txt'}",
                         "--motd", "Exam on Friday.")
    objects = ok(server, "alice", ["logout"], create=True)
    assert objects[:3] == [
        {"type": "greeting", "message": "Lab server \u202e\nBe kind."},
        {"type": "login", "user": "alice", "created": True},
        {"type": "motd", "message": "Exam on Friday."}]
    done = subprocess.run(client_command(server, "alice", as_json=False), input="logout\n",
                          capture_output=True, text=True, timeout=60,
                          env=child_env({"PARLEY_TEST_PASSWORD": PASSWORD}))
    assert done.returncode == 0, done.stderr
    assert "\u202e" not in done.stdout                     # neutralised, not obeyed
    lines = done.stdout.splitlines()
    assert lines[:4] == ["Lab server \\u202e", "Be kind.", "Logged in as alice.",
                         "Message of the day: Exam on Friday."]


def test_a_broadcast_is_marked_in_the_backlog_the_inbox_and_read(make_server):
    server = make_server()
    ok(server, "alice", create=True)
    server.stop()
    broadcast_offline(server, "Exam moved\nThe exam is on Monday now.")
    server = make_server()
    objects = ok(server, "alice", ["inbox"])
    (pushed,) = of_type(objects, "message")
    assert (pushed["kind"], pushed["from"], pushed["via"]) == ("broadcast", "parley", "login")
    assert pushed["subject"] == "Exam moved"
    assert of_type(objects, "inbox")[0]["messages"][0]["kind"] == "broadcast"
    done = subprocess.run(client_command(server, "alice", as_json=False),
                          input=f"inbox\nread {pushed['id']}\n", capture_output=True,
                          text=True, timeout=60,
                          env=child_env({"PARLEY_TEST_PASSWORD": PASSWORD}))
    assert done.returncode == 0, done.stderr
    assert re.search(r"\[broadcast\] Exam moved", done.stdout)                 # inbox
    assert f"Message #{pushed['id']} [broadcast] from the administrator" in done.stdout


def test_a_suspended_account_is_told_why_and_the_client_fails(make_server):
    server = make_server()
    ok(server, "carl", create=True)
    server.stop()
    change_account_offline(server, "carl", suspended=True)
    server = make_server()
    code, objects, stderr = run_client(server, "carl", ["inbox"])
    assert code == 1
    assert of_type(objects, "error")[0]["code"] == "suspended"
    assert stderr.splitlines()[-1] == ("This account is suspended; ask the server's "
                                       "administrator.")
    assert not of_type(objects, "login")


def interactive_client(server, tmp_path, user, password, env):
    """The real client at a pseudo-terminal, its password from the environment;
    (the pexpect child, the StringIO that records its screen)."""
    env = child_env({"NO_COLOR": "1", "PARLEY_TEST_PASSWORD": password, **env})
    child = pexpect.spawn(sys.executable, [CLIENT, "--port", str(server.port), "--user", user,
                                           "--password-env", "PARLEY_TEST_PASSWORD",
                                           "--accept-new-host-key", "--known-hosts",
                                           str(tmp_path / "kh")],
                          env=env, encoding="utf-8", timeout=30, dimensions=(40, 120))
    child.logfile_read = screen = io.StringIO()
    return child, screen


def test_a_reset_password_is_changed_at_the_terminal(make_server, tmp_path):
    server = make_server()
    ok(server, "dora", create=True)
    server.stop()
    change_account_offline(server, "dora", one_time_password="one-time-1234")
    server = make_server()
    code, _objects, stderr = run_client(server, "dora", password="one-time-1234")
    assert code == 1 and "without --batch" in stderr           # a script cannot choose
    child, screen = interactive_client(server, tmp_path, "dora", "one-time-1234",
                                       {"TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"})
    try:
        child.expect("reset by the administrator")
        child.expect("New password:")
        child.sendline("my own new password")
        child.expect("Repeat the new password:")
        child.sendline("my own new password")
        child.expect("Logged in as dora")
        child.sendline("quit")
        child.expect(pexpect.EOF)
        assert "Create it" not in screen.getvalue()
    finally:
        child.close(force=True)
    assert ok(server, "dora", password="my own new password")[0]["type"] == "login"


def test_after_an_idle_timeout_the_client_waits_for_the_person(make_server, tmp_path):
    server = make_server("--idle-timeout", "3")
    ok(server, "erin", create=True)
    child, screen = interactive_client(server, tmp_path, "erin", PASSWORD, {"TERM": "dumb"})
    try:
        child.expect("Logged in as erin")
        child.expect("Nothing was received from you")          # the server's notice
        child.expect("does not reconnect by itself")
        child.sendline("inbox")                                 # no automatic reconnect
        child.expect("Not connected: the server ended the session")
        child.send("\x03")                                      # clear the kept line
        child.sendline("reconnect")                             # the person decides
        child.expect("Reconnected to")
        child.sendline("quit")
        child.expect(pexpect.EOF)
        assert "Reconnecting automatically" not in screen.getvalue()
    finally:
        child.close(force=True)
