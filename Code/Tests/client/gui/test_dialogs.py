"""Tests for Modules/client/gui/dialogs.py: the small dialogs, as real Tk widgets.

On the test's virtual display: the trust question answers exactly once
(closing the window is Cancel), a confirmation gives the focus to the safe
answer and calls back only on yes, a form keeps itself open with the
check's sentence until its fields pass, and the block list shows names and
hands on the one typed or picked.
"""

import pytest

pytest.importorskip("tkinter", reason="The GUI tests need Tk for Python (Debian: "
                    "apt-get install python3-tk); skipping them.")

from Modules.client.gui.dialogs import BlockDialog, ConfirmDialog, FormDialog, TrustDialog


def test_the_trust_question_answers_once_and_closing_is_cancel(tk_root):
    answers = []
    dialog = TrustDialog(tk_root, "Its key fingerprint is SHA256:abc", answers.append)
    tk_root.update()
    assert "SHA256:abc" in dialog.message.cget("text")
    dialog.cancel()                     # what the window's close button does
    dialog.cancel()
    assert answers == [False]
    answers.clear()
    TrustDialog(tk_root, "again", answers.append)._say(True)
    assert answers == [True]


def test_a_confirmation_calls_back_only_on_yes(tk_root):
    said = []
    no = ConfirmDialog(tk_root, "q1", "Delete?", "Delete it?", "Delete", lambda: said.append(1))
    tk_root.update()
    assert str(tk_root.focus_get()) == ".q1.body.buttons.cancel"     # the safe answer
    no.cancel()
    assert said == []
    ConfirmDialog(tk_root, "q2", "Delete?", "Delete it?", "Delete",
                  lambda: said.append(1))._yes()
    assert said == [1]


def test_a_form_stays_open_with_its_check_s_sentence(tk_root):
    got = []
    form = FormDialog(tk_root, "f", "Forward", "To whom?", (("to", "To", False),
                                                           ("secret", "Secret", True)),
                      got.append, check=lambda v: None if v["to"] else "Say whom.",
                      browse={"to": "file"})
    tk_root.update()
    assert form.entries["secret"].cget("show") == "•"
    assert tk_root.nametowidget(".f.body.fields.browse_to").cget("text") == "Browse…"
    form._ok()
    assert got == [] and form.message.cget("text") == "Say whom." and not form.done
    form.entries["to"].insert(0, "bob")
    form._ok()
    assert got == [{"to": "bob", "secret": ""}] and form.done


def test_the_block_list_shows_names_and_passes_the_one_picked(tk_root):
    blocked, unblocked = [], []
    dialog = BlockDialog(tk_root, blocked.append, unblocked.append)
    dialog.show(["carol   since 2026-12-01 10:00", "dan   since 2026-12-02 11:00"])
    tk_root.update()
    assert dialog.names.get(0, "end")[1].startswith("dan")
    dialog.names.selection_set(1)
    dialog._picked(None)
    dialog._act(unblocked.append)
    assert unblocked == ["dan"]
    dialog.entry.delete(0, "end")
    dialog._act(blocked.append)                # nothing typed: nothing asked
    assert blocked == []
