"""Tests for Modules/client/actions.py: the interactive prompt's commands.

The commands only the prompt knows (`reconnect`, a bare `send`), and the
outbox of `InteractiveRunner`: a send cut off by a lost connection, or
finished while it is down, is kept and sent (again, with the same
client_id) once the connection is back.
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


class FakeLink:
    def __init__(self, session, connected=True):
        self.session, self.user, self.connected, self.woken = session, "alice", connected, 0

    def wake(self):
        self.woken += 1


def _interactive_runner(session, connected=True):
    from Modules.client.actions import InteractiveRunner
    from Modules.client.screen import ScreenOutput
    client = type("Client", (), {"output": ScreenOutput(), "terminal": None,
                                 "link": FakeLink(session, connected),
                                 "remember": lambda self, *names: None,
                                 "when_back": lambda self: "as soon as the connection is back"})()
    return InteractiveRunner(client)


def test_a_send_cut_off_by_a_lost_connection_is_sent_again_with_the_same_id(capsys):
    from Modules.client.actions import Draft
    session = FlakySession(failures=1)
    runner = _interactive_runner(session)
    runner.deliver(Draft("bob", "Hi", "there", "id-1"))
    assert runner.outbox_summary() == ['to bob: "Hi"']
    assert "will be sent as soon as the connection is back" in capsys.readouterr().err
    runner.flush_outbox()
    assert session.calls == ["id-1", "id-1"] and runner.outbox_summary() == []
    assert "Sent message #9 to bob" in capsys.readouterr().out


def test_a_message_finished_while_disconnected_waits_in_the_outbox_unsent(capsys):
    from Modules.client.actions import Draft
    session = FlakySession(failures=0)
    runner = _interactive_runner(session, connected=False)
    runner.deliver(Draft("bob", "Hi", "there", "id-2"))
    assert session.calls == [] and runner.outbox_summary() == ['to bob: "Hi"']
    assert runner.client.link.woken == 1                 # the retrying thread tries now
    assert ("Not sent yet: the connection is down. Your message to bob is kept and will "
            "be sent as soon as the connection is back.") in capsys.readouterr().err
    runner.client.link.connected = True
    runner.flush_outbox()
    assert session.calls == ["id-2"] and runner.outbox_summary() == []
