"""The operator's figures on real SQLite files: `Modules/database/statistics.py`.

Per-user statistics and server totals move with what they count (logins,
logoffs, sends, bounces, deliveries, deletions); the IP ledger keeps at
most N addresses per user and forgets old ones; listing filters by pattern.
"""

from Modules.database import statistics, storage
from Modules.database.statistics import LedgerLimits
from Tests.support.storage import T0, make_users
from Tests.support.storage import run_committed as run
from Tests.support.storage import send_stored as send


def test_logins_and_failures_are_counted_per_user_with_their_address(db):
    make_users(db, "alice")
    run(db, statistics.record_login, "alice", "127.0.0.2", T0 + 10, True)
    run(db, statistics.record_login, "alice", "127.0.0.3", T0 + 11, False)
    run(db, statistics.record_login, "alice", "127.0.0.3", T0 + 12, False)
    alice = statistics.user_statistics(db, "alice")
    assert (alice["logins"], alice["last_login"], alice["last_login_address"]) == (
        1, T0 + 10, "127.0.0.2")
    assert (alice["failed_logins"], alice["last_failed_login"],
            alice["last_failed_address"]) == (2, T0 + 12, "127.0.0.3")
    assert run(db, statistics.record_login, "nobody", "127.0.0.1", T0, True) is False
    assert statistics.ledger(db, "nobody") is None
    totals = statistics.totals(db)
    assert totals["logins"] == 1 and totals["failed_logins"] == 2


def test_the_ledger_counts_attempts_and_successes_per_address(db):
    make_users(db, "alice")
    for when, address, ok in ((1, "10.0.0.1", False), (2, "10.0.0.1", True),
                              (3, "10.0.0.2", False)):
        run(db, statistics.record_login, "alice", address, T0 + when, ok)
    assert statistics.ledger(db, "alice") == [
        {"address": "10.0.0.2", "attempts": 1, "successes": 0, "first_seen": T0 + 3,
         "last_seen": T0 + 3, "last_success": None},
        {"address": "10.0.0.1", "attempts": 2, "successes": 1, "first_seen": T0 + 1,
         "last_seen": T0 + 2, "last_success": T0 + 2}]


def test_the_ledger_is_bounded_in_addresses_and_in_age(db):
    make_users(db, "alice")
    limits = LedgerLimits(addresses=3)
    for n in range(5):
        run(db, statistics.record_login, "alice", f"10.0.0.{n}", T0 + n, False, limits)
    assert [e["address"] for e in statistics.ledger(db, "alice")] == [
        "10.0.0.4", "10.0.0.3", "10.0.0.2"]                 # the least recent went first
    assert run(db, statistics.prune_ledger, T0 + 3.5) == 2
    assert [e["address"] for e in statistics.ledger(db, "alice")] == ["10.0.0.4"]


def test_sends_bounces_deliveries_and_logoffs_are_counted(db):
    make_users(db, "alice", "bob")
    message = send(db, "alice", "bob")
    send(db, "alice", "nobody")                               # bounces
    run(db, storage.mark_delivered, "bob", [message["id"]], T0 + 5)
    assert run(db, statistics.record_logoff, "bob") is True
    assert run(db, statistics.record_logoff, "nobody") is False
    alice, bob = (statistics.user_statistics(db, name) for name in ("alice", "bob"))
    assert (alice["messages_sent"], alice["messages_bounced"]) == (1, 1)
    assert (bob["messages_received"], bob["logoffs"]) == (1, 1)
    totals = statistics.totals(db)
    assert (totals["messages_accepted"], totals["messages_bounced"],
            totals["messages_delivered"], totals["logoffs"]) == (1, 1, 1, 1)


def test_a_deleted_account_keeps_the_server_totals_and_loses_its_ledger(db):
    make_users(db, "alice", "bob")
    run(db, statistics.record_login, "bob", "10.0.0.1", T0, True)
    send(db, "alice", "bob")                                 # unread: returned to alice
    for step in (storage.mark_deleting, storage.remove_password, storage.remove_account):
        if step is storage.remove_password:
            run(db, storage.bounce_and_clear_inbox, "bob", T0 + 1)
        run(db, step, "bob")
    assert statistics.user_statistics(db, "bob") is None
    assert db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 0
    assert statistics.user_statistics(db, "alice")["messages_bounced"] == 1
    totals = statistics.totals(db)
    assert (totals["accounts_created"], totals["accounts_deleted"], totals["accounts"],
            totals["logins"], totals["messages_bounced"]) == (2, 1, 1, 1, 1)


def test_users_are_listed_by_name_and_filtered_by_pattern(db):
    make_users(db, "carol", "alice", "alan")
    everyone, more = statistics.list_users(db)
    assert [u["username"] for u in everyone] == ["alan", "alice", "carol"] and not more
    found, _ = statistics.list_users(db, "al*")
    assert [u["username"] for u in found] == ["alan", "alice"]
    first, more = statistics.list_users(db, limit=2)
    assert len(first) == 2 and more
    assert everyone[0]["suspended"] is False and everyone[0]["logins"] == 0
