"""Tests for Modules/client/account_commands.py: passwd, block, unblock, blocked.

Pure: the parsers use the server's rules; a line carrying passwords is
never repeated in an error record nor kept in the prompt's history.

End to end through the real client against a real daemon (batch/json,
`ServerProcess`): `passwd OLD NEW` from standard input changes the
password, ends the account's other session (which says why, exits, and
does not log in again), and the old password no longer logs in; a wrong
old password is one error and no password is ever printed; block makes
the blocked person's message come back "not accepted by the recipient"
while nobody can see or change another's list; the name of a deleted
account is refused to a new account with the sentence saying why, until
the operator releases it. In a pseudo-terminal (`Pty`): the interactive
`passwd` asks the three passwords without showing them, keeps the line
out of the history, and the session reconnects with the new password
after the server restarts.
"""

import pytest

from Modules.client import account_commands, output
from Modules.client.commands import UsageError, parse_line
from Tests.support import PASSWORD, BatchClient, run_admin, run_client
from Tests.support.clients import of_type
from Tests.support.clients import run_ok as ok
from Tests.support.terminal import ClientPty as Pty
from Tests.support.terminal import history_file

NEW = "a brand new passphrase"


# ------------------------------------------------------------ parsing


def test_passwd_takes_nothing_or_both_passwords():
    assert parse_line("passwd").args == {}
    assert parse_line(f"passwd '{PASSWORD}' '{NEW}'").args == {"old": PASSWORD, "new": NEW}
    for line in ("passwd one", "passwd a b c"):
        with pytest.raises(UsageError, match="Usage: passwd"):
            parse_line(line)
    with pytest.raises(UsageError, match="at least 8 characters"):
        parse_line(f"passwd '{PASSWORD}' short")


def test_block_takes_one_name_by_the_servers_rule():
    assert parse_line("block Bob").args == {"username": "bob"}
    assert parse_line("unblock bob").args == {"username": "bob"}
    assert parse_line("blocked").args == {}
    for line, words in (("block", "Usage: block NAME"), ("block a b", "Usage: block NAME"),
                        ("blocked bob", "Usage: blocked"), ("block 9x", "username")):
        with pytest.raises(UsageError, match=words):
            parse_line(line)


def test_a_line_with_passwords_is_never_repeated_or_kept():
    line = f"passwd '{PASSWORD}' '{NEW}'"
    assert output.holds_secret(line) and output.holds_secret("PASSWD x y")
    assert not output.holds_secret("send bob passwd x") and not output.holds_secret("")
    assert not output.holds_secret("passwd")             # asks: nothing secret on it
    record = output.error_record("wrong", "wrong_password", line)
    assert PASSWORD not in str(record) and record["command"] == "passwd …"
    assert output.error_record("x", "y", "read 1")["command"] == "read 1"


def test_the_human_text_of_the_records():
    render = output.Output().render
    assert render({"type": "password_changed", "ended": 0}) == "Your password is changed."
    assert "2 other sessions were logged out" in render({"type": "password_changed",
                                                          "ended": 2})
    assert "Blocked bob" in render({"type": "block", "user": "bob", "changed": True})
    assert "already" in render({"type": "block", "user": "bob", "changed": False})
    assert render({"type": "unblock", "user": "bob", "changed": False}) == \
        "You were not blocking bob."
    assert render({"type": "blocked", "blocked": []}) == "You block nobody."
    assert account_commands.HELP["passwd"][1] == ["passwd"]


# ------------------------------------------------------------ batch and json






def test_passwd_ends_the_other_session_which_does_not_come_back(server):
    ok(server, "alice", create=True)
    other = BatchClient(server, "alice")
    try:
        other.wait_type("ready")
        done = ok(server, "alice", [f"passwd '{PASSWORD}' '{NEW}'", "inbox"])
        assert of_type(done, "password_changed") == [{"type": "password_changed",
                                                      "ended": 1}]
        assert of_type(done, "inbox")                    # the changing session goes on
        notice = other.wait_type("system", event="password_changed")
        assert "log in again with the new password" in notice["message"]
        assert other.proc.wait(30) == 1                  # it ended and did not log in again
    finally:
        other.kill()
    code, objects, _ = run_client(server, "alice", ["inbox"])
    assert code == 1 and of_type(objects, "error")[0]["code"] == "wrong_password"
    ok(server, "alice", ["inbox"], password=NEW)
    assert NEW not in server.log() and PASSWORD not in server.log()


