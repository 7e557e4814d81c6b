"""The Parley client's command line: options, the login, and the two modes.

    python Code/client.py [--host H] [--port P] [--user NAME] [--password-env VAR]
                          [--create] [--batch] [--json] [--known-hosts FILE]
                          [--accept-new-host-key] [--no-color] [--no-retry] [--gui]

--host defaults to $PARLEY_HOST or 127.0.0.1, --port to $PARLEY_PORT or
7117. Exit status: 0 success; 1 refused or failed (server key not trusted,
wrong password, a failed batch command, the server went away); 2 cannot
connect, or bad usage. The reason is always one plain sentence on stderr.

Interactive mode (stdin is a terminal, no --batch and no --json): the
prompt of `Modules/client/interactive.py`: asks for the username and
password, offers to create a missing account, then shows a prompt with
completion and history; messages that arrive are printed above it; a lost
connection is retried (not with --no-retry). Type `help`. With --json at
a terminal the older plain prompt below runs instead, printing JSON.

Windowed mode (--gui): the tkinter windows of `Modules/client/gui/`
(`app.run_gui`), over the same link, runner and commands as the prompt;
--host/--port/--user/--password-env fill in its login window.

Batch mode (--batch, or stdin not a terminal), a stable interface for
other programs:
* --user NAME and --password-env VAR are required (the password is read
  from that environment variable); --create creates a missing account.
* stdin holds one command per line with the prompt's syntax and shell-style
  quoting: `send bob "Lunch" "At noon?"`, `inbox`, `inbox --before 40
  --limit 10`, `read 12`, `delete 12 13`, `delete-account` (not asked to
  confirm), `help`, `logout`. Blank lines and lines starting with # are
  ignored; a quotation left open continues on the next line, joined with a
  newline (multi-line bodies).
* Messages waiting at login are printed first; then each command runs
  after the previous one's reply. While stdin stays open the session stays
  connected and new messages are printed as they arrive.
* A bad line gets an error result and the batch goes on. End of input
  logs out. After delete-account the session ends; any remaining input is
  ignored (with a note on stderr). Exit status 0 if every command
  succeeded, else 1; the server going away ends the batch with status 1.

--json (with or without --batch) prints exactly one JSON object per line
on stdout for every result, error and message (times are ISO 8601 UTC
with milliseconds, "2026-11-21T02:10:00.123Z"; "?" marks optional keys):
    {"type":"greeting","message"}      the operator's greeting, before the login
    {"type":"login","user","created"}
    {"type":"motd","message"}          the message of the day, right after login
    {"type":"message","via":"login"|"push"|"read","id","from","to","subject",
     "body","sent_at","kind":"message"|"bounce"|"broadcast","note"?,
     "original_to"?,"read"?}           (a broadcast is from "parley", the operator)
    {"type":"ready","user"}            after the messages waiting at login
    {"type":"sent","id","to","bounced","duplicate","note"?}
    {"type":"inbox","messages":[{"id","from","subject","sent_at","kind",
     "unread","note"?}],"more"}        (kind as in "message")
    {"type":"deleted","deleted":[ids],"missing":[ids]}
    {"type":"account_deleted","bounced":N}
    {"type":"password_changed","ended":N}      (passwd OLD NEW; issue 13, my account)
    {"type":"block"|"unblock","user","changed"}
    {"type":"blocked","blocked":[{"user","since"}]}
    {"type":"who","people":[{"user","since","idle"}]}
    {"type":"presence","presence":"on"|"off"}
    {"type":"last","user","online","since","last_seen"}   (times ISO 8601 or null)
    {"type":"system","event","message"}   events: goodbye, shutdown, account_deleted,
                                          announce, presence ("bob is online"), and (the
                                          session then ends) kicked, suspended,
                                          password_reset, idle_timeout, password_changed
    {"type":"help","commands":[{"usage","summary"}]}
    {"type":"error","error":reason,"code":code,"command":line or null}
A login the server refuses (a suspended account: code "suspended", too many
wrong passwords, ...) is an error record and exit status 1.
Errors are also written to stderr as plain text. Without --json, the same
results are printed as human text.

Talks to: `ClientSession` (network), `client_login` (key pin, login),
`client_commands` (parsing, running), `client_output` (printing),
`client_terminal` (prompts), and hands a person at a terminal over to
`client_interactive`. Never shows a traceback: unexpected failures
end with one sentence and status 1 (PARLEY_DEBUG=1 shows the traceback).
"""

