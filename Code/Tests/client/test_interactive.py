"""Tests for Modules/client/interactive.py: the real interactive client in a pseudo-terminal.

Each test spawns `Code/client.py` (no --batch) under pexpect with
TERM=xterm-256color, as a person would run it, and reads the screen output
with the terminal's control sequences stripped (`Pty`). Other people are
played by batch clients. Covered: the first-time host-key question,
account creation, a multi-line body, a message arriving while a line is
half typed (the typed text survives and runs), Tab completion of commands
and people, history on disk, each error a person can cause (wrong
password, unknown recipient, unknown command, a server that cannot be
reached, a changed server key), and the server going away and coming back
on the same port (automatic retry, and `reconnect` with --no-retry).

No timing assertions: every wait is an expect with a timeout. Every child
is closed in a finally. One unit test needs no terminal: what a failed
start tells a person to do next (`startup_step`).
"""

import os
import socket

from Modules import identity
from Modules.client import session as client_session
from Tests.support import PASSWORD, run_client, terminal

WAIT = 20


Pty = terminal.ClientPty


def ok(server, user, lines=(), create=False):
    code, objects, stderr = run_client(server, user, lines, create=create)
    assert code == 0, stderr
    return objects


def messages_of(server, user):
    return [o for o in ok(server, user) if o["type"] == "message"]


history_file = terminal.history_file


# ------------------------------------------------------------ a first run


def test_first_run_trusts_the_key_creates_the_account_and_sends_a_multiline_body(
        server, tmp_path):
    ok(server, "bob", create=True)
    pty = Pty(tmp_path, server.port)
    try:
        pty.expect(r"not known yet\. Its key fingerprint is\s+SHA256:")
        pty.expect(r"Trust this server\? \[y/N\]")
        pty.line("y")
        pty.expect("Username:")
        pty.line("dave")
        pty.expect(r"No account dave\. Create it\? \[y/N\]")
        pty.line("y")
        pty.expect("New password:")
        pty.line(PASSWORD)
        pty.expect("Repeat the new password:")
        pty.line(PASSWORD)
        pty.expect("Created the account dave")
        pty.expect("No unread messages")
        pty.line("send bob")
        pty.expect(r"Subject \(to bob\):")
        pty.line("Plans")
        pty.expect("Finish with Ctrl-D")
        pty.line("first line")
        pty.line("second line")
        pty.send("\x04")                       # Ctrl-D finishes the body
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.line("send bob")
        pty.expect(r"Subject \(to bob\):")
        pty.line("Never mind")
        pty.expect("Finish with Ctrl-D")
        pty.line("a draft")
        pty.send("\x03")                       # Ctrl-C cancels, the client stays
        pty.expect(r"Cancelled; nothing was sent\.")
        pty.line("quit")
        pty.expect("Goodbye")
        assert pty.wait_exit() == 0
        assert PASSWORD not in pty.raw and "Traceback" not in pty.raw
    finally:
        pty.close()
    received = {m["subject"]: m["body"] for m in messages_of(server, "bob")}
    assert received == {"Plans": "first line\nsecond line"}
    assert "send bob" in history_file(pty, server.port, "dave").read_text()
    assert os.stat(history_file(pty, server.port, "dave")).st_mode & 0o077 == 0


# ------------------------------------------------------------ while typing


