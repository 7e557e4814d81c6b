"""The interactive client's connection: connect, log in, and come back.

A `Link` owns the current `ClientSession` and replaces it when the server
goes away. The first connection asks the person (server key on first
use, username, password); the name and password that worked are kept in
this object, in memory only and never on disk, so that a reconnection
can log in again without asking. After the connection drops:

* with retrying on (the default), a background thread tries again. While
  nothing answers at the server's address (connection refused, no route,
  no answer: `CannotConnect`, which costs the server nothing) it tries
  every 1 to 2 seconds, so a server that is back is found within about
  2 seconds. A server that answers but does not let us in (full, busy,
  refusing connections from here for a while, closing during the
  handshake) is given the back-off: 1, 2, 4, 8, 15 and then every 30
  seconds, each stretched by up to 20 % at random, so that the clients
  of a restarted server do not all come back in the same instant;
* `wake()` makes the retrying thread try now (a message waits to be sent);
* `reconnect_now()` (the `reconnect` command) tries at once;
* `wait_until_back(timeout, lost)` lets a file transfer wait for the retrying
  thread to bring the session back, and carry on;
* a server whose key changed, or that no longer accepts the name and
  password (or the account is suspended), stops the retrying: trying
  again could not help, and the person is told why (`fatal`);
* a session the server ended on purpose (the operator's kick, suspension
  or password reset, or the idle timeout: `ENDING_EVENTS`) is not retried
  at all (`ended_by`); the person decides, with `reconnect`.

The server key is checked on every connection against the known-hosts
pin; a reconnection never asks to trust a new key and never accepts a
changed one.

Talks to: `ClientSession` (network), `client_login` (key pin, login
answers) and its `client`, which is told what happens through
`on_link_down(reason)`, `on_link_waiting(reason, delay)`,
`on_link_back()` and `on_link_gave_up(failure)`, and receives the
session's pushes (`Handlers`) from whichever session is current. Those
calls come from network and retry threads. Fails with the session's
exceptions (`ClientFailure` subclasses) on the first connection;
reconnection failures are reported, never raised.
"""

import itertools
import random
import threading
import time

from Modules import identity
from Modules.client.login import (
    Answer,
    LoginFailed,
    ScriptedLogin,
    check_server_key,
    run_login,
)
from Modules.client.output import neutralise
from Modules.client.session import CannotConnect, ClientFailure, ClientSession, Handlers

BACKOFF = (1, 2, 4, 8, 15, 30)      # seconds between tries; the last one repeats
JITTER = 0.2
REACH_POLL = (1.0, 2.0)     # seconds between tries while nothing answers at the address
FATAL_CODES = frozenset({
    "host_key_changed", "host_key_unknown", "host_key_refused", "known_hosts",
    "no_server_key", "wrong_password", "login_refused", "login_failed",
    "too_many_attempts", "bad_username", "bad_prompt", "suspended"})
# System events after which the server closes the session on purpose: coming
# back by itself would undo the operator's decision (or the idle limit's).
ENDING_EVENTS = frozenset({"kicked", "suspended", "password_reset", "idle_timeout",
                           "password_changed"})     # passwd in another session (issue 13)


def backoff_delays(rand=None):
    """The endless series of waits between attempts the server turned away."""
    rand = rand or random.random
    for step in itertools.count():
        yield BACKOFF[min(step, len(BACKOFF) - 1)] * (1 + JITTER * rand())


def reach_poll_delay(rand=None):
    """The wait before the next try while nothing answers at the address."""
    low, high = REACH_POLL
    return low + (high - low) * (rand or random.random)()


class ReLogin(ScriptedLogin):
    """Logs in again with this run's name and password; never creates an account."""

    def __init__(self, user, password):
        super().__init__(user, password, create=False)

    def _on_password(self, data, times):
        if times == 1:
            return Answer({"password": self.password})
        raise LoginFailed(f"The server no longer accepts the password of {self._name(data)} "
                          f"({neutralise(data['message'])}).", "wrong_password")

    def _on_new_password(self, data, _times):
        return Answer({"cancel": True}, f"The account {self._name(data)} no longer exists "
                                        "on this server.")

    def _on_changed_password(self, data, _times):
        return Answer({"cancel": True}, f"The password of {self._name(data)} was reset by "
                                        "the server's administrator; start the client "
                                        "again to choose a new one.")


class _Forwarder(Handlers):
    """One session's handlers: pushes go to the client, the end to the link."""

    def __init__(self, link):
        self.link, self.client = link, link.client

    def on_greeting(self, text):
        self.client.on_greeting(text)

    def on_welcome(self, user, created):
        self.client.on_welcome(user, created)

    def on_motd(self, text):
        self.client.on_motd(text)

    def on_message(self, message, via):
        return self.client.on_message(message, via)

    def on_ready(self, user):
        self.client.on_ready(user)

    def on_system(self, event, message):
        if event in ENDING_EVENTS and self is self.link._forwarder:
            self.link.ended_by = event
        self.client.on_system(event, message)

    def on_error(self, code, reason):
        self.client.on_error(code, reason)

    def on_wait(self, seconds, reason):
        self.client.on_wait(seconds, reason)

    def on_closed(self, reason):
        self.link.lost(self, reason)


