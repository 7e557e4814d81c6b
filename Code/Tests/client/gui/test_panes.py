"""Tests for Modules/client/gui/panes.py: the lists, the message view, the transfers.

Real Tk widgets on the test's virtual display. What someone else chose is
shown as inert text (control characters and bidi overrides as visible
escapes); the inbox marks unread rows, puts pushes on top, asks for the
next page only at its end and only while the server has more; the
message view is read-only; a transfer row shows its bar and its result.
The compose pane: completion of known names, the checks before sending
(the server's own limits), Tab completing the To field, Ctrl-Enter
handing the draft over, `fill` starting a reply.
"""

import pytest

pytest.importorskip("tkinter", reason="The GUI tests need Tk for Python (Debian: "
                    "apt-get install python3-tk); skipping them.")

from Modules import rules  # noqa: E402
from Modules.client.command_words import UsageError  # noqa: E402
from Modules.client.gui.panes import (  # noqa: E402
    UNREAD,
    ComposePane,
    InboxPane,
    MessageView,
    Transfers,
    check_draft,
    completions,
    inbox_row,
)


def entry(number, subject="Hi", unread=True, sender="bob"):
    return {"id": number, "from": sender, "subject": subject, "kind": "message",
            "sent_at": "2026-12-02T10:00:00.000Z", "unread": unread}


def test_a_row_shows_what_others_chose_as_inert_text():
    item, values, tags = inbox_row(entry(3, "a\x1b[2Jb\u202ec", sender="e\x07ve"))
    assert item == 3 and values[0] == UNREAD and tags == ("unread",)
    assert values[1] == "e\\x07ve" and values[2] == "a\\x1b[2Jb\\u202ec"
    bounce = inbox_row({**entry(4, "x", unread=False), "kind": "bounce", "note": "no such"})
    assert bounce[1][0] == "" and bounce[1][2] == "Returned: x — no such"


def test_the_inbox_pages_lazily_and_puts_pushes_on_top(tk_root):
    asked = []
    inbox = InboxPane(tk_root, lambda item: None, asked.append)
    inbox.frame.pack()
    inbox.page({"messages": [entry(n) for n in range(60, 10, -1)], "more": True,
                "before": None})
    tk_root.update()
    assert asked == []                        # the first screen does not reach the end
    inbox.tree.yview_moveto(1.0)
    tk_root.update()
    assert asked == [11]                       # before the oldest shown
    inbox.tree.yview_moveto(0.5)
    inbox.tree.yview_moveto(1.0)
    tk_root.update()
    assert asked == [11]                       # one request at a time
    inbox.page({"messages": [entry(n) for n in range(10, 0, -1)], "more": False,
                "before": 11})
    inbox.arrived({**entry(61, "New"), "via": "push"})
    tk_root.update()
    items = inbox.tree.get_children("")
    assert len(items) == 61 and items[0] == "61" and items[-1] == "1"
    inbox.mark_read(61)
    assert inbox.unread_count() == 60 and inbox.more is False


def test_the_message_view_is_read_only_and_inert(tk_root):
    view = MessageView(tk_root)
    view.frame.pack()
    view.message({"id": 5, "from": "bob", "to": "alice", "subject": "S",
                  "body": "line\n\x1b]0;title\x07", "sent_at": "2026-12-02T10:00:00.000Z",
                  "kind": "message"})
    text = view.text.get("1.0", "end-1c")
    assert "Message #5" in text and "From:     bob" in text
    assert text.endswith("line\n\\x1b]0;title\\x07")
    assert str(view.text.cget("state")) == "disabled"


def test_a_transfer_row_shows_progress_and_result(tk_root):
    rows = Transfers(tk_root)
    rows.frame.pack()
    rows.start("file1", "report.pdf", "download")
    rows.progress("file1", {"name": "report.pdf", "done": 512, "size": 1024})
    label, bar, result = rows.rows["file1"]
    assert float(bar.cget("value")) == 50.0 and result.cget("text").startswith("50%")
    rows.finished("file1", "Saved; SHA-256 checked: matches.")
    assert float(bar.cget("value")) == 100.0 and "matches" in result.cget("text")


# ------------------------------------------------------------ the compose pane


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
