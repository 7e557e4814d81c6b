"""The interactive terminal of the Parley client, on prompt_toolkit.

Every question the client asks a person goes through `Terminal`: the
command prompt (with history and command completion), one-line answers,
passwords without echo, yes/no questions, and the multi-line message body
editor (Enter starts a new line; a line holding only "." or Esc then Enter
finishes; Ctrl-C cancels). The CLI wraps the whole interactive run in
prompt_toolkit's `patch_stdout(raw=True)`, so messages printed by the
network thread appear above the prompt without breaking the line being
typed; raw is safe because everything received is neutralised first.

Talks to: the terminal only. `interrupt()` may be called from another
thread when the server goes away: the prompt being shown (or the next one)
ends with `ServerGone`. Ctrl-C and Ctrl-D at a question raise `Cancelled`
(the caller decides what that means); at the command prompt Ctrl-C gives
an empty line and Ctrl-D raises EOFError (log out).
"""

import functools
import threading

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings

from Modules.client_commands import ALIASES, COMMANDS, Cancelled
from Modules.client_session import ConnectionLost

BODY_HINT = "Body (finish with a line holding only '.', or Esc then Enter; Ctrl-C cancels):"
YES = ("y", "yes")


class ServerGone(ConnectionLost):
    """The connection ended while the person was at a prompt."""

    def __init__(self):
        super().__init__("The server closed the connection.", "server_gone")


def body_key_bindings():
    """Enter adds a line, except after a line holding only '.', which finishes."""
    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event):
        buffer = event.current_buffer
        document = buffer.document
        if document.current_line.strip() == "." and document.is_cursor_at_the_end:
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    return bindings


def strip_end_marker(text):
    """The body typed in the editor without its closing '.' line."""
    lines = text.split("\n")
    if lines and lines[-1].strip() == ".":
        lines.pop()
    return "\n".join(lines)


class Terminal:
    """The questions and prompts of an interactive session."""

    def __init__(self):
        self._sessions = {}
        self._active = None
        self._lock = threading.Lock()
        self.gone = False

    def _session(self, kind):
        """One PromptSession per kind of question, made when first needed."""
        if kind not in self._sessions:
            options = {
                "command": {"history": InMemoryHistory(), "completer": WordCompleter(
                    [name for name, _u, _s in COMMANDS] + list(ALIASES))},
                "line": {},
                "secret": {"is_password": True},
                "body": {"multiline": True, "key_bindings": body_key_bindings(),
                         "prompt_continuation": ""},
            }[kind]
            self._sessions[kind] = PromptSession(**options)
        return self._sessions[kind]

    def _prompt(self, kind, text):
        session = self._session(kind)
        with self._lock:
            if self.gone:
                raise ServerGone()
            self._active = session
        try:
            return session.prompt(text, pre_run=self._exit_if_gone)
        finally:
            with self._lock:
                self._active = None

    def _exit_if_gone(self):
        if self.gone:
            get_app().exit(exception=ServerGone())

    def interrupt(self):
        """From any thread: end the prompt on screen (or the next) with ServerGone."""
        with self._lock:
            self.gone = True
            session = self._active
        app = session.app if session is not None else None
        loop = getattr(app, "loop", None)
        if app is not None and app.is_running and loop is not None:
            loop.call_soon_threadsafe(functools.partial(_exit_quietly, app))

    # -- questions ---------------------------------------------------------------
    def command(self, text):
        """One command line; '' after Ctrl-C; EOFError on Ctrl-D."""
        try:
            return self._prompt("command", text)
        except KeyboardInterrupt:
            return ""

    def ask(self, text):
        return self._question("line", text)

    def ask_secret(self, text):
        return self._question("secret", text)

    def confirm(self, question):
        return self.ask(question).strip().lower() in YES

    def _question(self, kind, text):
        try:
            return self._prompt(kind, text)
        except (KeyboardInterrupt, EOFError):
            raise Cancelled() from None

    def ask_subject(self, to):
        return self.ask(f"Subject (to {to}): ")

    def ask_body(self, _to):
        print(BODY_HINT)
        return strip_end_marker(self._question("body", ""))

    def confirm_delete(self, user):
        answer = self.ask(f"Delete account {user} and return unread messages to their "
                          "senders? Type the username to confirm: ")
        return answer.strip().lower() == (user or "").lower()


def _exit_quietly(app):
    """Runs in the prompt's event loop: end it unless it is already ending."""
    try:
        if app.is_running and not app.future.done():
            app.exit(exception=ServerGone())
    except Exception:   # the prompt finished on its own meanwhile
        pass
