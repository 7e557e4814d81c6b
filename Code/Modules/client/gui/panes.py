"""The main window's panes: message lists, the message view, files, the compose pane.

* `ListPane`: a Treeview of one listing (inbox, sent, search, who is
  online, files) with its columns. The inbox is `InboxPane`: newest first,
  unread rows marked (a dot and bold), pushed messages added on top, and
  paged lazily: when the list is scrolled to its end and the server said
  there is more, the next page (`before` the oldest shown) is asked for
  (`on_more`), so 10,000 messages cost one page at a time.
* `MessageView`: a read-only Text showing one message in full (headers,
  body) or the conversation with one person (both directions).
* `Transfers`: one row per file moving: name, a progress bar, and the
  result (sent; or saved, with the SHA-256 check).
* `ComposePane`: To (a combobox of the names this account wrote to or
  heard from, `UserStore.people`, narrowed as one types; Tab takes the
  first match, `complete`), Subject, a multi-line body, Send; Ctrl-Enter
  in any field sends. A message that arrives changes nothing in it: the
  draft is only the widgets' contents, cleared once the message is sent
  or kept in the outbox (`clear`), never by a push. `check_draft` checks
  what it can before sending, with the server's own limits (the
  `operations` registry, like the terminal client's `checked`): a missing
  recipient or body is one sentence, and the draft stays.

Everything shown that someone else chose (names, subjects, bodies, file
names, notes) goes through `neutralise` first: control characters, bidi
overrides and the like become visible escapes; a Tk Text or Treeview
interprets no markup, so the rest is shown as it is. Talks to: Tk only;
the records come from the main window, the same records --json prints,
and the compose pane hands its draft to `on_send(to, subject, body)`.
"""

import tkinter
from tkinter import ttk

from Modules.client.command_words import UsageError, checked
from Modules.client.commands import SEND
from Modules.client.file_commands import size_text
from Modules.client.output import Output, local_time, neutralise, subject_text

PAD = 6
UNREAD = "●"
TEXT = Output(color=False)      # the terminal client's wording, for headers and lines


class ListPane:
    """A scrolled Treeview named `name` with `columns` ((id, heading, width), ...)."""

    def __init__(self, parent, name, columns, on_open=None):
        self.frame = ttk.Frame(parent, name=name)
        self.tree = ttk.Treeview(self.frame, name="list", show="headings",
                                 columns=[c[0] for c in columns], selectmode="extended")
        for column, heading, width in columns:
            self.tree.heading(column, text=heading, anchor="w")
            self.tree.column(column, width=width, stretch=width > 100, anchor="w")
        scroll = ttk.Scrollbar(self.frame, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=lambda *a: self._scrolled(scroll, *a))
        self.tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")
        self.tree.tag_configure("unread", font="TkDefaultFont 9 bold")
        if on_open is not None:
            self.tree.bind("<<TreeviewSelect>>", lambda _e: self._opened(on_open))
            self.tree.bind("<Return>", lambda _e: self._opened(on_open))

    def _scrolled(self, scroll, first, last):
        scroll.set(first, last)

    def _opened(self, on_open):
        chosen = self.selected()
        if len(chosen) == 1:
            on_open(chosen[0])

    def selected(self):
        return [int(item) for item in self.tree.selection()]

    def replace(self, rows):
        """rows: (id, values, tags)."""
        self.tree.delete(*self.tree.get_children(""))
        self.add(rows)

    def add(self, rows, top=False):
        for item, values, tags in rows:
            if self.tree.exists(str(item)):
                continue
            self.tree.insert("", 0 if top else "end", iid=str(item), values=values,
                             tags=tags)

    def remove(self, items):
        for item in items:
            if self.tree.exists(str(item)):
                self.tree.delete(str(item))


def inbox_row(entry):
    """(id, values, tags) of one inbox entry or pushed message record."""
    subject = subject_text(entry.get("subject"))
    if entry.get("kind") == "bounce":
        subject = f"Returned: {subject} — {neutralise(entry.get('note'))}"
    elif entry.get("kind") == "broadcast":
        subject = f"[broadcast] {subject}"
    unread = entry.get("unread", entry.get("read") is not True)
    return (entry["id"], (UNREAD if unread else "", neutralise(entry.get("from")),
                          subject, local_time(entry.get("sent_at"))),
            ("unread",) if unread else ())


