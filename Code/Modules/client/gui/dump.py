"""A read-only debugging dump of what the windows show: PARLEY_GUI_DUMP=path.

With that environment variable set, the windowed client writes, whenever
what is visible changed (looked at every `EVERY_MS` on the Tk loop), one
JSON file at `path` (replaced atomically, mode 0600):

    {"seq": N, "title": root window title, "focus": path of the focused widget,
     "widgets": [{"path", "class", "x", "y", "width", "height",
                  "text"?, "rows"?, "value"?}]}

one entry per mapped widget, in tree order, with its place on the screen
(root coordinates, what `xdotool mousemove` needs) and its visible text:
a label's or button's text, an entry's contents (a password entry's shown
as bullets, never its value), a text widget's contents, a list's or
tree's rows ({"id", "values", "tags", "selected"}; a tree row's "box" is
its x, y, width, height inside the tree, empty when scrolled away), a progress bar's
value, a notebook's selected tab, an open menu's entries (with their
boxes). A window's title is the "text" of its
Toplevel. Tk's own dialogs (the file chooser) are dumped too, though
tkinter did not create their widgets. Nothing is read back: the dump
changes nothing in the windows.

It is meant for tests and for debugging a display problem; it holds what
the screen holds (subjects, bodies), so it is off unless asked for. Talks
to: the Tk widgets (read only) and the file system. A dump that cannot be
written is skipped silently (it must never disturb the client).
"""

import json
import os
import tempfile
import tkinter

EVERY_MS = 150


def widget_text(widget):
    """The visible text of one widget as a dict of extra fields ({} if none)."""
    kind = widget.winfo_class()
    try:
        if kind in ("Entry", "TEntry", "TCombobox"):
            shown = widget.get()
            if str(widget.cget("show")):
                shown = "•" * len(shown)
            return {"text": shown}
        if kind == "Text":
            return {"text": widget.get("1.0", "end-1c")}
        if kind == "Listbox":
            return {"rows": [{"id": str(i), "values": [item], "tags": [],
                              "selected": i in widget.curselection()}
                             for i, item in enumerate(widget.get(0, "end"))]}
        if kind == "Treeview":
            return {"rows": _tree_rows(widget)}
        if kind == "TProgressbar":
            return {"value": float(widget.cget("value"))}
        if kind == "TNotebook":
            current = widget.select()
            return {"text": widget.tab(current, "text") if current else "",
                    "rows": _tab_rows(widget)}
        if kind == "Menu":
            return {"rows": _menu_rows(widget)}
        if str(widget.tk.call("winfo", "toplevel", widget._w)) == str(widget._w):  # a window
            return {"text": widget.title()}
        text = widget.cget("text")
    except (tkinter.TclError, AttributeError):
        return {}
    return {"text": str(text)} if str(text) else {}


def _tree_rows(tree):
    selected = set(tree.selection())
    return [{"id": item, "values": [str(v) for v in tree.item(item, "values")],
             "tags": list(tree.item(item, "tags")), "selected": item in selected,
             "box": list(tree.bbox(item) or ())}
            for item in tree.get_children("")]


def _tab_rows(notebook, strip=12, step=3):
    """A notebook's tabs, each with its box (found by asking which tab is at
    each point along the tab strip: ttk gives no box of a tab)."""
    spans = {}
    for x in range(0, notebook.winfo_width(), step):
        try:
            index = notebook.index(f"@{x},{strip}")
        except tkinter.TclError:
            continue
        if isinstance(index, int) and notebook.identify(x, strip):
            low, high = spans.get(index, (x, x))
            spans[index] = (min(low, x), max(high, x))
    selected = notebook.index("current") if notebook.select() else None
    return [{"id": str(index), "values": [notebook.tab(index, "text")], "tags": [],
             "selected": index == selected,
             "box": list((spans[index][0], 0, spans[index][1] - spans[index][0] + 1,
                          2 * strip)) if index in spans else []}
            for index in range(notebook.index("end"))]