import argparse
import contextlib
import os
import queue
import sys
import threading
import traceback

from Modules import identity
from Modules.client.commands import (
    ACCOUNT_DELETED,
    FAILED,
    LOGOUT,
    LineJoiner,
    Runner,
    UsageError,
    no_on_cancel,
    parse_line,
)
from Modules.client.login import (
    InteractiveLogin,
    ScriptedLogin,
    check_server_key,
    run_login,
)
from Modules.client.output import (
    Output,
    colour_allowed,
    greeting_record,
    login_record,
    message_record,
    motd_record,
    neutralise,
    ready_record,
    system_record,
)
from Modules.client.session import (
    CLOSED_BY_SERVER,
    ClientFailure,
    ClientSession,
    Handlers,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7117
UNCLOSED_QUOTE = "A quotation mark is not closed at the end of the input."


# ------------------------------------------------------------ options


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def _port(text, source="--port"):
    if not text.strip().isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"{source} must be a port number from 1 to 65535, not "
                         f"'{text}'.")
    return int(text)


def build_parser():
    parser = _Parser(prog="parley", description="Parley secure messaging client. "
                     "Without --batch, at a terminal, it asks what it needs.")
    add = parser.add_argument
    add("--host", help=f"server address (default $PARLEY_HOST or {DEFAULT_HOST})")
    add("--port", help=f"server port (default $PARLEY_PORT or {DEFAULT_PORT})")
    add("--user", metavar="NAME", help="log in as NAME without asking")
    add("--password-env", metavar="VAR", help="read the password from environment "
                                              "variable VAR")
    add("--create", action="store_true", help="create the account if it does not exist")
    add("--batch", action="store_true", help="read commands from stdin, one per line")
    add("--json", action="store_true", help="print one JSON object per line")
    add("--known-hosts", metavar="FILE", help="known server keys (default "
                                              f"{identity.default_known_hosts_path()})")
    add("--accept-new-host-key", action="store_true",
        help="trust a server seen for the first time (never a changed key)")
    add("--no-color", action="store_true", help="no colours")
    add("--gui", action="store_true", help="the windowed client (tkinter) instead of the "
                                           "prompt")
    add("--no-retry", action="store_true", help="at the prompt, do not reconnect by "
                                                "itself when the connection drops")
    return parser


def parse_args(argv, environ):
    """The options as a Namespace; UsageError for bad usage; SystemExit for --help."""
    args = build_parser().parse_args(argv)
    args.host = args.host or environ.get("PARLEY_HOST") or DEFAULT_HOST
    if args.port is not None:
        args.port = _port(args.port)
    elif environ.get("PARLEY_PORT"):
        args.port = _port(environ["PARLEY_PORT"], "PARLEY_PORT")
    else:
        args.port = DEFAULT_PORT
    args.known_hosts = args.known_hosts or identity.default_known_hosts_path()
    if args.user is not None and not args.user.strip():
        raise UsageError("--user needs a name.")
    return args


def password_from(args, environ):
    """The password named by --password-env, None without it; UsageError if unset."""
    if args.password_env is None:
        return None
    password = environ.get(args.password_env)
    if password is None:
        raise UsageError(f"The environment variable {args.password_env} is not set; "
                         "put the password in it, or leave out --password-env.")
    return password


def is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------ batch input


