"""Tests for Modules/database/mail_signals.py: "new mail for X" between servers.

The payloads (bounded, every recipient once, parsed back, foreign ones
ignored), and on a real PostgreSQL cluster (the `pg_dsn` fixture): an
announcement made inside a committed transaction reaches the other
server's listener, which reads and pushes to the recipient's sessions;
one rolled back reaches nobody; a server ignores its own; after the
cluster restarts, the listener reconnects and catches every session up.
"""

import asyncio

import pytest

from Modules.database import backends, mail_signals, storage
from Modules.database.backends import pg_connection
from Modules.database.mail_signals import PAYLOAD_MAX, MailSignals, parse, payloads
from Tests.support import WAIT
from Tests.support.storage import T0, make_users, run_committed, send_stored


def test_payloads_name_every_recipient_once_and_stay_under_postgresqls_limit():
    users = [f"user{n:05d}" for n in range(3000)] + ["user00001"]
    texts = payloads("abc", users)
    assert len(texts) > 1 and all(len(text.encode()) <= PAYLOAD_MAX for text in texts)
    found = [user for text in texts for user in parse(text)[1]]
    assert sorted(found) == sorted(set(users)) and {parse(t)[0] for t in texts} == {"abc"}
    assert payloads("abc", []) == []


@pytest.mark.parametrize("payload", ["", "abc", "abc ", " alice", "abc  alice"])
def test_a_payload_that_is_not_ours_is_ignored(payload, caplog):
    signals = MailSignals("postgresql:///x", FakeHub(), read=None)
    assert parse(payload) is None
    signals.received(payload)
    assert "not Parley's" in caplog.text


# -- against a real cluster ------------------------------------------------------

class FakeSession:
    """What the listener needs of a MonitorConnection: what it was given."""

    def __init__(self):
        self.given = []

    def push_unseen(self, rows):
        self.given.extend(row["id"] for row in rows)


class FakeHub:
    def __init__(self, users=()):
        self.sessions = {user: FakeSession() for user in users}
        self.subscribers = {user: {session} for user, session in self.sessions.items()}
        self.parked, self.woken = {}, []
        self.wake = self.woken.append


def stored_mail(counter):
    """A stand-in for the read of the undelivered messages (the storage's own read is
    tested on both backends in test_storage.py): each read finds one more."""
    async def read(_owner, _fn, user):
        counter.append(user)
        return [{"id": len(counter)}]
    return read


async def _announce(dsn, server_id, users, commit=True):
    db = pg_connection.connect(dsn)
    try:
        db.execute("BEGIN")
        mail_signals.announce(db, server_id, users)
        db.execute("COMMIT" if commit else "ROLLBACK")
    finally:
        db.close()


async def _until(condition, what):
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


def test_an_announcement_reaches_the_other_server_only_once_committed(pg_dsn):
    async def scenario():
        reads = []
        hub = FakeHub(["alice"])
        hub.parked = {"carol": object()}
        listener = MailSignals(pg_dsn, hub, stored_mail(reads))
        task = asyncio.get_running_loop().create_task(listener.run())
        try:
            await asyncio.wait_for(listener.connected.wait(), WAIT)
            await _until(lambda: reads == ["alice"], "the first catch-up")
            await _announce(pg_dsn, "other", ["alice"], commit=False)
            await _announce(pg_dsn, listener.server_id, ["alice"])     # its own: ignored
            await _announce(pg_dsn, "other", ["alice", "bob", "carol"])
            await _until(lambda: len(reads) == 2, "the announced mail read")
            assert hub.sessions["alice"].given == [1, 2] and hub.woken == ["carol"]
            await _announce(pg_dsn, "other", ["bob"])        # nobody here: nothing read
            await _announce(pg_dsn, "other", ["alice"])
            await _until(lambda: len(reads) == 3, "the next")
            assert reads == ["alice"] * 3
        finally:
            task.cancel()
    asyncio.run(scenario())


def test_the_listener_comes_back_after_a_postgresql_restart_and_catches_up(postgres, pg_dsn):
    async def scenario():
        reads = []
        listener = MailSignals(pg_dsn, FakeHub(["alice"]), stored_mail(reads))
        task = asyncio.get_running_loop().create_task(listener.run())
        try:
            await asyncio.wait_for(listener.connected.wait(), WAIT)
            await _until(lambda: len(reads) == 1, "the first catch-up")
            await asyncio.get_running_loop().run_in_executor(None, postgres.restart)
            await _until(lambda: len(reads) == 2, "the catch-up after the restart")
            await _announce(pg_dsn, "other", ["alice"])
            await _until(lambda: len(reads) == 3, "an announcement after the restart")
        finally:
            task.cancel()
    asyncio.run(scenario())


def test_a_job_announces_its_recipients_and_reads_back_their_mail_in_order(pg_dsn,
                                                                           tmp_path):
    backend = backends.open_backend(pg_dsn, str(tmp_path))
    db, listener = backend.open_writer(), pg_connection.connect(pg_dsn)
    try:
        make_users(db, "alice", "bob")
        first = send_stored(db, "alice", "bob", client_id="first")["id"]
        listener.execute("LISTEN parley_mail")
        recent = {}
        job = mail_signals.delivering(storage.store_message,
                                      lambda stored: stored["deliveries"], "me", recent)
        second = run_committed(db, job, "alice", "bob", "s", "b", "second", T0 + 2)["id"]
        assert [m["id"] for m in recent["bob"]] == [first, second]
        (heard,) = listener._conn.notifies(timeout=WAIT, stop_after=1)
        assert (heard.channel, heard.payload) == ("parley_mail", "me bob")
    finally:
        backend.close(db)
        listener.close()