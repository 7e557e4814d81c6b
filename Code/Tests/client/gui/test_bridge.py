"""Tests for Modules/client/gui/bridge.py: the windowed client's network side, no Tk.

`GuiClient` against a real server: the login's events, a command's record
with its tag, a pushed message once, a command while the connection is
down (one sentence, nothing raised), the login window's plain refusals
(`GuiLogin`), and the password never put on the event queue. The server
address parser is a pure function.
"""

import queue

import pytest

from Modules.client.gui.bridge import GuiClient, format_address, parse_address
from Tests.support import PASSWORD, wait_until
from Tests.support.clients import run_ok as ok


class Events:
    """The client's queue, read like the Tk pump does, kept for looking back."""

    def __init__(self, client):
        self.client, self.seen = client, []

    def next(self, kind, tag=None, timeout=30):
        """The first event of `kind` (whose second item is `tag`, if given)."""
        def found():
            while True:
                try:
                    self.seen.append(self.client.events.get_nowait())
                except queue.Empty:
                    break
            return next((e for e in self.seen if e[0] == kind
                         and (tag is None or e[1] == tag)), None)
        event = wait_until(found, timeout, message=f"a {kind} event")
        self.seen.remove(event)
        return event

    def record(self, kind):
        def found():
            try:
                self.seen.append(self.client.events.get_nowait())
            except queue.Empty:
                pass
            return next((e for e in self.seen if e[0] == "record" and e[2]["type"] == kind),
                        None)
        event = wait_until(found, message=f"a {kind} record")
        self.seen.remove(event)
        return event


@pytest.fixture
def gui_client(server):
    client = GuiClient(str(server.tmp_path / "known_hosts"))
    try:
        yield client
    finally:
        client.close()


def test_login_a_command_and_a_push_come_as_events(server, gui_client):
    ok(server, "alice", create=True)
    ok(server, "bob", ['send alice "Early" "before the login"'], create=True)
    events = Events(gui_client)
    gui_client.login("127.0.0.1", server.port, "alice", PASSWORD, False)
    assert events.next("logged_in")[1:] == ("alice", 1)
    _record, tag, early = events.record("message")
    assert (tag, early["via"], early["subject"]) == (None, "login", "Early")   # a push
    gui_client.command("mine", "inbox")
    _record, tag, inbox = events.record("inbox")
    assert tag == "mine" and [m["subject"] for m in inbox["messages"]] == ["Early"]
    assert inbox["before"] is None and inbox["messages"][0]["unread"]   # listed, not read
    ok(server, "bob", ['send alice "Live" "now"'])
    _record, tag, live = events.record("message")
    assert (tag, live["via"], live["subject"]) == (None, "push", "Live")
    assert PASSWORD not in repr(events.seen)


def test_a_refusal_is_one_sentence_and_the_session_goes_on(server, gui_client):
    ok(server, "alice", create=True)
    events = Events(gui_client)
    gui_client.login("127.0.0.1", server.port, "alice", PASSWORD, False)
    events.next("logged_in")
    gui_client.command("read", "read", id=999)
    _record, tag, error = events.record("error")
    assert tag == "read" and error["error"].endswith(".")
    gui_client.command("again", "inbox")
    assert events.record("inbox")[1] == "again"


def test_a_command_while_the_server_is_gone_fails_with_a_sentence(server, gui_client):
    ok(server, "alice", create=True)
    events = Events(gui_client)
    gui_client.login("127.0.0.1", server.port, "alice", PASSWORD, False)
    events.next("logged_in")
    server.kill_group()
    assert events.next("link")[1] == "down"
    gui_client.command("inbox", "inbox")
    failed = events.next("job_failed")
    assert failed[1] == "inbox" and failed[2].startswith("Not connected (")
    assert events.next("job_done", "inbox")


@pytest.mark.parametrize("user, create, said", [
    ("zed", False, "There is no account zed on this server; press Create account to "
                   "make it."),
    ("alice", True, "The account alice exists already; press Log in to use it."),
    ("no spaces", False, "A username starts with a letter"),
])
def test_the_login_window_s_refusals(server, gui_client, user, create, said):
    ok(server, "alice", create=True)
    events = Events(gui_client)
    gui_client.login("127.0.0.1", server.port, user, PASSWORD, create)
    _kind, message, _code = events.next("login_failed")
    assert message.startswith(said)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 7117)),
    ("example.org:9000", ("example.org", 9000)),
    ("[::1]:7200", ("::1", 7200)),
    (" host:1 ", ("host", 1)),
])
def test_addresses(text, expected):
    assert parse_address(text, 7117) == expected
    assert parse_address(format_address(*expected), 7117) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:70000", "host:port", ":80"])
def test_bad_addresses_are_one_sentence(text):
    with pytest.raises(ValueError) as refused:
        parse_address(text, 7117)
    assert str(refused.value).endswith(".")
