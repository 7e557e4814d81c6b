"""The windowed client's run: `python Code/client.py --gui [--host H] [--port P]`.

`run_gui(args, password)` makes the Tk root, the `GuiClient` (the network
side, `client.gui.bridge`), and shows the login window; after a login the
main window replaces it, and after the account is deleted the login
window comes back. `Pump` is the one bridge from the network threads to
Tk: every `POLL_MS` it takes all waiting events off the client's queue
and hands each to the window on screen (`handle(event)`), on the Tk
thread; no other thread ever calls Tk. With PARLEY_GUI_DUMP set, the
debugging dump of `client.gui.dump` runs too. An exception in a window's
code is one sentence on stderr (the traceback with PARLEY_DEBUG=1), and
the windows go on.

Options used: --host, --port (the login window's server address starts
as host:port), --user, --password-env (fill the login window in),
--known-hosts. Exit status 0 when the window is closed; 1 when Tk cannot
start (no display: one sentence on stderr, e.g. "Cannot open the window:
no display (is DISPLAY set?)."). Closing the window logs out.
"""

import os
import queue
import sys
import traceback

from Modules.client.gui.bridge import GuiClient, format_address

POLL_MS = 40          # how often the Tk loop looks at the network's events
EVENTS_PER_POLL = 200  # at most this many per look, so a flood cannot freeze the window


class Pump:
    """Hands the network's events to the window on screen, on the Tk thread."""

    def __init__(self, root, events, target):
        self.root, self.events, self.target = root, events, target
        self.stopped = False

    def start(self):
        self.root.after(POLL_MS, self._poll)

    def _poll(self):
        if self.stopped:
            return
        try:
            for _ in range(EVENTS_PER_POLL):
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                self.target().handle(event)
        finally:                   # one event a window could not show stops nothing
            self.root.after(POLL_MS, self._poll)


class App:
    """The root window and which of the two windows is shown."""

    def __init__(self, root, args, password):
        self.root, self.args = root, args
        self.client = GuiClient(args.known_hosts)
        self.window = None
        self._password = password
        root.title("Parley")
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self.pump = Pump(root, self.client.events, lambda: self.window)

    def start(self):
        self.show_login()
        self.pump.start()

    def show_login(self, note=None):
        from Modules.client.gui.login_window import LoginWindow
        self._replace(LoginWindow(self, format_address(self.args.host, self.args.port),
                                  self.args.user or "", self._password or "", note))
        self._password = None      # filled in once; never kept by the windows

    def show_main(self, user, unread, notices=()):
        from Modules.client.gui.main_window import MainWindow
        self._replace(MainWindow(self, user, unread, notices))

    def _replace(self, window):
        if self.window is not None:
            self.window.destroy()
        self.window = window
        window.show()

    def quit(self):
        self.pump.stopped = True
        try:
            self.root.destroy()
        finally:
            self.client.close()


def _reporter(environ):
    """Tk's handler of an exception in a callback: one sentence, not a traceback
    (PARLEY_DEBUG=1 shows it); the window goes on."""
    def report(kind, value, trace):
        print(f"parley: unexpected error in the window ({kind.__name__}); please report "
              "it.", file=sys.stderr)
        if environ.get("PARLEY_DEBUG"):
            traceback.print_exception(kind, value, trace)
    return report


def run_gui(args, password=None, environ=None):
    """Show the windows until they are closed; the exit status."""
    environ = os.environ if environ is None else environ
    try:
        import tkinter
    except ImportError:
        print("parley: The windowed client needs Tk (Debian: apt-get install python3-tk).",
              file=sys.stderr)
        return 1
    try:
        root = tkinter.Tk(className="Parley")
    except tkinter.TclError as error:
        why = "no display (is DISPLAY set?)" if "display" in str(error).lower() else error
        print(f"parley: Cannot open the window: {why}.", file=sys.stderr)
        return 1
    root.report_callback_exception = _reporter(environ)
    app = App(root, args, password)
    app.start()
    from Modules.client.gui.dump import start_dump
    start_dump(root, environ)
    try:
        root.mainloop()
    except KeyboardInterrupt:
        app.quit()
    return 0
