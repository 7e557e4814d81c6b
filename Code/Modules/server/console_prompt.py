"""The prompt_toolkit half of the operator console (`server/console.py`).

Imported only by the console's own thread, once the daemon runs in the
foreground of a terminal: a daemon without a console (a service, a test,
a pipe) never loads prompt_toolkit, which was a fifth of its start-up.

What it holds: the prompt session (`session`), with its history on disk
(only lines worth recalling; mode 0600 in $XDG_STATE_HOME/parley), the
completer of command and account names, the key bindings (Ctrl-C, Ctrl-D,
a line over the limit, a paste), and `FloodInput`, which hands a long run of
typed characters over as one paste. `end(session)` ends a running prompt
from another thread.

Talks to: the terminal (through prompt_toolkit) and the console object it
serves, whose `_say` and `_dropped` it uses. How it fails: a history file
that cannot be written leaves the history in memory only (one warning);
completion never raises into the prompt (the console's name source returns
nothing on any error).
"""

import logging
import os
import sys

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input.vt100 import Vt100Input
from prompt_toolkit.key_binding import KeyBindings, KeyPress
from prompt_toolkit.keys import Keys
from prompt_toolkit.patch_stdout import StdoutProxy

from Modules.server import admin_commands
from Modules.server.admin_commands import line_problem

log = logging.getLogger("parley.console")

EOF_HINT = ("The server keeps running. To stop it, type 'shutdown' (or 'shutdown --in "
            "SECONDS MESSAGE'), or press Ctrl-C on an empty line.")
USER_COMMANDS = sorted(name for name, command in admin_commands.COMMANDS.items()
                       if command.usage.split()[1:2] in (["USER"], ["[USER]"]))


def session(console, names_from):
    """The console's PromptSession: history, completion, keys, flood input."""
    return PromptSession(history=open_history(), completer=CommandCompleter(names_from),
                         key_bindings=key_bindings(console), enable_history_search=True,
                         input=FloodInput(sys.stdin))


def stdout_proxy():
    """Where print() goes while the prompt runs: above it, escape sequences kept."""
    return StdoutProxy(raw=True)


def end(prompt_session):
    """From any thread: end the running prompt of `prompt_session` with EOFError."""
    app = prompt_session.app
    loop = getattr(app, "loop", None)
    if app is not None and app.is_running and loop is not None:
        loop.call_soon_threadsafe(_exit_quietly, app)


class _KeptHistory:
    """Lines worth recalling only: not refused ones (too long, not text)."""

    def append_string(self, string):
        if line_problem(string) is None:
            super().append_string(string)


class _FileHistory(_KeptHistory, FileHistory):
    pass


class _MemoryHistory(_KeptHistory, InMemoryHistory):
    pass


def history_path(environ=os.environ):
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                          "state")
    return os.path.join(state, "parley", "console_history")


def open_history(path=None):
    """The history on disk (made 0600, its folder 0700), else in memory only."""
    path = path or history_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        os.chmod(path, 0o600)
        return _FileHistory(path)
    except OSError as error:
        log.warning("console history kept in memory only: cannot write %s (%s)", path,
                    error.strerror or error)
        return _MemoryHistory()


class CommandCompleter(Completer):
    """Command names; after a command that takes a USER, account names (on Tab)."""

    def __init__(self, names_from):
        self.names_from = names_from         # prefix -> account names (the monitor's)

    def get_completions(self, document, complete_event):
        before = document.text_before_cursor
        if len(before) > 200:
            return
        words = before.split()
        typing = bool(before) and not before[-1].isspace()
        index = len(words) - 1 if typing else len(words)
        current = words[-1] if typing else ""
        if index == 0:
            candidates = sorted(admin_commands.COMMANDS)
        elif index == 1 and words[0].lower() in USER_COMMANDS and \
                complete_event.completion_requested:
            candidates = self.names_from(current)
        else:
            return
        for candidate in candidates:
            if candidate.startswith(current) and candidate != current:
                yield Completion(candidate, start_position=-len(current))


class FloodInput(Vt100Input):
    """The terminal's keys, a long run of plain characters (a paste in a terminal
    without bracketed paste) handed over as one paste: prompt_toolkit takes a
    fraction of a millisecond per key, half a minute for 100 KB."""

    RUN = 64

    def read_keys(self):
        return coalesce(super().read_keys(), self.RUN)


def coalesce(keys, run):
    """`keys` with each run of more than `run` plain characters made one paste."""
    out, chars = [], []
    for key in keys + [None]:
        if key is not None and len(key.data) == 1 and key.key == key.data:
            chars.append(key)
            continue
        if len(chars) > run:
            out.append(KeyPress(Keys.BracketedPaste, "".join(k.data for k in chars)))
        else:
            out.extend(chars)
        chars = []
        if key is not None:
            out.append(key)
    return out


def key_bindings(console):
    """Ctrl-C and Ctrl-D as the module says; a line one character over the
    limit takes no more (a huge paste would take minutes to draw), Enter
    then refuses it."""
    bindings = KeyBindings()
    empty = Condition(lambda: not get_app().current_buffer.text)
    full = Condition(lambda: len(get_app().current_buffer.text) > admin_commands.LINE_MAX)

    @bindings.add("<any>", filter=full)
    def _drop(event):
        console._dropped += len(event.data)

    @bindings.add(Keys.BracketedPaste)
    def _paste(event):
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        room = max(0, admin_commands.LINE_MAX + 1 - len(event.current_buffer.text))
        console._dropped += max(0, len(data) - room)
        event.current_buffer.insert_text(data[:room])

    @bindings.add("c-c")
    def _clear_or_stop(event):
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    @bindings.add("c-d", filter=empty)
    def _say_how_to_stop(_event):
        console._say(EOF_HINT)

    return bindings


def _exit_quietly(app):
    """End a running prompt with EOFError (in its loop); it may have ended already."""
    try:
        if app.is_running:
            app.exit(exception=EOFError)
    except Exception:                        # the result was set in between
        pass