def test_a_wrong_old_password_is_one_error_and_never_printed(server):
    ok(server, "alice", create=True)
    code, objects, stderr = run_client(server, "alice", [f"passwd 'not it at all' '{NEW}'",
                                                         "passwd", "inbox"])
    assert code == 1
    errors = of_type(objects, "error")
    assert [e["code"] for e in errors] == ["wrong_password", "bad_command"]
    assert "not your current password" in errors[0]["error"]
    assert "standard input" in errors[1]["error"]
    assert all(e["command"] in ("passwd …", "passwd") for e in errors)
    assert "not it at all" not in str(objects) + stderr and NEW not in str(objects) + stderr
    assert of_type(objects, "inbox")
    ok(server, "alice", ["inbox"])                       # unchanged


def test_block_refuses_mail_without_saying_so_and_lists_only_ones_own(server):
    for name in ("alice", "bob", "carol"):
        ok(server, name, create=True)
    done = ok(server, "alice", ["block bob", "block bob", "blocked"])
    assert [o["changed"] for o in of_type(done, "block")] == [True, False]
    listed = of_type(done, "blocked")[0]["blocked"]
    assert [entry["user"] for entry in listed] == ["bob"]
    assert listed[0]["since"].endswith("Z")
    sent = of_type(ok(server, "bob", ['send alice "hi" "there"']), "sent")[0]
    assert sent["bounced"] is True and sent["note"] == \
        "The message was not accepted by the recipient."
    assert of_type(ok(server, "carol", ["blocked", "unblock bob"]), "blocked") == [
        {"type": "blocked", "blocked": []}]                # carol sees none of alice's
    assert [e["user"] for e in of_type(ok(server, "alice", ["blocked"]),
                                       "blocked")[0]["blocked"]] == ["bob"]
    code, objects, _ = run_client(server, "alice", ["block nobody"])
    assert code == 1 and of_type(objects, "error")[0]["code"] == "not_found"
    ok(server, "alice", ["unblock bob"])
    assert of_type(ok(server, "bob", ['send alice "hi" "again"']), "sent")[0][
        "bounced"] is False


def test_a_deleted_accounts_name_is_refused_until_released(server):
    ok(server, "alice", ["delete-account"], create=True)
    code, objects, stderr = run_client(server, "alice", ["inbox"], create=True)
    assert code == 1
    assert "The name 'alice' belonged to an account that was deleted" in \
        of_type(objects, "error")[0]["error"]
    status, out, _ = run_admin(server, "release-name", "alice")
    assert status == 0 and "may be taken" in out
    status, _out, err = run_admin(server, "reserved-name-days", "thirty")
    assert status == 1 and "whole number of days" in err
    assert run_admin(server, "reserved-name-days")[1].strip() == \
        "The name of a deleted account is kept back for 30 days."
    assert of_type(ok(server, "alice", create=True), "login")[0]["created"] is True


# ------------------------------------------------------------ the interactive passwd


def test_interactive_passwd_asks_hidden_and_reconnects_with_the_new_one(make_server,
                                                                         tmp_path):
    first = make_server()
    ok(first, "alice", create=True)
    pty = Pty(tmp_path, first.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line(f"passwd '{PASSWORD}' '{NEW}'")
        pty.expect("At the prompt type just 'passwd'")
        asked_from = pty.seen                            # what was typed so far showed
        pty.line("passwd")
        pty.expect("Current password:")
        pty.line(PASSWORD)
        pty.expect("New password:")
        pty.line("short")
        pty.expect("at least 8 characters")
        pty.expect("New password:")
        pty.line(NEW)
        pty.expect("Repeat the new password:")
        pty.line(NEW)
        pty.expect("Your password is changed.")
        shown = pty.screen_text()[asked_from:]
        assert PASSWORD not in shown and NEW not in shown and "short" not in shown
        first.stop()
        pty.expect(r"Connection lost\. Reconnecting automatically")
        make_server("--port", str(first.port))           # same data dir, same key
        pty.expect(rf"Reconnected to 127\.0\.0\.1:{first.port} as alice\.", timeout=40)
        pty.line("inbox")
        pty.expect("Your inbox is empty")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
    history = history_file(pty, first.port, "alice").read_text()
    assert "passwd" in history and PASSWORD not in history and NEW not in history


def test_block_blocked_and_unblock_at_the_prompt(server, tmp_path):
    ok(server, "alice", create=True)
    ok(server, "bob", create=True)
    pty = Pty(tmp_path, server.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("block bob")
        pty.expect("Blocked bob: their messages come back to them as not accepted.")
        pty.line("blocked")
        pty.expect("You block 1 name:")
        pty.expect("bob")
        pty.line("unblock bob")
        pty.expect("Unblocked bob.")
        pty.line("blocked")
        pty.expect("You block nobody.")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
