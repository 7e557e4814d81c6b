"""Tests for Modules/database/presence.py: who sees whom, notices, coalescing.

Against a real database process (real SQLite files in a tmp dir) through
monitor links bound as users, the way user processes talk to it: `Online`
lists only the people one may see, `presence off` hides a person from
everyone else in `Online`, `LastSeen` and the notices, a row of
`main.blocks` hides its owner from the person blocked, and 200 sessions
reconnecting at once make a bounded number of notices for each person
online (at most one per second, plus one). The notice's text is a pure
function, tested on its own.

Waits are on conditions (a notice naming someone arrives); to show that
NO notice came, a later request's reply is read: a notice sent before it
would be in the stream before that reply.
"""

import asyncio
import math
import sqlite3
import time
import types

from Modules.database import presence, storage
from Modules.database.link import Notice, Reply
from Tests.support.monitor import link, ticket_for, user_link
from Tests.support.processes import WAIT, running_database


def notices_until(db, predicate):
    """Presence notice texts up to and including the first that satisfies `predicate`."""
    texts = []
    while True:
        event = db.read_event()
        if isinstance(event, Notice) and event.event == "presence":
            texts.append(event.message)
            if predicate(event.message):
                return texts


def call_collecting(db, op, **fields):
    """(reply data, presence notices that came before it)."""
    rid = db.send_request(op, **fields)
    texts = []
    while True:
        event = db.read_event()
        if isinstance(event, Notice) and event.event == "presence":
            texts.append(event.message)
        elif isinstance(event, Reply) and event.rid == rid:
            assert event.ok, event.data
            return event.data, texts


def subscribed(config, name):
    """A user link that receives pushes and notices, as a user process's does."""
    db = user_link(config, name)
    db.call("Subscribe")
    return db


def names_online(db):
    """Every name `Online` lists, page after page."""
    names, after = [], None
    while True:
        reply = db.call("Online", **({} if after is None else {"after": after}))
        names += [person["user"] for person in reply["people"]]
        if not reply["more"]:
            return names
        after = names[-1]


def block(config, owner, blocked):
    """A row of main.blocks, written as the block command's query would."""
    with sqlite3.connect(f"{config['data_dir']}/users.db", timeout=WAIT) as users:
        users.execute("INSERT INTO blocks (owner, blocked, created_at) VALUES (?, ?, ?)",
                      (owner, blocked, time.time()))


# ------------------------------------------------------------ the text


def test_a_notice_lists_who_came_and_who_went_and_counts_past_eight():
    assert presence.notice_text(["bob"], []) == "bob is online"
    assert presence.notice_text(["carol", "bob"], ["dave"]) == \
        "bob and carol are online; dave went offline"
    assert presence.notice_text([], ["a1", "a2", "a3"]) == "a1, a2 and a3 went offline"
    many = [f"u{i:03d}" for i in range(200)]
    assert presence.notice_text(many, []) == \
        "u000, u001, u002, u003, u004, u005, u006 and 193 others are online"
    assert presence.notice_text([], []) == ""


# ------------------------------------------------------------ the tracker alone


class _Conn:
    """What the tracker uses of a monitor connection."""

    ticket = None

    def __init__(self, user):
        self.user, self.bound_at, self.last_request = user, time.time(), time.time()
        self.subscription = types.SimpleNamespace(state=presence.LIVE)
        self.told, self.ended = [], False

    def closed(self):
        return self.ended

    def send_notice(self, event, message):
        self.told.append(message)


class _Monitor:
    """The monitor's sessions, with its writer and readers on one real connection."""

    def __init__(self, db):
        self.db, self.conns = db, []
        self.tickets = types.SimpleNamespace(resumable=set())

    def sessions_by_user(self, everywhere=False):
        found = {}
        for conn in self.conns:
            if not conn.closed():
                found.setdefault(conn.user, []).append(conn)
        return found

    def _done(self, fn, *args):
        future = asyncio.get_running_loop().create_future()
        future.set_result(fn(self.db, *args))
        return future

    def job(self, fn, *args, lazy=False):
        return self._done(fn, *args)

    def read(self, _owner, fn, *args):
        return self._done(fn, *args)

    def start(self, tracker, user):
        conn = _Conn(user)
        self.conns.append(conn)
        tracker.session_started(conn)
        return conn

    def end(self, tracker, conn):
        conn.ended = True
        tracker.session_ended(conn)


async def _quiet(tracker):
    while tracker._timer is not None or tracker._flushing:
        await asyncio.sleep(0.005)


