"""Tests for Modules/client/gui/login_window.py: the real client's login window.

The real `client.py --gui` on a virtual X display against a real server,
driven with xdotool and read through its dump: each mistake a person can
make at the login gets one sentence under the form, and the form can be
tried again (Return submits); --user fills the name in and puts the focus
on the password; after the administrator reset the password, a dialog
asks for a new one (checked against the rule before it is sent).
"""

from Tests.support import PASSWORD, run_admin
from Tests.support.clients import run_client
from Tests.support.clients import run_ok as ok
from Tests.support.gui import log_in, logged_in

MESSAGE = ".login.message"
NEW = "a brand new passphrase"


def pinned(make_gui, server, *extra):
    return make_gui(server, *extra, known_hosts=str(server.tmp_path / "known_hosts"))


def test_a_wrong_password_is_said_and_the_next_try_with_return_works(make_gui, server):
    ok(server, "alice", create=True)
    gui = pinned(make_gui, server)
    log_in(gui, "alice", password="not the password")
    gui.wait_text(MESSAGE, "Wrong password for alice.")
    assert gui.text(".login.password") == ""                # cleared after each try
    gui.wait(lambda d: d.get("focus") == ".login.password", "the focus on the password")
    gui.type(PASSWORD)
    gui.key("Return")
    logged_in(gui, "alice")


def test_a_missing_account_and_an_existing_one_say_which_button_to_press(make_gui, server):
    ok(server, "alice", create=True)
    gui = pinned(make_gui, server)
    log_in(gui, "zed")
    gui.wait_text(MESSAGE, "There is no account zed on this server; press Create account "
                           "to make it.")
    gui.fill(".login.user", "alice")
    gui.fill(".login.password", PASSWORD, masked=True)
    gui.click(".login.buttons.create")
    gui.wait_text(MESSAGE, "The account alice exists already; press Log in to use it.")


def test_a_bad_address_and_a_server_that_is_not_there(make_gui, server, tmp_path):
    gui = pinned(make_gui, server)
    gui.fill(".login.address", "127.0.0.1:99999")
    log_in(gui, "alice")
    gui.wait_text(MESSAGE, "'127.0.0.1:99999' is not a server address")
    server.kill_group()
    gui.fill(".login.address", f"127.0.0.1:{server.port}")
    gui.fill(".login.password", PASSWORD, masked=True)
    gui.key("Return")
    gui.wait_text(MESSAGE, f"Cannot connect to 127.0.0.1:{server.port}: connection refused.")


def test_user_fills_in_the_name_and_the_focus_waits_on_the_password(make_gui, server):
    ok(server, "alice", create=True)
    gui = pinned(make_gui, server, "--user", "alice")
    assert gui.text(".login.user") == "alice"
    gui.wait(lambda d: d.get("focus") == ".login.password", "the focus on the password")
    gui.type(PASSWORD)
    gui.key("Return")
    logged_in(gui, "alice")


def test_after_a_password_reset_a_new_one_is_chosen_in_a_dialog(make_gui, server):
    ok(server, "alice", create=True)
    code, reset, _err = run_admin(server, "reset-password", "alice", as_json=True)
    assert code == 0
    gui = pinned(make_gui, server)
    log_in(gui, "alice", password=reset["password"])
    gui.wait_widget(".new_password.body.fields.new")
    gui.fill(".new_password.body.fields.new", "short", masked=True)
    gui.fill(".new_password.body.fields.repeat", "short", masked=True)
    gui.key("Return")
    gui.wait(lambda d: (gui.widget(".new_password.body.message", d) or {}).get("text", "")
             .startswith("A password"), "the rule's sentence in the dialog")
    gui.fill(".new_password.body.fields.new", NEW, masked=True)
    gui.fill(".new_password.body.fields.repeat", NEW, masked=True)
    gui.click(".new_password.body.buttons.ok")
    logged_in(gui, "alice")
    assert run_client(server, "alice", password=NEW)[0] == 0
