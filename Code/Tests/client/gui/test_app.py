"""Tests for Modules/client/gui/app.py: the real `python Code/client.py --gui`, end to end.

Each test starts a real server and the real windowed client on a virtual
X display (the fixtures of conftest.py; skipped with one reason when
there is neither Xvfb nor a display), drives it with xdotool like a
person (clicks on the widgets' places, typed text, keys), and checks what
the windows show through the client's debugging dump (PARLEY_GUI_DUMP: the
visible texts) and, on the screenshots of the main screens, that the
widgets checked drew something (pixels). Other people are played by batch
clients. Covered: the first run (trust the key, create the account), a
live message arriving while a draft is half typed (the draft is kept),
read / reply / forward / delete, a server restart (reconnected by itself, a message
finished meanwhile sent once it is back), a changed server key refused;
no display (one sentence, status 1); the pump from the network threads to
Tk going on after a window failed on one event.
"""

import queue
import re
import subprocess
import sys

from Modules import identity
from Modules.client.gui.app import Pump
from Tests.support import CLIENT, PASSWORD, BatchClient, child_env, wait_until
from Tests.support.clients import run_ok as ok
from Tests.support.gui import (
    COMPOSE,
    INBOX,
    LINK,
    STATUS,
    VIEW,
    distinct_colours,
    log_in,
    logged_in,
    trusted_gui,
)

def assert_drawn(gui, shot, path):
    """The widget `path` put more than a flat background on the screenshot."""
    if shot is None:          # no ImageMagick: the dump checks stand alone
        return
    entry = gui.widget(path)
    assert distinct_colours(shot, (entry["x"], entry["y"], entry["width"],
                                   entry["height"])) > 2


# ------------------------------------------------------------ the first run


def test_first_run_shows_the_fingerprint_trusts_it_and_creates_the_account(
        make_gui, server, tmp_path):
    gui = make_gui(server, known_hosts=str(tmp_path / "fresh_known_hosts"))
    assert gui.text(".login.address") == f"127.0.0.1:{server.port}"
    shot = gui.screenshot("login")
    assert_drawn(gui, shot, ".login.buttons.create")
    gui.fill(".login.user", "dave")
    gui.fill(".login.password", PASSWORD, masked=True)
    assert gui.text(".login.password") == "•" * len(PASSWORD)   # masked, in the dump too
    with open(gui.dump_path, encoding="utf-8") as dump:
        assert PASSWORD not in dump.read()
    gui.click(".login.buttons.create")
    question = gui.wait_text(".trust.body.message", "Trust this server?")
    shown = re.search(r"SHA256:\S+", question).group()
    gui.screenshot("trust")
    assert not (tmp_path / "fresh_known_hosts").exists()          # nothing trusted yet
    gui.click(".trust.body.buttons.trust")
    logged_in(gui, "dave")
    pinned = identity.KnownHosts(str(tmp_path / "fresh_known_hosts"))
    key = pinned.known_key(identity.host_id("127.0.0.1", server.port))
    assert identity.fingerprint(key) == shown                      # the key shown is pinned
    shot = gui.screenshot("main")
    assert_drawn(gui, shot, STATUS)
    assert ok(server, "dave")[0] == {"type": "login", "user": "dave", "created": False}


def test_cancel_at_the_fingerprint_sends_nothing(make_gui, server, tmp_path):
    gui = make_gui(server, known_hosts=str(tmp_path / "fresh_known_hosts"))
    log_in(gui, "erin", button="create")
    gui.wait_text(".trust.body.message", "Trust this server?")
    gui.click(".trust.body.buttons.cancel")
    gui.wait_text(".login.message", "The server was not trusted; nothing was sent.")
    assert not (tmp_path / "fresh_known_hosts").exists()


# ------------------------------------------------------------ mail, live


def test_a_message_arriving_while_a_draft_is_half_typed_keeps_the_draft(
        make_gui, server):
    ok(server, "bob", create=True)
    ok(server, "alice", create=True)
    gui = trusted_gui(make_gui, server, "alice")
    bob = BatchClient(server, "bob")
    try:
        gui.fill(f"{COMPOSE}.to", "bob")
        gui.fill(f"{COMPOSE}.subject", "Plans")
        gui.focus(f"{COMPOSE}.body")
        gui.type("first half, ")
        bob.send('send alice "Ping" "are you there?"')
        gui.wait(lambda d: any("Ping" in r["values"] for r in gui.rows(INBOX)),
                 "bob's message in the inbox")
        row = gui.rows(INBOX)[0]
        assert row["values"][:3] == ["●", "bob", "Ping"] and "unread" in row["tags"]
        assert gui.text(f"{COMPOSE}.to") == "bob"                 # the draft is intact
        assert gui.text(f"{COMPOSE}.subject") == "Plans"
        assert gui.text(f"{COMPOSE}.body") == "first half, "
        gui.type("second half")
        gui.key("ctrl+Return")
        message = bob.wait_type("message", subject="Plans")
        assert message["from"] == "alice" and message["body"] == "first half, second half"
        gui.wait(lambda d: not (gui.widget(f"{COMPOSE}.body", d) or {}).get("text"),
                 "the compose pane cleared after sending")
        gui.wait_text(STATUS, "Sent message #")
    finally:
        bob.close()