def test_who_comes_and_goes_within_one_window_is_not_mentioned(db):
    for name in ("alice", "bob"):
        storage.create_account(db, name, "hash", time.time())

    async def scenario():
        monitor = _Monitor(db)
        tracker = presence.PresenceTracker(monitor, window=0.01)
        alice = monitor.start(tracker, "alice")
        await _quiet(tracker)
        monitor.end(tracker, monitor.start(tracker, "bob"))    # up and down at once
        await _quiet(tracker)
        assert alice.told == []
        bob = monitor.start(tracker, "bob")
        await _quiet(tracker)
        assert alice.told == ["bob is online"]
        monitor.end(tracker, bob)                               # leaves, comes back and
        bob = monitor.start(tracker, "bob")                     # turns presence off, all
        tracker.visibility_changed("bob", presence.set_hidden(db, "bob", True))  # at once
        await _quiet(tracker)
        assert alice.told == ["bob is online", "bob went offline"] and bob.told == []
    asyncio.run(scenario())


# ------------------------------------------------------------ notices and who


def test_coming_and_going_is_told_to_the_others_and_who_lists_them(database):
    _proc, config = database
    alice = subscribed(config, "alice")
    bob = subscribed(config, "bob")
    assert notices_until(alice, lambda text: "bob" in text) == ["bob is online"]
    assert names_online(alice) == ["alice", "bob"]
    people = {p["user"]: p for p in bob.call("Online")["people"]}
    assert people["alice"]["since"] <= people["bob"]["since"] and people["bob"]["idle"] >= 0
    second = subscribed(config, "bob")          # a second session of bob: nothing new
    second.close()
    bob.close()
    assert notices_until(alice, lambda text: "bob" in text) == ["bob went offline"]
    assert names_online(alice) == ["alice"]


def test_who_is_paged_by_name(database):
    _proc, config = database
    links = [user_link(config, name) for name in ("amy", "ben", "cat", "dan")]
    first = links[0].call("Online", limit=3)
    assert [p["user"] for p in first["people"]] == ["amy", "ben", "cat"] and first["more"]
    rest = links[0].call("Online", after="cat", limit=3)
    assert [p["user"] for p in rest["people"]] == ["dan"] and not rest["more"]


def test_a_flood_of_who_is_refused_rate_limited_like_a_flood_of_reads(database):
    _proc, config = database
    alice = user_link(config, "alice")
    rids = [alice.send_request("Online", limit=200) for _ in range(10)]
    answers = {}
    while len(answers) < len(rids):
        event = alice.read_event()
        if isinstance(event, Reply) and event.rid in rids:
            answers[event.rid] = event.data.get("code", "ok")
    codes = [answers[rid] for rid in rids]
    assert codes[:2] == ["ok", "ok"] and "rate_limited" in codes, codes


def test_last_seen_says_online_since_or_when_they_left(database):
    _proc, config = database
    alice = subscribed(config, "alice")
    bob = subscribed(config, "bob")
    notices_until(alice, lambda text: "bob is online" in text)
    online = alice.call("LastSeen", username="Bob")
    assert online["user"] == "bob" and online["online"] is True and online["since"] > 0
    before_leaving = time.time()
    bob.close()
    notices_until(alice, lambda text: "went offline" in text)
    gone = alice.call("LastSeen", username="bob")
    assert gone["online"] is False and gone["last_seen"] >= before_leaving - 1
    assert alice.call("LastSeen", username="nobody") == {"rid": gone["rid"] + 1, "ok": True,
                                                          "user": "nobody", "online": False}


# ------------------------------------------------------------ authorization


def test_presence_off_hides_a_person_from_everyone_and_tells_them_nothing(database):
    _proc, config = database
    alice = subscribed(config, "alice")
    bob = subscribed(config, "bob")
    notices_until(alice, lambda text: "bob is online" in text)
    assert bob.call("Presence")["presence"] == "on"
    assert bob.call("Presence", state="off")["presence"] == "off"
    assert notices_until(alice, lambda text: "bob" in text) == ["bob went offline"]
    assert names_online(alice) == ["alice"]
    assert names_online(bob) == ["alice", "bob"]          # one always sees oneself
    unknown = alice.call("LastSeen", username="nosuchuser")
    hidden = alice.call("LastSeen", username="bob")
    assert {k: v for k, v in hidden.items() if k != "rid"} == \
        {k: v for k, v in unknown.items() if k != "rid"} | {"user": "bob"}
    assert bob.call("LastSeen", username="bob")["online"] is True
    carol = subscribed(config, "carol")
    assert notices_until(alice, lambda text: "carol" in text) == ["carol is online"]
    _reply, told_bob = call_collecting(bob, "Online")
    assert told_bob == []                                  # off: no notices either
    bob.close()                                            # a hidden one leaves unseen
    carol.close()
    assert notices_until(alice, lambda text: "carol" in text) == ["carol went offline"]
    again = subscribed(config, "bob")                      # off is kept across sessions
    assert again.call("Presence")["presence"] == "off"
    assert names_online(alice) == ["alice"]
    again.call("Presence", state="on")
    assert notices_until(alice, lambda text: "bob" in text) == ["bob is online"]


