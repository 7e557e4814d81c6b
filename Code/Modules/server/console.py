"""The operator console: the server's own terminal as a `parley> ` prompt.

The daemon makes its `Console(options)` before it starts any process, and
calls `start(daemon)` once it serves, `stop()` when it begins to stop and
`close()` at its very end. Only when it runs in the foreground of a
terminal (standard input and output are that terminal, and its process
group is the terminal's foreground group) and `--no-console` /
PARLEY_NO_CONSOLE is not set is the console real; otherwise every call
does nothing and nothing is ever read from standard input.

What it does:

* a prompt (prompt_toolkit, in `server/console_prompt.py`, which only the
  console's thread imports: a daemon without a console never loads it) in a
  daemon thread of the daemon process; the
  daemon's selector loop and its signal handlers stay in the main thread.
  Tab completes command names, and account names after the commands that
  take one; Up/Down and Ctrl-R recall earlier lines, kept in memory and in
  `$XDG_STATE_HOME/parley/console_history` (default `~/.local/state`;
  mode 0600; never in the data dir, which is the database process's).
* each line is split like a shell would (shlex) and run by
  `server/admin_commands.py` on an `AdminContext` of its own (a fresh
  admin link to the monitor, for the daemon's Unix user, closed after the
  command), so the console and `server_daemon.py admin` are one table;
  the answer is printed, an error marked `error:`.
* log lines: every server process writes its log to file descriptor 2,
  and the forkserver's children inherit the daemon's. So that they never
  scramble the line being typed, the console points fd 2 at a pipe (when it
  was the terminal) and a relay thread prints what comes out of it above
  the prompt (prompt_toolkit's StdoutProxy, colours kept: the children
  learn from STDERR_RELAYED that their standard error ends on a terminal).
  `close()` restores fd 2 after the last lines went through.

Keys: Ctrl-C clears a line being typed; on an empty line it stops the
server as it always did (SIGINT to the daemon: the clean stop; the
console ends, so a second Ctrl-C is a real SIGINT, which forces it).
Ctrl-D on an empty line only says how to stop the server.

How it fails: bad input (a bad quote, bytes that are not text, a line over
`admin_commands.LINE_MAX`, an unknown command, a missing argument) gets
one sentence and runs nothing; the database being away is the command's
own error. A terminal that goes away ends the console, not the server. A
history file that cannot be written leaves the history in memory only.
"""

import logging
import os
import shlex
import signal
import sys
import threading
import time

from Modules.runtime import STDERR_RELAYED
from Modules.server import admin_commands
from Modules.server.admin_commands import line_problem
from Modules.server.admin_socket import AdminContext, user_name

log = logging.getLogger("parley.console")

PROMPT = "parley> "
WELCOME = ("Operator console: 'help' lists the commands, Tab completes them. "
           "'shutdown' or Ctrl-C on an empty line stops the server.")
STOPPING = "Stopping the server cleanly (Ctrl-C again forces it)."
STOP_WAIT = 5.0                  # seconds to wait for the prompt or the relay to end
READ_SIZE = 65536
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
RED, RESET = "\x1b[31;1m", "\x1b[0m"


