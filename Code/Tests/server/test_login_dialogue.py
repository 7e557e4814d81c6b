"""Tests for Modules/server/login_dialogue.py: the server-driven login dialogue, sans-IO.

Drives a LoginDialogue with client Login packets and database outcomes and
checks its outputs (prompts, actions, LoggedIn / Refused). Every row of TABLE
is exercised; so are the moves outside it (RemoteProtocolError for a client
answer we did not ask for, LocalProtocolError for an outcome we did not
request, both sticky and naming state and event), malformed Login answers,
the MAX_STEPS bound, and that no action's repr shows a password. The
operator's side: the greeting in the first prompt only, a suspended
account's refusal, and the new password a one-time password leads to.
"""

import pytest

from Modules import rules
from Modules.server import login_dialogue as ld
from Modules.server.login_dialogue import (
    MAX_STEPS,
    TABLE,
    ChangePassword,
    CheckUser,
    CreateAccount,
    LoggedIn,
    LoginDialogue,
    Refused,
    VerifyPassword,
)
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.serializers import Packet

PASSWORD = "correct horse"


# ----------------------------------------------------------------- helpers


class Recording(LoginDialogue):
    """A LoginDialogue that notes every (state, event) row of TABLE it takes."""

    def __init__(self, *args, rows=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = set() if rows is None else rows

    def _dispatch(self, event, value, error_class):
        if (self.state, event) in TABLE:
            self.rows.add((self.state, event))
        return super()._dispatch(event, value, error_class)


def answer(dialogue, **fields):
    return dialogue.receive(Packet("Login", fields))


def prompt_of(outputs):
    assert len(outputs) == 1 and isinstance(outputs[0], Packet), outputs
    packet = outputs[0]
    assert packet.op == "Login"
    return packet.data["prompt"], packet.data


def at_password(username="alice", rows=None):
    dialogue = Recording(rows=rows)
    assert prompt_of(dialogue.start())[0] == "username"
    assert answer(dialogue, username=username) == [CheckUser(username.lower())]
    assert dialogue.state == ld.CHECKING
    prompt, data = prompt_of(dialogue.outcome("exists"))
    assert prompt == "password" and dialogue.state == ld.ASK_PASSWORD
    return dialogue, data


def at_new_password(username="newbie"):
    dialogue = Recording()
    dialogue.start()
    assert answer(dialogue, username=username) == [CheckUser(username)]
    prompt, data = prompt_of(dialogue.outcome("missing"))
    assert prompt == "new_password" and dialogue.state == ld.ASK_NEW_PASSWORD
    return dialogue, data


def at_changed_password(username="alice", rows=None):
    dialogue, _ = at_password(username, rows)
    answer(dialogue, password="one-time-pw")
    prompt, data = prompt_of(dialogue.outcome("must_change", "Choose a new one."))
    assert prompt == "new_password" and dialogue.state == ld.ASK_CHANGED_PASSWORD
    return dialogue, data


# ------------------------------------------------------------ the dialogue


def test_existing_user_right_password():
    dialogue, data = at_password("Alice")
    assert data["username"] == "alice" and data["attempts_left"] == 3
    assert answer(dialogue, password=PASSWORD) == [VerifyPassword("alice", PASSWORD)]
    assert dialogue.state == ld.VERIFYING
    assert dialogue.outcome("verified") == [LoggedIn("alice", created=False)]
    assert dialogue.state == ld.DONE


def test_wrong_password_twice_then_right():
    dialogue, _ = at_password()
    for left in (2, 1):
        assert answer(dialogue, password="nope-nope") == [VerifyPassword("alice", "nope-nope")]
        prompt, data = prompt_of(dialogue.outcome("wrong_password"))
        assert prompt == "password" and data["attempts_left"] == left
        assert data["message"] == f"Wrong password for alice. {left} " + (
            "try left." if left == 1 else "tries left.")
    answer(dialogue, password=PASSWORD)
    assert dialogue.outcome("verified") == [LoggedIn("alice", False)]


def test_three_wrong_passwords_are_refused():
    dialogue, _ = at_password()
    outputs = None
    for _ in range(3):
        answer(dialogue, password="nope-nope")
        outputs = dialogue.outcome("wrong_password")
    assert len(outputs) == 1 and isinstance(outputs[0], Refused)
    assert outputs[0].code == "too_many_attempts"
    assert dialogue.state == ld.FAILED
    with pytest.raises(RemoteProtocolError):
        answer(dialogue, password=PASSWORD)


def test_max_attempts_is_configurable():
    dialogue = LoginDialogue(max_attempts=1)
    dialogue.start()
    answer(dialogue, username="alice")
    assert prompt_of(dialogue.outcome("exists"))[1]["attempts_left"] == 1
    answer(dialogue, password="nope-nope")
    assert dialogue.outcome("wrong_password")[0].code == "too_many_attempts"


def test_overlong_or_non_text_password_counts_as_wrong_without_asking_the_database():
    dialogue, _ = at_password()
    prompt, data = prompt_of(answer(dialogue, password="x" * (rules.PASSWORD_MAX + 1)))
    assert prompt == "password" and data["attempts_left"] == 2
    prompt, data = prompt_of(answer(dialogue, password=12345678))
    assert prompt == "password" and data["attempts_left"] == 1


def test_unknown_user_creates_account_after_short_password():
    dialogue, data = at_new_password()
    assert data["username"] == "newbie" and str(rules.PASSWORD_MIN) in data["message"]
    prompt, data = prompt_of(answer(dialogue, new_password="short"))
    assert prompt == "new_password" and dialogue.state == ld.ASK_NEW_PASSWORD
    assert str(rules.PASSWORD_MIN) in data["message"] and "short" not in data["message"]
    assert answer(dialogue, new_password=PASSWORD) == [CreateAccount("newbie", PASSWORD)]
    assert dialogue.state == ld.CREATING
    assert dialogue.outcome("created") == [LoggedIn("newbie", created=True)]
    assert dialogue.state == ld.DONE


@pytest.mark.parametrize("where", ["password", "new_password"])
def test_cancel_returns_to_the_username_prompt(where):
    dialogue, _ = at_password() if where == "password" else at_new_password()
    prompt, _ = prompt_of(answer(dialogue, cancel=True))
    assert prompt == "username" and dialogue.state == ld.ASK_USERNAME
    assert dialogue.username is None
    assert answer(dialogue, username="bob") == [CheckUser("bob")]


@pytest.mark.parametrize("name, words", [
    ("ab", "3 to 32"), ("9lives", "starts with a letter"), ("a b c", "letters"),
    ("admin", "reserved"), (42, "text"),
])
def test_invalid_username_reprompts_with_the_reason(name, words):
    dialogue = Recording()
    dialogue.start()
    prompt, data = prompt_of(answer(dialogue, username=name))
    assert prompt == "username" and words in data["message"]
    assert dialogue.state == ld.ASK_USERNAME


def test_throttled_asks_the_password_again_with_the_message():
    dialogue, _ = at_password()
    answer(dialogue, password=PASSWORD)
    prompt, data = prompt_of(dialogue.outcome("throttled", "Wait 4 seconds."))
    assert prompt == "password" and data["message"] == "Wait 4 seconds."
    assert data["attempts_left"] == 3   # a throttled try is not a wrong password
    answer(dialogue, password=PASSWORD)
    prompt, data = prompt_of(dialogue.outcome("throttled"))
    assert prompt == "password" and data["message"]
    answer(dialogue, password=PASSWORD)
    assert dialogue.outcome("verified") == [LoggedIn("alice", False)]


@pytest.mark.parametrize("reason", ["Someone just took that name.", None])
def test_create_failed_returns_to_username(reason):
    dialogue, _ = at_new_password()
    answer(dialogue, new_password=PASSWORD)
    prompt, data = prompt_of(dialogue.outcome("create_failed", reason))
    assert prompt == "username" and dialogue.state == ld.ASK_USERNAME
    assert data["message"] == (reason or data["message"]) and data["message"]
    assert answer(dialogue, username="other") == [CheckUser("other")]


def test_the_walks_take_every_row_of_the_table():
    rows = set()
    dialogue = Recording(rows=rows)
    dialogue.start()
    assert prompt_of(answer(dialogue, username="x"))[0] == "username"        # bad name
    assert answer(dialogue, username="alice") == [CheckUser("alice")]
    assert prompt_of(dialogue.outcome("exists"))[0] == "password"
    too_long = "x" * (rules.PASSWORD_MAX + 1)
    assert prompt_of(answer(dialogue, password=too_long))[0] == "password"   # counts as wrong
    assert prompt_of(answer(dialogue, cancel=True))[0] == "username"
    answer(dialogue, username="newbie")
    assert prompt_of(dialogue.outcome("missing"))[0] == "new_password"
    assert prompt_of(answer(dialogue, new_password="tiny"))[0] == "new_password"
    assert answer(dialogue, new_password=PASSWORD) == [CreateAccount("newbie", PASSWORD)]
    assert prompt_of(dialogue.outcome("busy", "busy"))[0] == "new_password"
    answer(dialogue, new_password=PASSWORD)
    assert prompt_of(dialogue.outcome("create_failed", "taken"))[0] == "username"
    answer(dialogue, username="newbie")
    dialogue.outcome("missing")
    assert prompt_of(answer(dialogue, cancel=True))[0] == "username"
    answer(dialogue, username="alice")
    dialogue.outcome("exists")
    for outcome in ("throttled", "busy", "wrong_password"):
        assert answer(dialogue, password=PASSWORD) == [VerifyPassword("alice", PASSWORD)]
        assert prompt_of(dialogue.outcome(outcome))[0] == "password"
    answer(dialogue, password=PASSWORD)
    assert dialogue.outcome("verified") == [LoggedIn("alice", False)]

    closed = Recording(rows=rows)
    answer(closed, username="dave")
    prompt, data = prompt_of(closed.outcome("registration_closed", "no new accounts"))
    assert prompt == "username" and data["message"] == "no new accounts"
    answer(closed, username="erin")                   # a second new name: no typo
    (refused,) = closed.outcome("registration_closed", "still none")
    assert refused.code == "registration_closed" and closed.state == ld.FAILED

    creator = Recording(rows=rows)
    answer(creator, username="carol")
    creator.outcome("missing")
    answer(creator, new_password=PASSWORD)
    assert creator.outcome("created") == [LoggedIn("carol", True)]

    for last_try in ({"password": PASSWORD}, {"password": too_long}):
        one_try = Recording(max_attempts=1, rows=rows)
        answer(one_try, username="alice")
        one_try.outcome("exists")
        outputs = answer(one_try, **last_try)
        if outputs == [VerifyPassword("alice", PASSWORD)]:
            outputs = one_try.outcome("wrong_password")
        assert outputs[0].code == "too_many_attempts" and one_try.state == ld.FAILED

    for reach in ([], [{"username": "alice"}, "exists"], [{"username": "newbie"}, "missing"]):
        stepper = Recording(rows=rows)
        for step in reach:
            answer(stepper, **step) if isinstance(step, dict) else stepper.outcome(step)
        stepper._steps = MAX_STEPS
        (refused,) = answer(stepper, cancel=True) if reach else answer(stepper, username="a")
        assert refused.code == "too_many_steps" and stepper.state == ld.FAILED

    suspended, _ = at_password(rows=rows)
    answer(suspended, password=PASSWORD)
    assert suspended.outcome("suspended", "no")[0].code == "suspended"
    changer, _ = at_changed_password(rows=rows)
    assert prompt_of(answer(changer, new_password="tiny"))[0] == "new_password"
    answer(changer, new_password=PASSWORD)
    assert prompt_of(changer.outcome("busy", "busy"))[0] == "new_password"
    answer(changer, new_password=PASSWORD)
    assert changer.outcome("verified") == [LoggedIn("alice", False)]
    changer, _ = at_changed_password(rows=rows)
    assert prompt_of(answer(changer, cancel=True))[0] == "username"
    changer, _ = at_changed_password(rows=rows)
    changer._steps = MAX_STEPS
    assert answer(changer, cancel=True)[0].code == "too_many_steps"
    assert rows == set(TABLE)


# ------------------------------------------------------------ the operator's side


def test_the_greeting_comes_with_the_first_prompt_only():
    dialogue = LoginDialogue()
    prompt, data = prompt_of(dialogue.start("Welcome to the lab server."))
    assert prompt == "username" and data["greeting"] == "Welcome to the lab server."
    assert "greeting" not in prompt_of(LoginDialogue().start())[1]
    assert "greeting" not in prompt_of(LoginDialogue().start(""))[1]
    answer(dialogue, username="alice")
    dialogue.outcome("exists")
    assert "greeting" not in prompt_of(answer(dialogue, cancel=True))[1]


def test_a_suspended_account_ends_the_login_with_the_reason():
    dialogue, _ = at_password()
    answer(dialogue, password=PASSWORD)
    (refused,) = dialogue.outcome("suspended", "This account is suspended; ask the "
                                               "server's administrator.")
    assert refused == Refused("suspended", "This account is suspended; ask the server's "
                                           "administrator.")
    assert dialogue.state == ld.FAILED
    with pytest.raises(RemoteProtocolError):
        answer(dialogue, password=PASSWORD)


def test_a_one_time_password_leads_to_a_new_one_then_the_login():
    dialogue, data = at_changed_password()
    assert data["message"] == "Choose a new one." and data["username"] == "alice"
    prompt, data = prompt_of(answer(dialogue, new_password="short"))
    assert prompt == "new_password" and dialogue.state == ld.ASK_CHANGED_PASSWORD
    assert str(rules.PASSWORD_MIN) in data["message"] and "short" not in data["message"]
    assert data["username"] == "alice"
    assert answer(dialogue, new_password=PASSWORD) == [ChangePassword(PASSWORD)]
    assert dialogue.state == ld.CHANGING
    prompt, data = prompt_of(dialogue.outcome("busy", "Busy.", retry_after=1))
    assert (prompt, data["message"], data["retry_after"]) == ("new_password", "Busy.", 1)
    assert dialogue.state == ld.ASK_CHANGED_PASSWORD
    answer(dialogue, new_password=PASSWORD)
    assert dialogue.outcome("verified") == [LoggedIn("alice", created=False)]
    assert dialogue.state == ld.DONE


def test_a_change_of_password_can_be_cancelled_or_run_out_of_steps():
    dialogue, _ = at_changed_password()
    assert prompt_of(answer(dialogue, cancel=True))[0] == "username"
    assert dialogue.state == ld.ASK_USERNAME and dialogue.username is None
    dialogue, _ = at_changed_password()
    dialogue._steps = MAX_STEPS
    (refused,) = answer(dialogue, new_password=PASSWORD)
    assert refused.code == "too_many_steps" and dialogue.state == ld.FAILED


@pytest.mark.parametrize("event", ["created", "must_change", "wrong_password"])
def test_only_verified_or_busy_may_answer_a_change_of_password(event):
    dialogue, _ = at_changed_password()
    answer(dialogue, new_password=PASSWORD)
    with pytest.raises(LocalProtocolError) as info:
        dialogue.outcome(event)
    assert "CHANGING" in str(info.value) and repr(event) in str(info.value)


# ------------------------------------------------------------ illegal moves


@pytest.mark.parametrize("fields", [{"password": PASSWORD}, {"new_password": PASSWORD},
                                    {"cancel": True}])
def test_client_answer_not_in_the_table_is_a_sticky_remote_error(fields):
    dialogue = LoginDialogue()
    dialogue.start()
    event = next(iter(fields))
    with pytest.raises(RemoteProtocolError) as info:
        answer(dialogue, **fields)
    assert "ASK_USERNAME" in str(info.value) and repr(event) in str(info.value)
    assert dialogue.state == ld.ERROR
    with pytest.raises(RemoteProtocolError) as again:
        answer(dialogue, username="alice")
    assert again.value is info.value
    with pytest.raises(RemoteProtocolError):
        dialogue.outcome("exists")


def test_answer_while_waiting_for_the_database_is_a_remote_error():
    dialogue = LoginDialogue()
    dialogue.start()
    answer(dialogue, username="alice")
    with pytest.raises(RemoteProtocolError) as info:
        answer(dialogue, username="bob")
    assert "CHECKING" in str(info.value) and "'username'" in str(info.value)


@pytest.mark.parametrize("event", ["verified", "exists", "created", "bogus"])
def test_outcome_not_requested_is_a_sticky_local_error(event):
    dialogue, _ = at_password()
    with pytest.raises(LocalProtocolError) as info:
        dialogue.outcome(event)
    assert "ASK_PASSWORD" in str(info.value) and repr(event) in str(info.value)
    with pytest.raises(LocalProtocolError) as again:
        answer(dialogue, password=PASSWORD)
    assert again.value is info.value


@pytest.mark.parametrize("fields", [{}, {"username": "alice", "password": PASSWORD},
                                    {"password": PASSWORD, "cancel": True},
                                    {"other": "x"}])
def test_login_needs_exactly_one_answer_field(fields):
    dialogue = LoginDialogue()
    dialogue.start()
    with pytest.raises(RemoteProtocolError) as info:
        answer(dialogue, **fields)
    assert dialogue.state == ld.ERROR
    with pytest.raises(RemoteProtocolError) as again:
        answer(dialogue, username="alice")
    assert again.value is info.value


def test_max_steps_bound():
    dialogue = LoginDialogue()
    dialogue.start()
    for _ in range(MAX_STEPS):
        assert prompt_of(answer(dialogue, username="x"))[0] == "username"
    outputs = answer(dialogue, username="alice")
    assert len(outputs) == 1 and isinstance(outputs[0], Refused)
    assert outputs[0].code == "too_many_steps"
    assert dialogue.state == ld.FAILED


def next_legal_answer(dialogue):
    """Username then cancel, over and over (the database always says 'exists')."""
    if dialogue.state == ld.ASK_PASSWORD:
        return answer(dialogue, cancel=True)
    outputs = answer(dialogue, username="alice")
    return dialogue.outcome("exists") if outputs == [CheckUser("alice")] else outputs


def test_steps_count_every_kind_of_answer():
    dialogue = LoginDialogue()
    dialogue.start()
    for _ in range(MAX_STEPS):
        assert prompt_of(next_legal_answer(dialogue))[0] in ("username", "password")
    outputs = next_legal_answer(dialogue)
    assert len(outputs) == 1 and isinstance(outputs[0], Refused)
    assert outputs[0].code == "too_many_steps"


# ----------------------------------------------------------------- secrets


def test_action_reprs_never_show_the_password():
    secret = "s3cret-Passw0rd"
    for action in (VerifyPassword("alice", secret), CreateAccount("alice", secret)):
        for text in (repr(action), str(action), repr([action]), f"{action}"):
            assert secret not in text and "alice" in text
    change = ChangePassword(secret)
    assert all(secret not in text for text in (repr(change), str(change), repr([change])))


def test_dialogue_outputs_never_echo_a_rejected_password():
    dialogue, _ = at_new_password()
    outputs = answer(dialogue, new_password="tiny")
    assert "tiny" not in repr(outputs)
    _, data = prompt_of(outputs)
    assert "tiny" not in data["message"]
