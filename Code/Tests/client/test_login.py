"""Tests for Modules/client/login.py: the scripted login answers and the server-key pin.

`ScriptedLogin`: the name and password given, stopping on a wrong password
or a refused name, creating an account only with --create and a good
password; what a wrong password tells a person to do; `check_server_key`:
a new key refused in batch mode unless --accept-new-host-key, asked at a
terminal, a changed key always refused with the known_hosts line to remove.
A new_password prompt right after a password prompt is a forced change
after the administrator's reset: a script stops and says why, a person is
asked twice for the new password (never the account-creation question).
"""

import pytest

from Modules import identity
from Modules.client import login as client_login
from Modules.client import session as client_session

# ------------------------------------------------------------ login answers


def test_scripted_login_answers_then_stops_on_a_wrong_password():
    login = client_login.ScriptedLogin("Bob", "password1")
    assert login.answer({"prompt": "username", "message": "?"}).fields == {"username": "Bob"}
    prompt = {"prompt": "password", "message": "Password for bob:", "username": "bob"}
    assert login.answer(prompt).fields == {"password": "password1"}
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({**prompt, "message": "Wrong password for bob. 2 tries left."})
    assert caught.value.message == "Wrong password for bob."


def test_a_busy_answer_is_waited_out_and_the_same_password_sent_again():
    notes, waits = [], []
    login = client_login.ScriptedLogin("bob", "password1", note=notes.append,
                                       sleep=waits.append)
    login.answer({"prompt": "username", "message": "?"})
    prompt = {"prompt": "password", "message": "Password for bob:", "username": "bob"}
    assert login.answer(prompt).fields == {"password": "password1"}
    busy = {**prompt, "message": "The server is busy.", "retry_after": 1}
    for _ in range(client_login.RETRIES):
        assert login.answer(busy).fields == {"password": "password1"}   # not "wrong"
    for n, wait in enumerate(waits[:4]):                                # backing off
        assert 2 ** n <= wait <= 2 ** n * 1.2 + 0.05
    assert all(w <= client_login.RETRY_WAIT_MAX * 1.2 + 0.05 for w in waits)
    assert len(notes) == client_login.RETRIES and "Trying again in" in notes[0]
    with pytest.raises(client_login.LoginFailed) as caught:           # then it gives up
        login.answer(busy)
    assert caught.value.message == "The server is busy."


def test_a_throttled_answer_too_long_to_wait_is_a_refusal_at_once():
    waits = []
    login = client_login.ScriptedLogin("bob", "password1", sleep=waits.append)
    prompt = {"prompt": "password", "message": "Password for bob:", "username": "bob"}
    login.answer(prompt)
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({**prompt, "message": "Too many failed logins; try again in 60 "
                                           "seconds.", "retry_after": 60})
    assert "60 seconds" in caught.value.message and waits == []


def test_scripted_login_without_create_cancels_and_explains():
    login = client_login.ScriptedLogin("zed", "password1")
    answer = login.answer({"prompt": "new_password", "message": "...", "username": "zed"})
    assert answer.fields == {"cancel": True}
    assert answer.stop == "There is no account zed (add --create to create it)."


def test_scripted_login_creates_with_a_good_password_only():
    prompt = {"prompt": "new_password", "message": "...", "username": "zed"}
    assert client_login.ScriptedLogin("zed", "password1", create=True).answer(
        prompt).fields == {"new_password": "password1"}
    answer = client_login.ScriptedLogin("zed", "short", create=True).answer(prompt)
    assert answer.fields == {"cancel": True} and "at least" in answer.stop


def test_scripted_login_stops_when_the_name_is_refused():
    login = client_login.ScriptedLogin("root", "password1")
    login.answer({"prompt": "username", "message": "Username:"})
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({"prompt": "username", "message": "The name 'root' is reserved."})
    assert caught.value.message == "The name 'root' is reserved."


def test_wrong_password_says_what_to_do():
    text = client_login.password_refusal("Wrong password for bob. 2 tries left.")
    assert text.endswith("press Ctrl-C to log in with another name.")
    assert client_login.password_refusal("Too many failed logins; try again in 4 "
                                         "seconds.").endswith("4 seconds.")


# ------------------------------------------------------------ server key pin

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def test_new_key_is_refused_in_batch_and_accepted_with_the_flag(tmp_path):
    path = str(tmp_path / "known_hosts")
    with pytest.raises(client_session.ServerRefused) as caught:
        client_login.check_server_key(KEY_A, "h:1", path)
    assert "--accept-new-host-key" in caught.value.message
    assert identity.fingerprint(KEY_A) in caught.value.message
    notes = []
    assert client_login.check_server_key(KEY_A, "h:1", path, True, note=notes.append) == "new"
    assert len(notes) == 1
    assert client_login.check_server_key(KEY_A, "h:1", path) == "match"


def test_new_key_at_a_terminal_is_asked(tmp_path):
    path = str(tmp_path / "known_hosts")
    with pytest.raises(client_session.ServerRefused):
        client_login.check_server_key(KEY_A, "h:1", path, ask=lambda q: False,
                                      note=lambda text: None)
    assert client_login.check_server_key(KEY_A, "h:1", path, ask=lambda q: True,
                                         note=lambda text: None) == "new"


