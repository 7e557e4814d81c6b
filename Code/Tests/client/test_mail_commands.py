"""Tests for Modules/client/mail_commands.py: sent, unread, history, search, reply, forward.

The texts and records alone, then the real client against a real daemon:
batch/JSON for every command (and that nobody sees another person's
copies), and the interactive client in a pseudo-terminal, where a message
shown whole on arrival is read once acknowledged and a long one cut short
stays unread.
"""

import pytest

from Modules.client import mail_commands
from Modules.client.commands import UsageError, parse_line
from Modules.client.output import Output
from Tests.support import run_client, terminal
from Tests.support.clients import of_type
from Tests.support.clients import run_ok as ok

ORIGINAL = {"id": 7, "from": "bob", "to": "alice", "subject": "Lunch", "body": "At noon?\nOk",
            "sent_at": 1_700_000_000.0, "kind": "message"}


# ------------------------------------------------------------ words and texts


@pytest.mark.parametrize("line, args", [
    ("sent", {}), ("sent --before 9 --limit 5", {"before": 9, "limit": 5}),
    ("unread --limit=3", {"limit": 3}),
    ("history Bob --before 4", {"with": "bob", "before": 4}),
    ("search lunch  friday", {"text": "lunch friday"}),
    ("reply 12", {"id": 12, "quote": False}),
    ('reply #12 "Yes." --quote', {"id": 12, "quote": True, "body": "Yes."}),
    ("forward 12 carol", {"id": 12, "to": "carol"}),
    ('forward 12 carol "FYI"', {"id": 12, "to": "carol", "note": "FYI"}),
])
def test_command_lines_parse(line, args):
    assert parse_line(line).args == args


@pytest.mark.parametrize("line, words", [
    ("sent bob", "Usage: sent"), ("history", "Usage: history NAME"),
    ("history a b", "Usage: history"), ("history 9x", "username"),
    ("search", "Usage: search"), ("search ... --", "at least one word"),
    ("search " + "x" * 201, "200"), ("reply", "Usage: reply"), ("reply x", "message number"),
    ("forward 12", "Usage: forward"), ("unread --since 3", "Usage: unread"),
])
def test_mistakes_are_one_sentence(line, words):
    with pytest.raises(UsageError) as caught:
        parse_line(line)
    assert words in caught.value.reason


def test_re_and_fwd_are_added_once_and_fit_the_subject_limit():
    assert mail_commands.reply_subject("Lunch") == "Re: Lunch"
    assert mail_commands.reply_subject("RE: Lunch") == "RE: Lunch"
    assert mail_commands.prefixed("Fwd: ", "fwd: x") == "fwd: x"
    assert len(mail_commands.reply_subject("x" * 200)) == 200


def test_a_quoted_reply_and_a_forward_carry_the_original():
    quoted = mail_commands.quoted_reply("Yes.", ORIGINAL)
    assert quoted.startswith("Yes.\n\nOn ") and "bob wrote:\n> At noon?\n> Ok" in quoted
    forwarded = mail_commands.forwarded_body("FYI", ORIGINAL)
    assert forwarded.startswith("FYI\n\n---------- Forwarded message ----------\nFrom: bob\n")
    assert forwarded.endswith("Subject: Lunch\n\nAt noon?\nOk")
    assert mail_commands.forwarded_body("", ORIGINAL).startswith("----------")


def test_records_and_their_human_text():
    history = mail_commands.conversation_record("history", {"messages": [
        {"id": 9, "from": "alice", "to": "bob", "subject": "", "preview": "b",
         "delivered": True, "read": False},
        {"id": 7, "from": "bob", "to": "alice", "subject": "s", "preview": "x\x1b[2J",
         "unread": True, "cut": True}], "more": True}, "bob")
    assert [e["id"] for e in history["messages"]] == [7, 9]         # oldest first
    text = Output().render(history)
    assert "(no subject) (delivered)" in text and "history bob --before 7" in text
    assert "\x1b" not in text and "… read 7" in text
    sent = mail_commands.sent_list_record({"messages": [
        {"id": 3, "to": "bob", "subject": "s", "sent_at": 1.0, "delivered": True,
         "read": True}]})
    assert sent == {"type": "sent_list", "more": False, "messages": [
        {"id": 3, "to": "bob", "subject": "s", "sent_at": "1970-01-01T00:00:01.000Z",
         "delivered": True, "read": True}]}
    assert "read" in Output().render(sent)
    offer = mail_commands.sent_list_record({"messages": [
        {"id": 4, "to": "bob", "subject": "File: a", "sent_at": 2.0, "delivered": True,
         "read": False, "file": {"id": 12, "state": "returned\x1b[2J"}}]})
    assert offer["messages"][0]["file"] == {"id": 12, "state": "returned\x1b[2J"}
    text = Output().render(offer)
    assert "(file 12: returned" in text and "\x1b" not in text


# ------------------------------------------------------------ the real client






