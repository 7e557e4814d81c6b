"""Tests of `Modules/database/roster.py`: the in-memory roster of the user
sessions on the other Parley servers of one PostgreSQL database.

The roster is tested as a plain object, without PostgreSQL: a fake link
(`FakeSignals`) records what it would NOTIFY and hands payloads in as the
listener would; a fake monitor gives the local sessions and records the
presence changes; the clock is injected. What is asserted is what can be
observed: the remote sessions it holds, the texts it sends and the
presence changes it reports.
"""

import logging
import types

import pytest

from Modules.database import roster
from Modules.database.roster import CHANNEL, GONE_AFTER, RemoteSession, Roster

OURS = "0123456789abcdef"          # our server id
OTHER = "fedcba9876543210"          # another server's


class FakeSignals:
    """`MailSignals` as the roster uses it: listen and send, recorded."""

    def __init__(self, server_id=OURS):
        self.server_id = server_id
        self.handlers = {}
        self.sent = []              # (channel, text)

    def listen(self, channel, handler, on_connect):
        self.handlers[channel] = (handler, on_connect)

    def send(self, channel, text):
        self.sent.append((channel, text))

    def texts(self):
        """What was sent, the channel checked, and forgotten."""
        assert all(channel == CHANNEL for channel, _ in self.sent)
        texts = [text for _, text in self.sent]
        self.sent.clear()
        return texts


class FakePresence:
    def __init__(self):
        self.changes = []           # (user, was_online)

    def remote_change(self, user, was_online):
        self.changes.append((user, was_online))


class FakeMonitor:
    """Local sessions, and the picture of everywhere that includes the roster's."""

    def __init__(self, local=()):
        self.local = list(local)
        self.presence = FakePresence()
        self.roster = None

    def user_sessions(self):
        return list(self.local)

    def sessions_by_user(self, everywhere=False):
        found = {}
        remote = self.roster.sessions() if everywhere and self.roster else []
        for session in self.local + remote:
            found.setdefault(session.user, []).append(session)
        return found


def local_session(user, bound_at=1700000000.25, address="10.0.0.7", nonce="n-" + "a" * 8):
    ticket = types.SimpleNamespace(nonce=nonce) if nonce is not None else None
    return types.SimpleNamespace(user=user, bound_at=bound_at, address=address, ticket=ticket)


def make(local=(), host="hostA", now=None):
    """(roster, monitor, signals, now): `now[0]` is the roster's clock."""
    now = now if now is not None else [100.0]
    monitor, signals = FakeMonitor(local), FakeSignals()
    monitor.roster = Roster(monitor, signals, host=host, clock=lambda: now[0])
    return monitor.roster, monitor, signals, now


def seen(the_roster):
    """The remote sessions as comparable tuples."""
    return sorted((s.user, s.bound_at, s.address, s.server) for s in the_roster.sessions())


def events_of(texts, server_id=OURS):
    """Every event of these sent texts, in order, each text's server id checked."""
    events = []
    for text in texts:
        sender, _, rest = text.partition(" ")
        assert sender == server_id
        events.extend(rest.split(" "))
    return events


# ------------------------------------------------------------------ listening


def test_it_listens_on_the_session_channel_with_its_own_handlers():
    the_roster, _, signals, _ = make()
    handler, on_connect = signals.handlers[CHANNEL]
    assert handler == the_roster.received and on_connect == the_roster.connected


# ------------------------------------------------------------- what it hears


def test_a_session_begun_elsewhere_is_seen_and_announced_as_coming_online():
    the_roster, monitor, _, _ = make()
    the_roster.received(f"{OTHER} =hostB")
    the_roster.received(f"{OTHER} +alice:1700000000.500:nonce1:192.0.2.4")
    assert seen(the_roster) == [("alice", 1700000000.5, "192.0.2.4", "hostB")]
    session = the_roster.sessions()[0]
    assert isinstance(session, RemoteSession) and not session.closed()
    assert monitor.presence.changes == [("alice", False)]


def test_a_session_ended_elsewhere_is_forgotten_and_announced_as_going_offline():
    the_roster, monitor, _, _ = make()
    the_roster.received(f"{OTHER} +alice:1.000:nonce1:192.0.2.4")
    monitor.presence.changes.clear()
    the_roster.received(f"{OTHER} -nonce1")
    assert the_roster.sessions() == []
    assert monitor.presence.changes == [("alice", True)]