def test_a_person_blocked_does_not_see_the_one_who_blocked_them(database):
    _proc, config = database
    alice = subscribed(config, "alice")
    carol = subscribed(config, "carol")
    notices_until(carol, lambda text: "alice" in text)
    ticket_for(config, "bob")                              # the account exists
    block(config, "bob", "alice")                          # bob blocked alice
    bob = subscribed(config, "bob")
    assert notices_until(carol, lambda text: "bob" in text) == ["bob is online"]
    _reply, told_alice = call_collecting(alice, "Online")
    assert all("bob" not in text for text in told_alice)
    assert names_online(carol) == ["alice", "bob", "carol"]
    assert names_online(alice) == ["alice", "carol"]
    assert alice.call("LastSeen", username="bob")["online"] is False
    assert "last_seen" not in alice.call("LastSeen", username="bob")
    assert "bob" in names_online(bob) and "alice" in names_online(bob)   # not the other way
    bob.close()
    assert notices_until(carol, lambda text: "bob" in text) == ["bob went offline"]
    _reply, told_alice = call_collecting(alice, "Online")
    assert all("bob" not in text for text in told_alice)
    assert "last_seen" not in alice.call("LastSeen", username="bob")


def test_sessions_binding_again_after_a_database_restart_are_no_news(tmp_path):
    secret = b"s" * 32
    with running_database(tmp_path, ticket_secret=secret) as (_proc, config):
        old = ticket_for(config, "bob")
        running = link(config)
        running.call("Bind", ticket=old)                  # bob's session ...
    with running_database(tmp_path, ticket_secret=secret,  # ... outlives the crash
                          live_tickets=[old]) as (_proc, config):
        alice = subscribed(config, "alice")
        again = link(config)
        again.call("Bind", ticket=old)                    # bob's user process binds again
        again.call("Subscribe")
        carol = subscribed(config, "carol")
        assert notices_until(alice, lambda text: "carol" in text) == ["carol is online"]
        assert "bob" in names_online(alice)
        for db in (alice, again, carol):
            db.close()


# ------------------------------------------------------------ at scale


def _bind(config, ticket):
    db = link(config)
    db.send_request("Bind", ticket=ticket)
    return db


def _finish_binds(links):
    for db in links:
        while not isinstance(event := db.read_event(), Reply):
            pass
        assert event.ok, event.data
        db.call("Subscribe")


def test_200_sessions_reconnecting_at_once_make_at_most_one_notice_a_second(tmp_path):
    with running_database(tmp_path, registration={"per_address": 1000,
                                                  "per_hour": 1000}) as (_proc, config):
        _storm(config, sessions=200)


def _storm(config, sessions):
    watchers = [subscribed(config, name) for name in ("watch1", "watch2", "watch3")]
    names = [f"crowd{i:03d}" for i in range(sessions)]
    first = [ticket_for(config, name) for name in names]
    second = [ticket_for(config, name) for name in names]   # ready before the storm
    started = time.monotonic()
    crowd = [_bind(config, ticket) for ticket in first]
    _finish_binds(crowd)
    for db in crowd:                                         # the server restarts ...
        db.close()
    crowd = [_bind(config, ticket) for ticket in second]     # ... everyone is back
    _finish_binds(crowd)
    sentinel = subscribed(config, "aaaend")                  # the end of the storm
    counts = [len(notices_until(db, lambda text: "aaaend" in text)) for db in watchers]
    elapsed = time.monotonic() - started
    bound = math.ceil(elapsed / presence.WINDOW) + 1
    print(f"presence notices per watcher: {counts} in {elapsed:.1f} s (bound {bound})")
    assert all(count <= bound for count in counts), (counts, elapsed)
    assert all(count < sessions for count in counts), counts    # coalesced: not one each
    assert len(names_online(watchers[0])) == sessions + 4
    for db in crowd + watchers + [sentinel]:
        db.close()