class InboxPane(ListPane):
    """The inbox: newest first, unread marked, the next page fetched at the end."""

    COLUMNS = (("mark", "", 24), ("from", "From", 110), ("subject", "Subject", 240),
               ("time", "Received", 130))

    def __init__(self, parent, on_open, on_more):
        super().__init__(parent, "inbox", self.COLUMNS, on_open)
        self.on_more = on_more
        self.more, self.asking = False, False

    def _scrolled(self, scroll, first, last):
        super()._scrolled(scroll, first, last)
        if float(last) >= 0.999 and self.more and not self.asking:
            self.ask_more()

    def ask_more(self):
        children = self.tree.get_children("")
        if children:
            self.asking = True
            self.on_more(min(int(item) for item in children))

    def page(self, record):
        """An inbox record: the first page (before None) or the next one."""
        rows = [inbox_row(entry) for entry in record["messages"]]
        if record.get("before") is None:
            self.replace(rows)
        else:
            self.add(rows)
        self.more, self.asking = record["more"], False

    def arrived(self, record):
        self.add([inbox_row(record)], top=True)

    def mark_read(self, item):
        if self.tree.exists(str(item)):
            values = list(self.tree.item(str(item), "values"))
            values[0] = ""
            self.tree.item(str(item), values=values, tags=())

    def unread_count(self):
        return sum(1 for item in self.tree.get_children("")
                   if "unread" in self.tree.item(item, "tags"))


class MessageView:
    """A read-only Text: one message, or the conversation with one person."""

    def __init__(self, parent):
        self.frame = ttk.Frame(parent, name="view")
        self.text = tkinter.Text(self.frame, name="text", wrap="word", height=12,
                                 state="disabled", relief="flat", padx=PAD, pady=PAD)
        scroll = ttk.Scrollbar(self.frame, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=scroll.set)
        self.text.pack(side="left", fill="both", expand=True)
        scroll.pack(side="right", fill="y")
        self.text.tag_configure("head", font="TkDefaultFont 9 bold")
        self.shown = None          # the record on screen

    def _put(self, parts):
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        for text, tag in parts:
            self.text.insert("end", text, tag)
        self.text.configure(state="disabled")

    def message(self, record):
        self.shown = record
        header = "".join(f"{name}:".ljust(10) + f"{neutralise(value)}\n"
                         for name, value in TEXT.header_rows(record))
        self._put([(f"Message #{record['id']}\n", "head"), (header + "\n", ()),
                   (neutralise(record.get("body"), multiline=True), ())])

    def conversation(self, record):
        self.shown = record
        parts = [(f"Your conversation with {neutralise(record['with'])}, oldest first\n\n",
                  "head")]
        for entry in record["messages"]:
            parts.append((f"#{entry['id']}  {local_time(entry['sent_at'])}  "
                          f"{neutralise(entry['from'])} → {neutralise(entry['to'])}: "
                          f"{subject_text(entry['subject'])}\n", "head"))
            preview = neutralise(entry.get("preview") or "", multiline=True)
            parts.append((preview + (" …" if entry.get("cut") else "") + "\n\n", ()))
        if not record["messages"]:
            parts.append(("No messages between you yet.", ()))
        self._put(parts)

    def clear(self, text=""):
        self.shown = None
        self._put([(text, ())])


class Transfers:
    """One row per file on the move: name, progress bar, result."""

    def __init__(self, parent):
        self.frame = ttk.LabelFrame(parent, text="Transfers", name="transfers",
                                    padding=PAD)
        self.rows = {}

    def _row(self, tag, name):
        if tag not in self.rows:
            row = ttk.Frame(self.frame, name=f"t{len(self.rows)}")
            label = ttk.Label(row, name="name", width=24, text=neutralise(name))
            bar = ttk.Progressbar(row, name="bar", length=200, maximum=100)
            result = ttk.Label(row, name="result", text="starting…", wraplength=460)
            label.grid(row=0, column=0, sticky="w")
            bar.grid(row=0, column=1, sticky="ew", padx=PAD)
            result.grid(row=1, column=0, columnspan=2, sticky="w")
            row.columnconfigure(1, weight=1)
            row.pack(fill="x", pady=2)
            self.rows[tag] = (label, bar, result)
        return self.rows[tag]

    def start(self, tag, name, direction):
        self._row(tag, name)[2].configure(text=f"{direction} starting…")

    def progress(self, tag, record):
        label, bar, result = self._row(tag, record.get("name", ""))
        if record.get("name"):
            label.configure(text=neutralise(record["name"]))
        size = record.get("size") or 0
        percent = 100.0 if not size else 100.0 * record.get("done", 0) / size
        bar.configure(value=percent)
        result.configure(text=f"{percent:.0f}%  {size_text(record.get('done', 0))} of "
                              f"{size_text(size)}")

    def finished(self, tag, text):
        if tag in self.rows:
            _label, bar, result = self.rows[tag]
            bar.configure(value=100)
            result.configure(text=text)

    def failed(self, tag, text):
        if tag in self.rows:
            self.rows[tag][2].configure(text=text, foreground="#b00020")


# ------------------------------------------------------------ the compose pane


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
