"""Before the session: the server-key pin and the client's side of the login.

Server key (trust on first use, like ssh's known_hosts): the key the
server proved in the Noise handshake is looked up in the known-hosts file
under "HOST:PORT". A known, matching key goes on silently. An unknown key
is added with --accept-new-host-key (one note on stderr), or after a yes
to "Trust this server? [y/N]" at a terminal, and refused otherwise. A key
that differs from the pinned one is always refused, loudly, with both
fingerprints and the file line to remove: that is what an attack looks
like. Refusing happens before anything at all is sent.

Login: the server drives the dialogue with Login prompts ("username",
"password", "new_password"); `run_login()` answers each through an
answerer until Welcome. `ScriptedLogin` (--user, --password-env, --create)
never asks anyone: a second password prompt means a wrong password, a
re-asked username means the server refused the name, and a new_password
prompt without --create cancels and stops. A new_password prompt right
after a password prompt is no account creation: the password was a
one-time password the server's administrator set, and a new one must be
chosen (`_on_changed_password`; a script cannot, and stops saying so).
`InteractiveLogin` asks the
person through the terminal, checks usernames and new passwords against
`Modules.rules` early, asks twice for a new password, lets Ctrl-C at
the password prompt go back to the username, and keeps the password that
was last answered in memory (`last_password`) so that the interactive
client can log in again after a reconnect without asking.

Talks to: `Modules.identity` (known-hosts file, fingerprints), the
`ClientSession`, the terminal and the output. Fails with `LoginFailed` or
`ServerRefused`: one sentence, exit status 1. Passwords are only ever
handed to the session; they are never printed or logged.
"""

import random
import time
from typing import NamedTuple

from Modules import identity, rules
from Modules.client.commands import Cancelled
from Modules.client.output import neutralise
from Modules.client.session import ClientFailure, ServerRefused


class LoginFailed(ClientFailure):
    """The login cannot succeed as asked; `message` says why."""


class Answer(NamedTuple):
    """The fields of one Login answer, and a failure to raise once it is sent."""

    fields: dict
    stop: str | None = None


# ------------------------------------------------------------ the server key


def check_server_key(key, host_id, path, accept_new=False, ask=None, note=print):
    """Accept the server's key or raise ServerRefused; `ask(question) -> bool`."""
    if not key:
        raise ServerRefused("The server did not prove its identity; refusing to go on.",
                            "no_server_key")
    known = _known_hosts(path)
    try:
        status = known.check(host_id, key)
    except (OSError, ValueError) as error:
        raise _known_hosts_problem("read", path, error) from None
    if status == "match":
        return status
    if status == "changed":
        raise ServerRefused(changed_key_message(host_id, known.known_key(host_id), key, path),
                            "host_key_changed")
    return _trust_new_key(known, key, host_id, path, accept_new, ask, note)


def _known_hosts(path):
    try:
        return identity.KnownHosts(path)
    except (OSError, ValueError) as error:
        raise _known_hosts_problem("read", path, error) from None


def _trust_new_key(known, key, host_id, path, accept_new, ask, note):
    print_ = identity.fingerprint(key)
    if accept_new:
        _add_key(known, host_id, key, path)
        note(f"Trusting the new server {host_id} (key {print_}); saved in {path}.")
        return "new"
    if ask is None:
        raise ServerRefused(f"This server's key is unknown ({print_}). Run with "
                            "--accept-new-host-key to trust it.", "host_key_unknown")
    note(f"The server {host_id} is not known yet. Its key fingerprint is\n  {print_}")
    if not ask("Trust this server? [y/N] "):
        raise ServerRefused("The server was not trusted; nothing was sent.",
                            "host_key_refused")
    _add_key(known, host_id, key, path)
    note(f"Saved the key of {host_id} in {path}.")
    return "new"


def _add_key(known, host_id, key, path):
    try:
        known.add(host_id, key)
    except (OSError, ValueError) as error:
        raise _known_hosts_problem("save the server key in", path, error) from None


def changed_key_message(host_id, old_key, new_key, path):
    """The loud refusal for a server whose key differs from the pinned one."""
    lines = known_hosts_lines(path, host_id)
    if not lines:
        where = f"the line for {host_id} in {path}"
    else:
        numbers = ", ".join(str(number) for number in lines)
        where = f"line{'s' if len(lines) > 1 else ''} {numbers} of {path}"
    old = identity.fingerprint(old_key) if old_key else "(unreadable)"
    return (f"WARNING: THE KEY OF THE SERVER {host_id} HAS CHANGED!\n"
            f"  known key:  {old}\n"
            f"  server key: {identity.fingerprint(new_key)}\n"
            "Someone may be intercepting this connection (an attack), or the server was "
            "reinstalled and has a new key. Nothing was sent.\n"
            f"If you are sure the server's key really changed, remove {where} "
            "and connect again.")


