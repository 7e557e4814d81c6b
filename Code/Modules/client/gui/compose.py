"""The compose pane: To (completing known names), Subject, a multi-line body, Send.

The To field is a combobox whose list holds the names this account wrote
to or heard from (`UserStore.people`, the terminal client's `send`
completion); typing narrows the list to the names that start with what
is typed, and Tab takes the first of them (`complete`). Ctrl-Enter in any
field, or the Send button, sends. A message that arrives meanwhile changes
nothing here: the draft is only the widgets' contents, cleared once the
message is sent or kept in the outbox (`clear`), never by a push.

Checks what it can before anything is sent, with the server's own limits
(`operations` registry, as the terminal client's `checked` does): a
missing recipient or body is one sentence in the status line, and the
draft stays. Talks to: Tk and its `on_send(to, subject, body)` callback.
"""

import tkinter
from tkinter import ttk

from Modules.client.command_words import UsageError, checked
from Modules.client.commands import SEND

PAD = 6


def completions(typed, people):
    """The known names starting with `typed` (case-insensitive), in their order."""
    start = typed.strip().lower()
    return [name for name in people if name.lower().startswith(start)]


def check_draft(to, subject, body):
    """The (to, subject, body) the server accepts, or UsageError with one sentence."""
    if not to.strip():
        raise UsageError("Say whom the message is for (To).")
    if not body.strip():
        raise UsageError("The message has no text yet.")
    return (checked(SEND.field("to"), to.strip()), checked(SEND.field("subject"), subject),
            checked(SEND.field("body"), body))


class ComposePane:
    """The widgets of one draft (see the module text)."""

    def __init__(self, parent, people, on_send):
        self.people, self.on_send = people, on_send
        self.frame = ttk.LabelFrame(parent, text="New message", name="compose",
                                    padding=PAD)
        ttk.Label(self.frame, text="To:").grid(row=0, column=0, sticky="w")
        self.to = ttk.Combobox(self.frame, name="to", postcommand=self._offer)
        self.to.grid(row=0, column=1, sticky="ew", pady=2)
        ttk.Label(self.frame, text="Subject:").grid(row=1, column=0, sticky="w")
        self.subject = ttk.Entry(self.frame, name="subject")
        self.subject.grid(row=1, column=1, sticky="ew", pady=2)
        self.body = tkinter.Text(self.frame, name="body", height=7, width=50, wrap="word",
                                 undo=True)
        self.body.grid(row=2, column=0, columnspan=2, sticky="nsew", pady=2)
        self.send_button = ttk.Button(self.frame, text="Send (Ctrl-Enter)", name="send",
                                      command=self.send)
        self.send_button.grid(row=3, column=1, sticky="e")
        self.frame.columnconfigure(1, weight=1)
        self.frame.rowconfigure(2, weight=1)
        for widget in (self.to, self.subject, self.body):
            widget.bind("<Control-Return>", self._send_key)
            widget.bind("<Control-KP_Enter>", self._send_key)
        self.to.bind("<Tab>", self.complete)
        self.to.bind("<KeyRelease>", self._narrow)
        self.body.bind("<Tab>", self._next_field)

    # -- completion ---------------------------------------------------------------------------
    def _offer(self):
        self.to.configure(values=completions(self.to.get(), self.people()))

    def _narrow(self, event):
        if event.keysym not in ("Tab", "Return", "Down", "Up"):
            self._offer()

    def complete(self, _event=None):
        """Tab in To: the first known name that starts with what is typed."""
        matches = completions(self.to.get(), self.people())
        if self.to.get().strip() and matches and matches[0] != self.to.get():
            self.to.delete(0, "end")
            self.to.insert(0, matches[0])
            return "break"
        return None         # nothing to complete: Tab moves on as usual

    def _next_field(self, _event):
        self.send_button.focus_set()
        return "break"

    # -- the draft ----------------------------------------------------------------------------
    def _send_key(self, _event):
        self.send()
        return "break"

    def send(self):
        self.on_send(self.to.get(), self.subject.get(), self.body.get("1.0", "end-1c"))

    def fill(self, to="", subject="", body=""):
        """Start a draft (reply: to and subject set, the body to write)."""
        self.clear()
        self.to.insert(0, to)
        self.subject.insert(0, subject)
        self.body.insert("1.0", body)
        (self.body if to else self.to).focus_set()
        self.body.mark_set("insert", "1.0")

    def clear(self):
        self.to.delete(0, "end")
        self.subject.delete(0, "end")
        self.body.delete("1.0", "end")

    def draft(self):
        return self.to.get(), self.subject.get(), self.body.get("1.0", "end-1c")