def _ticked(menu, index):
    """Whether a checkbutton entry is ticked (False for other entries)."""
    if menu.type(index) != "checkbutton":
        return False
    try:
        return str(menu.getvar(str(menu.entrycget(index, "variable")))) in ("1", "True")
    except tkinter.TclError:
        return False


def _menu_rows(menu):
    """A menu's entries; while it is open, each with its box inside the menu."""
    rows, last = [], menu.index("end")
    count = 0 if last is None else last + 1
    tops = [menu.yposition(index) for index in range(count)] + [menu.winfo_height()]
    for index in range(count):
        if menu.type(index) in ("command", "checkbutton", "cascade"):
            rows.append({"id": str(index), "values": [menu.entrycget(index, "label")],
                         "tags": [], "selected": _ticked(menu, index),
                         "box": [0, tops[index], menu.winfo_width(),
                                 tops[index + 1] - tops[index]]})
    return rows


def snapshot(root):
    """The dump's dict for the windows under `root`."""
    widgets = []
    stack = [root]
    while stack:
        widget = stack.pop(0)
        if not widget.winfo_ismapped():
            continue
        entry = {"path": str(widget), "class": widget.winfo_class(),
                 "x": widget.winfo_rootx(), "y": widget.winfo_rooty(),
                 "width": widget.winfo_width(), "height": widget.winfo_height()}
        entry.update(widget_text(widget))
        widgets.append(entry)
        stack.extend(_children(widget))
    focus = str(root.tk.call("focus"))       # a path string, also inside Tk's dialogs
    return {"title": root.title(), "focus": focus or None, "widgets": widgets}


# tkinter classes for widgets Tk's own dialogs create in Tcl (the file chooser)
_FOREIGN_KINDS = {"Entry": tkinter.Entry, "TEntry": tkinter.Entry, "Text": tkinter.Text,
                  "Listbox": tkinter.Listbox, "Menu": tkinter.Menu,
                  "Toplevel": tkinter.Toplevel}


def _children(widget):
    """Every child of `widget`, also those tkinter did not create (its own
    `winfo_children` leaves out Tk's dialogs); those are read through a
    stand-in of the matching tkinter class that creates nothing."""
    children = []
    for path in widget.tk.splitlist(widget.tk.call("winfo", "children", widget._w)):
        try:
            children.append(widget.nametowidget(path))
        except KeyError:
            children.append(_stand_in(widget, str(path)))
    return children


def _stand_in(master, path):
    kind = _FOREIGN_KINDS.get(master.tk.call("winfo", "class", path), tkinter.Widget)
    stand_in = kind.__new__(kind)
    stand_in.tk, stand_in._w, stand_in.master = master.tk, path, master
    stand_in.children, stand_in.widgetName = {}, None
    return stand_in


class Dumper:
    """Writes the snapshot to `path` whenever it changed (see the module text)."""

    def __init__(self, root, path):
        self.root, self.path = root, path
        self._last, self._seq = None, 0

    def start(self):
        self.root.after(EVERY_MS, self._tick)

    def _tick(self):
        try:
            self.write()
        finally:
            self.root.after(EVERY_MS, self._tick)

    def write(self):
        try:
            data = snapshot(self.root)
        except tkinter.TclError:           # a window went away while it was walked
            return
        text = json.dumps(data, ensure_ascii=False, sort_keys=True)
        if text == self._last:
            return
        self._last, self._seq = text, self._seq + 1
        _write_private(self.path, json.dumps({"seq": self._seq, **data}, ensure_ascii=False))


def _write_private(path, text):
    try:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                             prefix=".parley-dump-")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except OSError:
        pass


def start_dump(root, environ):
    """The Dumper if PARLEY_GUI_DUMP names a file, else None."""
    path = environ.get("PARLEY_GUI_DUMP")
    if not path:
        return None
    dumper = Dumper(root, path)
    dumper.start()
    return dumper

