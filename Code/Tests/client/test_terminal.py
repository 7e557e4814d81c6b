"""Tests for Modules/client/terminal.py: the parts of the prompt that need no terminal.

Tab completion of command names, people after `send` and help topics
after `help`; the body editor's end: a closing '.' line and empty last
lines are dropped; a Ctrl-C between two body lines of a dumb terminal.
"""

import os
import signal

from Modules.client import terminal


def test_body_editor_end_marker():
    from Modules.client.terminal import strip_end_marker
    assert strip_end_marker("one\ntwo\n.") == "one\ntwo"
    assert strip_end_marker(".") == ""
    assert strip_end_marker("no marker") == "no marker"


def _completions(completer, text):
    from prompt_toolkit.document import Document
    return [c.text for c in completer.get_completions(Document(text), None)]


def test_completion_of_commands_people_and_help_topics():
    from Modules.client.terminal import CommandCompleter, command_names
    completer = CommandCompleter(command_names(["reconnect", "send"]),
                                 lambda: ["bob", "bobby", "carol"])
    assert _completions(completer, "inb") == ["inbox"]
    assert _completions(completer, "rec") == ["reconnect"]
    assert _completions(completer, "send b") == ["bob", "bobby"]
    assert _completions(completer, "send ") == ["bob", "bobby", "carol"]
    assert _completions(completer, "help sen") == ["send", "send-file", "sent"]
    assert _completions(completer, "read ") == []
    assert _completions(completer, 'send bob "x') == []
    assert command_names(["send"]).count("send") == 1


def test_body_editor_drops_empty_last_lines():
    from Modules.client.terminal import strip_end_marker
    assert strip_end_marker("one\ntwo\n\n") == "one\ntwo"
    assert strip_end_marker("one\n.\n") == "one\n."     # only a final '.' line ends it


def test_a_ctrl_c_between_two_body_lines_is_kept_for_the_next_prompt():
    """TERM=dumb types a body line by line; between two prompts the terminal is
    cooked and Ctrl-C is a SIGINT. It must not raise between a line's return and
    its keeping (the line would be lost): it is a flag the next prompt reads."""
    before = signal.getsignal(signal.SIGINT)
    with terminal.ctrl_c_between_prompts() as pressed:
        assert not pressed()
        os.kill(os.getpid(), signal.SIGINT)          # no KeyboardInterrupt here
        assert pressed() and not pressed()           # once
    assert signal.getsignal(signal.SIGINT) is before
