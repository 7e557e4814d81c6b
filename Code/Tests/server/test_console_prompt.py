"""Tests for Modules/server/console_prompt.py: the prompt_toolkit half of the console.

The console as a whole (a real daemon in a pseudo-terminal) is tested in
test_console.py; here are the parts that need no terminal: a flood of typed
keys made one paste, the history file's mode and what it keeps, and that a
daemon without a console never loads prompt_toolkit.
"""

import subprocess
import sys

from prompt_toolkit.key_binding import KeyPress
from prompt_toolkit.keys import Keys

from Modules.server import console_prompt
from Tests.support import child_env


def test_a_flood_of_typed_characters_becomes_one_paste_and_enter_stays():
    keys = [KeyPress(char, char) for char in "x" * 100] + [KeyPress(Keys.ControlM, "\r")]
    merged = console_prompt.coalesce(keys, run=64)
    assert [k.key for k in merged] == [Keys.BracketedPaste, Keys.ControlM]
    assert merged[0].data == "x" * 100
    few = [KeyPress("w", "w"), KeyPress("h", "h"), KeyPress(Keys.ControlM, "\r")]
    assert console_prompt.coalesce(few, run=64) == few


def test_history_on_disk_is_private_and_keeps_no_refused_line(tmp_path):
    path = tmp_path / "state" / "parley" / "console_history"
    history = console_prompt.open_history(str(path))
    history.append_string("who")
    history.append_string("x" * 5000)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert "who" in path.read_text() and "x" * 5000 not in path.read_text()
    assert console_prompt.history_path({"XDG_STATE_HOME": "/s"}) == "/s/parley/console_history"


def test_a_daemon_without_a_console_never_loads_prompt_toolkit():
    probe = ("import sys; import Modules.server.daemon; "
             "print('prompt_toolkit' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=child_env(), check=True, timeout=60,
                          cwd=console_prompt.__file__.rsplit("/Modules/", 1)[0])
    assert done.stdout.strip() == "False"