class Link:
    """The current session to one server, and the way back after it drops."""

    def __init__(self, host, port, known_hosts, client, retry=True, note=None):
        self.host, self.port, self.known_hosts = host, port, known_hosts
        self.host_id = identity.host_id(host, port)
        self.client, self.retry = client, retry
        self.note = note or (lambda text: None)
        self.session = self._forwarder = None
        self.user = self.password = None
        self.logged_in = self.reconnecting = False
        self.down_reason = self.fatal = None
        self.unreachable = False               # the last try found nobody at the address
        self.ended_by = None                   # the ENDING_EVENTS event that ended it
        self._lock = threading.Lock()          # one connection attempt at a time
        self._wake, self._stop = threading.Event(), threading.Event()
        self._retrier = None

    @property
    def connected(self):
        """True while a logged-in session is up."""
        session = self.session
        return self.logged_in and session is not None and not session.closed

    # -- the first connection ---------------------------------------------------------
    def _new_session(self):
        self._forwarder = _Forwarder(self)
        self.session = ClientSession(self.host, self.port, handlers=self._forwarder)
        return self.session

    def connect(self, ask_trust, accept_new=False):
        """Connect, check the key (asking `ask_trust` about a new one), negotiate."""
        session = self._new_session()
        key = session.open()
        check_server_key(key, self.host_id, self.known_hosts, accept_new,
                         ask=ask_trust, note=self.note)
        session.negotiate()

    def login(self, answerer):
        """Run the login dialogue; the username. Also after delete-account."""
        self.logged_in = False
        self.user = run_login(self.session, answerer)
        self.password = (getattr(answerer, "last_password", None)
                         or getattr(answerer, "password", None))
        self.session.wait_ready()
        self.logged_in = True
        return self.user

    # -- losing it ------------------------------------------------------------------------
    def lost(self, forwarder, reason):
        """A session ended without our asking (reader thread)."""
        if forwarder is not self._forwarder or self.reconnecting or self._stop.is_set():
            return
        was_up, self.logged_in = self.logged_in, False
        self.down_reason = reason
        self.client.on_link_down(reason, was_up)
        if was_up and self.retry and self.ended_by is None:
            self.start_retrying()

    def start_retrying(self):
        if self._retrier is not None and self._retrier.is_alive():
            return
        self._retrier = threading.Thread(target=self._retry_loop, daemon=True,
                                         name="parley-retry")
        self._retrier.start()

    def _retry_loop(self):
        backoff = backoff_delays()
        delay = next(backoff)
        while True:
            self.client.on_link_waiting(self.down_reason, delay)
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set() or self.connected or self.attempt():
                return
            if self.fatal is not None:
                self.client.on_link_gave_up(self.fatal)
                return
            delay = reach_poll_delay() if self.unreachable else next(backoff)

    def wake(self):
        """Make the retrying thread (if it runs) try at once."""
        if self._retrier is not None and self._retrier.is_alive():
            self._wake.set()

    def wait_until_back(self, timeout, lost, poll=0.2):
        """For a transfer the loss of session `lost` cut off: True once another
        session is up (brought back by the retrying thread); False when it will
        not come back by itself, or after `timeout` seconds. `lost` itself may
        still look up for a moment: the transfer's sender can see the broken
        socket before the reader thread has marked the session closed."""
        deadline = time.monotonic() + timeout
        while not self.connected or self.session is lost:
            if not self.retry or self.ended_by is not None or self.fatal is not None \
                    or self._stop.is_set() or time.monotonic() >= deadline:
                return False
            self._stop.wait(poll)
        return True

    # -- coming back ------------------------------------------------------------------------
    def reconnect_now(self):
        """Try at once (the `reconnect` command); True when the session is back."""
        self.fatal = self.ended_by = None
        if self.attempt():
            return True
        if self.fatal is None and self.retry:
            self.start_retrying()
        return False

    def attempt(self):
        """One try to connect and log in again; True when the session is back."""
        with self._lock:
            if self.connected:
                return True
            if self._stop.is_set() or self.user is None:
                return False
            try:
                self._reconnect_once()
            except ClientFailure as failure:
                self.down_reason = failure.message
                self.unreachable = isinstance(failure, CannotConnect)
                if failure.code in FATAL_CODES:
                    self.fatal = failure
                return False
        self.client.on_link_back()
        return True

    def _reconnect_once(self):
        old = self.session
        self.reconnecting = True
        try:
            if old is not None:
                old.close()
            self.connect(ask_trust=None)
            self.login(ReLogin(self.user, self.password))
        except BaseException:      # a failure, or Ctrl-C while waiting: no half session
            self.session.close()
            raise
        finally:
            self.reconnecting = False

    # -- leaving --------------------------------------------------------------------------------
    def close(self, say_goodbye=True):
        """Stop retrying; log out if connected; close the socket."""
        self._stop.set()
        self._wake.set()
        session = self.session
        if session is None:
            return True
        said = session.logout() if say_goodbye and self.connected else True
        session.close()
        return said
