"""The admin role against a real monitor: `Modules/database/admin_answers.py`.

The test process plays the daemon (`database_config` names its pid as the
daemon's); user and login links play the login and user processes. Every
change is checked where people would see it (a Verify, a Bind, a push, a
notice) and in the audit trail.
"""

import os

import pytest

from Modules.database.audit import AUDIT_NAME
from Modules.database.link import DbError, DbUnavailable, Notice, Push
from Tests.support import PASSWORD, running_database, wait_until
from Tests.support.monitor import admin_link, link, login_link, ticket_for, user_link


@pytest.fixture
def database(tmp_path):
    with running_database(tmp_path) as (proc, config):
        yield proc, config


def next_of(db, kind):
    while not isinstance(event := db.read_event(), kind):
        pass
    return event


def audit_lines(config):
    with open(os.path.join(config["data_dir"], AUDIT_NAME)) as audit:
        return audit.read().splitlines()


def test_only_the_daemons_pid_may_open_an_admin_connection(tmp_path):
    with running_database(tmp_path, daemon_pid=1) as (_, config):
        impostor = link(config)
        with pytest.raises(DbError) as info:
            impostor.call("Admin", operator="root")
        assert info.value.code == "refused"
        with pytest.raises(DbUnavailable):             # and the connection is closed
            impostor.call("Who")


def test_a_user_connection_cannot_make_admin_requests(database):
    alice = user_link(database[1], "alice")
    with pytest.raises(DbError):
        alice.call("Kick", username="alice")
    with pytest.raises(DbUnavailable):                 # outside the table: closed
        alice.call("Inbox")


def test_who_users_stats_and_ledger_show_sessions_and_figures(database):
    config = database[1]
    alice, _bob = user_link(config, "alice"), user_link(config, "bob")
    alice.call("Send", to="bob", subject="s", body="b", client_id="c1")
    alice.call("Send", to="nobody", subject="s", body="b", client_id="c2")
    failed = login_link(config, peer="127.0.0.9:5")
    assert failed.call("Verify", username="alice", password="wrong")["outcome"] == \
        "wrong_password"
    admin = admin_link(config)
    sessions = admin.call("Who")["sessions"]
    assert [(s["user"], s["address"]) for s in sessions] == [("alice", "127.0.0.1"),
                                                            ("bob", "127.0.0.1")]
    users = {u["username"]: u for u in admin.call("Users")["users"]}
    assert users["alice"]["messages_sent"] == 1 and users["alice"]["messages_bounced"] == 1
    assert users["bob"]["messages_received"] == 1 and users["bob"]["sessions"] == 1
    assert [u["username"] for u in admin.call("Users", pattern="b*")["users"]] == ["bob"]
    stats = admin.call("UserStats", username="alice")["user"]
    assert (stats["logins"], stats["failed_logins"], stats["last_failed_address"]) == (
        1, 1, "127.0.0.9")
    server = admin.call("ServerStats")
    assert server["sessions"] == 2 and server["peak_sessions"] >= 2
    assert server["totals"]["accounts"] == 2 and server["totals"]["messages_bounced"] == 1
    assert server["database_bytes"] > 0
    ledger = admin.call("Ledger", username="alice")
    assert {e["address"]: (e["attempts"], e["successes"]) for e in ledger["addresses"]} == {
        "127.0.0.1": (1, 1), "127.0.0.9": (1, 0)}
    assert ledger["active"] == ["127.0.0.1"]
    with pytest.raises(DbError) as info:
        admin.call("Ledger", username="nobody")
    assert info.value.code == "not_found" and "nobody" in info.value.reason


def test_a_logoff_is_counted_when_a_session_ends(database):
    config = database[1]
    user_link(config, "alice").close()
    admin = admin_link(config)
    wait_until(lambda: admin.call("UserStats", username="alice")["user"]["logoffs"] == 1,
               message="alice's logoff counted")      # a deadline, not 200 quick tries
    assert admin.call("Who")["sessions"] == []


def test_a_broadcast_is_stored_for_everyone_and_pushed_to_those_online(database):
    config = database[1]
    alice = user_link(config, "alice")
    alice.call("Subscribe")
    ticket_for(config, "bob")                           # offline
    admin = admin_link(config, operator="ops")
    assert admin.call("Broadcast", text="Server maintenance at 18:00\nBe ready.") == {
        "rid": 2, "ok": True, "stored": 2, "live": 1}
    (message,) = next_of(alice, Push).messages
    assert (message["kind"], message["from"], message["subject"]) == (
        "broadcast", "parley", "Server maintenance at 18:00")
    bob = user_link(config, "bob")
    assert [m["kind"] for m in bob.call("Inbox")["messages"]] == ["broadcast"]
    assert admin.call("UserStats", username="bob")["user"]["broadcasts_received"] == 1
    assert admin.call("ServerStats")["totals"]["broadcasts"] == 1
    assert "action broadcast by ops: 37 characters (stored for 2, 1 online)" in \
        audit_lines(config)[0]


