"""The interactive terminal of the Parley client, on prompt_toolkit.

Every question the client asks a person goes through `Terminal`:

* the command prompt: completion with Tab (command names;
  after `send `, the people this user has written to or heard from; after
  `help `, command names), history kept in a file (Up/Down, Ctrl-R), a
  line pre-filled with text to keep (a command that could not run), and a
  status bar at the bottom while the connection is down;
* one-line answers, passwords without echo (and without any history;
  with TERM=dumb, where prompt_toolkit would echo what is typed, through
  `getpass`), yes/no questions;
* the message body editor: Enter starts a new line; Ctrl-D, Esc then
  Enter, or a line holding only "." finishes; Ctrl-C cancels, asking first
  when the draft is long (more than one line or 40 characters; a no goes
  back to it as it was); an empty subject or body is asked about; a bar
  at the bottom says so;
* the "more" key of the inbox pager (Space or Enter: more; q: stop).

The interactive client wraps its whole run in prompt_toolkit's
`patch_stdout(raw=True)`, so messages printed by the network thread
appear above the prompt and the line being typed stays as it was; raw is
safe because everything received is neutralised first.

Talks to: the terminal only. `interrupt()` may be called from another
thread when the server goes away during the login: the prompt being shown
(or the next one) ends with `ServerGone`. Ctrl-C and Ctrl-D at a question
raise `Cancelled` (the caller decides what that means); at the command
prompt Ctrl-C gives an empty line and Ctrl-D raises EOFError (leave).
"""

import contextlib
import functools
import getpass
import signal
import sys
import termios
import threading

from prompt_toolkit import Application, PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import DummyHistory, FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.layout import Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.utils import is_dumb_terminal

from Modules.client.commands import ALIASES, COMMANDS, Cancelled
from Modules.client.output import holds_secret
from Modules.client.session import ConnectionLost

BODY_HINT = ("Type the message. Finish with Ctrl-D (or a line with only '.'); "
             "Ctrl-C cancels.")
BODY_TOOLBAR = " Ctrl-D: send   ·   '.' alone on a line: send   ·   Ctrl-C: cancel "
MORE_PROMPT = "-- more: Space or Enter for the next page, q to stop --"
YES = ("y", "yes")
LONG_DRAFT = 40       # characters of one line that Ctrl-C throws away without asking


class DraftInterrupted(KeyboardInterrupt):
    """Ctrl-C in the body editor; `text` is what had been typed."""

    def __init__(self, text):
        super().__init__()
        self.text = text


def is_long_draft(text):
    """Whether a draft is worth a question before Ctrl-C throws it away: more
    than one line, or more than LONG_DRAFT characters."""
    text = text.strip()
    return "\n" in text or len(text) > LONG_DRAFT


class ServerGone(ConnectionLost):
    """The connection ended while the person was at a login prompt."""

    def __init__(self):
        super().__init__("The server closed the connection.", "server_gone")


# ------------------------------------------------------------ completion


class CommandCompleter(Completer):
    """Command names first; people after `send`; command names after `help`."""

    def __init__(self, commands, people=None):
        self.commands = sorted(commands)
        self.people = people or (lambda: [])

    def get_completions(self, document, complete_event):
        before = document.text_before_cursor
        words = before.split()
        typing_word = bool(before) and not before[-1].isspace()
        index = len(words) - 1 if typing_word else len(words)
        current = words[-1] if typing_word else ""
        for candidate in self._candidates(words[0].lower() if words else "", index):
            if candidate.startswith(current.lower()) and candidate != current:
                yield Completion(candidate, start_position=-len(current))

    def _candidates(self, first, index):
        if index == 0:
            return self.commands
        if index == 1 and first == "send":
            return self.people()
        if index == 1 and first in ("help", "?"):
            return [name for name in self.commands if name not in ALIASES]
        return []


