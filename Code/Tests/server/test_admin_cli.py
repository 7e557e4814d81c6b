"""The admin command line against real daemons: `Modules/server/admin_cli.py`.

Every command through `server_daemon.py admin`, checked where people see
its effect (a client's push or notice, a login, the audit file), the
statistics after logins, logouts, disconnects and broadcasts, the IP
ledger after logins from two loopback addresses, `--json` and the exit
statuses, and the one-line errors (no server, not allowed, bad command).
"""

import os
import signal

from Modules.wire.framing import CLOSED
from Tests.support import (
    PASSWORD,
    RawClient,
    run_admin,
    send,
    session,
    wait_until,
)


def admin_ok(server, *words):
    code, out, err = run_admin(server, *words)
    assert code == 0, (words, out, err)
    return out


def admin_json(server, *words):
    code, data, err = run_admin(server, *words, as_json=True)
    assert code == 0 and data["status"] == 0, (words, data, err)
    return data


def next_system(client):
    while (event := client.next_event()) is not CLOSED:
        if getattr(event, "op", None) == "System":
            return event.data
    return None


def test_help_lists_every_command_and_bad_command_lines_exit_2(server):
    text = admin_ok(server, "help")
    for name in ("who", "users", "stats", "ledger", "broadcast", "announce", "kick",
                 "suspend", "unsuspend", "reset-password", "delete-user", "greeting", "motd",
                 "audit", "log-level", "shutdown"):
        assert f"\n{name}" in text
    for words, said in ((("frobnicate",), "Unknown command 'frobnicate'"),
                        (("kick",), "Usage: kick USER"), (("ledger", "a", "b"), "Usage"),
                        (("shutdown", "--in", "soon"), "whole seconds")):
        code, out, err = run_admin(server, *words)
        assert code == 2 and said in err and out == "", (words, err)
    assert run_admin(server)[0] == 2


def test_without_a_server_the_error_is_one_line(tmp_path):
    code, out, err = run_admin(None, "who", data_dir=str(tmp_path / "nothing"))
    assert code == 1 and out == ""
    assert err.strip() == f"parley admin: no Parley server is running on {tmp_path}/nothing"


