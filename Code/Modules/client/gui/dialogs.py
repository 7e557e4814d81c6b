"""The windowed client's small dialogs, each a Toplevel over the main window.

* `TrustDialog`: a server seen for the first time, its key fingerprint,
  Trust / Cancel (closing it is Cancel);
* `ConfirmDialog`: a yes/no (delete the account; delete messages);
* `FormDialog`: a few fields, some masked (change password: current,
  new, repeated; forward to whom), OK / Cancel, Return is OK; it checks
  what it can itself (`check(values) -> sentence or None`, such as
  `new_password_problem`) and shows that sentence in the dialog instead
  of closing; a path field can have a Browse… button (Tk's file chooser);
* `BlockDialog`: the names blocked, since when; a name to block or
  unblock.

Each calls back with the answer and closes; none talks to the network
(the main window does, through the client). Text from other people that
they show (a name in a question) is passed through `neutralise` by the
caller. Tk only; nothing here can fail but Tk itself.
"""

import os
import tkinter
from tkinter import ttk

from Modules import rules

PAD = 8


class Dialog:
    """A Toplevel named `name` with a message and a row of buttons."""

    def __init__(self, root, name, title, text=""):
        self.top = tkinter.Toplevel(root, name=name)
        self.top.title(title)
        self.top.transient(root)
        self.top.protocol("WM_DELETE_WINDOW", self.cancel)
        self.body = ttk.Frame(self.top, name="body", padding=2 * PAD)
        self.body.pack(fill="both", expand=True)
        self.message = tkinter.Label(self.body, name="message", text=text, justify="left",
                                     anchor="w", wraplength=560)
        self.message.pack(fill="x")
        self.buttons = ttk.Frame(self.body, name="buttons")
        self.done = False

    def button(self, text, name, command):
        widget = ttk.Button(self.buttons, text=text, name=name, command=command)
        widget.pack(side="right", padx=(PAD, 0))
        return widget

    def place(self, focus):
        self.buttons.pack(fill="x", pady=(PAD, 0))
        parent = self.top.master
        self.top.geometry(f"+{parent.winfo_rootx() + 40}+{parent.winfo_rooty() + 40}")
        self.top.bind("<Escape>", lambda _e: self.cancel())
        focus.focus_force()

    def cancel(self):
        self.close()

    def close(self):
        if not self.done:
            self.done = True
            self.top.destroy()

    destroy = close


class TrustDialog(Dialog):
    """Trust this server's key? `answer(True|False)` once."""

    def __init__(self, root, text, answer):
        super().__init__(root, "trust", "Parley — a new server", text)
        self.answer = answer
        self.button("Cancel", "cancel", self.cancel)
        trust = self.button("Trust", "trust", lambda: self._say(True))
        self.top.bind("<Return>", lambda _e: self._say(True))
        self.place(trust)

    def _say(self, value):
        if not self.done:
            self.answer(value)
        self.close()

    def cancel(self):
        self._say(False)


class ConfirmDialog(Dialog):
    """A yes/no; `on_yes()` only for yes."""

    def __init__(self, root, name, title, text, yes_text, on_yes):
        super().__init__(root, name, title, text)
        self.on_yes = on_yes
        no = self.button("Cancel", "cancel", self.cancel)
        self.button(yes_text, "yes", self._yes)
        self.place(no)                 # the safe answer has the focus

    def _yes(self):
        self.close()
        self.on_yes()


class FormDialog(Dialog):
    """Fields (name, label, masked); `on_ok(values)` once `check(values)` is None."""

    def __init__(self, root, name, title, text, fields, on_ok, check=None,
                 ok_text="OK", values=None, on_cancel=None, browse=None):
        super().__init__(root, name, title, text)
        self.on_ok, self.check = on_ok, check or (lambda _values: None)
        self.on_cancel = on_cancel
        grid = ttk.Frame(self.body, name="fields")
        grid.pack(fill="x", pady=(PAD, 0))
        self.entries = {}
        for row, (field, label, masked) in enumerate(fields):
            ttk.Label(grid, text=label + ":").grid(row=row, column=0, sticky="w", pady=2)
            entry = ttk.Entry(grid, name=field, width=32, show="•" if masked else "")
            entry.insert(0, (values or {}).get(field, ""))
            entry.grid(row=row, column=1, sticky="ew", pady=2)
            entry.bind("<Return>", lambda _e: self._ok())
            self.entries[field] = entry
            if field in (browse or {}):
                ttk.Button(grid, text="Browse…", name=f"browse_{field}",
                           command=lambda f=field: self._browse(f, browse[f])).grid(
                    row=row, column=2, padx=(PAD // 2, 0))
        grid.columnconfigure(1, weight=1)
        self.button("Cancel", "cancel", self.cancel)
        self.button(ok_text, "ok", self._ok)
        self.place(next(iter(self.entries.values())))

    def values(self):
        return {field: entry.get() for field, entry in self.entries.items()}

    def _browse(self, field, kind):
        """Tk's own file chooser: a file to open ("file") or a folder ("folder")."""
        from tkinter import filedialog
        ask = filedialog.askdirectory if kind == "folder" else filedialog.askopenfilename
        chosen = ask(parent=self.top, initialdir=os.path.dirname(
            self.entries[field].get()) or os.getcwd())
        if chosen:
            self.entries[field].delete(0, "end")
            self.entries[field].insert(0, chosen)

    def cancel(self):
        if not self.done and self.on_cancel is not None:
            self.on_cancel()
        self.close()

    def _ok(self):
        values = self.values()
        problem = self.check(values)
        if problem:
            self.message.configure(text=problem, foreground="#b00020")
            return
        self.close()
        self.on_ok(values)


def new_password_problem(values):
    """Why the new password of a form (fields "new", "repeat") will not do, or None:
    the two differ, or it breaks the server's rule (`rules.check_password`)."""
    if values["new"] != values["repeat"]:
        return "The two new passwords differ; type them again."
    try:
        rules.check_password(values["new"])
    except rules.RuleError as error:
        return error.reason
    return None


class BlockDialog(Dialog):
    """The blocked names; `on_block(name)`, `on_unblock(name)` from its buttons."""

    def __init__(self, root, on_block, on_unblock):
        super().__init__(root, "blocked", "Parley — blocked names",
                         "People whose messages you refuse (they are told only "
                         "'not accepted'):")
        self.names = tkinter.Listbox(self.body, name="names", height=8, width=40)
        self.names.pack(fill="both", expand=True, pady=(PAD, 0))
        self.entry = ttk.Entry(self.body, name="name", width=32)
        self.entry.pack(fill="x", pady=(PAD, 0))
        self.button("Close", "close", self.close)
        self.button("Unblock", "unblock", lambda: self._act(on_unblock))
        self.button("Block", "block", lambda: self._act(on_block))
        self.names.bind("<<ListboxSelect>>", self._picked)
        self.place(self.entry)

    def _act(self, action):
        name = self.entry.get().strip()
        if name:
            action(name)

    def _picked(self, _event):
        chosen = self.names.curselection()
        if chosen:
            self.entry.delete(0, "end")
            self.entry.insert(0, self.names.get(chosen[0]).split()[0])

    def show(self, lines):
        """The list as `blocked` gave it (already neutralised)."""
        if self.done:
            return
        self.names.delete(0, "end")
        for line in lines:
            self.names.insert("end", line)

    def say(self, text):
        if not self.done:
            self.message.configure(text=text)
