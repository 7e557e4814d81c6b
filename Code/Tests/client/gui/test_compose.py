"""Tests for Modules/client/gui/compose.py: the compose pane.

Pure functions (completion of known names, the checks before sending,
with the server's own limits), and the real widgets on the test's virtual
display: Tab completes the To field, Ctrl-Enter hands the draft over, and
`fill` starts a reply without touching anything but the pane.
"""

import pytest

from Modules import rules
from Modules.client.command_words import UsageError
pytest.importorskip("tkinter", reason="The GUI tests need Tk for Python (Debian: "
                    "apt-get install python3-tk); skipping them.")

from Modules.client.gui.compose import ComposePane, check_draft, completions


def test_completions_keep_the_order_and_ignore_case():
    assert completions("b", ["bob", "alice", "Bea", "carol"]) == ["bob", "Bea"]
    assert completions("", ["bob", "alice"]) == ["bob", "alice"]


@pytest.mark.parametrize("draft, said", [
    (("", "s", "body"), "Say whom the message is for (To)."),
    (("bob", "s", "  \n"), "The message has no text yet."),
    (("bob", "x" * (rules.SUBJECT_MAX + 1), "body"), "ubject"),
])
def test_a_draft_the_server_would_refuse_is_one_sentence(draft, said):
    with pytest.raises(UsageError) as refused:
        check_draft(*draft)
    assert said in refused.value.reason


def test_a_good_draft_is_passed_on_trimmed():
    assert check_draft(" bob ", "Hi", "there") == ("bob", "Hi", "there")


def test_tab_completes_and_ctrl_enter_sends(tk_root):
    sent = []
    pane = ComposePane(tk_root, lambda: ["bob", "bea"], lambda *d: sent.append(d))
    pane.frame.pack()
    tk_root.update()
    pane.to.insert(0, "be")
    assert pane.complete() == "break"
    assert pane.to.get() == "bea"
    pane.subject.insert(0, "Hello")
    pane.body.insert("1.0", "two\nlines")
    pane.body.focus_force()
    tk_root.update()
    pane.body.event_generate("<Control-Return>")
    tk_root.update()
    assert sent == [("bea", "Hello", "two\nlines")]
    assert pane.draft() == ("bea", "Hello", "two\nlines")      # cleared only when sent
    pane.fill("carol", "Re: x")
    assert pane.draft() == ("carol", "Re: x", "")
    pane.clear()
    assert pane.draft() == ("", "", "")
