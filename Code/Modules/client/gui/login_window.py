"""The login window: server address, username, password, Log in / Create account.

The password is masked; Return logs in. Pressing a button hands the form
to the network side (`GuiClient.login`, on its worker thread) and greys
the buttons until the answer comes back as an event (`handle`):

* a server seen for the first time opens the trust dialog with its key
  fingerprint (`dialogs.TrustDialog`: Trust / Cancel); the answer goes
  back to the waiting thread;
* a refused login, a server that cannot be reached, a changed server key
  (the refusal names both fingerprints and the known-hosts line to
  remove) are shown under the form in red, as the session layer words
  them, and the form can be tried again;
* after a one-time password (the administrator reset the password) a
  dialog asks for the new one, twice, checked against the server's rule;
* a login that worked replaces this window by the main window, which
  shows the operator's greeting and message of the day, if any.

Talks to: the `App` (its client and window switching) and Tk. Checks the
address itself (one sentence for a bad one); everything else is the
session's and the server's to say. The password is handed on and cleared
from the field after each try; it is never put anywhere else.
"""

import tkinter
from tkinter import ttk

from Modules.client.gui.bridge import parse_address
from Modules.client.gui.dialogs import FormDialog, TrustDialog, new_password_problem
from Modules.client.output import neutralise

PAD = 8


class LoginWindow:
    """The form in the root window (see the module text)."""

    def __init__(self, app, address, user, password, note=None):
        self.app, self.root = app, app.root
        self.frame = ttk.Frame(self.root, name="login", padding=2 * PAD)
        self.fields = {}
        for row, (name, label, value) in enumerate((
                ("address", "Server address", address), ("user", "Username", user),
                ("password", "Password", password))):
            ttk.Label(self.frame, text=label + ":", name=f"{name}_label").grid(
                row=row, column=0, sticky="w", pady=PAD // 2)
            entry = ttk.Entry(self.frame, name=name, width=48,
                              show="•" if name == "password" else "")
            entry.insert(0, value)
            entry.grid(row=row, column=1, sticky="ew", pady=PAD // 2)
            entry.bind("<Return>", lambda _e: self.submit(create=False))
            self.fields[name] = entry
        buttons = ttk.Frame(self.frame, name="buttons")
        buttons.grid(row=3, column=0, columnspan=2, pady=PAD, sticky="e")
        self.login_button = ttk.Button(buttons, text="Log in", name="login",
                                       command=lambda: self.submit(create=False))
        self.create_button = ttk.Button(buttons, text="Create account", name="create",
                                        command=lambda: self.submit(create=True))
        self.create_button.pack(side="right", padx=(PAD, 0))
        self.login_button.pack(side="right")
        self.message = tkinter.Label(self.frame, name="message", text=note or "",
                                     justify="left", anchor="w", wraplength=640)
        self.message.grid(row=4, column=0, columnspan=2, sticky="ew")
        self.frame.columnconfigure(1, weight=1)
        self.dialog = None
        self.notices = []         # the operator's greeting and message of the day

    def show(self):
        self.root.title("Parley — log in")
        self.frame.pack(fill="both", expand=True)
        empty = [name for name in ("user", "password") if not self.fields[name].get()]
        self.fields[empty[0] if empty else "password"].focus_force()

    def destroy(self):
        if self.dialog is not None:
            self.dialog.destroy()
        self.frame.destroy()

    # -- the form -------------------------------------------------------------------------
    def submit(self, create):
        if str(self.login_button.cget("state")) == "disabled":
            return
        try:
            host, port = parse_address(self.fields["address"].get(), self.app.args.port)
        except ValueError as error:
            return self._say(str(error), error=True)
        user, password = self.fields["user"].get().strip(), self.fields["password"].get()
        if not user:
            return self._say("Type your username.", error=True)
        if not password:
            return self._say("Type your password.", error=True)
        self.fields["password"].delete(0, "end")
        self._busy(True)
        self._say("Creating the account…" if create else "Connecting…")
        self.app.client.login(host, port, user, password, create)

    def _ask_new_password(self, message, answer):
        """The administrator reset the password: choose a new one, twice."""
        self._say(message)
        self.dialog = FormDialog(
            self.root, "new_password", "Parley — choose a new password", message,
            (("new", "New password", True), ("repeat", "Repeat new password", True)),
            lambda values: answer.give(values["new"]), new_password_problem,
            on_cancel=lambda: answer.give(None))

    def _busy(self, busy):
        state = "disabled" if busy else "normal"
        for widget in (self.login_button, self.create_button):
            widget.configure(state=state)

    def _say(self, text, error=False):
        self.message.configure(text=text, foreground="#b00020" if error else "#333333")

    # -- what the network side says (Tk thread, from the pump) -----------------------------
    def handle(self, event):
        kind = event[0]
        if kind == "note":
            self._say(neutralise(event[2], multiline=True))
        elif kind == "trust":
            self.dialog = TrustDialog(self.root, neutralise(event[1], multiline=True),
                                      event[2].give)
        elif kind == "login_failed":
            self._busy(False)
            self._say(neutralise(event[1], multiline=True), error=True)
            self.fields["password"].focus_force()
        elif kind == "new_password":
            self._ask_new_password(event[1], event[2])
        elif kind in ("greeting", "motd"):
            label = "The server says" if kind == "greeting" else "Message of the day"
            self.notices.append(f"{label}:\n{neutralise(event[1], multiline=True)}")
        elif kind == "logged_in":
            self.app.show_main(event[1], event[2], self.notices)
