"""The server-driven login dialogue, sans-IO, as one transition table.

The server asks for a username (the first prompt carries the operator's
greeting, if there is one); if the account exists it asks for the
password (at most `max_attempts` wrong ones per connection, then the
connection is closed); if not, it offers to create the account and asks for
a new password (the client asks the person twice and sends it once). A
right password of a suspended account ends the login with a refusal; a
right one-time password (the operator's reset-password) is followed by a
`new_password` prompt, and the login completes once the new password is
stored.

The dialogue never touches the database itself. It returns *actions*
(`CheckUser`, `VerifyPassword`, `CreateAccount`, `ChangePassword`) that the
login process
carries out with the database process, feeding the outcome back as an
event. Outputs are Packets to send, actions, and finally `LoggedIn` or
`Refused`. `TABLE` holds every legal move with the state it leads to and
the handler that makes the move's outputs; handlers never set the state. A
move not in `TABLE` raises RemoteProtocolError (a client answer we did not
ask for) or LocalProtocolError (an outcome we did not request), naming
role, state and event; the error state sticks (`Modules/wire/machine.py`).
A busy or throttled hasher is an ordinary outcome: the same question is
asked again with the reason and `retry_after` (seconds to wait before
answering again), and no attempt is used up.
"""

from typing import NamedTuple

from Modules import rules
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.machine import ERROR, Machine  # noqa: F401  (ERROR: the error state)
from Modules.wire.serializers import Packet

ASK_USERNAME, CHECKING, ASK_PASSWORD, VERIFYING = (
    "ASK_USERNAME", "CHECKING", "ASK_PASSWORD", "VERIFYING")
ASK_NEW_PASSWORD, CREATING, DONE, FAILED = (
    "ASK_NEW_PASSWORD", "CREATING", "DONE", "FAILED")
ASK_CHANGED_PASSWORD, CHANGING = "ASK_CHANGED_PASSWORD", "CHANGING"

MAX_STEPS = 30   # client answers per connection, whatever they are


class CheckUser(NamedTuple):
    username: str


class VerifyPassword(NamedTuple):
    username: str
    password: str

    def __repr__(self):  # never show the password
        return f"VerifyPassword(username={self.username!r})"


class CreateAccount(NamedTuple):
    username: str
    password: str

    def __repr__(self):
        return f"CreateAccount(username={self.username!r})"


class ChangePassword(NamedTuple):
    """The new password after a reset; the account is the one just verified on
    the same database connection, so no name goes with it."""

    password: str

    def __repr__(self):
        return "ChangePassword()"


class LoggedIn(NamedTuple):
    username: str
    created: bool


class Refused(NamedTuple):
    code: str
    reason: str


