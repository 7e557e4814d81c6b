"""Programs in a pseudo-terminal, read as a person would see the screen.

`Pty` spawns a program under pexpect (TERM=xterm-256color, no cursor
position requests) and reads its output with the terminal's control
sequences stripped: `expect(regex)` waits for text after the last match,
never a fixed time. `ClientPty` is the real interactive client in one. `ServerConsole` is a real daemon in a pseudo-terminal
(its operator console), with `port`, `tmp_path` and `data_dir` like
`ServerProcess`, so the client helpers (`session`, `run_client`) work on
it; `stop()` always kills what is left of its session.
"""

import os
import re
import sys
import time

import pexpect

from Tests.support.processes import (
    CLIENT,
    PASSWORD,
    SERVER,
    WAIT,
    child_env,
    kill_session,
)

# CSI and other escape sequences, and carriage returns: what a screen would not show.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]"
                     r"|\x1b[=>78]|\r|\x08")
TERMINAL_ENV = {"TERM": "xterm-256color", "NO_COLOR": "1", "PROMPT_TOOLKIT_NO_CPR": "1"}


class Pty:
    """A program in a pseudo-terminal, its screen read as plain text."""

    def __init__(self, program, args, env, rows=40, columns=120, timeout=WAIT):
        self.child = pexpect.spawn(program, list(args), env=env, encoding="utf-8",
                                   codec_errors="replace", timeout=timeout,
                                   dimensions=(rows, columns))
        self.timeout = timeout
        self.raw, self.seen = "", 0

    def screen_text(self):
        return CONTROL.sub("", self.raw)

    def expect(self, pattern, timeout=None):
        """Wait for `pattern` (a regex) in the text after the last match; the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            text = self.screen_text()
            found = regex.search(text, self.seen)
            if found:
                self.seen = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} on the screen; it shows:\n"
                                     f"{text[self.seen:][-3000:]}")
            self._read(min(0.5, max(0.05, deadline - time.monotonic())))

    def _read(self, timeout):
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            time.sleep(0.05)          # the program ended; nothing more will come

    def send(self, text):
        self.child.send(text)

    def send_bytes(self, data):
        """Bytes as they are, UTF-8 or not (what a confused terminal might send)."""
        os.write(self.child.child_fd, data)

    def line(self, text):
        self.child.send(text + "\r")

    def send_slowly(self, data, chunk=1024):
        """Send a lot, reading the screen in between (a program that echoes what it
        gets would otherwise block on a full terminal while we block on its input)."""
        for start in range(0, len(data), chunk):
            self.child.send(data[start:start + chunk])
            self._read(0.01)

    def wait_exit(self, timeout=None):
        """Read to the end; the exit status."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self.child.isalive() and time.monotonic() < deadline:
            self._read(0.2)
        try:
            self.raw += self.child.read()
        except (pexpect.EOF, OSError, ValueError):
            pass
        self.child.close()
        return self.child.exitstatus

    def close(self):
        self.child.close(force=True)


class ClientPty(Pty):
    """The interactive client (`Code/client.py`, no --batch) in a pseudo-terminal."""

    def __init__(self, tmp_path, port, *args, login=None, rows=40, term="xterm-256color"):
        """`login=NAME` logs in as NAME with PASSWORD and trusts a new server key."""
        self.data_home, self.term = tmp_path / "xdg", term
        env = child_env({**TERMINAL_ENV, "TERM": term, "XDG_DATA_HOME": str(self.data_home),
                         "PARLEY_TEST_PASSWORD": PASSWORD})
        command = [CLIENT, "--port", str(port), "--known-hosts", str(tmp_path / "kh"), *args]
        if login:
            command += ["--user", login, "--password-env", "PARLEY_TEST_PASSWORD",
                        "--accept-new-host-key"]
        super().__init__(sys.executable, command, env, rows=rows, timeout=WAIT)


    def expect_editor(self):
        """Wait until the body editor reads keys. Its hint is printed just before
        it starts; a Ctrl-C sent in between would be the terminal's SIGINT, which
        also throws away what was typed ahead. A running prompt has turned
        bracketed paste on (ESC [?2004h); a dumb terminal's line prompts do not."""
        self.expect("Finish with Ctrl-D")
        if self.term == "dumb":
            return
        start = self.raw.rfind("Finish with Ctrl-D")
        deadline = time.monotonic() + self.timeout
        while "\x1b[?2004h" not in self.raw[start:]:
            if time.monotonic() > deadline:
                raise AssertionError("the body editor did not start")
            self._read(0.1)


def history_file(pty, port, user):
    """Where the interactive client keeps `user`'s command history on `port`."""
    return pty.data_home / "parley" / f"127.0.0.1_{port}" / user / "history"


class ServerConsole(Pty):
    """`server_daemon.py --port 0` in a pseudo-terminal: its operator console."""

    PROMPT = r"parley>"

    def __init__(self, tmp_path, *args, env=None):
        self.tmp_path = tmp_path
        self.data_dir = str(tmp_path / "data")
        command = [SERVER, "--port", "0", "--data-dir", self.data_dir, *args]
        super().__init__(sys.executable, command, child_env({**TERMINAL_ENV, **(env or {})}))
        self.port = int(self.expect(r"parley: listening on [\d.]+:(\d+)\r?\n").group(1))

    def run(self, command, answer):
        """Type `command` and Enter at the prompt; the match of `answer` after it."""
        self.expect(self.PROMPT)
        self.line(command)
        return self.expect(answer)

    def stop(self):
        """Kill whatever of the server is still running (its whole session)."""
        if self.child.pid is not None:
            kill_session(self.child.pid)
        self.close()
