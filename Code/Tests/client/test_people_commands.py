"""Tests for Modules/client/people_commands.py: `who`, `presence`, `last`, and notices.

Through the real client against a real daemon: batch --json (the records
README documents), and the interactive client in a pseudo-terminal (a
notice printed above the prompt leaves a half-typed line alone; `who` is
a table). The parsers are pure and tested on their own. Waits are on
conditions (a record or a screen line), never fixed times.
"""

import os
import shutil
import types

import pytest

from Modules.client import commands
from Modules.client.command_words import UsageError
from Modules.client.output import Output
from Modules.client.people_commands import idle_text, last_record, who_lines, who_record
from Tests.support import BatchClient, run_client, run_ok, terminal


def ok(server, user, lines=(), create=False):
    code, objects, stderr = run_client(server, user, lines, create=create)
    assert code == 0, stderr
    return objects


def of_type(objects, kind):
    return [o for o in objects if o["type"] == kind]


# ------------------------------------------------------------ parsing and text


def test_the_commands_parse_and_refuse_with_one_sentence():
    assert commands.parse_line("who").args == {}
    assert commands.parse_line("presence").args == {}
    assert commands.parse_line("presence OFF").args == {"state": "off"}
    assert commands.parse_line("last Bob").args == {"username": "bob"}
    for line, words in (("who me", "Usage: who"), ("presence maybe", "'maybe' is not a presence setting"),
                        ("last", "Usage: last NAME"), ("last a b", "Usage: last NAME"),
                        ("last x", "A username has")):
        with pytest.raises(UsageError) as error:
            commands.parse_line(line)
        assert error.value.reason.startswith(words), error.value.reason


def test_the_human_text_of_who_and_last():
    record = who_record([{"user": "alice", "since": 0, "idle": 75},
                         {"user": "bob\x1b[2J", "since": 0, "idle": 3}])
    text = who_lines(Output(), record)
    assert "alice" in text and "1m" in text and "bob\\x1b[2J" in text
    assert text.endswith("2 people online.")
    assert who_lines(Output(), who_record([])) == "Nobody you can see is online."
    assert [idle_text(s) for s in (0, 59, 60, 7200, 90000, None)] == \
        ["0s", "59s", "1m", "2h", "1d", "?"]
    unknown = last_record({"user": "bob", "online": False})
    assert unknown == {"type": "last", "user": "bob", "online": False, "since": None,
                       "last_seen": None}


class _Pages:
    """A session whose Online answers come in pages of two."""

    def __init__(self, names):
        self.names, self.asked = names, []

    def request(self, op, after=None, limit=None):
        self.asked.append(after)
        rest = [name for name in self.names if after is None or name > after]
        return {"people": [{"user": n, "since": 0, "idle": 0} for n in rest[:2]],
                "more": len(rest) > 2}


class _Written(Output):
    def __init__(self):
        super().__init__()
        self.lines = []

    def _write(self, _stream, text):
        self.lines += text.split("\n")


def test_who_fetches_every_page_and_a_person_may_stop_the_pager(monkeypatch):
    session = _Pages([f"user{i:02d}" for i in range(30)])
    output, questions = _Written(), []
    runner = types.SimpleNamespace(session=session, output=output,
                                   ui=types.SimpleNamespace(more=lambda: questions.append(1)))
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback: os.terminal_size((80, 12)))
    assert commands._RUNS["who"](runner, {}) == commands.OK
    assert session.asked[:3] == [None, "user01", "user03"] and len(session.asked) == 15
    assert len(output.lines) == 10 and questions == [1]     # one screen, then stopped


# ------------------------------------------------------------ batch and JSON


