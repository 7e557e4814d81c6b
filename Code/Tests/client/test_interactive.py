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

No timing assertions but one (a server back after a long outage is found
within seconds, not after the back-off's 30): every wait is an expect
with a timeout. Every child
is closed in a finally. One unit test needs no terminal: what a failed
start tells a person to do next (`startup_step`).
"""

import os
import socket
import time

from Modules import identity
from Modules.client import session as client_session
from Tests.support import PASSWORD, terminal, wait_until
from Tests.support.clients import run_ok as ok

WAIT = 20


Pty = terminal.ClientPty




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
        pty.expect_editor()
        pty.line("first line")
        pty.line("second line")
        pty.send("\x04")                       # Ctrl-D finishes the body
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.line("send bob")
        pty.expect(r"Subject \(to bob\):")
        pty.line("Never mind")
        pty.expect_editor()
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


def test_a_long_draft_is_not_thrown_away_by_one_ctrl_c_nor_an_empty_one_sent_unasked(
        server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    pty = Pty(tmp_path, server.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("send bob")
        pty.expect(r"Subject \(to bob\):")
        pty.line("")                                        # no subject: asked
        pty.expect(r"Send it with no subject\? \[y/N\]")
        pty.line("n")
        pty.expect(r"Subject \(to bob\):")                  # asked again
        pty.line("")
        pty.expect(r"Send it with no subject\? \[y/N\]")
        pty.line("y")
        pty.expect_editor()
        pty.line("The first line of a long letter,")
        pty.line("and its second line.")
        pty.send("\x03")                                    # Ctrl-C: asked first
        pty.expect(r"Throw away your message to bob \(2 lines\)\? \[y/N\]")
        pty.line("n")
        pty.expect(r"Kept: type on\.")
        pty.line("A third one.")
        pty.send("\x04")
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.line("send bob Drop")
        pty.expect_editor()
        pty.line("Another long letter, two lines of it;")
        pty.line("this one goes.")
        pty.send("\x03")
        pty.expect(r"Throw away your message to bob \(2 lines\)\? \[y/N\]")
        pty.line("y")
        pty.expect(r"Cancelled; nothing was sent\.")
        pty.line("send bob Empty")
        pty.expect_editor()
        pty.send("\x04")                                    # nothing typed
        pty.expect(r"The message is empty\. Send it anyway\? \[y/N\]")
        pty.line("")
        pty.expect(r"Cancelled; nothing was sent\.")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
    received = [(m["subject"], m["body"]) for m in messages_of(server, "bob")]
    assert received == [("", "The first line of a long letter,\nand its second line.\n"
                             "A third one.")]


def test_a_long_push_is_wrapped_and_cut_and_read_pages_it(server, tmp_path):
    ok(server, "alice", create=True)
    ok(server, "bob", create=True)
    pty = Pty(tmp_path, server.port, login="alice", rows=12)
    try:
        pty.expect("alice>")
        words = " ".join(f"w{n:04d}" for n in range(1000))     # one line, 5,999 characters
        ok(server, "bob", [f'send alice "" "{words}"'])
        found = pty.expect(r"New message #(\d+) from bob: \(no subject\).*\n")
        number = found.group(1)
        cut = pty.expect(rf"    … cut short here; 'read {number}' shows all of it\.")
        rows = pty.screen_text()[found.end():cut.start()].splitlines()
        assert len(rows) == 6 and all(len(row) <= 120 for row in rows)      # half of 12
        assert all(row.startswith("    w") and row.endswith(tuple("0123456789"))
                   for row in rows)                                     # between words
        pty.line(f"read {number}")
        pty.expect(r"Subject:  \(no subject\)")
        pty.expect("-- more: Space or Enter for the next page, q to stop --")
        pty.send(" ")
        pty.expect("-- more")
        pty.send("q")
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert "w0999" not in pty.screen_text()                 # stopped before the end
    finally:
        pty.close()


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


def test_a_message_for_a_parked_session_appears_at_its_prompt(make_server, tmp_path):
    """Issue 16: the client cannot tell its session was parked (its user process gone)."""
    server = make_server("--park-after", "0.5")
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    pty = Pty(tmp_path, server.port, login="alice")
    try:
        pty.expect("No unread messages")
        pty.expect("alice>")
        wait_until(lambda: not server.pids_titled("parley: user alice"), WAIT,
                   message="alice's session to park")
        ok(server, "bob", ['send alice "While parked" "wake up"'])
        pty.expect(r"New message #\d+ from bob: While parked")
        pty.expect("wake up")
        pty.line("inbox")                            # and the session goes on
        pty.expect("While parked")
        pty.send("\x04")
        assert pty.wait_exit() == 0
    finally:
        pty.close()


def test_tab_completes_commands_and_the_people_one_knows(server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    ok(server, "bob", ['send alice "Hello" "from bob"'])
    pty = Pty(tmp_path, server.port, login="alice")
    try:
        pty.expect(r"New message #\d+ from bob: Hello")   # the backlog, one line
        pty.expect("You have 1 unread message")            # its body was not shown
        pty.expect("alice>")                               # the prompt reads keys now
        pty.send("inb\t")
        pty.expect("inbox")
        pty.line("")
        pty.expect(r"\*\s+\d+\s+bob\s+Hello")             # unread mark, id, from, subject
        pty.expect(r"1 message, 1 unread")
        pty.expect("alice>")
        pty.send("send b\t")
        pty.expect("send bob")                             # heard from bob
        pty.line(' "Re" "ok"')
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.expect("alice>")
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
        pty.line("still not the password")
        pty.expect(r"Wrong password for alice\. 1 try left\. Type it again")
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
        pty.expect(r"Usage: read ID\n+Type 'help read' for an example\.")   # two lines
        pty.line("read 1")                     # the returned message, marked as such
        pty.expect(r"RETURNED: this message was not delivered to ghost\. No user named")
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert "Traceback" not in pty.raw
    finally:
        pty.close()


def test_declining_to_create_an_account_asks_for_another_name_once(server, tmp_path):
    pty = Pty(tmp_path, server.port, "--accept-new-host-key")
    try:
        pty.expect("Username:")
        pty.line("zed")
        pty.expect(r"No account zed\. Create it\? \[y/N\]")
        pty.line("n")
        pty.expect("Username:")
        pty.send("\x03")                         # Ctrl-C at the name: leave
        assert pty.wait_exit() == 1
        after = pty.screen_text().split("Create it? [y/N] n", 1)[1]
        assert "a new name creates an account" not in after      # the prompt alone
        assert len([line for line in after.splitlines() if "Username" in line]) == 1
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
        pty.expect_editor()
        pty.line("one")
        pty.line(".")
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.line("send bob Second")
        pty.expect_editor()
        pty.line("two lines")
        pty.line("of a draft")
        pty.expect(r"of a draft\n")                # taken as a line, not mid-typing
        pty.send("\x03")                           # Ctrl-C: asked here too
        pty.expect(r"Throw away your message to bob \(2 lines\)\? \[y/N\]")
        pty.line("n")
        pty.expect(r"Kept: type on\.")
        pty.line("kept")
        pty.line(".")
        pty.expect(r"Sent message #\d+ to bob\.")
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert PASSWORD not in pty.raw
    finally:
        pty.close()
    assert [m["body"] for m in messages_of(server, "bob")] == ["one",
                                                               "two lines\nof a draft\nkept"]


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
        # read if it came as a push shown whole; unread if it was in the backlog,
        # whose one line shows no body (which depends on who was first)
        pty.expect("1 message, [01] unread")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()


def test_a_message_finished_while_disconnected_is_sent_once_the_server_is_back(
        make_server, tmp_path):
    first = make_server()
    ok(first, "bob", create=True)
    ok(first, "alice", create=True)
    pty = Pty(tmp_path, first.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("send bob")
        pty.expect(r"Subject \(to bob\):")
        pty.line("While away")
        pty.expect_editor()
        pty.line("typed before")
        first.kill_group()                               # gone while the body is open
        pty.expect(r"Connection lost")
        pty.line("and after the server went away")
        pty.send("\x04")                                 # Ctrl-D: finish the body
        pty.expect(r"Not sent yet: the connection is down\. Your message to bob is kept "
                   r"and will be sent as soon as the connection is back")
        pty.line("quit")                                 # leaving would lose it: asked
        pty.expect(r'Not sent yet \(the connection is down\): to bob: "While away"')
        pty.expect(r"Leave anyway and lose them\? \[y/N\]")
        pty.line("n")
        make_server("--port", str(first.port))           # same data dir, same key
        pty.expect(rf"Reconnected to 127\.0\.0\.1:{first.port} as alice\.", timeout=30)
        pty.expect(r"Sent message #\d+ to bob\.")         # no Enter needed
        pty.line("quit")
        assert pty.wait_exit() == 0
        assert "That cannot be done at this point" not in pty.screen_text()
    finally:
        pty.close()
    second = [m for m in messages_of(first, "bob") if m["subject"] == "While away"]
    assert [m["body"] for m in second] == ["typed before\nand after the server went away"]


def test_a_server_back_after_a_long_outage_is_found_within_seconds(make_server, tmp_path):
    first = make_server()
    ok(first, "alice", create=True)
    pty = Pty(tmp_path, first.port, login="alice")
    try:
        pty.expect("alice>")
        first.kill_group()
        pty.expect(r"Connection lost")
        time.sleep(19)           # a back-off's 4th try is 15 to 18 s after the loss, the 5th
        # 30 to 36 s: a server back now would wait more than 10 s for it
        make_server("--port", str(first.port))
        back = time.monotonic()
        pty.expect(rf"Reconnected to 127\.0\.0\.1:{first.port} as alice\.", timeout=30)
        assert time.monotonic() - back < 6        # polled every 1 to 2 s while refused
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
