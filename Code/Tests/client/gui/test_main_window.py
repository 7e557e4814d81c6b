"""Tests for Modules/client/gui/main_window.py: the main window of the real client.

Like test_app.py: a real server, the real `client.py --gui` on a virtual X
display driven with xdotool, checked through its dump (texts) and
screenshots (pixels); other people are batch clients. Covered: a long
inbox fetched a page at a time as it is scrolled; a file
downloaded with its progress bar and SHA-256 check, the window answering
while a download is held up, a file sent, one declined; the
tabs (sent mail, search, who is online, the conversation with one
person); the account menu (presence off, blocking a name, changing the
password, deleting the account after the confirmation); a file to send
picked with Tk's file chooser (Browse…); a message that arrives while
another window has the focus puts the count in the title and rings the
bell, as the X server hears it (XKB BellNotify, `Tests/support/xbell.py`).
"""

import hashlib
import os
import signal
import tkinter

from Modules.client.gui.bridge import PAGE
from Tests.support import PASSWORD, BatchClient
from Tests.support.clients import run_client
from Tests.support.clients import run_ok as ok
from Tests.support.gui import distinct_colours
from Tests.support.gui import COMPOSE, INBOX, STATUS, VIEW, log_in, logged_in, trusted_gui
from Tests.support.processes import WAIT
from Tests.support.xbell import BellWatcher

TABS = ".main.split.tabs"
FILES = ".main.split.tabs.files.list.list"
TRANSFERS = ".main.split.tabs.files.transfers"
ACCOUNT = ".main.toolbar.account"
NEW_PASSWORD = "a brand new passphrase"


def tab(gui, name):
    gui.tab(TABS, name)


def values_of(gui, tree):
    return [row["values"] for row in gui.rows(tree)]


# ------------------------------------------------------------ a long inbox


