"""Tests for Modules/server/console.py: the operator console of a real daemon.

Each console test starts `server_daemon.py` in a pseudo-terminal
(`Tests.support.terminal.ServerConsole`, under pexpect) and types at its
`parley>` prompt as an operator would: `help`, `who` after a real client
logged in, each kind of bad input (an unknown command, a missing
argument, a bad quote, bytes that are not text, a 100 KB line) followed by
a `stats` that still answers, a log line arriving while a command is half
typed, Ctrl-D, and `shutdown` (exit 0, "database closed cleanly"). With
standard input not a terminal, or with --no-console, nothing is read.
A few unit tests need no terminal (line checks; the prompt's parts:
test_console_prompt.py).

No timing assertions and no fixed sleeps: every wait is an expect with a
timeout (30 s). Every server is killed with its whole session at the end.
"""

import signal
import subprocess
import sys

import pytest

from Modules.server import admin_commands, console
from Tests.support import SERVER, ServerProcess, child_env, session
from Tests.support.terminal import ServerConsole

STATS = r"uptime\s+\d+s"


@pytest.fixture
def operator(tmp_path):
    """A daemon with its console in a pseudo-terminal; always killed at the end."""
    server = ServerConsole(tmp_path)
    try:
        server.expect(r"Operator console: 'help' lists the commands")
        yield server
    finally:
        server.stop()


def test_the_prompt_answers_help_and_who_after_a_real_login(operator):
    operator.run("help", r"who\s+who is online")
    operator.expect(r"shutdown \[--in SECONDS\] \[MESSAGE\]")
    client, _ = session(operator, "alice")
    try:
        operator.run("who", r"user\s+address\s+since\s+online\s+idle\s+state\s*\n\s*alice\s+127\.0\.0\.1")
    finally:
        client.close()


@pytest.mark.parametrize("typed, said", [
    ("frobnicate", r"error: Unknown command 'frobnicate'; `help` lists the commands\."),
    ("kick", r"error: Usage: kick USER"),
    ("broadcast 'no end", r"error: Cannot read that line \(no closing quotation\)"),
    (b"\xff\xfe\x00", r"error: That line holds control characters or bytes that are not"),
    ("x" * 100_000, r"error: That line is 100,000 characters long, and a command line is "
                    r"at most 4,096; nothing was run\."),
], ids=["unknown command", "missing argument", "bad quote", "garbage bytes", "100 KB line"])
def test_bad_input_gets_one_clear_error_and_the_console_still_answers(operator, typed,
                                                                      said):
    operator.expect(operator.PROMPT)
    if isinstance(typed, bytes):
        operator.send_bytes(typed + b"\r")
    else:
        operator.send_slowly(typed + "\r")
    operator.expect(said)
    operator.run("stats", STATS)
    assert "Traceback" not in operator.screen_text()


def test_a_log_line_while_a_command_is_half_typed_leaves_it_whole(operator):
    operator.expect(operator.PROMPT)
    operator.send("wh")
    client, _ = session(operator, "bob")      # the daemon logs the connection meanwhile
    try:
        operator.expect(r"INFO .*\[parley: daemon\] c\d+ connection from 127\.0\.0\.1")
        operator.expect(r"parley> wh")        # the prompt is drawn again, "wh" on it
        operator.line("o")
        operator.expect(r"user\s+address\s+since\s+online\s+idle\s+state\s*\n\s*bob\s+127\.0\.0\.1")
    finally:
        client.close()


def test_ctrl_d_keeps_the_server_and_says_how_to_stop_it(operator):
    operator.expect(operator.PROMPT)
    operator.send("\x04")
    operator.expect(r"The server keeps running\. To stop it, type 'shutdown'")
    operator.run("stats", STATS)


def test_shutdown_at_the_console_stops_the_server_cleanly(operator):
    operator.run("shutdown", r"Shutting down now; everyone was told\.")
    assert operator.wait_exit() == 0
    text = operator.screen_text()
    assert "database closed cleanly" in text and "[parley: daemon] - stopped" in text


def test_ctrl_c_clears_a_line_and_on_an_empty_line_stops_the_server(operator):
    operator.expect(operator.PROMPT)
    operator.send("shutdown --in 600")
    operator.send("\x03")                      # clears the line: nothing runs
    operator.line("stats")
    operator.expect(STATS)
    operator.expect(operator.PROMPT)
    operator.send("\x03")
    operator.expect(r"Stopping the server cleanly \(Ctrl-C again forces it\)\.")
    assert operator.wait_exit() == 0
    assert "database closed cleanly" in operator.screen_text()
    assert "Shutting down in" not in operator.screen_text()


def test_no_console_when_stdin_is_not_a_terminal_or_it_is_turned_off(tmp_path):
    """A piped 'shutdown' is never read; with --no-console a terminal is not either."""
    piped = ServerProcess(tmp_path)
    piped.stdin = subprocess.PIPE
    (tmp_path / "tty").mkdir()
    terminal = ServerConsole(tmp_path / "tty", "--no-console")
    try:
        piped.start()
        piped.proc.stdin.write(b"shutdown\n")
        piped.proc.stdin.close()
        terminal.line("shutdown")
        for server in (piped, terminal):     # both still answer the admin command line
            done = subprocess.run([sys.executable, SERVER, "admin", "--data-dir",
                                   server.data_dir, "stats"], capture_output=True,
                                  text=True, timeout=30, env=child_env())
            assert done.returncode == 0 and "uptime" in done.stdout, done.stderr
        assert piped.proc.poll() is None and terminal.child.isalive()
        assert "parley>" not in terminal.screen_text()
        assert "shutting down" not in piped.log() + terminal.screen_text()
        assert piped.stop(signal.SIGTERM) == 0
    finally:
        piped.kill_group()
        terminal.stop()


# ------------------------------------------------------------ no terminal needed


def test_split_line_says_what_is_wrong_and_keeps_good_lines():
    assert console.split_line('broadcast "hello there"') == (["broadcast", "hello there"],
                                                              None)
    assert console.split_line("") == ([], None)
    for bad in ("who 'x", "who \x1b[2J", "who \udcff", "x" * (admin_commands.LINE_MAX + 1)):
        words, problem = console.split_line(bad)
        assert words is None and problem.endswith("nothing was run.")
    assert "4,097 characters" in console.split_line("x" * 4000, dropped=97)[1]


def test_visible_escapes_what_could_change_the_screen():
    assert console.visible("a\x1b[2Jb\nc\udcff") == "a\\x1b[2Jb\nc\\udcff"


def test_a_console_only_in_the_foreground_of_a_terminal():
    class Options:
        no_console = False

    class Piped:
        def isatty(self):
            return False

    assert not console.wanted(Options(), stdin=Piped(), stdout=Piped())
    Options.no_console = True
    assert not console.wanted(Options())
