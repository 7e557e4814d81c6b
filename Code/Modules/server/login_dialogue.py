"""The server-driven login dialogue, sans-IO, as one transition table.

The server asks for a username; if the account exists it asks for the
password (at most `max_attempts` wrong ones per connection, then the
connection is closed); if not, it offers to create the account and asks for
a new password (the client asks the person twice and sends it once).

The dialogue never touches the database itself. It returns *actions*
(`CheckUser`, `VerifyPassword`, `CreateAccount`) that the login process
carries out with the database process, feeding the outcome back as an
event. Outputs are Packets to send, actions, and finally `LoggedIn` or
`Refused`. A move not in `TABLE` raises RemoteProtocolError (a client
answer we did not ask for) or LocalProtocolError (an outcome we did not
request), naming role, state and event; the error state sticks.
"""

from typing import NamedTuple

from Modules import rules
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError, illegal_move
from Modules.wire.serializers import Packet

ASK_USERNAME, CHECKING, ASK_PASSWORD, VERIFYING = (
    "ASK_USERNAME", "CHECKING", "ASK_PASSWORD", "VERIFYING")
ASK_NEW_PASSWORD, CREATING, DONE, FAILED, ERROR = (
    "ASK_NEW_PASSWORD", "CREATING", "DONE", "FAILED", "ERROR")

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


class LoggedIn(NamedTuple):
    username: str
    created: bool


class Refused(NamedTuple):
    code: str
    reason: str


# Events from the client: username / password / new_password / cancel.
# Outcomes from the database: exists / missing / verified / wrong_password /
# throttled / created / create_failed.
# (state, event) -> handler method name.  Every legal move is here.
TABLE = {
    (ASK_USERNAME, "username"): "_on_username",
    (CHECKING, "exists"): "_ask_password",
    (CHECKING, "missing"): "_offer_create",
    (ASK_PASSWORD, "password"): "_on_password",
    (ASK_PASSWORD, "cancel"): "_restart",
    (VERIFYING, "verified"): "_on_verified",
    (VERIFYING, "wrong_password"): "_on_wrong_password",
    (VERIFYING, "throttled"): "_on_throttled",
    (ASK_NEW_PASSWORD, "new_password"): "_on_new_password",
    (ASK_NEW_PASSWORD, "cancel"): "_restart",
    (CREATING, "created"): "_on_created",
    (CREATING, "create_failed"): "_on_create_failed",
}
_CLIENT_EVENTS = ("username", "password", "new_password", "cancel")


def _prompt(prompt, message, **extra):
    return Packet("Login", {"prompt": prompt, "message": message, **extra})


class LoginDialogue:
    """One connection's login dialogue (server role)."""

    def __init__(self, max_attempts=3):
        self.state = ASK_USERNAME
        self.attempts_left = max_attempts
        self.username = None
        self._steps = 0
        self._error = None

    def start(self):
        """The first outputs: the username prompt."""
        return [_prompt("username", "Username (a new name creates an account):")]

    def receive(self, packet):
        """Outputs for one Login packet from the client."""
        if self._error is not None:
            raise self._error
        fields = [k for k in _CLIENT_EVENTS if k in packet.data]
        if len(fields) != 1 or packet.data.get("cancel", True) is not True:
            return self._fail_remote("a Login answer has exactly one of "
                                     "username, password, new_password, cancel: true")
        self._steps += 1
        if self._steps > MAX_STEPS:
            return self._finish(Refused("too_many_steps", "Too many login steps; "
                                        "connect again to retry."))
        return self._dispatch(fields[0], packet.data[fields[0]], RemoteProtocolError)

    def outcome(self, event, detail=None):
        """Outputs for the database's answer to the last action."""
        return self._dispatch(event, detail, LocalProtocolError)

    def _dispatch(self, event, value, error_class):
        if self._error is not None:
            raise self._error
        handler = TABLE.get((self.state, event))
        if handler is None:
            self._error = illegal_move(error_class, "login dialogue (server)", self.state, event)
            self.state = ERROR
            raise self._error
        return getattr(self, handler)(value)

    def _fail_remote(self, reason):
        self._error = RemoteProtocolError(reason, code="bad_login")
        self.state = ERROR
        raise self._error

    # -- handlers -----------------------------------------------------------
    def _on_username(self, name):
        try:
            self.username = rules.check_username(name)
        except rules.RuleError as error:
            return [_prompt("username", error.reason)]
        self.state = CHECKING
        return [CheckUser(self.username)]

    def _ask_password(self, _detail=None, message=None):
        self.state = ASK_PASSWORD
        message = message or f"Password for {self.username}:"
        return [_prompt("password", message, attempts_left=self.attempts_left,
                        username=self.username)]

    def _offer_create(self, _detail):
        self.state = ASK_NEW_PASSWORD
        return [_prompt("new_password", f"There is no account '{self.username}'. "
                        f"Choose a password (at least {rules.PASSWORD_MIN} characters) "
                        "to create it, or cancel.", username=self.username)]

    def _on_password(self, password):
        if not isinstance(password, str) or len(password) > rules.PASSWORD_MAX:
            return self._on_wrong_password(None)
        self.state = VERIFYING
        return [VerifyPassword(self.username, password)]

    def _on_verified(self, _detail):
        return self._finish(LoggedIn(self.username, created=False))

    def _on_wrong_password(self, _detail):
        self.attempts_left -= 1
        if self.attempts_left <= 0:
            return self._finish(Refused("too_many_attempts",
                                        "Wrong password, and that was the last try; "
                                        "the connection is closed."))
        return self._ask_password(message=f"Wrong password for {self.username}. "
                                          f"{self.attempts_left} tries left.")

    def _on_throttled(self, detail):
        return self._ask_password(message=detail or "Too many failed logins; "
                                  "wait a little and try again.")

    def _on_new_password(self, password):
        try:
            rules.check_password(password)
        except rules.RuleError as error:
            return [_prompt("new_password", error.reason, username=self.username)]
        self.state = CREATING
        return [CreateAccount(self.username, password)]

    def _on_created(self, _detail):
        return self._finish(LoggedIn(self.username, created=True))

    def _on_create_failed(self, reason):
        self.state = ASK_USERNAME
        return [_prompt("username", reason or "That account could not be created; "
                        "choose another username.")]

    def _restart(self, _value):
        self.state = ASK_USERNAME
        self.username = None
        return self.start()

    def _finish(self, result):
        self.state = DONE if isinstance(result, LoggedIn) else FAILED
        return [result]