def test_changed_key_is_always_refused_with_the_line_to_remove(tmp_path):
    path = tmp_path / "known_hosts"
    identity.KnownHosts(str(path)).add("other:2", KEY_B)
    identity.KnownHosts(str(path)).add("h:1", KEY_A)
    with pytest.raises(client_session.ServerRefused) as caught:
        client_login.check_server_key(KEY_B, "h:1", str(path), accept_new=True,
                                      ask=lambda q: True)
    message = caught.value.message
    assert "CHANGED" in message and "attack" in message and "reinstalled" in message
    assert identity.fingerprint(KEY_A) in message and identity.fingerprint(KEY_B) in message
    assert f"line 2 of {path}" in message


# ------------------------------------------------------------ a reset password

RESET = {"prompt": "new_password", "username": "bob",
         "message": "Your password was reset by the administrator: choose a new one to "
                    "finish logging in."}


class FakeTerminal:
    """Answers ask_secret from a list; confirm must never be asked."""

    def __init__(self, secrets):
        self.secrets, self.asked = list(secrets), []

    def ask_secret(self, text):
        self.asked.append(text)
        return self.secrets.pop(0)

    def ask(self, text):
        self.asked.append(text)
        return "zed"

    def confirm(self, text):
        raise AssertionError(f"asked {text!r}")


def test_a_script_stops_when_its_one_time_password_must_be_changed():
    login = client_login.ScriptedLogin("bob", "one-time-pw", create=True)
    login.answer({"prompt": "username", "message": "?"})
    login.answer({"prompt": "password", "message": "Password:", "username": "bob"})
    answer = login.answer(RESET)
    assert answer.fields == {"cancel": True}
    assert "reset" in answer.stop and "without --batch" in answer.stop


def test_a_person_chooses_the_new_password_twice_after_a_reset():
    notes = []
    terminal = FakeTerminal(["short", "a new password", "a typo!!", "a new password",
                             "a new password"])
    login = client_login.InteractiveLogin(terminal, notes.append, user="bob",
                                          password="one-time-pw")
    login.answer({"prompt": "username", "message": "?"})
    assert login.answer({"prompt": "password", "message": "Password:",
                         "username": "bob"}).fields == {"password": "one-time-pw"}
    assert login.answer(RESET).fields == {"new_password": "a new password"}
    assert notes[0] == RESET["message"]                   # why, before asking
    assert any("at least" in note for note in notes) and any("differ" in note
                                                             for note in notes)
    assert terminal.asked[-2:] == ["New password: ", "Repeat the new password: "]
    assert login.last_password == "a new password"        # for reconnecting
    terminal.secrets = ["another password", "another password"]
    refused = {**RESET, "message": "The password has at least 8 characters."}
    assert login.answer(refused).fields == {"new_password": "another password"}
    assert notes[-1] == refused["message"]                # still a change, not a creation


def test_a_new_password_prompt_after_the_username_is_still_a_creation():
    terminal = FakeTerminal(["password1", "password1"])
    login = client_login.InteractiveLogin(terminal, lambda text: None, user="bob",
                                          password="password0", create=True)
    login.answer({"prompt": "username", "message": "?"})
    login.answer({"prompt": "password", "message": "Password:", "username": "bob"})
    login.answer({"prompt": "username", "message": "Cancelled."})     # back, then zed
    prompt = {"prompt": "new_password", "message": "...", "username": "zed"}
    assert login.answer(prompt).fields == {"new_password": "password1"}
    assert not login.changing and login.confirmed_create == "zed"


def test_declining_to_create_the_account_asks_for_the_username_once():
    notes = []

    class Declining(FakeTerminal):
        def confirm(self, text):
            self.asked.append(text)
            return False
    terminal = Declining([])
    login = client_login.InteractiveLogin(terminal, notes.append)
    first = {"prompt": "username", "message": "Username (a new name creates an account):"}
    assert login.answer(first).fields == {"username": "zed"}
    offer = {"prompt": "new_password", "message": "There is no account 'zed'. ...",
             "username": "zed"}
    assert login.answer(offer).fields == {"cancel": True}
    assert login.answer(first).fields == {"username": "zed"}
    assert terminal.asked == ["Username: ", "No account zed. Create it? [y/N] ", "Username: "]
    assert notes == []                       # no second "Username (…):" over the prompt
    refused = {"prompt": "username", "message": "That account could not be created; "
                                                "choose another username."}
    login.answer(refused)
    assert notes == [refused["message"]]     # a refusal is still said


def test_a_wait_of_one_second_is_said_in_the_singular(monkeypatch):
    notes = []
    monkeypatch.setattr(client_login.random, "uniform", lambda low, high: low)
    login = client_login.ScriptedLogin("bob", "password1", note=notes.append,
                                       sleep=lambda seconds: None)
    prompt = {"prompt": "password", "message": "Password for bob:", "username": "bob"}
    login.answer(prompt)
    login.answer({**prompt, "message": "The server is busy.", "retry_after": 1})
    assert notes == ["The server is busy. Trying again in 1 second."]
