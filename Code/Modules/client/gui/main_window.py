"""The main window: inbox, message view, compose pane, tabs, account menu, status.

Layout: a toolbar (Reply, Forward, Delete, Conversation, a search field),
on the left tabs (Inbox, Sent, Search, Online, Files), on the right the
selected message or conversation above the compose pane, and a status
line at the bottom (connected / reconnecting in N s / offline, and what
the last action did). The Account menu: change password, blocked names,
presence on/off, delete account (asked first), log out.

Every action is one command of the terminal client, run by the network
side (`GuiClient.command`, `transfer`) with a tag naming where its answer
goes; `handle(event)` (Tk thread, from the pump) puts each record in its
pane. Texts of results (sent, deleted, saved, ...) are the terminal
client's own renderings (`Output.render`). A message that arrives while
the window is not focused puts the count in the window title and rings
the bell. The operator's greeting and message of the day, if any, fill
the message view until a message is opened. Reply fills the compose pane (To, "Re: " subject); Send sends
whatever the pane holds, and the pane is cleared only once the message
was sent or kept in the outbox (the connection was down: it goes out by
itself when the connection is back).

Talks to: the `App` (client, window switching), the panes, compose pane
and dialogs. Fails like the terminal client: each refusal or lost
connection is one sentence in the status line, and the window goes on.
"""

import os
import tkinter
from tkinter import ttk

from Modules.client.command_words import UsageError
from Modules.client.file_commands import size_text
from Modules.client.gui import dialogs
from Modules.client.gui.panes import (
    TEXT,
    ComposePane,
    InboxPane,
    ListPane,
    MessageView,
    Transfers,
    check_draft,
)
from Modules.client.mail_commands import other_person, reply_subject
from Modules.client.output import local_time, neutralise, subject_text
from Modules.client.people_commands import idle_text

PAD = 6
RED, DARK = "#b00020", "#222222"


