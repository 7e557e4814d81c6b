"""Tests for Modules/client/link.py: reconnecting after the connection drops.

The backoff between tries the server turned away (1 s growing to 30 s,
with jitter) and the quick tries while nobody answers at all, the
re-login that never creates an account (nor changes a reset password) and
says why it stops, a `Link` reporting only the end of its current session
(no socket), and no retrying after the server ended a session on purpose
(kicked, suspended, password reset, idle timeout) or refused a suspended
account.
"""

import pytest

from Modules.client import login as client_login


def test_backoff_grows_to_thirty_seconds_with_some_jitter():
    import itertools

    from Modules.client.link import backoff_delays
    assert list(itertools.islice(backoff_delays(lambda: 0.0), 8)) == [1, 2, 4, 8, 15, 30, 30,
                                                                      30]
    assert next(backoff_delays(lambda: 1.0)) == pytest.approx(1.2)


def test_a_server_that_is_back_is_found_within_seconds_and_refusals_get_the_backoff(
        monkeypatch):
    from Modules.client import link as link_mod
    from Modules.client.session import CannotConnect, ServerRefused
    failures = [CannotConnect("refused", "refused")] * 25 + [
        ServerRefused("Server full.", "notice")] * 3 + [CannotConnect("refused", "refused"),
                                                        None]
    waits, tries = [], iter(failures)
    link = link_mod.Link("127.0.0.1", 1, "kh", LinkWatcher(), retry=True)
    link.client.on_link_waiting = lambda reason, delay: None
    link.user = "alice"
    link._wake.wait = waits.append

    def reconnect_once():
        failure = next(tries)
        if failure is not None:
            raise failure
        link.logged_in = True
    monkeypatch.setattr(link, "_reconnect_once", reconnect_once)
    link.client.on_link_back = lambda: None
    monkeypatch.setattr(link_mod.random, "random", lambda: 0.0)
    link._retry_loop()
    assert waits[0] == 1                                       # the first try after 1 s
    assert waits[1:26] == [1.0] * 25                           # nobody there: every 1-2 s
    assert waits[26:30] == [2, 4, 8, 1.0]                      # turned away: backing off


def test_relogin_never_creates_an_account_and_says_why():
    from Modules.client.link import ReLogin
    login = ReLogin("bob", "password1")
    answer = login.answer({"prompt": "new_password", "message": "...", "username": "bob"})
    assert answer.fields == {"cancel": True} and "no longer exists" in answer.stop
    prompt = {"prompt": "password", "message": "Password:", "username": "bob"}
    assert login.answer(prompt).fields == {"password": "password1"}
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({**prompt, "message": "Wrong password for bob. 2 tries left."})
    assert caught.value.code == "wrong_password"


class LinkWatcher:
    def __init__(self):
        self.down = []

    def on_link_down(self, reason, was_up):
        self.down.append((reason, was_up))


def test_link_reports_only_the_end_of_its_current_session():
    from Modules.client.link import Link, _Forwarder
    watcher = LinkWatcher()
    link = Link("127.0.0.1", 1, "kh", watcher, retry=False)
    stale = _Forwarder(link)
    link._forwarder, link.logged_in = _Forwarder(link), True
    link.lost(stale, "old news")
    assert watcher.down == []
    link.lost(link._forwarder, "The server closed the connection.")
    assert watcher.down == [("The server closed the connection.", True)]
    assert not link.logged_in and link.down_reason.startswith("The server")


class RetryWatcher(LinkWatcher):
    def __init__(self):
        super().__init__()
        self.said = []

    def on_system(self, event, message):
        self.said.append(event)


@pytest.mark.parametrize("event", ["kicked", "suspended", "password_reset", "idle_timeout"])
def test_no_reconnecting_by_itself_after_the_server_ended_the_session(event, monkeypatch):
    from Modules.client.link import Link, _Forwarder
    watcher = RetryWatcher()
    link = Link("127.0.0.1", 1, "kh", watcher, retry=True)
    started = []
    monkeypatch.setattr(link, "start_retrying", lambda: started.append(True))
    link._forwarder, link.logged_in = _Forwarder(link), True
    link._forwarder.on_system(event, "The server's administrator ended this session.")
    link.lost(link._forwarder, "The server's administrator ended this session.")
    assert watcher.said == [event] and link.ended_by == event and started == []
    assert watcher.down == [("The server's administrator ended this session.", True)]
    link._forwarder, link.logged_in, link.ended_by = _Forwarder(link), True, None
    link._forwarder.on_system("shutdown", "The server is shutting down.")
    link.lost(link._forwarder, "The server is shutting down.")
    assert started == [True]                      # a shutdown is still retried


def test_a_suspended_account_or_a_reset_password_stops_the_relogin():
    from Modules.client.link import FATAL_CODES, ReLogin
    assert "suspended" in FATAL_CODES
    login = ReLogin("bob", "password1")
    login.answer({"prompt": "password", "message": "Password:", "username": "bob"})
    answer = login.answer({"prompt": "new_password", "message": "Reset.", "username": "bob"})
    assert answer.fields == {"cancel": True} and "reset" in answer.stop