def test_a_message_arriving_mid_line_leaves_the_typed_text_alone(server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    pty = Pty(tmp_path, server.port, login="alice")
    try:
        pty.expect("No unread messages")
        pty.expect("alice>")
        pty.send('send bob "Half" "typed')          # no Enter yet
        pty.expect("typed")
        ok(server, "bob", ['send alice "Ping \x1b]0;owned\x07" "pushed while typing"'])
        pty.expect(r"New message #\d+ from bob: Ping \\x1b\]0;owned\\x07")
        pty.expect("pushed while typing")
        pty.line(' line"')                          # finish the line typed before
        pty.expect(r"Sent message #\d+ to bob\.")
        assert "\x1b]0;owned" not in pty.raw        # the title bar was not touched
        pty.send("\x04")                            # Ctrl-D leaves
        assert pty.wait_exit() == 0
    finally:
        pty.close()
    bodies = [m["body"] for m in messages_of(server, "bob") if m["subject"] == "Half"]
    assert bodies == ["typed line"]


def test_tab_completes_commands_and_the_people_one_knows(server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    ok(server, "bob", ['send alice "Hello" "from bob"'])
    pty = Pty(tmp_path, server.port, login="alice")
    try:
        pty.expect(r"New message #\d+ from bob: Hello")   # the backlog, one line
        pty.expect("No unread messages")                   # it was shown whole: read
        pty.send("inb\t")
        pty.expect("inbox")
        pty.line("")
        pty.expect(r"\s+\d+\s+bob\s+Hello")                # id, from, subject
        pty.expect(r"1 message, 0 unread")
        pty.send("send b\t")
        pty.expect("send bob")                             # heard from bob
        pty.line(' "Re" "ok"')
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.send("help rea\t")
        pty.expect("help read")
        pty.line("")
        pty.expect("Example:")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
    people = history_file(pty, server.port, "alice").with_name("people").read_text()
    assert people.split() == ["bob"]



def test_a_long_inbox_is_a_table_shown_a_page_at_a_time(server, tmp_path):
    ok(server, "alice", create=True)
    ok(server, "bob", [f'send alice "Note {n}" "n"' for n in range(1, 16)], create=True)
    ok(server, "alice", ['send ghost "Lost" "x"'])          # a returned message, newest
    pty = Pty(tmp_path, server.port, login="alice", rows=10)
    try:
        # the notes reached alice's batch session: unread (a script is no reader);
        # the bounce too, unless it came after that session ended and was shown here
        pty.expect("You have 1[56] unread messages")
        pty.line("inbox")
        pty.expect(r"ID\s+FROM\s+SUBJECT\s+RECEIVED")
        pty.expect(r"[* ]\s+\d+\s+parley\s+Returned: Lost — No user named 'ghost'")
        pty.expect(r"Note 15\s.*\n.*Note 14\s")            # newest first
        pty.expect("-- more: Space or Enter for the next page, q to stop --")
        pty.send(" ")
        pty.expect("Note 8")
        pty.expect("-- more")
        pty.send("q")                                     # stop; the prompt is back
        pty.line("read 1")
        pty.expect("Message #1")
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert "Note 1 " not in pty.screen_text()
    finally:
        pty.close()


# ------------------------------------------------------------ errors a person can cause


def test_mistakes_get_one_sentence_and_what_to_do_next(server, tmp_path):
    ok(server, "alice", create=True)
    pty = Pty(tmp_path, server.port, "--user", "alice", "--accept-new-host-key")
    try:
        pty.expect("Password:")
        pty.line("not the password")
        pty.expect(r"Wrong password for alice\. 2 tries left\. Type it again, or press "
                   r"Ctrl-C to log in with another name\.")
        pty.line(PASSWORD)
        pty.expect("Logged in as alice")
        pty.line('send ghost "Boo" "anyone?"')
        pty.expect(r"Not delivered: No user named 'ghost' exists on this server\. Check the "
                   r"name .*came back as #\d+\.")
        pty.line("inbx")
        pty.expect(r"There is no command 'inbx'\. Did you mean 'inbox'\?")
        pty.line("read 999")
        pty.expect(r"You have no message 999\. Type 'inbox' to see the numbers")
        pty.line("read")
        pty.expect(r"Usage: read ID Type 'help read' for an example\.")
        pty.line("read 1")                     # the returned message, marked as such
        pty.expect(r"RETURNED: this message was not delivered to ghost\. No user named")
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert "Traceback" not in pty.raw
    finally:
        pty.close()


def test_a_dumb_terminal_does_not_echo_the_password_either(server, tmp_path):
    ok(server, "alice", create=True)
    ok(server, "bob", create=True)
    pty = Pty(tmp_path, server.port, "--user", "alice", "--accept-new-host-key", term="dumb")
    try:
        pty.expect("Password:")
        pty.line(PASSWORD)
        pty.expect("Logged in as alice")
        pty.line("send bob")
        pty.expect("Subject")
        pty.line("Plain")
        pty.expect("Finish with Ctrl-D")
        pty.line("one")
        pty.line(".")
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert PASSWORD not in pty.raw
    finally:
        pty.close()
    assert [m["body"] for m in messages_of(server, "bob")] == ["one"]


def test_a_server_that_cannot_be_reached_is_said_plainly(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pty = Pty(tmp_path, port)
    try:
        pty.expect(rf"Cannot connect to 127\.0\.0\.1:{port}: connection refused\. Is the "
                   r"server running, and are --host and --port right\?")
        assert pty.wait_exit() == 2
    finally:
        pty.close()


def test_a_changed_server_key_is_refused_with_what_to_do(server, tmp_path):
    identity.KnownHosts(str(tmp_path / "kh")).add(f"127.0.0.1:{server.port}",
                                                  identity.KeyPair.generate().public)
    pty = Pty(tmp_path, server.port)
    try:
        pty.expect("THE KEY OF THE SERVER .* HAS CHANGED")
        pty.expect(r"remove line 1 of .*kh and connect again")
        assert pty.wait_exit() == 1
        assert "Username" not in pty.screen_text()       # nothing was asked or sent
    finally:
        pty.close()


# ------------------------------------------------------------ the server goes away


def test_the_client_comes_back_by_itself_and_keeps_the_typed_text(make_server, tmp_path):
    first = make_server()
    ok(first, "alice", create=True)
    pty = Pty(tmp_path, first.port, login="alice")
    try:
        pty.expect("alice>")
        first.stop()
        pty.expect(r"The server is shutting down\.")
        pty.expect(r"Connection lost\. Reconnecting automatically")
        pty.send("inb")                                  # typed while disconnected
        pty.expect("inb")
        second = make_server("--port", str(first.port))  # same data dir, same key
        ok(second, "bob", ['send alice "Back" "again"'], create=True)
        pty.expect(rf"Reconnected to 127\.0\.0\.1:{first.port} as alice\.", timeout=30)
        pty.line("ox")
        pty.expect(r"\s+\d+\s+bob\s+Back")                 # the whole "inbox" ran
        pty.expect("1 message, 0 unread")                  # shown whole on arrival: read
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()


def test_with_no_retry_reconnect_brings_the_session_back(make_server, tmp_path):
    first = make_server()
    ok(first, "alice", create=True)
    pty = Pty(tmp_path, first.port, "--no-retry", "--user", "alice", "--accept-new-host-key")
    try:
        pty.expect("Password:")
        pty.line(PASSWORD)                               # typed once, kept in memory
        pty.expect("alice>")
        first.kill_group()                               # gone without a word
        pty.expect(r"Connection lost: The server closed the connection\. Type 'reconnect' "
                   r"to connect again")
        pty.line("inbox")
        pty.expect(r"Still not connected: Cannot connect .* Your command is kept")
        make_server("--port", str(first.port))
        pty.send("\x15")                                 # Ctrl-U: the kept "inbox" goes
        pty.line("reconnect")
        pty.expect(rf"Reconnected to 127\.0\.0\.1:{first.port} as alice\.")
        pty.line("inbox")
        pty.expect("Your inbox is empty")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()


# ------------------------------------------------------------ a failed start


def test_a_failed_start_says_what_to_do_next():
    from Modules.client.interactive import startup_step
    refused = client_session.ServerRefused("No login within the time allowed.", "timeout")
    assert startup_step(refused) == "Start the client again to log in."
    assert startup_step(client_session.CannotConnect("No answer.", "timeout")) == ""
    assert "administrator" in startup_step(client_session.ServerRefused(
        "Wrong password, and that was the last try.", "too_many_attempts"))