def test_announce_tells_those_online_and_stores_nothing(database):
    config = database[1]
    alice = user_link(config, "alice")
    alice.call("Subscribe")
    assert admin_link(config).call("Announce", text="Back in 5 minutes")["told"] == 1
    assert next_of(alice, Notice) == Notice("announce", "Back in 5 minutes")
    assert alice.call("Inbox")["messages"] == []


def test_kick_tells_the_sessions_and_ends_them(database):
    config = database[1]
    alice = user_link(config, "alice")
    assert admin_link(config).call("Kick", username="alice")["ended"] == 1
    assert next_of(alice, Notice).event == "kicked"
    with pytest.raises(DbUnavailable):
        next_of(alice, Notice)
    assert "action kick by root: alice (1 sessions ended)" in audit_lines(config)[0]


def test_a_suspended_account_cannot_log_in_until_unsuspended(database):
    config = database[1]
    alice = user_link(config, "alice")
    admin = admin_link(config)
    assert admin.call("Suspend", username="alice")["ended"] == 1
    assert next_of(alice, Notice).event == "suspended"
    reply = login_link(config).call("Verify", username="alice", password=PASSWORD)
    assert reply["outcome"] == "suspended" and "ticket" not in reply
    user_link(config, "bob").call("Send", to="alice", subject="s", body="b", client_id="x")
    assert admin.call("Suspend", username="alice")["changed"] is False
    assert admin.call("Unsuspend", username="alice")["changed"] is True
    assert user_link(config, "alice").call("Inbox")["messages"]   # the mail was kept


def test_a_reset_password_works_once_and_must_be_changed(database):
    config = database[1]
    ticket_for(config, "alice")
    one_time = admin_link(config).call("ResetPassword", username="alice")["password"]
    login = login_link(config)
    assert login.call("Verify", username="alice", password=PASSWORD)["outcome"] == \
        "wrong_password"
    reply = login.call("Verify", username="alice", password=one_time)
    assert reply["outcome"] == "must_change" and "ticket" not in reply
    reply = login.call("SetPassword", password="a brand new password")
    assert reply["outcome"] == "verified" and reply["ticket"]
    with pytest.raises(DbError):                        # no second change on this connection
        login.call("SetPassword", password="another new password")
    again = login_link(config)
    assert again.call("Verify", username="alice", password="a brand new password")[
        "outcome"] == "verified"
    assert again.call("Verify", username="alice", password=one_time)["outcome"] == \
        "wrong_password"
    assert all(one_time not in line for line in audit_lines(config))


def test_delete_user_returns_unread_mail_and_ends_sessions(database):
    config = database[1]
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    alice.call("Subscribe")
    alice.call("Send", to="bob", subject="s", body="b", client_id="c1")
    assert admin_link(config).call("DeleteUser", username="bob")["bounced"] == 1
    assert next_of(bob, Notice).event == "account_deleted"
    (bounce,) = next_of(alice, Push).messages
    assert bounce["kind"] == "bounce"
    assert login_link(config).call("Exists", username="bob")["outcome"] == "missing"


def test_the_greeting_and_motd_reach_the_login(database):
    config = database[1]
    admin = admin_link(config)
    assert admin.call("Setting", name="greeting")["value"] == ""
    assert admin.call("Setting", name="Greeting", value="Welcome to the lab server")[
        "value"] == "Welcome to the lab server"
    admin.call("Setting", name="motd", value="Backups run at 02:00")
    hello = link(config).call("Hello", role="login", peer="127.0.0.1:2")
    assert hello["greeting"] == "Welcome to the lab server"
    reply = login_link(config).call("Create", username="carol", password=PASSWORD)
    assert reply["motd"] == "Backups run at 02:00"
    admin.call("Setting", name="greeting", value="")
    assert "greeting" not in link(config).call("Hello", role="login")
    with pytest.raises(DbError) as info:
        admin.call("Setting", name="colour", value="x")
    assert info.value.code == "bad_request" and "greeting, motd" in info.value.reason


def test_audit_appends_a_report_of_every_account(database):
    config = database[1]
    user_link(config, "alice")
    admin = admin_link(config, operator="ops")
    reply = admin.call("Audit")
    assert reply["accounts"] == 1 and reply["path"].endswith(AUDIT_NAME)
    admin.call("Audit")
    lines = audit_lines(config)
    assert sum("report by ops: 1 accounts" in line for line in lines) == 2
    assert any(line.startswith("  alice  logins=1") for line in lines)


def test_bad_admin_requests_are_refused_and_change_nothing(database):
    config = database[1]
    admin = admin_link(config)
    for op, fields in (("Kick", {"username": "no body"}), ("Users", {"pattern": "x" * 65}),
                       ("Broadcast", {"text": ""}), ("Announce", {"text": "a\x1b[2Jb"}),
                       ("LogLevel", {"level": "LOUD"}), ("Kick", {"username": "ghost"})):
        with pytest.raises(DbError) as info:
            admin.call(op, **fields)
        assert info.value.code in ("bad_request", "bad_username", "not_found"), (op, info)
    assert admin.call("Who")["sessions"] == []           # the connection goes on
    assert not os.path.exists(os.path.join(config["data_dir"], AUDIT_NAME))