class MainWindow:
    """One logged-in run's window (see the module text)."""

    def __init__(self, app, user, unread, notices=()):
        self.app, self.root, self.client, self.user = app, app.root, app.client, user
        self.frame = ttk.Frame(self.root, name="main")
        self.dialog = None
        self.new_while_away = 0
        self._send_failed = False
        self._countdown = None
        self._transfers = 0
        self._build_toolbar()
        self._build_panes()
        bar = ttk.Frame(self.frame, name="bar")
        bar.pack(side="bottom", fill="x")
        self.link_state = tkinter.Label(bar, name="link", anchor="w", relief="sunken",
                                        padx=PAD, width=34)
        self.link_state.pack(side="left")
        self.status = tkinter.Label(bar, name="status", anchor="w", justify="left",
                                    relief="sunken", padx=PAD)
        self.status.pack(side="left", fill="x", expand=True)
        self._focus_binding = self.root.bind("<FocusIn>", self._focused, add="+")
        if notices:
            self.view.clear("\n\n".join(notices))     # already neutralised
        self.connection("Connected")
        self.say(f"Logged in as {neutralise(user)}; {unread} unread "
                 f"message{'s' if unread != 1 else ''}.")

    # -- building --------------------------------------------------------------------------
    def _build_menu(self, bar):
        """The Account menu, on a menu button at the toolbar's left."""
        button = ttk.Menubutton(bar, text="Account ▾", name="account")
        account = tkinter.Menu(button, name="menu", tearoff=False)
        self.presence = tkinter.BooleanVar(value=True)
        account.add_command(label="Change password…", command=self.change_password)
        account.add_command(label="Blocked names…", command=self.blocked_names)
        account.add_checkbutton(label="Show me as online", variable=self.presence,
                                command=self.toggle_presence)
        account.add_separator()
        account.add_command(label="Delete account…", command=self.delete_account)
        account.add_command(label="Log out and quit", command=self.app.quit)
        button.configure(menu=account)
        button.pack(side="left", padx=(0, PAD))

    def _build_toolbar(self):
        bar = ttk.Frame(self.frame, name="toolbar", padding=(PAD, PAD, PAD, 0))
        bar.pack(side="top", fill="x")
        self._build_menu(bar)
        for text, name, command in (("Reply", "reply", self.reply),
                                    ("Forward…", "forward", self.forward),
                                    ("Delete", "delete", self.delete),
                                    ("Conversation", "conversation", self.conversation),
                                    ("Refresh", "refresh", self.refresh)):
            ttk.Button(bar, text=text, name=name, command=command).pack(side="left")
        self.search_entry = ttk.Entry(bar, name="search_text", width=24)
        ttk.Button(bar, text="Search", name="search",
                   command=self.search).pack(side="right")
        self.search_entry.pack(side="right", padx=PAD)
        self.search_entry.bind("<Return>", lambda _e: self.search())

    def _build_panes(self):
        split = ttk.PanedWindow(self.frame, orient="horizontal", name="split")
        split.pack(side="top", fill="both", expand=True, padx=PAD, pady=PAD)
        self.tabs = ttk.Notebook(split, name="tabs")
        self.inbox = InboxPane(self.tabs, self.open_message, self.more_inbox)
        self.sent = ListPane(self.tabs, "sent", (("to", "To", 110), ("state", "State", 80),
                                                 ("time", "Sent", 130),
                                                 ("subject", "Subject", 240)),
                             self.open_message)
        self.found = ListPane(self.tabs, "found", (("who", "From → To", 170),
                                                   ("time", "When", 130),
                                                   ("subject", "Subject", 240)),
                              self.open_message)
        self.online = ListPane(self.tabs, "online", (("user", "Name", 150),
                                                     ("since", "Online since", 140),
                                                     ("idle", "Idle", 160)))
        files = self._build_files(self.tabs)
        for pane, text in ((self.inbox, "Inbox"), (self.sent, "Sent"),
                           (self.found, "Search"), (self.online, "Online")):
            self.tabs.add(pane.frame, text=text)
        self.tabs.add(files, text="Files")
        self.tabs.bind("<<NotebookTabChanged>>", self._tab_changed)
        right = ttk.PanedWindow(split, orient="vertical", name="right")
        self.view = MessageView(right)
        self.compose = ComposePane(right, self.client.people, self.send)
        right.add(self.view.frame, weight=3)
        right.add(self.compose.frame, weight=2)
        split.add(self.tabs, weight=3)
        split.add(right, weight=2)

    def _build_files(self, parent):
        frame = ttk.Frame(parent, name="files")
        self.files = ListPane(frame, "list", (("id", "#", 40), ("who", "From/To", 120),
                                              ("size", "Size", 70), ("state", "State", 100),
                                              ("name", "Name", 190)))
        buttons = ttk.Frame(frame, name="buttons")
        for text, name, command in (("Send a file…", "send_file", self.send_file),
                                    ("Download…", "download", self.download),
                                    ("Decline", "decline", self.decline)):
            ttk.Button(buttons, text=text, name=name, command=command).pack(side="left")
        self.transfers = Transfers(frame)
        self.files.frame.pack(fill="both", expand=True)
        buttons.pack(fill="x", pady=PAD)
        self.transfers.frame.pack(fill="x")
        return frame

    def show(self):
        self.root.geometry("1180x720")
        self._title()
        self.frame.pack(fill="both", expand=True)
        self.run("inbox", "inbox")
        self.run("presence", "presence")
        self.compose.to.focus_force()

    def destroy(self):
        if self.dialog is not None:
            self.dialog.destroy()
        if self._countdown is not None:
            self.root.after_cancel(self._countdown)
        self.root.unbind("<FocusIn>", self._focus_binding)
        self.frame.destroy()

    # -- small helpers ---------------------------------------------------------------------
    def run(self, tag, name, **args):
        self.client.command(tag, name, **args)

    def say(self, text, error=False):
        """The last action's outcome, in the status line."""
        self.status.configure(text=text, foreground=RED if error else DARK)

    def connection(self, text, error=False):
        """The connection's state: connected, reconnecting in N s, offline."""
        self.link_state.configure(text=text, foreground=RED if error else DARK)

    def _title(self):
        extra = f" ({self.new_while_away} new)" if self.new_while_away else ""
        self.root.title(f"Parley — {neutralise(self.user)}{extra}")

    def _focused(self, _event):
        if self.new_while_away:
            self.new_while_away = 0
            self._title()

    def _shown_message(self):
        record = self.view.shown
        return record if record and record.get("type") == "message" else None

    def _selected_one(self):
        chosen = self.inbox.selected()
        if len(chosen) == 1:
            return chosen[0]
        record = self._shown_message()
        return record["id"] if record else None

    def _dialog(self, dialog):
        if self.dialog is not None:
            self.dialog.destroy()
        self.dialog = dialog
        return dialog

    # -- actions ---------------------------------------------------------------------------
    def open_message(self, item):
        self.run("read", "read", id=item)

    def more_inbox(self, before):
        self.run("inbox_more", "inbox", before=before)

    def refresh(self):
        self.run("inbox", "inbox")

    def send(self, to, subject, body):
        try:
            to, subject, body = check_draft(to, subject, body)
        except UsageError as error:
            return self.say(error.reason, error=True)
        self._send_failed = False
        self.compose.send_button.configure(state="disabled")
        self.say(f"Sending to {neutralise(to)}…")
        self.run("send", "send", to=to, subject=subject, body=body)

    def reply(self):
        record = self._shown_message()
        if record is None or record.get("kind") != "message":
            return self.say("Open a message from someone first, then press Reply.",
                            error=True)
        self.compose.fill(other_person(record, self.user),
                          reply_subject(record.get("subject") or ""))

    def forward(self):
        item = self._selected_one()
        if item is None:
            return self.say("Choose a message to forward first.", error=True)
        self._dialog(dialogs.FormDialog(
            self.root, "forward", "Parley — forward", f"Forward message #{item} to:",
            (("to", "To", False), ("note", "Note", False)),
            lambda v: self.run("forward", "forward", id=item, to=v["to"].strip(),
                               note=v["note"]),
            check=lambda v: None if v["to"].strip() else "Say whom to send it to."))

    def delete(self):
        chosen = self.inbox.selected() or ([self._selected_one()]
                                           if self._selected_one() else [])
        if not chosen:
            return self.say("Choose the messages to delete first.", error=True)
        self.run("delete", "delete", ids=chosen)

    def conversation(self):
        record = self._shown_message()
        if record is None or record.get("kind") != "message":
            return self.say("Open a message first: its conversation is shown.", error=True)
        self.run("history", "history", **{"with": other_person(record, self.user)})

    def search(self):
        text = self.search_entry.get().strip()
        if not any(ch.isalnum() for ch in text):
            return self.say("Type at least one word to search for.", error=True)
        self.tabs.select(self.found.frame)
        self.run("search", "search", text=text)

    def _tab_changed(self, _event):
        shown = self.tabs.tab(self.tabs.select(), "text")
        if shown == "Sent":
            self.run("sent", "sent")
        elif shown == "Online":
            self.run("who", "who")
        elif shown == "Files":
            self.run("files", "files")

    # -- files ---------------------------------------------------------------------------
    def send_file(self):
        def go(values):
            self._transfers += 1
            tag = f"file{self._transfers}"
            self.transfers.start(tag, os.path.basename(values["path"]), "upload")
            self.client.transfer(tag, "send-file", to=values["to"].strip(),
                                 path=os.path.expanduser(values["path"].strip()))
        self._dialog(dialogs.FormDialog(
            self.root, "send_file", "Parley — send a file", "Send a file to someone:",
            (("to", "To", False), ("path", "File", False)), go,
            check=lambda v: None if v["to"].strip() and v["path"].strip()
            else "Give both the name and the file.", browse={"path": "file"}))

    def download(self):
        chosen = self.files.selected()
        if len(chosen) != 1:
            return self.say("Choose one file in the list first.", error=True)
        file_id = int(self.files.tree.item(str(chosen[0]), "values")[0])

        def go(values):
            self._transfers += 1
            tag = f"file{self._transfers}"
            self.transfers.start(tag, f"file #{file_id}", "download")
            self.client.transfer(tag, "download", id=file_id, force=False,
                                 path=os.path.expanduser(values["folder"].strip()))
        self._dialog(dialogs.FormDialog(
            self.root, "download", "Parley — download", f"Save file #{file_id} in:",
            (("folder", "Folder", False),), go, values={"folder": download_folder()},
            browse={"folder": "folder"}))

    def decline(self):
        chosen = self.files.selected()
        if len(chosen) != 1:
            return self.say("Choose one file in the list first.", error=True)
        self.run("decline", "decline", id=chosen[0])

    # -- the account menu ------------------------------------------------------------------
    def change_password(self):
        self._dialog(dialogs.FormDialog(
            self.root, "passwd", "Parley — change password",
            "Your other sessions will be logged out.",
            (("old", "Current password", True), ("new", "New password", True),
             ("repeat", "Repeat new password", True)),
            lambda v: self.run("passwd", "passwd", old=v["old"], new=v["new"]),
            dialogs.new_password_problem))

    def blocked_names(self):
        self._dialog(dialogs.BlockDialog(
            self.root, lambda name: self.run("block", "block", username=name),
            lambda name: self.run("block", "unblock", username=name)))
        self.run("block", "blocked")

    def toggle_presence(self):
        self.run("presence_set", "presence", state="on" if self.presence.get() else "off")

    def delete_account(self):
        self._dialog(dialogs.ConfirmDialog(
            self.root, "confirm_delete", "Parley — delete account",
            f"Delete the account {neutralise(self.user)}? This cannot be undone; your "
            "unread messages go back to their senders.", "Delete account",
            lambda: self.run("account", "delete-account")))

    # -- what the network side says (Tk thread) ---------------------------------------------
    def handle(self, event):
        kind = event[0]
        if kind == "record":
            self._record(event[1], event[2])
        elif kind == "note":
            self.say(neutralise(event[2]))
        elif kind == "system":
            self.say(neutralise(event[2]))
            if event[1] == "presence" and self.tabs.tab(self.tabs.select(), "text") \
                    == "Online":
                self.run("who", "who")
        elif kind == "link":
            self._link(event[1], event[2])
        elif kind == "job_failed":
            self._failed(event[1], neutralise(event[2]))
        elif kind == "job_done" and event[1] == "send":
            self.compose.send_button.configure(state="normal")
            if not self._send_failed:
                self.compose.clear()
        elif kind == "account_deleted":
            self.app.show_login("The account is deleted. You can log in with another "
                                "name, or create an account.")

    def _failed(self, tag, text):
        if tag == "send":
            self._send_failed = True
        if tag and tag.startswith("file"):
            self.transfers.failed(tag, text)
        if tag == "inbox_more":
            self.inbox.asking = False
        self.say(text, error=True)

    def _link(self, state, detail):
        if self._countdown is not None:
            self.root.after_cancel(self._countdown)
            self._countdown = None
        if state == "down":
            self.connection("Offline", error=True)
            self.say(f"Connection lost: {neutralise(detail)}", error=True)
        elif state == "waiting":
            self._count_down(int(round(detail)))
        elif state == "back":
            self.connection("Connected")
            self.say(f"Reconnected to {self.client.link.host_id} as {neutralise(detail)}.")
            self.refresh()
        elif state == "gave_up":
            self.connection("Offline", error=True)
            self.say(f"Stopped reconnecting: {neutralise(detail)}", error=True)

    def _count_down(self, seconds):
        self.connection(f"Offline; reconnecting in {seconds} s…", error=True)
        if seconds > 0:
            self._countdown = self.root.after(1000, self._count_down, seconds - 1)
        else:
            self._countdown = None

    def _record(self, tag, record):
        kind = record["type"]
        if kind == "error":
            return self._failed(tag, neutralise(record["error"]))
        if kind == "message":
            return self._message(record)
        if kind == "progress":
            return self.transfers.progress(tag, record)
        shown = {"inbox": self.inbox.page, "history": self.view.conversation,
                 "sent_list": self._sent_list, "search": self._found, "who": self._who,
                 "files": self._files, "blocked": self._blocked}.get(kind)
        if shown is not None:
            return shown(record)
        if kind == "presence":
            self.presence.set(record["presence"] == "on")
            if tag != "presence_set":
                return
        if kind == "deleted":
            self.inbox.remove(record["deleted"])
            self.view.clear()
        if kind in ("file_sent", "file_downloaded", "file_declined"):
            self.transfers.finished(tag, neutralise(TEXT.render(record)))
            if self.tabs.tab(self.tabs.select(), "text") == "Files":
                self.run("files", "files")
        if kind in ("block", "unblock"):
            self.run("block", "blocked")
        if kind == "sent" and record["bounced"]:
            self.refresh()          # the returned copy is in the inbox, not pushed
        text = TEXT.render(record)
        if text:
            self.say(neutralise(text, multiline=True).replace("\n", " "))

    def _message(self, record):
        if record["via"] == "read":
            self.view.message(record)
            self.inbox.mark_read(record["id"])
            return
        self.inbox.arrived(record)
        if record["via"] == "push":
            self.say(f"New message #{record['id']} from {neutralise(record['from'])}: "
                     f"{subject_text(record['subject'])}")
            if self.root.focus_displayof() is None:      # the window is not focused
                self.new_while_away += 1
                self._title()
                self.root.bell()

    def _sent_list(self, record):
        self.sent.replace([(e["id"], (neutralise(e["to"]), "read" if e["read"] else
                                      "delivered" if e["delivered"] else "waiting",
                                      local_time(e["sent_at"]), subject_text(e["subject"])),
                            ()) for e in record["messages"]])

    def _found(self, record):
        self.found.replace([(e["id"], (f"{neutralise(e['from'])} → {neutralise(e['to'])}",
                                       local_time(e["sent_at"]), subject_text(e["subject"])),
                             ("unread",) if e.get("unread") else ())
                            for e in record["messages"]])
        if not record["messages"]:
            self.say("No message of yours holds all those words.")

    def _who(self, record):
        self.online.replace([(index, (neutralise(p["user"]), local_time(p["since"]),
                                      idle_text(p.get("idle") or 0)), ())
                             for index, p in enumerate(record["people"])])

    def _files(self, record):
        self.files.replace([(e["id"], (e["id"], neutralise(
            f"from {e['from']}" if e["direction"] == "received" else f"to {e['to']}"),
            size_text(e["size"] or 0), neutralise(e["state"] or ""), neutralise(e["name"])),
            ()) for e in record["files"]])

    def _blocked(self, record):
        if isinstance(self.dialog, dialogs.BlockDialog):
            self.dialog.show([f"{neutralise(e['user'])}   since {local_time(e['since'])}"
                              for e in record["blocked"]])


def download_folder():
    """Where a download goes unless changed: ~/Downloads if there is one, else here."""
    downloads = os.path.expanduser("~/Downloads")
    return downloads if os.path.isdir(downloads) else os.getcwd()