def command_names(extra=()):
    """Every word the command prompt completes as a first word."""
    names = [name for name, _usage, _summary in COMMANDS] + list(ALIASES) + list(extra)
    return list(dict.fromkeys(names))


# ------------------------------------------------------------ the body editor


def body_key_bindings():
    """Enter adds a line, except after a line holding only '.'; Ctrl-D finishes."""
    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event):
        buffer = event.current_buffer
        document = buffer.document
        if document.current_line.strip() == "." and document.is_cursor_at_the_end:
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    @bindings.add("c-d")
    def _finish(event):
        event.current_buffer.validate_and_handle()

    @bindings.add("c-c")
    def _interrupt(event):
        event.app.exit(exception=DraftInterrupted(event.current_buffer.text))

    return bindings


@contextlib.contextmanager
def ctrl_c_between_prompts(end_running_prompt=lambda missed: False):
    """While a body is typed line by line (TERM=dumb): a SIGINT (Ctrl-C while no
    prompt reads keys) only sets a flag, read by `pressed()`, instead of raising
    between a line's return and its keeping; and the terminal keeps what was typed
    ahead (NOFLSH) instead of throwing it away with the signal. A SIGINT while a
    prompt has started but not yet taken the terminal raw is that prompt's
    Ctrl-C: `end_running_prompt(missed)` ends it and says True (and calls
    `missed` if the prompt took a typed-ahead line and ended first: the flag
    again). Only the main thread may set a handler; elsewhere this changes
    nothing."""
    flag = []

    def on_sigint(*_):
        if not end_running_prompt(lambda: flag.append(1)):
            flag.append(1)
    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:                 # not the main thread
        yield lambda: False
        return
    saved = _set_noflsh()
    try:
        yield lambda: bool(flag) and not flag.clear()
    finally:
        signal.signal(signal.SIGINT, previous)
        if saved is not None:
            with contextlib.suppress(termios.error, OSError, ValueError):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, saved)


def _set_noflsh():
    """NOFLSH on standard input's terminal; its settings before, or None."""
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        changed = list(saved)
        changed[3] |= termios.NOFLSH
        termios.tcsetattr(fd, termios.TCSANOW, changed)
        return saved
    except (termios.error, OSError, ValueError, AttributeError):
        return None


def strip_end_marker(text):
    """The body typed in the editor without its closing '.' line or empty last lines."""
    lines = text.split("\n")
    if lines and lines[-1].strip() == ".":
        lines.pop()
    return "\n".join(lines).rstrip("\n")


def more_key_bindings():
    """Space or Enter: True (go on); q, Esc, Ctrl-C, Ctrl-D: False; others ignored."""
    bindings = KeyBindings()
    for key in (" ", "enter"):
        bindings.add(key)(lambda event: event.app.exit(result=True))
    for key in ("q", "Q", "c-c", "c-d"):
        bindings.add(key)(lambda event: event.app.exit(result=False))
    bindings.add("escape", eager=True)(lambda event: event.app.exit(result=False))
    bindings.add("<any>")(lambda event: None)
    return bindings


# ------------------------------------------------------------ the terminal


