"""The windowed client's network side: everything the windows ask for, off the Tk loop.

`GuiClient` is to the windows what `InteractiveClient` is to the prompt: it
owns the `Link` (connect, key pin, login, reconnecting with back-off, the
outbox of messages finished while the connection is down) and runs the
terminal client's own commands through `GuiRunner`, an `InteractiveRunner`
whose results are *records* (the dicts of `client_output`, the same that
--json prints) instead of text. Nothing here touches Tk.

Threads: the windows call `login()`, `command()` and `transfer()`, which
return at once. Commands run one after the other on one worker thread;
each file transfer on a thread of its own, so that reading mail goes on
while a file moves. Everything that happens (a record, a note, a pushed
message, the link going down or coming back, a question) is put on
`events`, a queue the Tk loop polls with `after()` (`client.gui.app`);
no Tk call is ever made from these threads. A question (trust this
server key? the new password after the administrator reset it) waits on a
`Question` that the Tk side answers.

Events (tuples): ("record", tag, record), ("note", tag, text), ("system",
event, message), ("trust", text, question), ("new_password", message,
question), ("greeting", text) and ("motd", text) (not again after a
reconnect), ("logged_in", user, unread), ("login_failed", message, code),
("link", state, detail) (state: down, waiting, back, gave_up),
("job_failed", tag, message), ("job_done", tag), ("account_deleted",). `tag` is what the window passed with the request,
so that an answer finds its pane (None for pushes).

Fails with one sentence, never a traceback: a `ClientFailure` of a job is a
("job_failed", tag, message) event; an unexpected exception is the same,
naming only its type. Passwords go from the login window (and the new
password from its dialog, through a `Question`) to the session only; they
are never put on the event queue, nor printed.
"""

import queue
import threading

from Modules import rules
from Modules.client.actions import (
    OFFLINE_COMMANDS,
    InteractiveRunner,
    MessageArrivals,
)
from Modules.client.commands import ACCOUNT_DELETED, Command
from Modules.client.link import Link
from Modules.client.login import Answer, ScriptedLogin
from Modules.client.output import (
    Output,
    inbox_record,
    message_record,
    neutralise,
)
from Modules.client.session import ClientFailure, ConnectionLost, Handlers
from Modules.client.store import UserStore, account_dir

PAGE = 50             # inbox entries per page: one screenful, fetched when scrolled to


def parse_address(text, default_port):
    """(host, port) from 'host', 'host:port' or '[v6]:port'; ValueError with a sentence."""
    text = text.strip()
    if not text:
        raise ValueError("Give the server's address, such as 127.0.0.1:7117.")
    host, port = text, default_port
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    port = str(port)
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{text}' is not a server address; write it as host:port, "
                         "such as 127.0.0.1:7117.")
    return host, int(port)


