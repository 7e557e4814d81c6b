"""Tests for Modules/client/actions.py: the interactive prompt's commands.

The commands only the prompt knows (`reconnect`, a bare `send`), and the
outbox of `InteractiveRunner`: a send cut off by a lost connection is kept
and sent again, with the same client_id, once the connection is back.
"""

import pytest

from Modules.client import session as client_session
from Modules.client.commands import UsageError, parse_line


def test_interactive_commands_add_reconnect_and_a_bare_send():
    from Modules.client.actions import EXTRA_PARSERS
    assert parse_line("reconnect", EXTRA_PARSERS).name == "reconnect"
    assert parse_line("send", EXTRA_PARSERS).args == {}
    assert parse_line('send bob "a" "b"', EXTRA_PARSERS).args["body"] == "b"
    with pytest.raises(UsageError) as caught:
        parse_line("reconect", EXTRA_PARSERS)
    assert "'reconnect'" in caught.value.reason
    with pytest.raises(UsageError):       # batch mode knows no such command
        parse_line("reconnect")


class FlakySession:
    def __init__(self, failures):
        self.failures, self.calls = failures, []

    def send_message(self, to, subject, body, client_id):
        self.calls.append(client_id)
        if len(self.calls) <= self.failures:
            raise client_session.ConnectionLost("The server closed the connection.")
        return {"id": 9, "bounced": False, "duplicate": len(self.calls) > 1}


def _interactive_runner(session):
    from Modules.client.actions import InteractiveRunner
    from Modules.client.screen import ScreenOutput
    link = type("Link", (), {"session": session, "user": "alice"})()
    client = type("Client", (), {"output": ScreenOutput(), "terminal": None, "link": link,
                                 "remember": lambda self, *names: None})()
    return InteractiveRunner(client)


def test_a_send_cut_off_by_a_lost_connection_is_sent_again_with_the_same_id(capsys):
    from Modules.client.actions import Draft
    session = FlakySession(failures=1)
    runner = _interactive_runner(session)
    runner.deliver(Draft("bob", "Hi", "there", "id-1"))
    assert runner.outbox_summary() == ['to bob: "Hi"']
    assert "will be sent when the connection is back" in capsys.readouterr().err
    runner.flush_outbox()
    assert session.calls == ["id-1", "id-1"] and runner.outbox_summary() == []
    assert "Sent message #9 to bob" in capsys.readouterr().out
