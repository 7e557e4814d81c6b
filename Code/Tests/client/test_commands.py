"""Tests for Modules/client/commands.py: batch command lines and running them.

`parse_line`: blank and comment lines, shell quoting, what each command
accepts and the one sentence for what it does not (with the closest
command suggested, neutralised); `LineJoiner`: multi-line quotes, leftovers
and its limit; `Runner` with a fake session: whole `send` lines in batch
mode, `delete-account` without a question in batch mode and only after the
username is typed at a terminal.
"""

import json

import pytest

from Modules.client import commands as client_commands
from Modules.client import output as client_output
from Modules.client.commands import Command, LineJoiner, UsageError, parse_line

# ------------------------------------------------------------ batch lines


def test_blank_and_comment_lines_are_nothing():
    for line in ("", "   ", "# a comment", "   # indented comment"):
        assert parse_line(line) is None


def test_send_with_shell_quoting():
    command = parse_line('send Bob "Lunch today" \'At noon? "yes"\'')
    assert command == Command("send", {"to": "bob", "subject": "Lunch today",
                                       "body": 'At noon? "yes"'},
                              'send Bob "Lunch today" \'At noon? "yes"\'')


def test_send_may_leave_subject_and_body_to_questions():
    assert parse_line("send bob").args == {"to": "bob"}
    assert parse_line("send bob Hi").args == {"to": "bob", "subject": "Hi"}


@pytest.mark.parametrize("line, words", [
    ("send", "Usage: send"),
    ("send a b c d", "Usage: send"),
    ("send 9lives x y", "username"),
    ('send bob "x" "y" extra', "Usage"),
    ('send bob "unclosed', "quotation"),
    ("read", "Usage: read"),
    ("read abc", "not a message number"),
    ("read 0", "not a message number"),
    ("delete", "Usage: delete"),
    ("inbox --limit 0", "1 to 200"),
    ("inbox --limit 201", "1 to 200"),
    ("inbox --before", "Usage: inbox"),
    ("inbox --sideways 3", "Usage: inbox"),
    ("logout now", "Usage: logout"),
])
def test_bad_commands_say_what_is_wrong(line, words):
    with pytest.raises(UsageError) as caught:
        parse_line(line)
    assert words in caught.value.reason


def test_unknown_command_suggests_the_closest():
    with pytest.raises(UsageError) as caught:
        parse_line("inbx")
    assert "'inbox'" in caught.value.reason
    with pytest.raises(UsageError) as caught:
        parse_line("delete-acount")
    assert "'delete-account'" in caught.value.reason
    with pytest.raises(UsageError) as caught:
        parse_line("zzzzzz")
    assert "help" in caught.value.reason


def test_unknown_command_word_is_neutralised():
    with pytest.raises(UsageError) as caught:
        parse_line("\x1b[2J")
    assert "\x1b" not in caught.value.reason


def test_ids_aliases_and_flags():
    assert parse_line("read #12").args == {"id": 12}
    assert parse_line("delete 12 13 12").args == {"ids": [12, 13]}
    assert parse_line("inbox --before 40 --limit=10").args == {"before": 40, "limit": 10}
    assert parse_line("QUIT").name == "logout"
    assert parse_line("exit").name == "logout"
    assert parse_line("help send").args == {"topic": "send"}
    assert parse_line("delete-account").name == "delete-account"


def test_line_joiner_continues_an_open_quotation():
    joiner = LineJoiner()
    assert joiner.feed('send bob "Hi" "first line\n') is None
    assert joiner.feed("\n") is None
    text = joiner.feed('last line"\n')
    assert parse_line(text).args["body"] == "first line\n\nlast line"
    assert joiner.feed("inbox\n") == "inbox"
    assert joiner.leftover() is None


def test_line_joiner_leaves_comments_alone_and_reports_leftovers():
    joiner = LineJoiner()
    assert joiner.feed("# it's a comment\n") == "# it's a comment"
    assert joiner.feed('send bob "never closed\n') is None
    assert joiner.leftover() == 'send bob "never closed'


def test_line_joiner_gives_up_on_endless_quotes():
    joiner = LineJoiner(max_chars=50)
    assert joiner.feed('send bob "x" "' + "y" * 60) is not None


# ------------------------------------------------------------ running commands


class FakeSession:
    def __init__(self):
        self.calls = []

    def delete_account(self):
        self.calls.append("delete_account")
        return {"deleted": True, "bounced": 1}

    def send_message(self, to, subject, body):
        self.calls.append(("send", to, subject, body))
        return {"rid": 1, "id": 5, "bounced": False, "duplicate": False}


def test_batch_runner_needs_whole_send_lines(capsys):
    runner = client_commands.Runner(FakeSession(), client_output.Output(json_mode=True))
    assert runner.run(parse_line("send bob Hi")) == client_commands.FAILED
    record = json.loads(capsys.readouterr().out)
    assert record["type"] == "error" and record["command"] == "send bob Hi"
    assert runner.run(parse_line('send bob Hi "there"')) == client_commands.OK
    assert json.loads(capsys.readouterr().out)["type"] == "sent"


def test_batch_delete_account_asks_nothing(capsys):
    session = FakeSession()
    runner = client_commands.Runner(session, client_output.Output(json_mode=True))
    assert runner.run(parse_line("delete-account")) == client_commands.ACCOUNT_DELETED
    assert json.loads(capsys.readouterr().out) == {"type": "account_deleted", "bounced": 1}
    assert session.calls == ["delete_account"]


def test_interactive_delete_account_needs_the_username(capsys):
    session = FakeSession()
    ui = type("Ui", (), {"confirm_delete": lambda self, user: False})()
    runner = client_commands.Runner(session, client_output.Output(), ui, "bob")
    assert runner.run(parse_line("delete-account")) == client_commands.OK
    assert session.calls == [] and "not deleted" in capsys.readouterr().out