def format_address(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Question:
    """An answer a waiting network thread gets from the Tk side (`give`): yes/no,
    or a new password (None: cancelled)."""

    def __init__(self):
        self._done = threading.Event()
        self.value = None

    def give(self, value):
        if not self._done.is_set():
            self.value = value
            self._done.set()

    def wait(self):
        self._done.wait()
        return self.value


class RecordOutput(Output):
    """The runner's output: every record, note and error onto the event queue."""

    def __init__(self, post):
        super().__init__(json_mode=True)     # records, not text (and no pager questions)
        self.post = post
        self._local = threading.local()
        self.last_note = ""

    @property
    def tag(self):
        return getattr(self._local, "tag", None)

    @tag.setter
    def tag(self, value):
        self._local.tag = value

    def emit(self, record):
        self.post("record", self.tag, record)

    def note(self, text):
        self.last_note = text
        self.post("note", self.tag, text)

    human = warn = good = note

    def overwrite(self, text, end=False):
        """No line redrawn in place: progress comes as records."""

    def shows_whole(self, record):
        """A pushed message is only listed; it is read when it is opened."""
        return record.get("via") == "read"


class GuiLogin(ScriptedLogin):
    """The login window's answers: its name, password and button, said plainly;
    after a password the administrator reset, `ask_new(message)` asks the window
    for the new one (None: the person cancelled)."""

    def __init__(self, user, password, create, ask_new, note=None):
        super().__init__(user, password, create, note=note)
        self.ask_new = ask_new

    def _on_username(self, data, times):
        if times == 1:
            try:
                rules.check_username(self.user)
            except rules.RuleError as error:
                return Answer({"cancel": True}, error.reason)
        return super()._on_username(data, times)

    def _on_password(self, data, times):
        if self.create and times == 1:
            return Answer({"cancel": True}, f"The account {self._name(data)} exists "
                                            "already; press Log in to use it.")
        return super()._on_password(data, times)

    def _on_new_password(self, data, times):
        if not self.create:
            return Answer({"cancel": True}, f"There is no account {self._name(data)} on "
                                            "this server; press Create account to make it.")
        return super()._on_new_password(data, times)

    def _on_changed_password(self, data, _times):
        new = self.ask_new(neutralise(data["message"]))
        if new is None:
            return Answer({"cancel": True}, "The password was not changed; log in again "
                                            "with the one-time password when you are ready.")
        self.password = new            # what the link logs in with after a reconnect
        return Answer({"new_password": new})


class GuiRunner(InteractiveRunner):
    """The prompt's runner, with records for the windows instead of pages of text."""

    def _read(self, args):
        message = self.session.request("Read", id=args["id"]).get("message", {})
        self.client.remember(message.get("from"))
        self.output.emit(message_record(message, "read"))
        return "ok"

    def _inbox(self, args):
        before = args.get("before")
        result = self.session.request("Inbox", before=before, limit=args.get("limit") or PAGE)
        record = inbox_record(result)
        self.client.remember(*[entry["from"] for entry in record["messages"]
                               if entry["kind"] == "message"])
        self.output.emit({**record, "before": before})
        return "ok"

    def show_paged(self, record):
        self.output.emit(record)


class GuiClient(MessageArrivals, Handlers):
    """One windowed run's connection, commands and transfers (see the module text)."""

    terminal = None       # InteractiveRunner's ui: windows give commands whole

    def __init__(self, known_hosts, events=None):
        self.host, self.port, self.known_hosts = None, None, known_hosts
        self.events = events if events is not None else queue.Queue()
        self.output = RecordOutput(self.post)
        self.runner = GuiRunner(self)
        self.link = self.store = None
        self.shown = {}
        self._questions = []
        self._jobs = queue.Queue()
        self._worker = threading.Thread(target=self._work, daemon=True, name="parley-gui")
        self._worker.start()

    def post(self, *event):
        self.events.put(event)

    # -- jobs --------------------------------------------------------------------------
    def _work(self):
        while (job := self._jobs.get()) is not None:
            self._run_job(*job)

    def _run_job(self, tag, function, args):
        self.output.tag = tag
        try:
            function(*args)
        except ConnectionLost as lost:
            self.post("job_failed", tag, f"Not connected ({lost.message}); try again once "
                                         "the connection is back.")
        except ClientFailure as failure:
            self.post("job_failed", tag, failure.message)
        except Exception as error:     # the last line of defence: no tracebacks
            self.post("job_failed", tag, f"Unexpected error ({type(error).__name__}); "
                                         "please report it.")
        finally:
            self.post("job_done", tag)

    def submit(self, tag, function, *args):
        self._jobs.put((tag, function, args))

    # -- what the windows ask for ------------------------------------------------------
    def login(self, host, port, user, password, create):
        """Connect, check the key (asking the window about a new one), log in."""
        self.submit("login", self._login, host, port, user, password, create)

    def _login(self, host, port, user, password, create):
        self.host, self.port = host, port
        if self.link is not None:
            self.link.close(say_goodbye=False)
        self.link = Link(self.host, self.port, self.known_hosts, self, retry=True,
                         note=self.output.note)
        try:
            self.link.connect(self._ask_trust)
            self.link.login(GuiLogin(user, password, create, self._ask_new_password,
                                     note=self.output.note))
            unread, _complete = self.runner.count_unread()
        except ClientFailure as failure:
            self.link.close(say_goodbye=False)
            self.post("login_failed", failure.message, failure.code)
            return
        self.post("logged_in", self.link.user, unread)

    def _ask_trust(self, question):
        answer = Question()
        self._questions.append(answer)      # the fingerprint was the note just before
        self.post("trust", f"{self.output.last_note}\n\n{question.split(' [')[0]}", answer)
        return bool(answer.wait())

    def _ask_new_password(self, message):
        answer = Question()
        self._questions.append(answer)
        self.post("new_password", message, answer)
        return answer.wait()

    def command(self, tag, name, **args):
        """Run one command of the terminal client (`commands`) with whole arguments."""
        self.submit(tag, self._command, name, args)

    def _command(self, name, args):
        if name not in OFFLINE_COMMANDS and not self.link.connected:
            self.link.wake()
            raise ConnectionLost(self.link.down_reason or "the connection is down")
        if self.runner.run(Command(name, args, name)) == ACCOUNT_DELETED:
            self.link.close(say_goodbye=False)
            self.post("account_deleted")

    def transfer(self, tag, name, **args):
        """A file command (send-file, download) on a thread of its own."""
        threading.Thread(target=self._run_job, args=(tag, self._command, (name, args)),
                         daemon=True, name="parley-gui-file").start()

    def close(self):
        """Log out (briefly waiting for the goodbye) and stop the worker."""
        for answer in self._questions:
            answer.give(None)
        self._jobs.put(None)
        if self.link is not None:
            self.link.close()

    # -- what the session and the link report (network threads) ------------------------
    def remember(self, *names):
        if self.store is not None:
            self.store.remember(*names)

    def people(self):
        """The names to complete in the To field, most recent first."""
        return self.store.people() if self.store is not None else []

    def when_back(self):
        return "as soon as the connection is back"

    def on_greeting(self, text):
        if not self.link.reconnecting:
            self.post("greeting", text)

    def on_motd(self, text):
        if not self.link.reconnecting:
            self.post("motd", text)

    def on_welcome(self, user, created):
        if self.store is None or self.link.user != user:
            self.store = UserStore(account_dir(self.host, self.port, user),
                                   note=self.output.note)
        if created and not self.link.reconnecting:
            self.output.note(f"Created the account {neutralise(user)}.")

    def on_system(self, event, message):
        self.post("system", event, message)

    def on_error(self, code, reason):
        self.output.note(reason)

    def on_wait(self, seconds, reason):
        self.output.note(f"{neutralise(reason)} Trying again in {seconds} s.")

    def on_link_down(self, reason, was_up):
        if was_up:
            self.post("link", "down", reason if self.link.ended_by is None else
                      f"{reason} (the server ended the session; log in again)")

    def on_link_waiting(self, reason, delay):
        self.post("link", "waiting", delay)

    def on_link_back(self):
        self.post("link", "back", self.link.user)
        self.output.tag = None
        self.runner.flush_outbox()

    def on_link_gave_up(self, failure):
        self.post("link", "gave_up", failure.message)