def test_sent_history_search_unread_reply_and_forward_in_batch_mode(server):
    for name in ("alice", "bob", "carol"):
        ok(server, name, create=True)
    first = of_type(ok(server, "alice", ['send bob "Lunch" "At noon, Café Müller?"',
                                         'send bob "Later" "Or at one"']), "sent")
    bob = ok(server, "bob", [f"reply {first[0]['id']} \"Noon is fine\" --quote",
                             "unread", f"read {first[1]['id']}", "unread",
                             f'forward {first[0]["id"]} carol "FYI"'])
    backlog = [m for m in of_type(bob, "message") if m["via"] == "login"]
    assert len(backlog) == 2                                 # shown by a script: unread
    unread = of_type(bob, "inbox")
    # replying read "Lunch"; "Later" was unread until `read`
    assert [len(page["messages"]) for page in unread] == [1, 0] and unread[0]["unread_only"]
    alice = ok(server, "alice", ['send bob "Third" "not yet seen"', "sent", "history bob",
                                 "search cafe", "search nothinghere"])
    sent = of_type(alice, "sent_list")[0]["messages"]
    assert [(m["subject"], m["delivered"], m["read"]) for m in sent] == [
        ("Third", False, False), ("Later", True, True), ("Lunch", True, True)]
    reply = of_type(alice, "message")[0]
    assert reply["subject"] == "Re: Lunch" and "alice wrote:\n> At noon" in reply["body"]
    history = of_type(alice, "history")[0]
    assert [m["subject"] for m in history["messages"]] == ["Lunch", "Later", "Re: Lunch",
                                                           "Third"]
    found = of_type(alice, "search")
    assert [m["id"] for m in found[0]["messages"]] == [reply["id"], first[0]["id"]]
    assert found[1]["messages"] == []
    code, carol, _stderr = run_client(server, "carol", ["history alice", "search lunch",
                                                        f"read {first[0]['id']}"])
    assert code == 1
    forward = of_type(carol, "message")[0]
    assert forward["subject"] == "Fwd: Lunch" and forward["body"].startswith("FYI\n\n------")
    assert of_type(carol, "history")[0]["messages"] == []     # nothing between them
    assert [m["id"] for m in of_type(carol, "search")[0]["messages"]] == [forward["id"]]
    assert of_type(carol, "error")[0]["code"] == "not_found"  # alice's message to bob


def test_deleting_ones_copy_leaves_the_other_persons(server):
    ok(server, "alice", create=True)
    ok(server, "bob", create=True)
    sent = of_type(ok(server, "alice", ['send bob "s" "b"']), "sent")[0]
    assert of_type(ok(server, "alice", [f"delete {sent['id']}", "sent"]), "sent_list")[0][
        "messages"] == []
    code, bob, _stderr = run_client(server, "bob", [f"delete {sent['id']}",
                                                    f"read {sent['id']}"])
    assert code == 1 and of_type(bob, "deleted")[0]["deleted"] == [sent["id"]]
    assert of_type(bob, "error")[0]["code"] == "not_found"


def test_a_push_shown_whole_is_read_and_a_long_one_cut_short_is_not(server, tmp_path):
    """Seen in full on arrival, then the account deleted: nothing goes back to its
    sender as 'deleted before this message was read' (it was read)."""
    ok(server, "alice", create=True)
    ok(server, "bob", create=True)
    pty = terminal.ClientPty(tmp_path, server.port, login="bob")
    try:
        pty.expect("bob>")
        ok(server, "alice", ['send bob "Short" "one line"',
                             'send bob "Long" "line', *["line"] * 38, 'line"'])
        pty.expect(r"New message #\d+ from alice: Short")
        pty.expect(r"New message #\d+ from alice: Long")
        pty.expect(r"cut short here; 'read \d+' shows all of it\.")
        pty.line("unread")
        pty.expect(r"\*\s+\d+\s+alice\s+.*Long")
        pty.line("delete-account")
        pty.expect("Type the username to confirm:")
        pty.line("bob")
        pty.expect(r"1 unread message was returned")
        pty.send("\x04")
        pty.wait_exit()
    finally:
        pty.close()
    returned = [o for o in ok(server, "alice") if o["type"] == "message"]
    assert [m["subject"] for m in returned if m["kind"] == "bounce"] == ["Long"]


def test_history_reply_and_sent_at_the_prompt(server, tmp_path):
    ok(server, "alice", create=True)
    ok(server, "bob", create=True)
    first = of_type(ok(server, "bob", ['send alice "Lunch" "At noon?"']), "sent")[0]["id"]
    pty = terminal.ClientPty(tmp_path, server.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("history bob")
        pty.expect("Your conversation with bob, oldest first:")
        pty.expect(rf"#{first} .*bob → alice: Lunch")
        pty.line(f"reply {first} --quote")
        pty.expect_editor()
        pty.line("Noon is fine.")
        pty.line(".")
        pty.expect(r"Sent message #(\d+) to bob\.")
        pty.line("sent")
        pty.expect(r"\d+\s+bob\s+.*waiting\s+Re: Lunch")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
    reply = [m for m in of_type(ok(server, "bob"), "message") if m["subject"] == "Re: Lunch"]
    assert reply[0]["body"].startswith("Noon is fine.\n\nOn ") and "> At noon?" in \
        reply[0]["body"]


def test_search_and_forward_at_the_prompt(server, tmp_path):
    for name in ("alice", "bob", "carol"):
        ok(server, name, create=True)
    first = of_type(ok(server, "bob", ['send alice "Budget" "The 2027 budget is ready"']),
                    "sent")[0]["id"]
    pty = terminal.ClientPty(tmp_path, server.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("search budget 2027")
        pty.expect(rf"#{first} .*bob → alice: Budget")
        pty.line(f'forward {first} carol "FYI"')
        pty.expect(r"Sent message #\d+ to carol\.")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
    forwarded = [m for m in of_type(ok(server, "carol"), "message")
                 if m["subject"] == "Fwd: Budget"]
    assert forwarded[0]["body"].startswith("FYI\n\n---------- Forwarded message")