class StdinLines:
    """Reads stdin in a thread, so the session can end while no line comes."""

    def __init__(self, stream):
        self._lines = queue.Queue()
        self.ended = False
        thread = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                  name="parley-stdin")
        thread.start()

    def _read(self, stream):
        source = getattr(stream, "buffer", stream)
        try:
            for raw in source:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                self._lines.put(text)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def next(self, session):
        """The next line, None at end of input; ConnectionLost once the server is gone."""
        while True:
            if session.closed:
                raise session.connection_lost()
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.ended = line is None
            return line

    def more_waiting(self, wait=0.1):
        """True if another line of input arrives within `wait` seconds."""
        if self.ended:
            return False
        try:
            line = self._lines.get(timeout=wait)
        except queue.Empty:
            return False
        self.ended = line is None
        return not self.ended


# ------------------------------------------------------------ the client


class Client(Handlers):
    """One run of the client: connect, trust, log in, run commands."""

    def __init__(self, args, output, environ, stdin):
        self.args, self.output, self.environ, self.stdin = args, output, environ, stdin
        self.interactive = not args.batch and is_terminal(stdin)
        self.terminal = None
        self.session = None
        self.user = None
        self._shown_system = set()

    def run(self):
        password = password_from(self.args, self.environ)
        if not self.interactive and not (self.args.user and password is not None):
            raise UsageError("Without a terminal (or with --batch) give --user NAME and "
                             "--password-env VAR; the client cannot ask.")
        if self.interactive:
            from Modules.client.terminal import Terminal
            self.terminal = Terminal()
        self.session = ClientSession(self.args.host, self.args.port, handlers=self)
        try:
            with self._screen():
                return self._run_connected(password)
        except ClientFailure as failure:
            self._report(failure)
            return failure.exit_code
        finally:
            self.session.close()

    def _screen(self):
        if not self.interactive:
            return contextlib.nullcontext()
        from prompt_toolkit.patch_stdout import patch_stdout
        return patch_stdout(raw=True)

    def _report(self, failure):
        if failure.code == "server_gone":      # a prompt was interrupted
            failure = self.session.connection_lost()
        message = failure.message
        if failure.code == "notice":
            message = f"Server says: {message}"
        elif message in self._shown_system:
            message = CLOSED_BY_SERVER
        self.output.error(message, failure.code)

    def _run_connected(self, password):
        key = self.session.open()
        ask = self.terminal.confirm if self.interactive else None
        check_server_key(key, identity.host_id(self.args.host, self.args.port),
                         self.args.known_hosts, self.args.accept_new_host_key,
                         ask=no_on_cancel(ask), note=self.output.note)
        self.session.negotiate()
        answerer = self._first_answerer(password)
        while True:
            self.user = run_login(self.session, answerer)
            self.session.wait_ready()
            outcome, status = self._run_commands()
            if outcome != ACCOUNT_DELETED or not self.interactive:
                return status
            answerer = InteractiveLogin(self.terminal, self.output.note)

    def _first_answerer(self, password):
        if not self.interactive:
            return ScriptedLogin(self.args.user, password, self.args.create,
                                 note=self.output.note)
        return InteractiveLogin(self.terminal, self.output.note, self.args.user,
                                password, self.args.create)

    def _run_commands(self):
        if self.interactive:
            return self._run_interactive()
        return self._run_batch()

    # -- interactive -----------------------------------------------------------------
    def _run_interactive(self):
        runner = Runner(self.session, self.output, self.terminal, self.user)
        self.output.human("Type 'help' for the commands.")
        while True:
            try:
                line = self.terminal.command(f"{neutralise(self.user)}> ")
            except EOFError:
                line = "logout"
            try:
                outcome = self._run_line(runner, line)
            except KeyboardInterrupt:
                self.output.note("Stopped waiting; the server may still carry it out.")
                continue
            if outcome == LOGOUT:
                return LOGOUT, 0
            if outcome == ACCOUNT_DELETED:
                return ACCOUNT_DELETED, 0

    def _run_line(self, runner, line):
        try:
            command = parse_line(line)
        except UsageError as error:
            self.output.error(error.reason, "bad_command", line)
            return FAILED
        return runner.run(command) if command is not None else None

    # -- batch -------------------------------------------------------------------------
    def _run_batch(self):
        lines, joiner = StdinLines(self.stdin), LineJoiner()
        runner = Runner(self.session, self.output, None, self.user)
        all_ok = True
        while (line := lines.next(self.session)) is not None:
            text = joiner.feed(line)
            if text is None:
                continue
            outcome = self._run_line(runner, text)
            all_ok = all_ok and outcome != FAILED
            if outcome in (LOGOUT, ACCOUNT_DELETED):
                return outcome, self._batch_ended(outcome, lines, all_ok)
        if (leftover := joiner.leftover()) is not None:
            self.output.error(UNCLOSED_QUOTE, "bad_command", leftover)
            all_ok = False
        self.session.logout()
        return LOGOUT, 0 if all_ok else 1

    def _batch_ended(self, outcome, lines, all_ok):
        if lines.more_waiting():
            what = "logout" if outcome == LOGOUT else "delete-account"
            self.output.note(f"The session ended with {what}; the rest of the input "
                             "is ignored.")
        return 0 if all_ok else 1

    # -- what the session reports (called from its reader thread) ------------------------
    def on_greeting(self, text):
        self.output.emit(greeting_record(text))

    def on_welcome(self, user, created):
        self.output.emit(login_record(user, created))

    def on_motd(self, text):
        self.output.emit(motd_record(text))

    def on_message(self, message, via):
        self.output.emit(message_record(message, via))
        return False    # a script's output is no proof that a person read it

    def on_ready(self, user):
        self.output.emit(ready_record(user))

    def on_system(self, event, message):
        self._shown_system.add(message)
        self.output.emit(system_record(event, message))

    def on_error(self, code, reason):
        self.output.error(reason, code)

    def on_wait(self, seconds, reason):
        self.output.note(f"{neutralise(reason)} Trying again in {seconds} s.")

    def on_closed(self, reason):
        if self.terminal is not None:
            self.terminal.interrupt()