class Terminal:
    """The questions and prompts of an interactive session."""

    def __init__(self, color=True, extra_commands=()):
        self.color_depth = None if color else ColorDepth.DEPTH_1_BIT
        self.extra_commands = tuple(extra_commands)
        self._history_path, self._people = None, None
        self._sessions = {}
        self._active = None
        self._lock = threading.Lock()
        self._status = None
        self.gone = False

    def configure(self, history_path=None, people=None):
        """Use this history file and this `people()` source from the next prompt on."""
        self._history_path, self._people = history_path, people
        self._sessions.pop("command", None)

    def _session(self, kind):
        """One PromptSession per kind of question, made when first needed."""
        if kind not in self._sessions:
            options = getattr(self, f"_{kind}_options")()
            self._sessions[kind] = PromptSession(color_depth=self.color_depth, **options)
        return self._sessions[kind]

    def _command_options(self):
        history = _WithoutSecrets() if not self._history_path else \
            _FileWithoutSecrets(self._history_path)
        completer = CommandCompleter(command_names(self.extra_commands), self._people)
        return {"history": history, "completer": completer,
                "complete_while_typing": False, "bottom_toolbar": self._status}

    @staticmethod
    def _line_options():
        return {"history": DummyHistory()}

    @staticmethod
    def _secret_options():
        return {"is_password": True, "history": DummyHistory()}

    @staticmethod
    def _body_options():
        return {"multiline": True, "key_bindings": body_key_bindings(),
                "prompt_continuation": "", "history": DummyHistory(),
                "bottom_toolbar": BODY_TOOLBAR}

    def _prompt(self, kind, text, default="", interrupted=None):
        """`session.prompt`; ServerGone once the server is. With `interrupted`
        (`ctrl_c_between_prompts`'s): KeyboardInterrupt at once if it says a
        Ctrl-C came as the prompt started, and SIGINT left to its handler."""
        session = self._session(kind)
        with self._lock:
            if self.gone:
                raise ServerGone()
            self._active = session
        try:
            return session.prompt(text, default=default, handle_sigint=interrupted is None,
                                  pre_run=functools.partial(self._exit_if, interrupted))
        finally:
            with self._lock:
                self._active = None

    def _exit_if(self, interrupted):
        if self.gone:
            get_app().exit(exception=ServerGone())
        elif interrupted is not None and interrupted():
            get_app().exit(exception=KeyboardInterrupt())

    def _end_running_prompt(self, missed):
        """In the main thread, on SIGINT: end the prompt that has started with a
        KeyboardInterrupt (its Ctrl-C), or call `missed()` if it took a line and
        ended first; False if no prompt has started. (No lock: the signal may
        have interrupted this thread while it holds it.)"""
        return _end_prompt_of(self._active, KeyboardInterrupt, missed)

    def interrupt(self):
        """From any thread: end the prompt on screen (or the next) with ServerGone."""
        with self._lock:
            self.gone = True
            session = self._active
        _end_prompt_of(session, ServerGone)

    def set_status(self, text):
        """From any thread: show `text` in a bar under the command prompt (None hides it)."""
        self._status = text
        session = self._sessions.get("command")
        if session is None:
            return
        session.bottom_toolbar = text
        if session.app.is_running:
            session.app.invalidate()

    # -- questions ---------------------------------------------------------------
    def command(self, text, default=""):
        """One command line; '' after Ctrl-C; EOFError on Ctrl-D."""
        try:
            return self._prompt("command", text, default)
        except KeyboardInterrupt:
            return ""

    def ask(self, text, default=""):
        return self._question("line", text, default)

    def ask_secret(self, text):
        if is_dumb_terminal():    # prompt_toolkit's dumb prompt would echo the password
            return _getpass(text)
        return self._question("secret", text)

    def confirm(self, question):
        return self.ask(question).strip().lower() in YES

    def _question(self, kind, text, default=""):
        try:
            return self._prompt(kind, text, default)
        except (KeyboardInterrupt, EOFError):
            raise Cancelled() from None

    def ask_recipient(self):
        return self.ask("To: ").strip()

    def ask_subject(self, to, default=""):
        """The subject; an empty one is asked about, and a no asks again."""
        while True:
            subject = self.ask(f"Subject (to {to}): ", default)
            if subject.strip() or self.confirm("Send it with no subject? [y/N] "):
                return subject

    def ask_body(self, to, default=""):
        """The body typed in the editor (`send`, `reply`). Ctrl-C throws a short
        draft away (`Cancelled`) and asks first about a long one; kept, it is
        edited on. An empty body is sent only after a yes."""
        print(BODY_HINT)
        body = self._body_lines(to) if is_dumb_terminal() else self._edit_body(to, default)
        if not body.strip() and not self.confirm(
                "The message is empty. Send it anyway? [y/N] "):
            raise Cancelled()
        return body

    def _edit_body(self, to, default):
        """The body from the multi-line editor; Ctrl-C as `ask_body` says."""
        text = default
        while True:
            try:
                return strip_end_marker(self._prompt("body", "", text))
            except DraftInterrupted as stop:
                text = stop.text
            except (KeyboardInterrupt, EOFError):
                raise Cancelled() from None
            if self._throw_away(to, text):
                raise Cancelled()

    def _body_lines(self, to):
        """The body as plain lines, up to a '.' line or Ctrl-D; Ctrl-C as in the editor.
        Between two line prompts the terminal is cooked, so a Ctrl-C there is a SIGINT:
        it counts once the line just typed is kept (`ctrl_c_between_prompts`)."""
        lines = []
        with ctrl_c_between_prompts(self._end_running_prompt) as pressed:
            while True:
                try:
                    if pressed():
                        raise KeyboardInterrupt
                    line = self._prompt("line", "", interrupted=pressed)
                except EOFError:
                    break
                except KeyboardInterrupt:
                    if self._throw_away(to, "\n".join(lines)):
                        raise Cancelled() from None
                    continue
                if line.strip() == ".":
                    break
                lines.append(line)
        return "\n".join(lines).rstrip("\n")

    def _throw_away(self, to, text):
        """Ctrl-C in a draft: True to throw it away. A long one is asked about
        (Ctrl-C again at the question: yes); kept, the person types on."""
        if not is_long_draft(text):
            return True
        lines = text.strip().count("\n") + 1
        size = f"{lines} lines" if lines > 1 else f"{len(text.strip())} characters"
        try:
            if self.confirm(f"Throw away your message to {to} ({size})? [y/N] "):
                return True
        except Cancelled:
            return True
        print("Kept: type on. Ctrl-D (or a line with only '.') sends it.")
        return False

    def confirm_delete(self, user):
        answer = self.ask(f"Delete account {user} and return unread messages to their "
                          "senders? Type the username to confirm: ")
        return answer.strip().lower() == (user or "").lower()

    def more(self):
        """The pager's question: True to see the next page, False to stop."""
        control = FormattedTextControl(MORE_PROMPT)
        app = Application(layout=Layout(Window(control, height=1)),
                          key_bindings=more_key_bindings(), erase_when_done=True,
                          color_depth=self.color_depth)
        try:
            return bool(app.run())
        except (KeyboardInterrupt, EOFError):
            return False


