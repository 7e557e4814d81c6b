"""What only the operator changes, on real SQLite files: `Modules/database/administration.py`."""

from Modules.database import administration, statistics, storage
from Tests.support.storage import T0, make_users
from Tests.support.storage import run_committed as run


def test_settings_are_set_cleared_and_read(db):
    assert administration.settings(db) == {}
    run(db, administration.set_setting, "greeting", "Hello, class", T0, "root")
    run(db, administration.set_setting, "motd", "Exam on Friday", T0, "root")
    run(db, administration.set_setting, "motd", "", T0 + 1, "ops")        # cleared
    assert administration.settings(db) == {"greeting": "Hello, class"}


def test_suspension_changes_once_and_knows_unknown_accounts(db):
    make_users(db, "alice")
    assert run(db, administration.set_suspended, "alice", True, T0) is True
    assert run(db, administration.set_suspended, "alice", True, T0) is False
    assert storage.credentials(db, "alice").suspended is True
    assert run(db, administration.set_suspended, "alice", False, T0) is True
    assert storage.credentials(db, "alice").suspended is False
    assert run(db, administration.set_suspended, "ghost", True, T0) is None


def test_a_broadcast_reaches_every_active_account_once(db):
    make_users(db, "alice", "bob")
    deliveries = run(db, administration.store_broadcast, "Maintenance tonight\nat 8", T0)
    assert [recipient for recipient, _ in deliveries] == ["alice", "bob"]
    message = deliveries[0][1]
    assert (message["kind"], message["from"], message["subject"], message["body"]) == (
        "broadcast", storage.SYSTEM_SENDER, "Maintenance tonight", "Maintenance tonight\nat 8")
    assert [m["id"] for m in storage.undelivered(db, "bob")] == [deliveries[1][1]["id"]]
    assert statistics.user_statistics(db, "bob")["broadcasts_received"] == 1
    assert statistics.totals(db)["broadcasts"] == 1


def test_a_long_first_line_is_shortened_for_the_subject():
    subject = administration.broadcast_subject("x" * 200 + "\nrest")
    assert len(subject) == administration.BROADCAST_SUBJECT_MAX and subject.endswith("…")