# Events from the client: username / password / new_password / cancel, which
# the dialogue sharpens before it looks them up: an invalid username is
# "bad_username", an unusable password (not text, too long) counts as a
# "wrong_password", a new password that breaks the rules is
# "bad_new_password", any answer after MAX_STEPS is "too_many_steps". A
# second "registration_closed" on one connection is "registration_closed_again":
# the first may be a typo, the second ends the connection.
# Outcomes from the database, as the monitor names them: exists / missing /
# registration_closed / verified / wrong_password / throttled / busy /
# suspended / must_change / created / create_failed.
# A wrong password that uses up the last attempt is "last_wrong_password".
# (state, event) -> (next state, handler).  Every legal move is here.
TABLE = {
    (ASK_USERNAME, "username"): (CHECKING, "_check_user"),
    (ASK_USERNAME, "bad_username"): (ASK_USERNAME, "_username_rule"),
    (CHECKING, "exists"): (ASK_PASSWORD, "_ask_password"),
    (CHECKING, "missing"): (ASK_NEW_PASSWORD, "_offer_create"),
    (CHECKING, "registration_closed"): (ASK_USERNAME, "_username_again"),
    (CHECKING, "registration_closed_again"): (FAILED, "_no_more_new_names"),
    (ASK_PASSWORD, "password"): (VERIFYING, "_verify"),
    (ASK_PASSWORD, "wrong_password"): (ASK_PASSWORD, "_wrong_password"),
    (ASK_PASSWORD, "last_wrong_password"): (FAILED, "_last_wrong_password"),
    (ASK_PASSWORD, "cancel"): (ASK_USERNAME, "_restart"),
    (VERIFYING, "verified"): (DONE, "_verified"),
    (VERIFYING, "wrong_password"): (ASK_PASSWORD, "_wrong_password"),
    (VERIFYING, "last_wrong_password"): (FAILED, "_last_wrong_password"),
    (VERIFYING, "throttled"): (ASK_PASSWORD, "_password_again"),
    (VERIFYING, "busy"): (ASK_PASSWORD, "_password_again"),
    (VERIFYING, "suspended"): (FAILED, "_suspended"),
    (VERIFYING, "must_change"): (ASK_CHANGED_PASSWORD, "_ask_changed_password"),
    (ASK_CHANGED_PASSWORD, "new_password"): (CHANGING, "_change"),
    (ASK_CHANGED_PASSWORD, "bad_new_password"): (ASK_CHANGED_PASSWORD,
                                                 "_changed_password_rule"),
    (ASK_CHANGED_PASSWORD, "cancel"): (ASK_USERNAME, "_restart"),
    (CHANGING, "verified"): (DONE, "_verified"),
    (CHANGING, "busy"): (ASK_CHANGED_PASSWORD, "_changed_password_again"),
    (ASK_NEW_PASSWORD, "new_password"): (CREATING, "_create"),
    (ASK_NEW_PASSWORD, "bad_new_password"): (ASK_NEW_PASSWORD, "_password_rule"),
    (ASK_NEW_PASSWORD, "cancel"): (ASK_USERNAME, "_restart"),
    (CREATING, "created"): (DONE, "_created"),
    (CREATING, "create_failed"): (ASK_USERNAME, "_username_again"),
    (CREATING, "busy"): (ASK_NEW_PASSWORD, "_new_password_again"),
    **{(state, "too_many_steps"): (FAILED, "_too_many_steps")
       for state in (ASK_USERNAME, ASK_PASSWORD, ASK_NEW_PASSWORD, ASK_CHANGED_PASSWORD)},
}
_CLIENT_EVENTS = ("username", "password", "new_password", "cancel")
_NEXT_STATES = {move: target for move, (target, _handler) in TABLE.items()}


def _prompt(prompt, message, **extra):
    return Packet("Login", {"prompt": prompt, "message": message, **extra})