def known_hosts_lines(path, host_id):
    """The 1-based numbers of the lines that pin `host_id` (empty if unknown)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return [number for number, text in enumerate(file, 1)
                    if text.split()[:1] == [host_id]]
    except OSError:
        return []


def _known_hosts_problem(action, path, error):
    """ServerRefused naming the known-hosts file and what is wrong with it."""
    if isinstance(error, identity.IdentityError):    # its text names file and line
        return ServerRefused(f"The known-hosts file is not usable: {error}. Fix or remove "
                             "that line, or choose another file with --known-hosts.",
                             "known_hosts")
    why = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return ServerRefused(f"Cannot {action} the known-hosts file {path}: {why}. Choose "
                         "another file with --known-hosts.", "known_hosts")


# ------------------------------------------------------------ the login dialogue


def run_login(session, answerer):
    """Answer Login prompts until Welcome; the logged-in username."""
    while True:
        step = session.next_login_step()
        if step.op == "Welcome":
            return step.data["user"]
        if step.op != "Login":
            continue
        answer = answerer.answer(step.data)
        session.answer_login(**answer.fields)
        if answer.stop:
            raise LoginFailed(answer.stop, "login_failed")


RETRY_WAIT_MAX = 15      # seconds: a busy or throttled server asking for longer is refused
RETRIES = 5              # busy answers waited out per prompt, at most


class _Answerer:
    """Dispatches a Login prompt to `_on_<prompt>`, counting repeats.

    A prompt that repeats the last one with `retry_after` (the server was
    busy, or the name is throttled from here) is not a refusal: the same
    answer is sent again after waiting, with a backoff, saying so in one
    sentence; it does not count as a wrong answer. A wait longer than
    RETRY_WAIT_MAX seconds, or more than RETRIES of them, is handled as the
    refusal it then is.
    """

    def __init__(self, note=None, sleep=time.sleep):
        self.asked = {}
        self.note = note or (lambda _text: None)
        self.sleep = sleep
        self._last = None        # (prompt, Answer) last sent
        self._waits = 0
        self._previous = None    # the prompt before this one
        self.changing = False    # new_password prompts follow a one-time password

    def answer(self, data):
        prompt = self._kind_of(data["prompt"])
        handler = getattr(self, "_on_" + prompt, None) if prompt.isidentifier() else None
        if handler is None:
            raise LoginFailed(f"The server asked for '{neutralise(prompt)}', which this "
                              "client does not know; update the client.", "bad_prompt")
        again = self._wait_and_repeat(data["prompt"], data)
        if again is not None:
            return again
        self.asked[prompt] = self.asked.get(prompt, 0) + 1
        self._last = (data["prompt"], handler(data, self.asked[prompt]))
        return self._last[1]

    def _kind_of(self, prompt):
        """The handler's name: 'changed_password' for the new_password prompts
        that follow a password prompt (until the username is asked again)."""
        if prompt == "new_password" and self._previous == "password":
            self.changing = True
        elif prompt != "new_password":
            self.changing = False
        self._previous = prompt
        return "changed_password" if self.changing else prompt

    def _wait_and_repeat(self, prompt, data):
        retry_after = data.get("retry_after")
        if retry_after is None or self._last is None or self._last[0] != prompt \
                or self._waits >= RETRIES or "cancel" in self._last[1].fields:
            return None
        wait = min(RETRY_WAIT_MAX, max(1, retry_after) * 2 ** self._waits)
        if retry_after > RETRY_WAIT_MAX:
            return None
        self._waits += 1
        seconds = round(wait * random.uniform(1.0, 1.2), 1)
        unit = "second" if seconds == 1 else "seconds"
        self.note(f"{neutralise(data['message'])} Trying again in {seconds:g} {unit}.")
        self.sleep(seconds)
        return self._last[1]


class ScriptedLogin(_Answerer):
    """--user NAME --password-env VAR [--create]: no questions, clear stops."""

    def __init__(self, user, password, create=False, note=None, sleep=time.sleep):
        super().__init__(note, sleep)
        self.user, self.password, self.create = user, password, create

    def _name(self, data):
        return neutralise(data.get("username") or self.user)

    def _on_username(self, data, times):
        if times > 1:
            raise LoginFailed(neutralise(data["message"]), "bad_username")
        return Answer({"username": self.user})

    def _on_password(self, data, times):
        if times == 1:
            return Answer({"password": self.password})
        if data["message"].startswith("Wrong password"):
            raise LoginFailed(f"Wrong password for {self._name(data)}.", "wrong_password")
        raise LoginFailed(neutralise(data["message"]), "login_refused")

    def _on_new_password(self, data, times):
        name = self._name(data)
        if not self.create:
            return Answer({"cancel": True}, f"There is no account {name} (add --create "
                                            "to create it).")
        if times > 1:
            raise LoginFailed(f"Cannot create the account {name}: "
                              f"{neutralise(data['message'])}", "create_failed")
        try:
            rules.check_password(self.password)
        except rules.RuleError as error:
            return Answer({"cancel": True}, f"Cannot create the account {name}: "
                                            f"{error.reason}")
        return Answer({"new_password": self.password})


    def _on_changed_password(self, data, _times):
        return Answer({"cancel": True}, f"The password of {self._name(data)} was reset by "
                                        "the server's administrator and must be changed: "
                                        "log in once at a terminal (without --batch) to "
                                        "choose a new one.")


def password_refusal(message):
    """The server's reason for asking the password again, with what to do next."""
    text = neutralise(message)
    if text.startswith("Wrong password"):
        text += " Type it again, or press Ctrl-C to log in with another name."
    return text


