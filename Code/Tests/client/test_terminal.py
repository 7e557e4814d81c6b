"""Tests for Modules/client/terminal.py: the parts of the prompt that need no terminal.

Tab completion of command names, people after `send` and help topics
after `help`; the body editor's end: a closing '.' line and empty last
lines are dropped; a Ctrl-C between two body lines of a dumb terminal.
"""

import os
import signal
import threading

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


def _body_with_a_ctrl_c_as_a_line_prompt_starts(capsys, starting):
    """`Terminal._body_lines` reading two lines from a pipe, with a SIGINT sent to
    this process as the third line's prompt starts, at the point `starting` names:
    "before" (past the between-prompts check, before the prompt exists) or "in"
    (the prompt's application runs, its keys not yet read). Asked whether to
    throw the draft away, the person says no and types a third line and '.'.
    The body, and what was printed. (A Ctrl-C nobody sees would leave the prompt
    waiting: the pipe is closed after 20 s so that the test fails instead.)"""
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    term = terminal.Terminal(color=False)
    prompts = []
    real_prompt = terminal.Terminal._prompt

    def prompt(self, kind, text, default="", **options):
        prompts.append(kind)
        if kind == "line" and len(prompts) == 3:
            if starting == "before":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                self._session(kind).app.pre_run_callables.append(
                    lambda: os.kill(os.getpid(), signal.SIGINT))
        return real_prompt(self, kind, text, default, **options)

    def confirm(question):
        print(question)
        pipe.send_text("third\n.\n")
        return False

    term._prompt = prompt.__get__(term)
    term.confirm = confirm
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        guard = threading.Timer(20, pipe.close)
        guard.start()
        try:
            pipe.send_text("two lines\nof a draft\n")
            body = term._body_lines("bob")
        finally:
            guard.cancel()
    return body, capsys.readouterr().out


def test_a_ctrl_c_just_as_a_body_line_prompt_starts_asks_and_loses_nothing(capsys):
    """Found by the suite beside two burners: a Ctrl-C (a SIGINT, the terminal
    still cooked) that came after the check between two prompts but before the
    next prompt read keys was seen by nobody; the person waited for a question
    that never came. Either way it now ends that prompt: asked, kept, typed on."""
    for starting in ("before", "in"):
        body, out = _body_with_a_ctrl_c_as_a_line_prompt_starts(capsys, starting)
        assert "Throw away your message to bob (2 lines)? [y/N]" in out, starting
        assert "Kept: type on." in out, starting
        assert body == "two lines\nof a draft\nthird", starting