def test_a_second_session_of_someone_already_online_there_is_no_news():
    the_roster, monitor, _, _ = make()
    the_roster.received(f"{OTHER} +alice:1:k1:192.0.2.4")
    the_roster.received(f"{OTHER} +alice:2:k2:192.0.2.5")
    the_roster.received(f"{OTHER} -k1")
    assert seen(the_roster) == [("alice", 2.0, "192.0.2.5", "?")]
    assert monitor.presence.changes == [("alice", False)]


@pytest.mark.parametrize("address", ["::1", "2001:db8::5", "fe80::1%eth0", "?"])
def test_an_address_with_colons_survives(address):
    the_roster, _, _, _ = make()
    the_roster.received(f"{OTHER} +bob:5.000:k9:{address}")
    assert [s.address for s in the_roster.sessions()] == [address]


def test_a_payload_of_our_own_is_ignored():
    the_roster, monitor, signals, _ = make()
    the_roster.received(f"{OURS} =hostA +alice:1:k1:192.0.2.4 ?")
    assert the_roster.sessions() == [] and the_roster.servers == {}
    assert monitor.presence.changes == [] and signals.sent == []


def test_a_snapshot_replaces_that_servers_sessions_and_names_its_host():
    the_roster, monitor, _, _ = make()
    the_roster.received(f"{OTHER} +alice:1:k1:192.0.2.1 +bob:2:k2:192.0.2.2")
    the_roster.received(f"{'1' * 16} =hostC +dave:4:k4:192.0.2.9")
    monitor.presence.changes.clear()
    the_roster.received(f"{OTHER} =hostB +bob:2:k2:192.0.2.2 +carol:3:k3:192.0.2.3")
    assert seen(the_roster) == [("bob", 2.0, "192.0.2.2", "hostB"),
                                ("carol", 3.0, "192.0.2.3", "hostB"),
                                ("dave", 4.0, "192.0.2.9", "hostC")]
    assert the_roster.servers[OTHER].host == "hostB"
    assert sorted(monitor.presence.changes) == [("alice", True), ("carol", False)]


def test_the_plus_events_after_a_snapshot_in_later_payloads_add_to_it():
    the_roster, _, _, _ = make()
    the_roster.received(f"{OTHER} =hostB +alice:1:k1:192.0.2.1")
    the_roster.received(f"{OTHER} +bob:2:k2:192.0.2.2")
    assert [s.user for s in the_roster.sessions()] == ["alice", "bob"]
    assert {s.server for s in the_roster.sessions()} == {"hostB"}


def test_a_roll_call_is_answered_with_our_snapshot():
    local = [local_session("alice", 10.0, "::1", nonce="k1"),
             local_session("bob", 20.5, "192.0.2.2", nonce="k2")]
    the_roster, _, signals, _ = make(local)
    the_roster.received(f"{OTHER} ?")
    assert signals.texts() == [f"{OURS} =hostA +alice:10.000:k1:::1 +bob:20.500:k2:192.0.2.2"]


def test_a_roll_call_with_no_local_sessions_still_names_our_host():
    the_roster, _, signals, _ = make()
    the_roster.received(f"{OTHER} ?")
    assert signals.texts() == [f"{OURS} =hostA"]


def test_connecting_sends_our_snapshot_and_a_roll_call():
    the_roster, _, signals, _ = make([local_session("alice", 1.0, "192.0.2.1", nonce="k1")])
    the_roster.connected()
    assert signals.texts() == [f"{OURS} =hostA +alice:1.000:k1:192.0.2.1 ?"]


def test_what_one_roster_says_another_hears_the_same():
    alice = local_session("alice", 1700000000.125, "2001:db8::5", nonce="k1")
    sender, _, sender_signals, _ = make([alice], host="hostA")
    hearer, _, _, _ = make(host="hostB")
    hearer.signals.server_id = OTHER
    sender.connected()
    for text in sender_signals.texts():
        hearer.received(text)
    assert seen(hearer) == [("alice", 1700000000.125, "2001:db8::5", "hostA")]


# --------------------------------------------------------------- what it says


def test_a_local_session_starting_and_ending_is_told_with_its_tickets_nonce():
    the_roster, _, signals, _ = make()
    session = local_session("alice", 1700000000.5, "2001:db8::5", nonce="abc123")
    the_roster.session_started(session)
    the_roster.session_ended(session)
    assert signals.texts() == [f"{OURS} +alice:1700000000.500:abc123:2001:db8::5",
                               f"{OURS} -abc123"]