class InteractiveLogin(_Answerer):
    """Asks the person; --user/--password-env/--create, if given, answer first."""

    def __init__(self, terminal, note, user=None, password=None, create=False,
                 sleep=time.sleep):
        super().__init__(note, sleep)
        self.terminal = terminal
        self.preset_user, self.preset_password, self.create = user, password, create
        self.confirmed_create = None
        self.last_password = None

    def _on_username(self, data, times):
        if times > 1 and not self._cancelled():   # after our own no, the prompt says it
            self.note(neutralise(data["message"]))
        if self.preset_user and times == 1:
            return Answer({"username": self.preset_user})
        while True:
            name = self._ask(self.terminal.ask, "Username: ", "Login cancelled.")
            try:
                rules.check_username(name)
            except rules.RuleError as error:
                self.note(error.reason)
                continue
            return Answer({"username": name})

    def _on_password(self, data, times):
        if self.preset_password is not None and times == 1:
            return self._password("password", self.preset_password)
        if times > 1:
            self.note(password_refusal(data["message"]))
        try:
            return self._password("password", self.terminal.ask_secret("Password: "))
        except Cancelled:
            return Answer({"cancel": True})

    def _cancelled(self):
        """True when the last answer was a cancel (declined to create, Ctrl-C)."""
        return self._last is not None and "cancel" in self._last[1].fields

    def _password(self, field, password):
        """The answer; the password is also kept (in memory) for reconnecting."""
        self.last_password = password
        return Answer({field: password})

    def _on_new_password(self, data, _times):
        name = neutralise(data.get("username", ""))
        try:
            if self.confirmed_create == name:
                self.note(neutralise(data["message"]))    # the server refused it
            elif not self.create and not self.terminal.confirm(
                    f"No account {name}. Create it? [y/N] "):
                return Answer({"cancel": True})
            self.confirmed_create = name
            return self._password("new_password", self._new_password_twice())
        except Cancelled:
            return Answer({"cancel": True})

    def _on_changed_password(self, data, _times):
        """The password was a one-time one: choose a new one (the server's message
        says why, or which rule the last one broke)."""
        self.note(neutralise(data["message"]))
        try:
            return self._password("new_password", self._new_password_twice())
        except Cancelled:
            return Answer({"cancel": True})

    def _new_password_twice(self):
        while True:
            first = self.terminal.ask_secret("New password: ")
            try:
                rules.check_password(first)
            except rules.RuleError as error:
                self.note(error.reason)
                continue
            if self.terminal.ask_secret("Repeat the new password: ") == first:
                return first
            self.note("The two passwords differ; please type them again.")

    @staticmethod
    def _ask(question, text, cancelled_message):
        try:
            return question(text)
        except Cancelled:
            raise LoginFailed(cancelled_message, "cancelled") from None