def test_a_long_inbox_is_fetched_a_page_at_a_time_as_it_is_scrolled(make_gui, server):
    ok(server, "alice", create=True)
    ok(server, "bob", [f'send alice "Note {n}" "number {n}"' for n in range(1, 61)],
       create=True)
    gui = trusted_gui(make_gui, server, "alice")
    gui.wait(lambda d: len(gui.rows(INBOX)) == PAGE, "the first page")
    subjects = [row["values"][2] for row in gui.rows(INBOX)]
    assert subjects[:2] == ["Note 60", "Note 59"]              # newest first
    box = gui.widget(INBOX)
    gui.xdotool("mousemove", str(box["x"] + box["width"] // 2),
                str(box["y"] + box["height"] // 2))
    for _ in range(3):                                          # the wheel, down
        gui.xdotool("click", "--repeat", "30", "--delay", "10", "5")
        if len(gui.rows(INBOX)) > PAGE:
            break
    gui.wait(lambda d: len(gui.rows(INBOX)) == 60, "the next page at the end")
    assert [row["values"][2] for row in gui.rows(INBOX)][-1] == "Note 1"


# ------------------------------------------------------------ files


def offered_to_alice(make_gui, server, source):
    """alice's window on its Files tab, once bob's file `source` is offered to her."""
    ok(server, "alice", create=True)
    ok(server, "bob", [f"send-file alice {source}"], create=True)
    gui = trusted_gui(make_gui, server, "alice")
    tab(gui, "Files")
    gui.wait(lambda d: gui.rows(FILES), "the file offered")
    return gui


def download_into(gui, tmp_path):
    """The selected file's Download dialog, its folder filled in (not yet OK'd)."""
    gui.click(".main.split.tabs.files.buttons.download")
    target = tmp_path / "downloads"
    target.mkdir()
    gui.fill(".download.body.fields.folder", str(target))
    return target


def test_a_file_downloads_with_a_progress_bar_and_its_check(make_gui, server, tmp_path):
    source = tmp_path / "report.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    gui = offered_to_alice(make_gui, server, source)
    offered = gui.rows(FILES)[0]
    assert offered["values"][1:] == ["from bob", "3.0 MiB", "offered", "report.bin"]
    gui.select_row(FILES, offered["id"])
    target = download_into(gui, tmp_path)
    gui.click(".download.body.buttons.ok")
    result = gui.wait_text(f"{TRANSFERS}.t0.result", "SHA-256 checked")
    assert "matches" in result
    assert gui.widget(f"{TRANSFERS}.t0.bar")["value"] == 100.0
    shot = gui.screenshot("files")
    if shot is not None:
        bar = gui.widget(f"{TRANSFERS}.t0.bar")
        assert distinct_colours(shot, (bar["x"], bar["y"], bar["width"], bar["height"])) > 1
    saved = target / "report.bin"
    assert hashlib.sha256(saved.read_bytes()).digest() == \
        hashlib.sha256(source.read_bytes()).digest()


def test_the_window_answers_while_a_download_is_held_up(make_gui, server, tmp_path):
    """Network work runs off the Tk loop: with alice's user process stopped (SIGSTOP)
    as she starts a download, the window still takes what is typed, and the download
    finishes, checked, once the process goes on."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(2 * 1024 * 1024))
    gui = offered_to_alice(make_gui, server, source)
    gui.select_row(FILES, gui.rows(FILES)[0]["id"])
    target = download_into(gui, tmp_path)
    (user_process,) = server.pids_titled("parley: user alice")
    os.kill(user_process, signal.SIGSTOP)            # the download cannot go on
    try:
        gui.click(".download.body.buttons.ok")
        gui.fill(f"{COMPOSE}.subject", "typed while the file waits")
        gui.wait(lambda d: (gui.widget(f"{COMPOSE}.subject", d) or {}).get("text")
                 == "typed while the file waits", "the window to take the typing")
        result = gui.widget(f"{TRANSFERS}.t0.result") or {}
        assert "SHA-256" not in (result.get("text") or "")
    finally:
        os.kill(user_process, signal.SIGCONT)
    assert "matches" in gui.wait_text(f"{TRANSFERS}.t0.result", "SHA-256 checked")
    assert hashlib.sha256((target / "big.bin").read_bytes()).digest() == \
        hashlib.sha256(source.read_bytes()).digest()


def test_a_file_is_sent_to_someone(make_gui, server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    source = tmp_path / "notes.txt"
    source.write_text("for Monday\n")
    gui = trusted_gui(make_gui, server, "alice")
    tab(gui, "Files")
    gui.click(".main.split.tabs.files.buttons.send_file")
    gui.fill(".send_file.body.fields.to", "bob")
    gui.fill(".send_file.body.fields.path", str(source))
    gui.click(".send_file.body.buttons.ok")
    gui.wait_text(f"{TRANSFERS}.t0.result", "the server checked its SHA-256")
    assert gui.widget(f"{TRANSFERS}.t0.bar")["value"] == 100.0
    files = [o for o in ok(server, "bob", ["files"]) if o["type"] == "files"][0]["files"]
    assert [(f["from"], f["name"], f["size"]) for f in files] == [("alice", "notes.txt", 11)]


def test_a_file_to_send_can_be_picked_with_the_file_chooser(make_gui, server, tmp_path):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    source = tmp_path / "picked.txt"
    source.write_text("chosen, not typed\n")
    gui = trusted_gui(make_gui, server, "alice")
    tab(gui, "Files")
    gui.click(".main.split.tabs.files.buttons.send_file")
    gui.fill(".send_file.body.fields.to", "bob")
    gui.click(".send_file.body.fields.browse_path")
    chooser = gui.wait(lambda d: _file_name_entry(gui, d), "Tk's file chooser")
    gui.fill(chooser, str(source))
    gui.key("Return")
    gui.wait(lambda d: _file_name_entry(gui, d) is None, "the chooser closed")
    gui.wait_text(".send_file.body.fields.path", str(source))
    gui.click(".send_file.body.buttons.ok")
    gui.wait_text(f"{TRANSFERS}.t0.result", "the server checked its SHA-256")
    files = [o for o in ok(server, "bob", ["files"]) if o["type"] == "files"][0]["files"]
    assert [(f["name"], f["size"]) for f in files] == [("picked.txt", 18)]


def _file_name_entry(gui, dump):
    """The path of the file chooser's "File name" entry, while it is open."""
    return next((w["path"] for w in dump["widgets"] if "__tk_filedialog" in w["path"]
                 and w["class"] in ("Entry", "TEntry") and w["path"].endswith("ent")), None)


def test_a_file_offered_is_declined(make_gui, server, tmp_path):
    source = tmp_path / "unwanted.txt"
    source.write_text("no thanks\n")
    gui = offered_to_alice(make_gui, server, source)
    gui.select_row(FILES, gui.rows(FILES)[0]["id"])
    gui.click(".main.split.tabs.files.buttons.decline")
    gui.wait_text(STATUS, "was sent back to its sender")
    listed = [o for o in ok(server, "alice", ["files"]) if o["type"] == "files"][0]["files"]
    gui.wait(lambda d: [r["values"][3] for r in gui.rows(FILES)] ==
             [f["state"] for f in listed], "the list as the server has it")
    files = [o for o in ok(server, "bob", ["files"]) if o["type"] == "files"][0]["files"]
    assert [f["state"] for f in files] == ["declined"]


# ------------------------------------------------------------ the tabs


def test_sent_search_online_and_a_conversation(make_gui, server):
    ok(server, "alice", create=True)
    ok(server, "bob", ['send alice "Budget" "the budget for 2027"'], create=True)
    bob = BatchClient(server, "bob")
    try:
        gui = trusted_gui(make_gui, server, "alice")
        gui.fill(f"{COMPOSE}.to", "bob")
        gui.fill(f"{COMPOSE}.subject", "Budget")
        gui.focus(f"{COMPOSE}.body")
        gui.type("agreed on the budget")
        gui.key("ctrl+Return")
        bob.wait_type("message", subject="Budget")
        tab(gui, "Sent")
        pane = ".main.split.tabs.sent.list"
        gui.wait(lambda d: gui.rows(pane), "the sent list")
        assert values_of(gui, pane)[0][0] == "bob" and values_of(gui, pane)[0][3] == "Budget"
        gui.fill(".main.toolbar.search_text", "budget")
        gui.key("Return")
        found = ".main.split.tabs.found.list"
        gui.wait(lambda d: len(gui.rows(found)) == 2, "both messages found")
        assert sorted(v[0] for v in values_of(gui, found)) == ["alice → bob", "bob → alice"]
        tab(gui, "Online")
        online = ".main.split.tabs.online.list"
        gui.wait(lambda d: {"alice", "bob"} <= {v[0] for v in values_of(gui, online)},
                 "alice and bob online")
        tab(gui, "Inbox")
        gui.select_row(INBOX, gui.rows(INBOX)[0]["id"])
        gui.wait_text(VIEW, "the budget for 2027")
        gui.click(".main.toolbar.conversation")
        text = gui.wait_text(VIEW, "Your conversation with bob")
        assert "the budget for 2027" in text and "agreed on the budget" in text
    finally:
        bob.close()


def test_the_greeting_and_the_message_of_the_day_are_shown(make_server, make_gui):
    server = make_server("--greeting", "Welcome to the class server",
                         "--motd", "Exams on Friday")
    ok(server, "alice", create=True)
    gui = trusted_gui(make_gui, server, "alice")
    text = gui.wait_text(VIEW, "Message of the day:\nExams on Friday")
    assert "The server says:\nWelcome to the class server" in text


def test_a_message_to_nobody_comes_back_and_says_so(make_gui, server):
    ok(server, "alice", create=True)
    gui = trusted_gui(make_gui, server, "alice")
    gui.fill(f"{COMPOSE}.to", "nobody")
    gui.fill(f"{COMPOSE}.subject", "Hello?")
    gui.focus(f"{COMPOSE}.body")
    gui.type("anyone there")
    gui.key("ctrl+Return")
    gui.wait_text(STATUS, "Not delivered:")
    gui.wait(lambda d: any(r["values"][2].startswith("Returned: Hello?")
                           for r in gui.rows(INBOX)), "the returned message listed")


# ------------------------------------------------------------ the account menu


def test_presence_off_and_a_blocked_name(make_gui, server):
    ok(server, "carol", create=True)
    ok(server, "alice", create=True)
    gui = trusted_gui(make_gui, server, "alice")
    gui.wait_text(STATUS, "Logged in")
    gui.choose(ACCOUNT, "Show me as online")
    gui.wait_text(STATUS, "off")
    who = [o for o in ok(server, "carol", ["who"]) if o["type"] == "who"][0]
    assert "alice" not in [p["user"] for p in who["people"]]
    gui.choose(ACCOUNT, "Blocked names…")
    gui.fill(".blocked.body.name", "carol")
    gui.click(".blocked.body.buttons.block")
    gui.wait(lambda d: any(r["values"][0].startswith("carol")
                           for r in gui.rows(".blocked.body.names")), "carol listed")
    code, objects, _err = run_client(server, "carol", ['send alice "Hi" "there"'])
    sent = [o for o in objects if o["type"] == "sent"][0]
    assert sent["bounced"] is True


def test_the_password_is_changed_and_the_account_deleted(make_gui, server):
    ok(server, "alice", create=True)
    gui = trusted_gui(make_gui, server, "alice")
    gui.choose(ACCOUNT, "Change password…")
    gui.fill(".passwd.body.fields.old", PASSWORD, masked=True)
    gui.fill(".passwd.body.fields.new", NEW_PASSWORD, masked=True)
    gui.fill(".passwd.body.fields.repeat", NEW_PASSWORD + "x", masked=True)
    gui.click(".passwd.body.buttons.ok")
    gui.wait_text(".passwd.body.message", "The two new passwords differ")
    gui.fill(".passwd.body.fields.repeat", NEW_PASSWORD, masked=True)
    gui.click(".passwd.body.buttons.ok")
    gui.wait_text(STATUS, "Your password is changed.")
    assert run_client(server, "alice", password=NEW_PASSWORD)[0] == 0
    gui.choose(ACCOUNT, "Delete account…")
    gui.wait_text(".confirm_delete.body.message", "Delete the account alice?")
    gui.click(".confirm_delete.body.buttons.cancel")
    gui.wait(lambda d: gui.widget(".confirm_delete", d) is None, "the question closed")
    gui.choose(ACCOUNT, "Delete account…")
    gui.click(".confirm_delete.body.buttons.yes")
    gui.wait_text(".login.message", "The account is deleted.")
    code, _objects, stderr = run_client(server, "alice", password=NEW_PASSWORD)
    assert code == 1 and "There is no account alice" in stderr
    log_in(gui, "alicia", button="create")                # the same run goes on
    logged_in(gui, "alicia")


def test_a_message_while_unfocused_shows_in_the_title(make_gui, server, display):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    gui = trusted_gui(make_gui, server, "alice")
    other = tkinter.Tk(screenName=display)           # another program takes the focus
    bells = BellWatcher(display)
    try:
        other.geometry("200x100+1000+600")
        other.update()
        other.focus_force()
        other.update()
        gui.wait(lambda d: d["focus"] is None, "the GUI to lose the focus")
        ok(server, "bob", ['send alice "Ping" "hello"'])
        gui.wait(lambda d: d["title"] == "Parley — alice (1 new)", "the count in the title")
        bells.wait_for(1, WAIT)                       # and the X server rang the bell
    finally:
        bells.close()
        other.destroy()
    gui.focus(f"{COMPOSE}.to")                        # back: the title is plain again
    gui.wait(lambda d: d["title"] == "Parley — alice", "the plain title")
