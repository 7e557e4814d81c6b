"""The interactive client: a prompt worth living in, for a person at a terminal.

Used by `client_cli.main()` when standard input is a terminal and neither
--batch nor --json is given. One run:

1. connect; a server seen for the first time shows its key fingerprint
   and asks "Trust this server?"; a changed key is refused loudly;
2. the operator's greeting, if any; log in (or offer to create the
   account; after a password the administrator reset, choose a new one);
   the message of the day, if any; the messages that arrived while away
   are listed one line each (broadcasts marked as such), then "You have
   N unread messages";
3. the prompt: commands complete with Tab, history is kept per server and
   user (`client_store`), messages that arrive are printed above the line
   being typed (prompt_toolkit's patch_stdout) and their senders
   remembered for `send` completion;
4. when the server goes away the person is told at once in one sentence;
   the prompt stays, whatever was typed stays, and the `Link` reconnects
   (automatically with backoff unless --no-retry, or with `reconnect`),
   logging in again with the name and password of this run (memory only).
   A command typed while disconnected tries to reconnect first and is
   kept on the prompt line if that fails; a message finished while
   disconnected, or cut off by the lost connection, waits in the outbox
   and is sent by itself once the connection is back. A session the server ended
   on purpose (kicked, suspended, password reset, idle timeout) is not
   reconnected by itself: the person is told why and decides;
5. Ctrl-D, `quit` or `logout` log out and leave with status 0.

Talks to: `client_link` (connection), `client_actions` (commands),
`client_terminal` (prompts), `client_screen` (what is printed),
`client_store` (history, people). Fails with one sentence and what to do
next, never a traceback: startup failures end the run (status 1, or 2 when
the server cannot be reached); everything later is reported and the
prompt goes on.
"""

from prompt_toolkit.patch_stdout import patch_stdout

from Modules.client.actions import (
    EXTRA_PARSERS,
    OFFLINE_COMMANDS,
    InteractiveRunner,
    MessageArrivals,
)
from Modules.client.commands import (
    ACCOUNT_DELETED,
    FAILED,
    LOGOUT,
    Cancelled,
    UsageError,
    no_on_cancel,
    parse_line,
)
from Modules.client.link import Link
from Modules.client.login import InteractiveLogin, LoginFailed
from Modules.client.output import (
    greeting_record,
    login_record,
    motd_record,
    neutralise,
    system_record,
)
from Modules.client.session import (
    PASSING_EVENTS,
    ClientFailure,
    ConnectionLost,
    Handlers,
    ServerRefused,
)
from Modules.client.store import UserStore, account_dir
from Modules.client.terminal import Terminal

KEEP = "keep"        # a command that could not run: its line goes back to the prompt
# What a person can do after the server ended the session on purpose.
ENDED_ADVICE = {
    "kicked": "Type 'reconnect' to log in again, or 'quit' to leave.",
    "idle_timeout": "Type 'reconnect' to log in again, or 'quit' to leave.",
    "suspended": "Type 'quit' to leave.",
    "password_reset": "Type 'quit' to leave, then start the client again and log in "
                      "with the one-time password you were given.",
    "password_changed": "Type 'quit' to leave, then start the client again and log in "
                        "with the new password.",
}
STARTUP_NEXT_STEPS = {
    "too_many_attempts": "Start the client again to try once more; if you forgot the "
                         "password, ask the server's administrator.",
    "closed": "Start the client again when the server is back.",
    "server_gone": "Start the client again when the server is back.",
    "notice": "Try again in a while.",
    "shutdown": "Start the client again when the server is back.",
}