class LoginDialogue:
    """One connection's login dialogue (server role)."""

    def __init__(self, max_attempts=3):
        self.machine = Machine("login dialogue (server)", _NEXT_STATES, ASK_USERNAME)
        self.attempts_left = max_attempts
        self.username = None
        self._steps = 0
        self._retry_after = None
        self._new_names_refused = 0

    @property
    def state(self):
        return self.machine.state

    def start(self, greeting=None):
        """The first outputs: the username prompt, with the operator's greeting
        (text for the client to show first) when there is one."""
        extra = {"greeting": greeting} if greeting else {}
        return [_prompt("username", "Username (a new name creates an account):", **extra)]

    def receive(self, packet):
        """Outputs for one Login packet from the client."""
        self.machine.check()
        fields = [k for k in _CLIENT_EVENTS if k in packet.data]
        if len(fields) != 1 or packet.data.get("cancel", True) is not True:
            raise self.machine.fail(RemoteProtocolError(
                "a Login answer has exactly one of username, password, new_password, "
                "cancel: true", code="bad_login"))
        self._steps += 1
        event, value = fields[0], packet.data[fields[0]]
        if self._steps > MAX_STEPS:
            event = "too_many_steps"
        return self._dispatch(self._sharpen(event, value), value, RemoteProtocolError)

    def outcome(self, event, detail=None, retry_after=None):
        """Outputs for the database's answer to the last action; `retry_after`
        (seconds) goes with a busy or throttled answer to the client."""
        self.machine.check()
        self._retry_after = retry_after
        return self._dispatch(self._sharpen(event, detail), detail, LocalProtocolError)

    def _sharpen(self, event, value):
        """The event the table knows, from the raw one and what it carries."""
        if event == "username" and not _valid(rules.check_username, value):
            return "bad_username"
        if event == "new_password" and not _valid(rules.check_password, value):
            return "bad_new_password"
        if event == "password" and (not isinstance(value, str)
                                    or len(value) > rules.PASSWORD_MAX):
            event = "wrong_password"            # nothing to verify: it cannot be right
        if event == "wrong_password" and self.attempts_left <= 1:
            return "last_wrong_password"
        if event == "registration_closed":
            self._new_names_refused += 1
            if self._new_names_refused > 1:     # a second try: this is no typo
                return "registration_closed_again"
        return event

    def _dispatch(self, event, value, error_class):
        move = (self.state, event)
        self.machine.move(event, error_class)
        return getattr(self, TABLE[move][1])(value)

    # -- handlers: the outputs of one move (the table has set the state) ------
    def _check_user(self, name):
        self.username = rules.check_username(name)
        return [CheckUser(self.username)]

    def _username_rule(self, name):
        return [_prompt("username", _rule_broken(rules.check_username, name))]

    def _ask_password(self, _detail=None, message=None):
        message = message or f"Password for {self.username}:"
        return [_prompt("password", message, attempts_left=self.attempts_left,
                        username=self.username)]

    def _offer_create(self, _detail):
        return [_prompt("new_password", f"There is no account '{self.username}'. "
                        f"Choose a password (at least {rules.PASSWORD_MIN} characters) "
                        "to create it, or cancel.", username=self.username)]

    def _verify(self, password):
        return [VerifyPassword(self.username, password)]

    def _verified(self, _detail):
        return [LoggedIn(self.username, created=False)]

    def _suspended(self, reason):
        return [Refused("suspended", reason or "This account is suspended; ask the "
                                               "server's administrator.")]

    def _ask_changed_password(self, reason):
        return [_prompt("new_password", reason or "Your password was reset; choose a new "
                        "one to finish logging in.", username=self.username)]

    def _change(self, password):
        return [ChangePassword(password)]

    def _changed_password_rule(self, password):
        return self._ask_changed_password(_rule_broken(rules.check_password, password))

    def _changed_password_again(self, detail):
        return self._with_retry_after(self._ask_changed_password(
            detail or "The server is busy; try again."))

    def _wrong_password(self, _detail):
        self.attempts_left -= 1
        left = self.attempts_left
        return self._ask_password(message=f"Wrong password for {self.username}. "
                                          f"{left} {'try' if left == 1 else 'tries'} left.")

    def _last_wrong_password(self, _detail):
        self.attempts_left = 0
        return [Refused("too_many_attempts", "Wrong password, and that was the last try; "
                                             "the connection is closed.")]

    def _password_again(self, detail):
        prompt = self._ask_password(message=detail or "Too many failed logins; "
                                    "wait a little and try again.")
        return self._with_retry_after(prompt)

    def _with_retry_after(self, outputs):
        """A busy or throttled answer tells the client how long to wait first."""
        if self._retry_after is not None:
            (prompt,) = outputs
            outputs = [Packet(prompt.op, {**prompt.data,
                                          "retry_after": int(self._retry_after)})]
        return outputs

    def _create(self, password):
        return [CreateAccount(self.username, password)]

    def _password_rule(self, password):
        return [_prompt("new_password", _rule_broken(rules.check_password, password),
                        username=self.username)]

    def _new_password_again(self, detail):
        return self._with_retry_after([_prompt("new_password", detail or "The server is "
                                               "busy; try again.", username=self.username)])

    def _created(self, _detail):
        return [LoggedIn(self.username, created=True)]

    def _username_again(self, reason):
        return [_prompt("username", reason or "That account could not be created; "
                        "choose another username.")]

    def _restart(self, _value):
        self.username = None
        return self.start()

    def _no_more_new_names(self, reason):
        return [Refused("registration_closed", reason or "No new accounts can be created "
                        "from here now; the connection is closed.")]

    def _too_many_steps(self, _value):
        return [Refused("too_many_steps", "Too many login steps; connect again to retry.")]


def _valid(check, value):
    try:
        check(value)
    except rules.RuleError:
        return False
    return True


def _rule_broken(check, value):
    """The sentence of the rule `value` breaks (never the value itself)."""
    try:
        check(value)
    except rules.RuleError as error:
        return error.reason
    return ""