# ------------------------------------------------------------ main


def main(argv=None, environ=None, stdin=None):
    """Run the client; the exit status."""
    environ = os.environ if environ is None else environ
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, environ)
    except UsageError as error:
        print(f"parley: {error.reason}", file=sys.stderr)
        return 2
    except SystemExit as done:     # --help
        return done.code if isinstance(done.code, int) else 0
    if args.gui:
        return _windowed_client(args, environ)
    stdin = stdin or sys.stdin
    colour = colour_allowed(args.no_color, sys.stdout, environ)
    if args.batch or args.json or not is_terminal(stdin):
        return _run_guarded(Client(args, Output(args.json, colour), environ, stdin), environ)
    try:
        password = password_from(args, environ)
    except UsageError as error:
        print(f"parley: {error.reason}", file=sys.stderr)
        return 2
    return _run_guarded(_interactive_client(args, colour, password), environ)


def _windowed_client(args, environ):
    """The windows of `client_gui` (issue 17); imported only when asked for."""
    try:
        password = password_from(args, environ)
    except UsageError as error:
        print(f"parley: {error.reason}", file=sys.stderr)
        return 2
    from Modules.client.gui.app import run_gui
    return run_gui(args, password, environ)


def _interactive_client(args, colour, password):
    """The prompt for a person (`client_interactive`); imported only when needed."""
    from Modules.client.interactive import InteractiveClient
    from Modules.client.screen import ScreenOutput
    return InteractiveClient(args, ScreenOutput(colour), password)


def _run_guarded(client, environ):
    """client.run(), with every escaping exception turned into one sentence."""
    try:
        return client.run()
    except UsageError as error:
        client.output.note(f"parley: {error.reason}")
        return 2
    except KeyboardInterrupt:
        client.output.note("Interrupted.")
        return 1
    except Exception as error:     # the last line of defence: no tracebacks
        client.output.note(f"parley: unexpected error ({type(error).__name__}); "
                           "please report it.")
        if environ.get("PARLEY_DEBUG"):
            traceback.print_exc()
        return 1