def test_batch_who_presence_and_last_as_json(server):
    ok(server, "bob", create=True)
    alice = BatchClient(server, "alice", create=True)
    started = [alice]
    try:
        alice.wait_type("ready")
        bob = BatchClient(server, "bob")
        started.append(bob)
        bob.wait_type("ready")
        told = alice.wait_type("system", event="presence")
        assert told["message"] == "bob is online"
        bob.send("who")
        who = bob.wait_type("who")
        assert [p["user"] for p in who["people"]] == ["alice", "bob"]
        assert all(p["since"].endswith("Z") and p["idle"] >= 0 for p in who["people"])
        alice.send("last bob")
        last = alice.wait_type("last")
        assert last["online"] is True and last["since"].endswith("Z")
        bob.send("presence off")
        assert bob.wait_type("presence") == {"type": "presence", "presence": "off"}
        assert alice.wait_type("system", event="presence")["message"] == "bob went offline"
        alice.send("who")
        assert [p["user"] for p in alice.wait_type("who")["people"]] == ["alice"]
        alice.send("last bob")
        alice.send("last nosuchname")
        hidden, unknown = alice.wait_type("last"), alice.wait_type("last")
        assert {**hidden, "user": None} == {**unknown, "user": None}
        assert hidden["online"] is False and hidden["last_seen"] is None
        bob.send("presence")
        assert bob.wait_type("presence")["presence"] == "off"
        bob.send("presence on")
        assert alice.wait_type("system", event="presence")["message"] == "bob is online"
        assert bob.close() == 0
        assert alice.wait_type("system", event="presence")["message"] == "bob went offline"
        alice.send("last bob")
        assert alice.wait_type("last")["last_seen"].endswith("Z")
        assert alice.close() == 0
    finally:
        for client in started:
            client.kill()


def test_a_person_blocked_sees_nothing_of_the_blocker_through_the_real_client(server):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    assert of_type(ok(server, "bob", ["block alice"]), "block")[0]["changed"] is True
    alice = BatchClient(server, "alice")
    started = [alice]
    try:
        alice.wait_type("ready")
        carol = BatchClient(server, "carol", create=True)
        started.append(carol)
        carol.wait_type("ready")
        alice.wait_for(lambda o: "carol" in o.get("message", ""))   # that second is over
        bob = BatchClient(server, "bob")
        started.append(bob)
        bob.wait_type("ready")
        assert carol.wait_type("system", event="presence",
                               message="bob is online")["event"] == "presence"
        alice.send("who")
        alice.send("last bob")
        assert "bob" not in [p["user"] for p in alice.wait_type("who")["people"]]
        assert alice.wait_type("last") == {"type": "last", "user": "bob", "online": False,
                                           "since": None, "last_seen": None}
        assert bob.close() == 0
        assert carol.wait_type("system", event="presence",
                               message="bob went offline")["event"] == "presence"
        alice.send("who")                     # anything told to alice came before this
        alice.wait_type("who")
        assert not [o for o in alice.seen if "bob" in o.get("message", "")]
        assert alice.close() == 0 and carol.close() == 0
    finally:
        for client in started:
            client.kill()


def test_a_bad_presence_word_is_one_sentence_and_exit_status_1(server):
    code, objects, stderr = run_client(server, "alice", ["presence sometimes"], create=True)
    assert code == 1
    assert of_type(objects, "error")[0]["code"] == "bad_command"
    assert "'sometimes' is not a presence setting: use 'presence on' or 'presence off'." \
        in stderr


# ------------------------------------------------------------ at the prompt


def test_a_notice_comes_above_the_prompt_and_who_is_a_table(server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    pty = terminal.ClientPty(tmp_path, server.port, login="alice")
    bob = None
    try:
        pty.expect("No unread messages")
        pty.expect("alice>")
        pty.send("las")                                # half typed, no Enter
        pty.expect("las")
        bob = BatchClient(server, "bob")
        pty.expect("bob is online")
        pty.line("t bob")                              # the line typed before goes on
        pty.expect(r"bob is online now \(since \d{4}-\d\d-\d\d \d\d:\d\d\)\.")
        pty.line("who")
        pty.expect(r"NAME +SINCE +IDLE")
        pty.expect(r"2 people online\.")
        pty.line("help who")
        pty.expect(r"People who\s+turned their presence off")
        bob.close()
        pty.expect("bob went offline")
        pty.send("\x04")
        assert pty.wait_exit() == 0
        assert "Traceback" not in pty.raw
    finally:
        pty.close()
        if bob is not None:
            bob.kill()


def test_presence_and_last_at_the_prompt(server, tmp_path):
    run_ok(server, "alice", create=True)
    run_ok(server, "bob", create=True)
    pty = terminal.ClientPty(tmp_path, server.port, login="alice")
    try:
        pty.expect("alice>")
        pty.line("last bob")
        pty.expect("bob was last online")
        pty.line("presence off")
        pty.expect("Your presence is off: nobody sees you online")
        pty.line("presence on")
        pty.expect("Your presence is on: others see you online.")
        pty.line("quit")
        assert pty.wait_exit() == 0
    finally:
        pty.close()
