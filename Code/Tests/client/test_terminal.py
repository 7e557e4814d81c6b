"""Tests for Modules/client/terminal.py: the parts of the prompt that need no terminal.

Tab completion of command names, people after `send` and help topics
after `help`; the body editor's end: a closing '.' line and empty last
lines are dropped.
"""


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