class _WithoutSecrets(InMemoryHistory):
    """The prompt's history, without a line that carries passwords (`passwd OLD NEW`)."""

    def append_string(self, string):
        if not holds_secret(string):
            super().append_string(string)


class _FileWithoutSecrets(FileHistory):
    """The history file, without a line that carries passwords."""

    def append_string(self, string):
        if not holds_secret(string):
            super().append_string(string)


def _getpass(text):
    """A password from a terminal with no cursor control (TERM=dumb), not echoed."""
    try:
        return getpass.getpass(text)
    except (KeyboardInterrupt, EOFError):
        raise Cancelled() from None


def _end_prompt_of(session, exception, missed=lambda: None):
    """From any thread: end `session`'s prompt, if it has started, with `exception`
    in its own event loop (`missed()` there if it ended first); whether it had."""
    app = session.app if session is not None else None
    loop = getattr(app, "loop", None)
    if app is None or loop is None or app.future is None or app.future.done():
        return False
    loop.call_soon_threadsafe(functools.partial(_exit_quietly, app, exception, missed))
    return True


def _exit_quietly(app, exception, missed):
    """Runs in the prompt's event loop: end it unless it is already ending
    (then `missed()`)."""
    try:
        if app.is_running and not app.future.done():
            app.exit(exception=exception())
            return
    except Exception:   # the prompt finished on its own meanwhile
        pass
    missed()
