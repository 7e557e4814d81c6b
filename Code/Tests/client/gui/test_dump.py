"""Tests for Modules/client/gui/dump.py: the debugging dump of the visible texts.

Real Tk widgets on the test's virtual display (the `tk_root` fixture): what
each kind of widget puts in the dump, a password shown as bullets only,
hidden widgets left out, widgets Tk's own dialogs create in Tcl
included, and the file written (privately) only when what is visible
changed. The real client's use of it is what every other GUI test reads.
"""

import json
import os
import stat
import pytest

tkinter = pytest.importorskip("tkinter", reason="The GUI tests need Tk for Python (Debian: "
                              "apt-get install python3-tk); skipping them.")
from tkinter import ttk  # noqa: E402  (after the check that Tk is there)

from Modules.client.gui.dump import Dumper, snapshot


def by_path(data):
    return {entry["path"]: entry for entry in data["widgets"]}


def test_the_visible_texts_of_each_kind_of_widget(tk_root):
    tk_root.title("A title")
    frame = ttk.Frame(tk_root, name="f")
    frame.pack()
    ttk.Label(frame, name="label", text="Hello").pack()
    entry = ttk.Entry(frame, name="entry")
    entry.insert(0, "typed")
    entry.pack()
    secret = ttk.Entry(frame, name="secret", show="*")
    secret.insert(0, "hunter2")
    secret.pack()
    text = tkinter.Text(frame, name="text", height=3)
    text.insert("1.0", "two\nlines")
    text.pack()
    tree = ttk.Treeview(frame, name="tree", columns=("a", "b"), show="headings")
    tree.insert("", "end", iid="7", values=("x", "y"), tags=("unread",))
    tree.pack()
    bar = ttk.Progressbar(frame, name="bar", maximum=100, value=40)
    bar.pack()
    ttk.Label(frame, name="hidden", text="never packed")
    tk_root.update()
    shown = by_path(snapshot(tk_root))
    assert shown["."]["text"] == "A title"
    assert shown[".f.label"]["text"] == "Hello"
    assert shown[".f.entry"]["text"] == "typed"
    assert shown[".f.secret"]["text"] == "•" * 7
    assert "hunter2" not in json.dumps(snapshot(tk_root))
    assert shown[".f.text"]["text"] == "two\nlines"
    row = shown[".f.tree"]["rows"][0]
    assert (row["id"], row["values"], row["tags"]) == ("7", ["x", "y"], ["unread"])
    assert len(row["box"]) == 4
    assert shown[".f.bar"]["value"] == 40.0
    assert ".f.hidden" not in shown
    assert shown[".f.label"]["width"] > 0 and shown[".f.label"]["x"] >= 0


def test_widgets_made_in_tcl_as_tks_own_dialogs_make_them_are_dumped_too(tk_root):
    """Tk's file chooser creates its widgets in Tcl; tkinter knows none of them."""
    tk_root.tk.eval("toplevel .__chooser; ttk::entry .__chooser.ent; pack .__chooser.ent;"
                    " .__chooser.ent insert 0 /tmp/picked.txt; label .__chooser.l"
                    " -text {File name:}; pack .__chooser.l")
    tk_root.tk.call("focus", "-force", ".__chooser.ent")
    tk_root.update()
    dumped = by_path(snapshot(tk_root))
    assert dumped[".__chooser.ent"]["text"] == "/tmp/picked.txt"
    assert dumped[".__chooser.l"]["text"] == "File name:"
    assert dumped[".__chooser"]["class"] == "Toplevel"


def test_the_file_is_private_and_rewritten_only_after_a_change(tk_root, tmp_path):
    label = ttk.Label(tk_root, name="label", text="one")
    label.pack()
    tk_root.update()
    path = tmp_path / "dump.json"
    dumper = Dumper(tk_root, str(path))
    dumper.write()
    first = json.loads(path.read_text())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    dumper.write()
    assert json.loads(path.read_text())["seq"] == first["seq"]      # nothing changed
    label.configure(text="two")
    tk_root.update()
    dumper.write()
    again = json.loads(path.read_text())
    assert again["seq"] == first["seq"] + 1
    assert by_path(again)[".label"]["text"] == "two"