def test_who_stats_and_the_ledger_after_logins_from_two_addresses(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob", source="127.0.0.2")
    send(alice, "bob")
    wrong = RawClient(server.port, source="127.0.0.3")
    prompt = wrong.handshake()
    wrong.send("Login", username="alice")
    wrong.next_event()
    wrong.send("Login", password="not the password")
    assert wrong.next_event().data["prompt"] == "password"
    who = admin_json(server, "who")["sessions"]
    assert sorted((s["user"], s["address"]) for s in who) == [("alice", "127.0.0.1"),
                                                               ("bob", "127.0.0.2")]
    assert "alice" in admin_ok(server, "who") and prompt
    ledger = admin_json(server, "ledger", "alice")
    assert {e["address"]: (e["attempts"], e["successes"]) for e in ledger["addresses"]} == {
        "127.0.0.1": (1, 1), "127.0.0.3": (1, 0)}
    assert ledger["active"] == ["127.0.0.1"]
    stats = admin_json(server, "stats", "alice")["user"]
    assert (stats["logins"], stats["failed_logins"], stats["messages_sent"],
            stats["sessions"]) == (1, 1, 1, 1)
    server_stats = admin_json(server, "stats")
    assert server_stats["connections"] >= 3 and server_stats["peak_connections"] >= 3
    assert server_stats["totals"]["messages_accepted"] == 1
    assert "sessions now / peak" in admin_ok(server, "stats")
    assert [u["username"] for u in admin_json(server, "users", "b*")["users"]] == ["bob"]


def test_logoffs_count_logouts_and_disconnects(server):
    alice, _ = session(server, "alice")
    alice.send("Logout")
    assert next_system(alice)["event"] == "goodbye"
    bob, _ = session(server, "bob")
    bob.close()                                        # vanishes without a Logout
    wait_until(lambda: admin_json(server, "stats")["totals"]["logoffs"] == 2,
               message="two logoffs")
    users = {u["username"]: u for u in admin_json(server, "users")["users"]}
    assert users["alice"]["logoffs"] == 1 and users["bob"]["logoffs"] == 1
    assert admin_json(server, "who")["sessions"] == []


def test_broadcast_reaches_people_online_and_offline_and_is_counted(server):
    alice, _ = session(server, "alice")
    session(server, "bob")[0].close()
    assert "stored for 2 accounts" in admin_ok(server, "broadcast", "Lab", "closed", "Friday")
    while (event := alice.next_event()).op != "Message":
        pass
    assert (event.data["kind"], event.data["from"], event.data["body"]) == (
        "broadcast", "parley", "Lab closed Friday")
    _bob, backlog = session(server, "bob", create=False)
    assert [m["kind"] for m in backlog] == ["broadcast"]
    assert admin_json(server, "stats", "bob")["user"]["broadcasts_received"] == 1


def test_announce_kick_and_suspend_reach_the_sessions(server):
    alice, _ = session(server, "alice")
    assert admin_ok(server, "announce", "Back", "in", "5").strip() == "Told 1 sessions."
    assert next_system(alice) == {"event": "announce", "message": "Back in 5"}
    assert "Ended 1 sessions" in admin_ok(server, "kick", "alice")
    assert next_system(alice)["event"] == "kicked"
    alice, _ = session(server, "alice", create=False)
    admin_ok(server, "suspend", "alice")
    assert next_system(alice)["event"] == "suspended"
    again = RawClient(server.port)
    assert again.login("alice", PASSWORD).data["code"] == "suspended"
    admin_ok(server, "unsuspend", "alice")
    assert session(server, "alice", create=False)[0]


def test_reset_password_gives_a_one_time_password_and_ends_sessions(server):
    alice, _ = session(server, "alice")
    data = admin_json(server, "reset-password", "alice")
    assert next_system(alice)["event"] == "password_reset"
    assert RawClient(server.port).login("alice", PASSWORD).data["prompt"] == "password"
    fresh = RawClient(server.port)
    assert fresh.login("alice", data["password"]).data["prompt"] == "new_password"


def test_delete_user_returns_unread_mail(server):
    alice, _ = session(server, "alice")
    bob, _ = session(server, "bob")
    send(alice, "bob")
    assert "1 unread messages returned" in admin_ok(server, "delete-user", "bob")
    assert next_system(bob) == {"event": "account_deleted",     # not "in another session"
                                "message": "The server's administrator deleted this account."}
    code, _, err = run_admin(server, "stats", "bob")
    assert code == 1 and "There is no account 'bob'." in err


def test_greeting_and_motd_reach_the_next_logins(server):
    admin_ok(server, "greeting", "Welcome to the lab server")
    admin_ok(server, "motd", "Backups at 02:00")
    assert admin_ok(server, "greeting").strip() == "Welcome to the lab server"
    client = RawClient(server.port)
    prompt = client.handshake()
    assert prompt.data.get("greeting") == "Welcome to the lab server"
    welcome = RawClient(server.port).login("carol", PASSWORD, create=True)
    assert welcome.op == "Welcome" and welcome.data.get("motd") == "Backups at 02:00"
    admin_ok(server, "greeting", "")
    assert admin_ok(server, "greeting").strip() == "No greeting is set."


def test_audit_appends_a_report_and_every_action(server):
    session(server, "alice")
    admin_ok(server, "kick", "alice")
    path = admin_json(server, "audit")["path"]
    admin_ok(server, "audit")
    assert path == os.path.join(server.data_dir, "audit.log")
    text = open(path).read()
    assert "action kick by root: alice" in text
    assert text.count("report by root: 1 accounts") == 2
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert PASSWORD not in text


def test_log_level_and_shutdown(server):
    alice, _ = session(server, "alice")
    assert "Log level WARNING" in admin_ok(server, "log-level", "warning")
    code, _, err = run_admin(server, "log-level", "loud")
    assert code == 1 and "Unknown level" in err
    admin_ok(server, "log-level", "INFO")
    admin_ok(server, "shutdown", "--in", "0", "maintenance")
    assert next_system(alice) == {"event": "announce",
                                  "message": "The server will shut down now: maintenance"}
    assert server.proc.wait(60) == 0
    assert "database closed cleanly" in server.log()
    assert "action shutdown by root: in 0 s" in open(
        os.path.join(server.data_dir, "audit.log")).read()


def test_mailbox_limits_are_shown_set_and_checked_and_a_full_inbox_bounces(server):
    assert "at most 10000 messages and 104857600 bytes" in admin_ok(server, "mailbox-limits")
    code, _, err = run_admin(server, "mailbox-limits", "lots")
    assert code == 1 and "mailbox_messages is a whole number from 1 to" in err
    assert "at most 1 messages and 5000 bytes" in admin_ok(server, "mailbox-limits", "1",
                                                          "5000")
    session(server, "bob")[0].close()
    alice, _backlog = session(server, "alice")
    first, second = send(alice, "bob"), send(alice, "bob")
    assert not first.data["bounced"] and second.data["bounced"]
    assert second.data["note"] == ("The mailbox of 'bob' is full (1 messages); the message "
                                   "was not delivered.")
    alice.close()


def test_a_motd_set_live_outlives_a_restart_of_the_database(make_server):
    """--motd goes to the first database process only: one restarted after a crash
    keeps what the operator set since (it was given --motd again, and lost it)."""
    server = make_server("--motd", "Exam on Friday.")
    admin_ok(server, "motd", "Exam moved to Monday.")
    (old,) = server.pids_titled("parley: database")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: "the database process is back" in server.log(),
               message="the database process restarted")
    shown = wait_until(lambda: run_admin(server, "motd"), message="an answer")
    assert shown[0] == 0 and "Exam moved to Monday." in shown[1], shown