def wanted(options, stdin=None, stdout=None):
    """Whether this daemon gets a console: a terminal in front of it, not turned off."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if getattr(options, "no_console", False):
        return False
    try:
        if not (stdin.isatty() and stdout.isatty()):
            return False
        return os.tcgetpgrp(stdin.fileno()) == os.getpgrp()   # not a background job
    except (OSError, ValueError, AttributeError):
        return False


def split_line(line, dropped=0):
    """(words, None) or (None, the sentence saying what is wrong with the line)."""
    problem = line_problem(line, dropped)
    if problem:
        return None, problem
    try:
        return shlex.split(line), None
    except ValueError as error:             # "No closing quotation", "No escaped character"
        return None, (f"Cannot read that line ({str(error).lower()}): close every ' or \" "
                      "quote; nothing was run.")


def visible(text):
    """`text` with control characters (but newlines) and stray surrogates escaped."""
    return "".join(char if char == "\n" or char.isprintable() else
                   f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}"
                   for char in text)


class Console:
    """The prompt thread, and the relay of fd 2 to the terminal above it."""

    def __init__(self, options):
        self.operator = user_name(os.getuid())
        self.colour = "NO_COLOR" not in os.environ
        self._terminal = self._pipe = None   # the terminal's fd 2 (a dup), the pipe's end
        self._relay_thread = self._thread = self._session = self._proxy = None
        self._marker = b"\0parley console end " + os.urandom(8).hex().encode() + b"\n"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._dropped = 0                    # keys typed on a line already too long
        self.active = wanted(options)        # else every method does nothing
        if self.active:
            self.redirect_stderr()

    # -- fd 2 through a pipe ---------------------------------------------------------
    def redirect_stderr(self):
        """Point fd 2 at a pipe relayed to the terminal (if fd 2 is the terminal:
        a log going to a file stays there). Before any process is started."""
        if not os.isatty(2):
            return
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        self._terminal = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._pipe = read_end
        os.environ[STDERR_RELAYED] = "1"     # the forkserver starts after this
        self._relay_thread = threading.Thread(target=self._relay, name="parley-console-log",
                                              daemon=True)
        self._relay_thread.start()

    def _relay(self):
        """Whole lines from the pipe to the terminal, until the end marker."""
        pending = b""
        while True:
            try:
                data = os.read(self._pipe, READ_SIZE)
            except OSError:
                return
            if not data:
                return
            pending += data
            cut = pending.rfind(b"\n") + 1 or (len(pending) if len(pending) >= READ_SIZE
                                               else 0)
            if not cut:
                continue
            chunk, pending = pending[:cut], pending[cut:]
            if self._marker in chunk:
                self._show(chunk.split(self._marker, 1)[0])
                return
            self._show(chunk)

    def _show(self, data):
        """Log bytes on the terminal: above the prompt while there is one."""
        with self._lock:
            if self._proxy is not None:
                self._proxy.write(data.decode("utf-8", "replace"))
                self._proxy.flush()
                return
            try:
                while data:
                    data = data[os.write(self._terminal, data):]
            except OSError:
                pass                         # the terminal is gone; keep draining the pipe

    # -- the prompt ----------------------------------------------------------------
    def start(self, daemon):
        """The prompt, in a thread of its own, running commands against `daemon`."""
        if not self.active:
            return
        self._thread = threading.Thread(target=self._run, args=(daemon,),
                                        name="parley-console", daemon=True)
        self._thread.start()

    def _run(self, daemon):
        from Modules.server import console_prompt as prompt   # prompt_toolkit: only here

        proxy = prompt.stdout_proxy()
        saved, sys.stdout = sys.stdout, proxy    # print() from any thread: above the prompt
        with self._lock:
            self._proxy = proxy
        try:
            self._say(WELCOME)
            self._prompt_loop(daemon, prompt)
        except Exception:                    # never the server's end
            log.exception("the console failed; the server goes on without it")
        finally:
            with self._lock:
                self._proxy = None
                sys.stdout = saved
                proxy.close()

    def _prompt_loop(self, daemon, prompt):
        self._session = prompt.session(self, lambda words: self._account_names(daemon, words))
        while not self._stopping.is_set():
            self._dropped = 0
            try:
                line = self._session.prompt(PROMPT)
            except KeyboardInterrupt:        # Ctrl-C on an empty line
                self._say(STOPPING)
                os.kill(os.getpid(), signal.SIGINT)
                return
            except EOFError:                 # stop(), or the terminal went away
                if not self._stopping.is_set():
                    log.warning("the console's terminal closed; the server keeps running")
                return
            if not self._stopping.is_set():
                self.run_line(daemon, line, self._dropped)

    def run_line(self, daemon, line, dropped=0):
        """One typed line: split, run, the answer printed."""
        words, problem = split_line(line, dropped)
        if problem:
            return self._say(problem, error=True)
        if not words:
            return None
        log.debug("console command %s by %s", words[0][:32], self.operator)
        context = AdminContext(daemon.db_socket, self.operator, daemon)
        try:
            outcome = admin_commands.run(context, words)
        except Exception:                    # a bug in a command: say so, keep the console
            log.exception("console command %s failed", words[0][:32])
            outcome = admin_commands.Outcome(1, {}, "That command failed unexpectedly "
                                                    "(see the log); nothing else changed.")
        finally:
            context.close()
        return self._say(outcome.text, error=outcome.status != 0)

    def _account_names(self, daemon, prefix):
        """Account names starting with `prefix`, for Tab; none if anything is wrong."""
        if not set(prefix) <= NAME_CHARS:
            return []
        context = AdminContext(daemon.db_socket, self.operator, daemon)
        try:
            return [user["username"] for user in
                    context.call("Users", pattern=prefix + "*")["users"]]
        except Exception:                    # completion never disturbs the prompt
            return []
        finally:
            context.close()

    def _say(self, text, error=False):
        text = visible(text)
        if error:
            text = (f"{RED}error:{RESET} " if self.colour else "error: ") + text
        with self._lock:
            out = self._proxy
        if out is not None:
            out.write(text + "\n")
            out.flush()

    # -- the end ---------------------------------------------------------------------
    def stop(self):
        """End the prompt (the server is stopping); the relay goes on."""
        self._stopping.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        deadline = time.monotonic() + STOP_WAIT
        while thread.is_alive() and time.monotonic() < deadline:
            self._end_prompt()
            thread.join(0.05)

    def _end_prompt(self):
        if self._session is not None:          # made by console_prompt, so it is loaded
            from Modules.server import console_prompt

            console_prompt.end(self._session)

    def close(self):
        """Stop the prompt, let the last log lines through, give fd 2 back."""
        self.stop()
        if self._terminal is None:
            return
        try:
            sys.stderr.flush()
            os.write(2, self._marker)        # after every line written before it
        except OSError:
            pass
        self._relay_thread.join(STOP_WAIT)
        os.dup2(self._terminal, 2)
        if not self._relay_thread.is_alive():    # else it may still use them
            os.close(self._terminal)
            os.close(self._pipe)
        self._terminal = None