@pytest.mark.parametrize("ticket", [None, types.SimpleNamespace(nonce=None)])
def test_a_session_without_a_nonce_has_one_key_from_start_to_end(ticket):
    the_roster, _, signals, _ = make()
    session = types.SimpleNamespace(user="bob", bound_at=3.0, address="192.0.2.2",
                                    ticket=ticket)
    the_roster.session_started(session)
    the_roster.session_ended(session)
    began, ended = events_of(signals.texts())
    key = began.split(":")[2]
    assert key and ended == f"-{key}"


# ----------------------------------------------------------- what it cannot read


def test_an_unreadable_event_is_skipped_with_a_warning_and_the_rest_applied(caplog):
    the_roster, monitor, _, _ = make()
    with caplog.at_level(logging.WARNING, logger="parley.roster"):
        the_roster.received(f"{OTHER} +alice:1:k1:::1 !x +bad +bob:never:k2:192.0.2.2 "
                            "+carol:3:k3:192.0.2.3")
    assert sorted(s.user for s in the_roster.sessions()) == ["alice", "carol"]
    assert sorted(monitor.presence.changes) == [("alice", False), ("carol", False)]
    warnings = [r for r in caplog.records
                if r.name == "parley.roster" and r.levelno == logging.WARNING]
    assert len(warnings) == 3


# ------------------------------------------------------------ servers gone silent


def test_a_silent_server_is_forgotten_and_its_people_go_offline():
    the_roster, monitor, _, now = make()
    the_roster.received(f"{OTHER} =hostB +alice:1:k1:192.0.2.1 +bob:2:k2:192.0.2.2")
    quiet = "2" * 16
    the_roster.received(f"{quiet} =hostC +carol:3:k3:192.0.2.3")
    monitor.presence.changes.clear()
    now[0] += GONE_AFTER - 1
    the_roster.received(f"{quiet} ~")            # a heartbeat: still there
    now[0] += 2                                  # OTHER silent for GONE_AFTER + 1
    the_roster.forget_silent()
    assert seen(the_roster) == [("carol", 3.0, "192.0.2.3", "hostC")]
    assert sorted(monitor.presence.changes) == [("alice", True), ("bob", True)]
    assert OTHER not in the_roster.servers and quiet in the_roster.servers


def test_a_server_heard_just_within_the_limit_is_kept():
    the_roster, monitor, _, now = make()
    the_roster.received(f"{OTHER} +alice:1:k1:192.0.2.1")
    monitor.presence.changes.clear()
    now[0] += GONE_AFTER
    the_roster.forget_silent()
    assert [s.user for s in the_roster.sessions()] == ["alice"]
    assert monitor.presence.changes == []


def test_someone_also_online_here_is_still_reported_to_presence_when_a_server_goes():
    the_roster, monitor, _, now = make([local_session("alice")])
    the_roster.received(f"{OTHER} +alice:1:k1:192.0.2.1")
    assert monitor.presence.changes == [("alice", True)]    # was online already
    monitor.presence.changes.clear()
    now[0] += GONE_AFTER + 1
    the_roster.forget_silent()
    assert the_roster.sessions() == []
    assert monitor.presence.changes == [("alice", True)]


# ------------------------------------------------------------------- big snapshots


def test_a_big_snapshot_is_split_into_payloads_postgresql_accepts_losing_nothing():
    local = [local_session(f"user{i:04d}", 1700000000.0 + i, f"2001:db8::{i:x}",
                           nonce=f"{i:024x}") for i in range(500)]
    the_roster, _, signals, _ = make(local)
    the_roster.connected()
    texts = signals.texts()
    assert len(texts) > 1
    assert all(len(text.encode("utf-8")) < 8000 for text in texts)
    expected = ["=hostA"] + [roster._began(session) for session in local] + ["?"]
    assert events_of(texts) == expected

    hearer, _, _, _ = make(host="hostB")
    hearer.signals.server_id = OTHER
    for text in texts:
        hearer.received(text)
    assert len(hearer.sessions()) == 500
    assert {s.server for s in hearer.sessions()} == {"hostA"}


def test_an_empty_event_is_no_news_and_no_warning(caplog):
    the_roster, monitor, _, _ = make()
    the_roster.received(f"{OTHER}  ~ ")
    assert "skipped" not in caplog.text and monitor.presence.changes == []