class InteractiveClient(MessageArrivals, Handlers):
    """One interactive run: connect, log in, the prompt, reconnecting, leaving."""

    def __init__(self, args, output, password=None):
        self.args, self.output, self.password = args, output, password
        self.terminal = Terminal(color=output.color, extra_commands=EXTRA_PARSERS)
        self.link = Link(args.host, args.port, args.known_hosts, self,
                         retry=not args.no_retry, note=output.note)
        self.runner = InteractiveRunner(self)
        self.store = None
        self.shown = {}             # message id -> shown whole, this run, across reconnects
        self._system_said = set()

    # -- the run --------------------------------------------------------------------------
    def run(self):
        """The exit status: 0 after quit, 1 (or 2) when the start failed."""
        with patch_stdout(raw=True):
            try:
                self._start()
                return self._loop()
            except ClientFailure as failure:
                self._report(failure)
                return failure.exit_code
            finally:
                self.link.close(say_goodbye=False)

    def _start(self):
        self.link.connect(no_on_cancel(self.terminal.confirm), self.args.accept_new_host_key)
        self._login(InteractiveLogin(self.terminal, self.output.note, self.args.user,
                                     self.password, self.args.create))

    def _login(self, answerer):
        self.link.login(answerer)
        self.terminal.configure(self.store.history_path(), self.store.people)
        self._greet()

    def _greet(self):
        unread, complete = self.runner.count_unread()
        if unread == 0:
            text = "No unread messages."
        else:
            count = f"{'' if complete else 'at least '}{unread}"
            text = (f"You have {count} unread message{'s' if unread != 1 else ''}; "
                    "type 'inbox' to list them.")
        self.output.human(f"{text} Type 'help' for the commands; Ctrl-D leaves.")

    def _report(self, failure):
        if failure.code == "server_gone":       # a prompt was interrupted
            failure = self.link.session.connection_lost()
        message = failure.message
        if failure.code == "notice":
            message = f"Server says: {message}"
        self.output.error(f"{message} {startup_step(failure)}".strip(), failure.code)

    # -- the prompt -------------------------------------------------------------------------
    def _loop(self):
        kept = ""
        while True:
            try:
                line = self.terminal.command(self._prompt_text(), default=kept)
            except EOFError:
                if self.may_leave():
                    return self._leave()
                continue
            outcome = self._run_line(line)
            kept = line if outcome == KEEP else ""
            if outcome == LOGOUT:
                return self._leave()
            if outcome == ACCOUNT_DELETED and not self._log_in_again():
                return 0

    def _prompt_text(self):
        return f"{neutralise(self.link.user)}> "

    def _run_line(self, line):
        try:
            command = parse_line(line, EXTRA_PARSERS)
        except UsageError as error:
            self.output.error(error.reason, "bad_command", line)
            return FAILED
        return self._run_command(command) if command is not None else None

    def _run_command(self, command):
        try:
            if command.name not in OFFLINE_COMMANDS and not self._ensure_connected():
                return KEEP
            return self.runner.run(command)
        except ConnectionLost as lost:
            self.output.warn(f"The connection was lost before the server answered "
                             f"({lost.message}). Your command is kept: press Enter to run "
                             "it again once reconnected.")
            return KEEP
        except KeyboardInterrupt:
            self.output.note("Stopped waiting; the server may still carry it out.")
            return FAILED

    def _ensure_connected(self):
        if self.link.connected:
            return True
        if self.link.ended_by is not None:
            self.output.warn(f"Not connected: the server ended the session. "
                             f"{ENDED_ADVICE[self.link.ended_by]}")
            return False
        self.output.note("Not connected; trying to reconnect now…")
        if self.link.reconnect_now():
            return True
        self.output.warn(f"Still not connected: {self.link.down_reason} Your command is "
                         "kept; press Enter to try again, or type 'quit' to leave.")
        return False

    def reconnect_command(self):
        """The `reconnect` command."""
        if self.link.connected:
            self.output.human(f"You are connected to {self.link.host_id} as "
                              f"{neutralise(self.link.user)}.")
        elif not self.link.reconnect_now():
            self.output.warn(f"Could not reconnect: {self.link.down_reason} "
                             + self._retry_advice())

    def when_back(self):
        """When a message kept in the outbox goes out (after "will be sent ")."""
        if self.link.ended_by is None and self.link.fatal is None and self.link.retry:
            return "as soon as the connection is back"
        return "once you reconnect (type 'reconnect')"

    def _retry_advice(self):
        if self.link.fatal is None and self.link.retry:
            return "Trying again automatically; type 'quit' to leave."
        return "Type 'reconnect' to try again, or 'quit' to leave."

    # -- leaving ------------------------------------------------------------------------------
    def may_leave(self):
        """True unless unsent messages are waiting and the person wants to stay."""
        waiting = self.runner.outbox_summary()
        if not waiting:
            return True
        self.output.warn("Not sent yet (the connection is down): " + "; ".join(waiting))
        try:
            return self.terminal.confirm("Leave anyway and lose them? [y/N] ")
        except Cancelled:
            return False

    def _leave(self):
        was_connected = self.link.connected
        if not self.link.close() and was_connected:
            self.output.note("The server did not say goodbye; closing anyway.")
        return 0

    def _log_in_again(self):
        """After delete-account: another login on the same connection, or leave."""
        self.output.human("You can log in with another name now, or press Ctrl-D to leave.")
        try:
            self._login(InteractiveLogin(self.terminal, self.output.note))
        except LoginFailed as failure:
            if failure.code != "cancelled":
                raise
            return False
        return True

    # -- what the session reports (network threads) ---------------------------------------------
    def remember(self, *names):
        if self.store is not None:
            self.store.remember(*names)

    def on_greeting(self, text):
        if not self.link.reconnecting:
            self.output.emit(greeting_record(text))

    def on_welcome(self, user, created):
        if self.store is None or self.link.user != user:
            directory = account_dir(self.args.host, self.args.port, user)
            self.store = UserStore(directory, note=self.output.note)
        if not self.link.reconnecting:
            self.output.emit(login_record(user, created))

    def on_motd(self, text):
        if not self.link.reconnecting:
            self.output.emit(motd_record(text))

    def on_system(self, event, message):
        if event not in PASSING_EVENTS:       # a presence notice is never why it ended
            self._system_said.add(message)
        self.output.emit(system_record(event, message))

    def on_error(self, code, reason):
        self.output.error(reason, code)

    def on_wait(self, seconds, reason):
        self.output.note(f"{neutralise(reason)} Trying again in {seconds} s.")

    # -- what the link reports (network and retry threads) ----------------------------------------
    def on_link_down(self, reason, was_up):
        if not was_up:
            self.terminal.interrupt()     # during the login: end the prompt shown
            return
        said = "Connection lost." if reason in self._system_said else \
            f"Connection lost: {neutralise(reason)}"
        if self.link.ended_by is not None:
            self.output.warn(f"{said} The server ended the session, so the client does "
                             f"not reconnect by itself. {ENDED_ADVICE[self.link.ended_by]}")
            self.terminal.set_status(" Not connected: the server ended the session. ")
            return
        self.output.warn(f"{said} " + (
            "Reconnecting automatically; type 'reconnect' to try now, or 'quit' to leave."
            if self.link.retry else "Type 'reconnect' to connect again, or 'quit' to leave."))
        self.terminal.set_status(" Not connected. Type 'reconnect' to try now. ")

    def on_link_waiting(self, reason, delay):
        self.terminal.set_status(f" Not connected ({neutralise(reason)}). Next try in "
                                 f"{delay:.0f} s; type 'reconnect' to try now. ")

    def on_link_back(self):
        self.terminal.set_status(None)
        self.output.good(f"Reconnected to {self.link.host_id} as "
                         f"{neutralise(self.link.user)}.")
        self.runner.flush_outbox()

    def on_link_gave_up(self, failure):
        self.terminal.set_status(" Not connected. Type 'reconnect' or 'quit'. ")
        self.output.error(f"Stopped reconnecting: {failure.message}", failure.code)


def startup_step(failure):
    """What to do after the start failed, or '' when the message says it."""
    if isinstance(failure, ServerRefused) and failure.code == "timeout":
        return "Start the client again to log in."      # the login took too long
    return STARTUP_NEXT_STEPS.get(failure.code, "")


