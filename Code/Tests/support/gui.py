"""The real windowed client under a virtual X display, for the GUI tests (issue 17).

`VirtualDisplay` starts `Xvfb -displayfd` (it picks a free display number
itself and writes it when it accepts connections), then waits until a
connection to its socket succeeds; `stop()` kills it. `display_or_skip()`
says which display to use: our own Xvfb when the binary is there, else
an existing $DISPLAY, else the test is skipped with one clear reason
(`SKIP_REASON`); xdotool is needed to drive the windows.

`GuiProcess` runs the real `python Code/client.py --gui` as its own
process group with DISPLAY set and PARLEY_GUI_DUMP pointing at a file in
the test's temp dir, reads that dump (the visible texts and places of
the widgets, `Modules/client/gui/dump.py`) to wait for conditions, and
drives the windows like a person: `xdotool` moves the mouse to a widget's
centre and clicks, types text, presses keys. `screenshot()` saves the
whole screen as PNG with ImageMagick's `import` (None when it is not
installed) and `screen_pixels()` checks that a widget's area on it is not
blank. `close()` ends the process (and its group), also on failure.
`log_in`, `logged_in` and `trusted_gui` are the steps most tests start with;
INBOX, VIEW, COMPOSE, STATUS and LINK the paths of the main widgets.
"""

import importlib.util
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from Tests.support.processes import CLIENT, PASSWORD, WAIT, child_env, kill_session, wait_until

SKIP_REASON = ("The GUI tests need an X display and xdotool: install them (Debian: "
               "apt-get install xvfb xdotool imagemagick), or run the tests where DISPLAY "
               "is set and xdotool is installed; skipping them.")
SCREEN = "1280x800x24"
INBOX = ".main.split.tabs.inbox.list"
VIEW = ".main.split.right.view.text"
COMPOSE = ".main.split.right.compose"
STATUS = ".main.bar.status"
LINK = ".main.bar.link"