def test_read_reply_forward_and_delete(make_gui, server):
    ok(server, "alice", create=True)
    ok(server, "carol", create=True)
    ok(server, "bob", ['send alice "Lunch?" "At noon,\x1b[31m red \u202e?"'], create=True)
    gui = trusted_gui(make_gui, server, "alice")
    gui.wait(lambda d: gui.rows(INBOX), "the inbox")
    first = gui.rows(INBOX)[0]
    assert first["values"][1:3] == ["bob", "Lunch?"] and "unread" in first["tags"]
    gui.select_row(INBOX, first["id"])
    body = gui.wait_text(VIEW, "At noon,")
    assert "\\x1b[31m red \\u202e?" in body          # controls shown, never obeyed
    assert "\x1b" not in body and "\u202e" not in body
    gui.wait(lambda d: "unread" not in gui.rows(INBOX)[0]["tags"], "the row marked read")
    gui.screenshot("message")
    gui.click(".main.toolbar.reply")
    gui.wait(lambda d: (gui.widget(f"{COMPOSE}.to", d) or {}).get("text") == "bob",
             "the reply's recipient")
    assert gui.text(f"{COMPOSE}.subject") == "Re: Lunch?"
    gui.focus(f"{COMPOSE}.body")
    gui.type("Yes!")
    gui.click(f"{COMPOSE}.send")
    gui.wait_text(STATUS, "Sent message #")
    replies = [o for o in ok(server, "bob") if o["type"] == "message"]
    assert [(m["from"], m["subject"], m["body"]) for m in replies] == [
        ("alice", "Re: Lunch?", "Yes!")]
    gui.click(".main.toolbar.forward")
    gui.fill(".forward.body.fields.to", "carol")
    gui.fill(".forward.body.fields.note", "FYI")
    gui.key("Return")
    gui.wait_text(STATUS, "Sent message #")
    forwarded = [o for o in ok(server, "carol") if o["type"] == "message"]
    assert [(m["from"], m["subject"]) for m in forwarded] == [("alice", "Fwd: Lunch?")]
    assert forwarded[0]["body"].startswith("FYI\n\n---------- Forwarded message")
    gui.select_row(INBOX, first["id"])
    gui.click(".main.toolbar.delete")
    gui.wait(lambda d: not gui.rows(INBOX), "the message deleted")
    gui.wait_text(STATUS, f"Deleted #{first['id']}.")
    assert [o for o in ok(server, "alice", ["inbox"]) if o["type"] == "inbox"][0][
        "messages"] == []
    said = gui.read_log()                     # the client's own stdout and stderr
    assert "Lunch" not in said and "noon" not in said and PASSWORD not in said


# ------------------------------------------------------------ the server goes away


def test_a_server_restart_is_reconnected_and_the_outbox_sent(make_server, make_gui):
    first = make_server()
    ok(first, "bob", create=True)
    ok(first, "alice", create=True)
    gui = trusted_gui(make_gui, first, "alice")
    first.kill_group()
    gui.wait(lambda d: re.search(r"Offline; reconnecting in \d+ s", gui.text(LINK) or ""),
             "the status line to say offline")
    gui.screenshot("offline")
    gui.fill(f"{COMPOSE}.to", "bob")
    gui.fill(f"{COMPOSE}.subject", "While away")
    gui.focus(f"{COMPOSE}.body")
    gui.type("kept for later")
    gui.key("ctrl+Return")
    gui.wait_text(STATUS, "Not sent yet: the connection is down")
    gui.fill(f"{COMPOSE}.to", "bob")                      # a second draft, half done
    gui.fill(f"{COMPOSE}.subject", "Half")
    second = make_server("--port", str(first.port))     # same data dir, same key
    gui.wait_text(LINK, "Connected", timeout=60)
    gui.wait_text(STATUS, "Sent message #")               # by itself, once back
    assert (gui.text(f"{COMPOSE}.to"), gui.text(f"{COMPOSE}.subject")) == ("bob", "Half")
    wait_until(lambda: [m for m in ok(second, "bob") if m["type"] == "message"])
    messages = [m for m in ok(second, "bob", ["inbox"]) if m["type"] == "inbox"][0]
    assert [m["subject"] for m in messages["messages"]] == ["While away"]
    ok(second, "bob", ['send alice "Back" "again"'])
    gui.wait(lambda d: any("Back" in r["values"] for r in gui.rows(INBOX)),
             "a message after the reconnect")


def test_a_changed_server_key_is_refused_naming_both_fingerprints(make_gui, server,
                                                                  tmp_path):
    pins = tmp_path / "changed_known_hosts"
    other = bytes(range(32))
    identity.KnownHosts(str(pins)).add(identity.host_id("127.0.0.1", server.port), other)
    gui = make_gui(server, known_hosts=str(pins))
    log_in(gui, "alice")
    text = gui.wait_text(".login.message", "HAS CHANGED")
    assert identity.fingerprint(other) in text
    assert re.search(r"server key: SHA256:\S+", text)
    assert "line 1 of" in text
    gui.screenshot("changed_key")


# ------------------------------------------------------------ the run itself


def test_without_a_display_it_says_so_in_one_sentence(server):
    env = child_env()
    env.pop("DISPLAY", None)
    done = subprocess.run([sys.executable, CLIENT, "--gui", "--port", str(server.port)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == ("parley: Cannot open the window: no display (is DISPLAY "
                                   "set?).")


def test_the_pump_goes_on_after_a_window_fails_on_one_event(tk_root):
    events, handled = queue.Queue(), []
    reported = []
    tk_root.report_callback_exception = lambda *error: reported.append(error[0])

    class Window:
        def handle(self, event):
            if event == "bad":
                raise ValueError(event)
            handled.append(event)

    window = Window()
    Pump(tk_root, events, lambda: window).start()
    events.put("bad")
    events.put("good")

    def pumped():
        tk_root.update()
        return handled
    wait_until(pumped, message="the event after the failing one")
    assert handled == ["good"] and reported == [ValueError]