class VirtualDisplay:
    """One Xvfb server on a display number it chose itself."""

    def __init__(self):
        self.proc, self.name = None, None

    def start(self):
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", SCREEN, "-nolisten", "tcp",
             "-noreset"], pass_fds=(write,), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(write)
        with os.fdopen(read) as numbers:       # written once it accepts connections
            ready, _, _ = select.select([numbers], [], [], WAIT)
            number = numbers.readline().strip() if ready else ""
        if not number.isdigit():
            self.stop()
            raise RuntimeError("Xvfb did not start (no display number)")
        self.name = f":{number}"
        try:
            wait_until(lambda: _connects(f"/tmp/.X11-unix/X{number}"), WAIT,
                       message="the X display to accept connections")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc is not None:
            kill_session(self.proc.pid)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _connects(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def missing():
    """Why the GUI tests cannot run here (one sentence), or None."""
    if importlib.util.find_spec("tkinter") is None:
        return ("The GUI tests need Tk for Python (Debian: apt-get install python3-tk); "
                "skipping them.")
    if shutil.which("xdotool") is None or (shutil.which("Xvfb") is None
                                           and not os.environ.get("DISPLAY")):
        return SKIP_REASON
    return None


def display_or_skip():
    """A started VirtualDisplay, or None to use $DISPLAY; skips without either."""
    if missing():
        pytest.skip(missing())
    if shutil.which("Xvfb") is not None:
        return VirtualDisplay().start()
    return None


class GuiProcess:
    """The real windowed client, driven with xdotool, watched through its dump."""

    def __init__(self, display, tmp_path, port, *extra, known_hosts=None, env=None):
        self.display, self.tmp_path = display, tmp_path
        self.dump_path = str(tmp_path / f"gui-dump-{os.getpid()}-{id(self)}.json")
        self.known_hosts = known_hosts or str(tmp_path / "known_hosts")
        self.command = [sys.executable, CLIENT, "--gui", "--port", str(port),
                        "--known-hosts", self.known_hosts, *extra]
        self.env = child_env({"DISPLAY": display, "PARLEY_GUI_DUMP": self.dump_path,
                              **(env or {})})
        self.log_path = tmp_path / "gui.log"
        self.proc = None
        self.shots = 0

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        self.wait(lambda d: d["widgets"], "the first window")
        return self

    # -- the dump --------------------------------------------------------------------------
    def dump(self):
        try:
            with open(self.dump_path, encoding="utf-8") as file:
                return json.load(file)
        except (OSError, ValueError):
            return {"title": "", "focus": None, "widgets": []}

    def widget(self, path, dump=None):
        for entry in (dump or self.dump())["widgets"]:
            if entry["path"] == path:
                return entry
        return None

    def text(self, path):
        entry = self.widget(path)
        return None if entry is None else entry.get("text")

    def rows(self, path):
        entry = self.widget(path)
        return [] if entry is None else entry.get("rows", [])

    def wait(self, predicate, what, timeout=WAIT):
        """Until `predicate(dump)` is true; what it returned."""
        def holds():
            if self.proc.poll() is not None:
                raise AssertionError(f"the GUI ended ({self.proc.returncode}) while "
                                     f"waiting for {what}; log:\n{self.read_log()}")
            return predicate(self.dump())
        try:
            return wait_until(holds, timeout, message=what)
        except AssertionError as error:
            raise AssertionError(f"{error}; on screen: {self.texts()}") from None

    def wait_text(self, path, needle, timeout=WAIT):
        """Wait until the widget's text contains `needle`; its text."""
        self.wait(lambda d: needle in ((self.widget(path, d) or {}).get("text") or ""),
                  f"{path} to show {needle!r}", timeout)
        return self.text(path)

    def wait_widget(self, path, timeout=WAIT):
        self.wait(lambda d: self.widget(path, d) is not None, f"{path} on screen", timeout)
        return self.widget(path)

    def texts(self):
        return {e["path"]: e.get("text") for e in self.dump()["widgets"] if e.get("text")}

    def read_log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- driving ---------------------------------------------------------------------------
    def xdotool(self, *words):
        subprocess.run(["xdotool", *words], check=True, timeout=WAIT,
                       env={**os.environ, "DISPLAY": self.display})

    def click(self, path, dx=None, dy=None):
        entry = self.wait_widget(path)
        x = entry["x"] + (entry["width"] // 2 if dx is None else dx)
        y = entry["y"] + (entry["height"] // 2 if dy is None else dy)
        self.xdotool("mousemove", str(x), str(y), "click", "1")

    def focus(self, path):
        """Click into a field and wait until it has the keyboard focus."""
        self.click(path)
        self.wait(lambda d: d.get("focus") == path, f"the focus in {path}")

    def type(self, text):
        self.xdotool("type", "--delay", "10", "--", text)

    def key(self, *keys):
        self.xdotool("key", "--delay", "20", *keys)

    def fill(self, path, text, masked=False):
        """Type `text` into an empty (emptied) field; a masked one dumps bullets."""
        self.focus(path)
        if self.text(path):
            self.key("ctrl+slash", "BackSpace")          # Tk's select-all in an entry
        self.wait(lambda d: not (self.widget(path, d) or {}).get("text"), f"{path} empty")
        self.type(text)
        shown = "•" * len(text) if masked else text
        self.wait(lambda d: (self.widget(path, d) or {}).get("text") == shown,
                  f"{path} to hold what was typed")

    def select_row(self, tree, row_id):
        """Click the middle of the row `row_id` of a Treeview (its box in the dump)."""
        entry = self.wait_widget(tree)
        self.wait(lambda d: any(r["id"] == str(row_id) for r in
                                (self.widget(tree, d) or {}).get("rows", [])),
                  f"row {row_id} in {tree}")
        row = next(r for r in self.rows(tree) if r["id"] == str(row_id))
        if not row.get("box"):
            raise AssertionError(f"row {row_id} of {tree} is not visible")
        x, y, width, height = row["box"]
        self.click(tree, dx=x + min(width, entry["width"]) // 2, dy=y + height // 2)

    def tab(self, notebook, label):
        """Click the tab `label` of a notebook and wait until it is shown."""
        self.wait(lambda d: any(r["values"] == [label] and r.get("box")
                                for r in (self.widget(notebook, d) or {}).get("rows", [])),
                  f"the tab {label}")
        x, y, width, height = next(r["box"] for r in self.rows(notebook)
                                   if r["values"] == [label])
        self.click(notebook, dx=x + width // 2, dy=y + height // 2)
        self.wait(lambda d: (self.widget(notebook, d) or {}).get("text") == label,
                  f"the tab {label} shown")

    def choose(self, menubutton, label):
        """Open the menu of a menu button and click its entry `label`."""
        self.click(menubutton)
        menu = f"{menubutton}.menu"
        self.wait(lambda d: self.widget(menu, d) is not None, f"the menu {menu} open")
        row = next(r for r in self.rows(menu) if r["values"] == [label])
        x, y, width, height = row["box"]
        self.click(menu, dx=width // 2, dy=y + height // 2)

    # -- pictures --------------------------------------------------------------------------
    def screenshot(self, name):
        """The whole screen as tmp_path/NAME.png; None without ImageMagick."""
        if shutil.which("import") is None:
            return None
        self.shots += 1
        path = self.tmp_path / f"{name}.png"
        subprocess.run(["import", "-display", self.display, "-window", "root", str(path)],
                       check=True, timeout=WAIT, capture_output=True)
        return path

    # -- the end ---------------------------------------------------------------------------
    def close(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.proc.pid)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


def distinct_colours(png_path, box):
    """How many colours the screenshot has inside box (x, y, width, height): a
    widget that drew text has more than its background's one or two."""
    x, y, width, height = box
    crop = subprocess.run(["convert", str(png_path), "-crop", f"{width}x{height}+{x}+{y}",
                           "+repage", "-format", "%k", "info:"], check=True,
                          capture_output=True, text=True, timeout=WAIT)
    return int(crop.stdout.strip() or 0)


# ------------------------------------------------------------ common steps


def log_in(gui, user, password=PASSWORD, button="login"):
    gui.fill(".login.user", user)
    gui.fill(".login.password", password, masked=True)
    gui.click(f".login.buttons.{button}")


def logged_in(gui, user):
    gui.wait(lambda d: d["title"] == f"Parley — {user}", f"the main window of {user}")
    gui.wait_text(LINK, "Connected")


def trusted_gui(make_gui, server, user, button="login"):
    """A GUI logged in as `user` on a server already trusted (batch clients pinned it)."""
    gui = make_gui(server, known_hosts=str(server.tmp_path / "known_hosts"))
    log_in(gui, user, button=button)
    logged_in(gui, user)
    return gui
