"""Tests for Modules/database/auth.py: password hashing, login throttling and tickets.

PasswordHasher runs with small argon2 parameters (1 MiB, one pass) on a real
event loop: argon2id hashes, right/wrong passwords, the dummy verification for
unknown users, rehashing when the parameters change, malformed stored hashes,
and the Busy limit. LoginThrottle runs on an injected fake clock: free
failures, doubling delays per username and per address, the cap, success,
forgetting, and the size bound. Tickets: round trip and every kind of forgery
or malformed string.
"""

import asyncio
import threading

import pytest

from Modules.database import auth
from Modules.database.auth import (
    Busy,
    LoginThrottle,
    PasswordHasher,
    check_ticket,
    issue_ticket,
)
from Tests.support import WAIT

SMALL = {"memory_kib": 1024, "time_cost": 1}
SECRET = b"s" * 32


# ----------------------------------------------------------------- helpers


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def hasher():
    made = PasswordHasher(**SMALL)
    yield made
    made.close()


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def throttle(**options):
    clock = FakeClock()
    return LoginThrottle(clock=clock, **options), clock


# ------------------------------------------------------------------ hashing


def test_hash_is_argon2id_and_verifies(hasher):
    async def main():
        stored = await hasher.hash("correct horse")
        assert stored.startswith("$argon2id$")
        assert "m=1024" in stored and "t=1" in stored
        assert "correct horse" not in stored
        assert await hasher.verify("correct horse", stored) == (True, None)
        assert await hasher.verify("wrong horse", stored) == (False, None)
        assert await hasher.hash("correct horse") != stored   # salted

    run(main())


def test_unknown_user_does_a_real_verification(hasher, monkeypatch):
    calls = []
    real_verify = hasher.context.verify

    def spy(password, stored):
        result = real_verify(password, stored)
        calls.append((password, stored, result))
        return result

    monkeypatch.setattr(hasher.context, "verify", spy)
    assert run(hasher.verify("anything", None)) == (False, None)
    assert len(calls) == 1
    password, stored, result = calls[0]
    assert password == "anything" and stored.startswith("$argon2id$") and result is False


def test_changed_parameters_give_a_new_hash(hasher):
    stronger = PasswordHasher(memory_kib=1024, time_cost=2)
    try:
        async def main():
            old = await hasher.hash("correct horse")
            ok, new = await stronger.verify("correct horse", old)
            assert ok is True and new is not None and new != old
            assert new.startswith("$argon2id$") and "t=2" in new
            assert await stronger.verify("correct horse", new) == (True, None)
            assert await stronger.verify("wrong horse", old) == (False, None)

        run(main())
    finally:
        stronger.close()


@pytest.mark.parametrize("stored", [
    "", "garbage", "$argon2id$", "$argon2id$v=19$m=1024,t=1,p=1$abc$def",
    "$2b$12$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
    "$argon2id$v=19$m=1024,t=0,p=1$c29tZXNhbHRzYWx0$c29tZWhhc2g",
    "é", 12, b"\xff\x00",
])
def test_malformed_stored_hash_never_verifies_or_raises(hasher, stored):
    assert run(hasher.verify("correct horse", stored)) == (False, None)


def test_truncated_and_altered_hashes_never_verify(hasher):
    async def main():
        good = await hasher.hash("pw-12345")
        for bad in (good[:-5], good[:-5] + "AAAAA", good.replace("m=1024", "m=1"),
                    good.replace("$argon2id$", "$argon2d$")):
            assert await hasher.verify("pw-12345", bad) == (False, None)

    run(main())


def test_busy_when_too_many_wait():
    hasher = PasswordHasher(**SMALL, workers=1, max_waiting=1)
    try:
        async def main():
            stored = await hasher.hash("correct horse")
            results = await asyncio.gather(
                *(hasher.verify("correct horse", stored) for _ in range(3)),
                return_exceptions=True)
            assert results[0] == (True, None)
            assert any(isinstance(r, Busy) for r in results)
            assert all(r == (True, None) or isinstance(r, Busy) for r in results)
            # the limit counts only checks in flight: it is free again afterwards
            assert await hasher.verify("correct horse", stored) == (True, None)

        run(main())
    finally:
        hasher.close()


def test_two_concurrent_verifies_with_max_waiting_1(hasher):
    hasher.max_waiting = 1

    async def main():
        stored = await hasher.hash("pw-12345")
        first, second = await asyncio.gather(hasher.verify("pw-12345", stored),
                                             hasher.verify("pw-12345", None),
                                             return_exceptions=True)
        assert first == (True, None)
        assert isinstance(second, Busy)

    run(main())


def test_logins_are_checked_while_account_creations_fill_their_own_lane():
    hasher = PasswordHasher(**SMALL, workers=1, create_workers=1, max_creating=1)
    stored = hasher.context.hash("correct horse")
    release = threading.Event()
    slow_hash = hasher.context.hash

    def stuck_hash(password):              # a creation that takes as long as we like
        if not release.wait(WAIT):
            raise RuntimeError("a login waited behind this account creation")
        return slow_hash(password)

    hasher.context.hash = stuck_hash
    try:
        async def main():
            creating = asyncio.ensure_future(hasher.hash("new account"))
            await asyncio.sleep(0)
            with pytest.raises(Busy):      # the creation lane is full: one more is busy
                await hasher.hash("another one")
            assert await hasher.verify("correct horse", stored) == (True, None)
            release.set()                  # the login did not wait for the creation
            assert (await creating).startswith("$argon2id$")

        run(main())
    finally:
        release.set()
        hasher.close()


def test_argon2_params_from_env():
    assert auth.argon2_params_from_env({}) == auth.DEFAULT_ARGON2
    params = auth.argon2_params_from_env({"PARLEY_ARGON2_MEMORY_KIB": "1024",
                                          "PARLEY_ARGON2_TIME_COST": "1"})
    assert params == {"memory_kib": 1024, "time_cost": 1, "parallelism": 1}


# ----------------------------------------------------------------- throttle


def test_free_failures_then_doubling_delays():
    limiter, clock = throttle(free_failures=3, base_delay=1.0, max_delay=60.0)
    for _ in range(3):
        limiter.failed("alice", "10.0.0.1")
        assert limiter.wait_time("alice", "10.0.0.1") == 0
    delays = []
    for _ in range(5):
        limiter.failed("alice", "10.0.0.1")
        delays.append(limiter.wait_time("alice", "10.0.0.1"))
        clock.advance(delays[-1])
        assert limiter.wait_time("alice", "10.0.0.1") == 0
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_wait_counts_down_with_the_clock():
    limiter, clock = throttle(free_failures=0, base_delay=10.0)
    limiter.failed("alice", "a1")
    assert limiter.wait_time("alice", "a1") == 10.0
    clock.advance(4)
    assert limiter.wait_time("alice", "a1") == 6.0
    clock.advance(7)
    assert limiter.wait_time("alice", "a1") == 0


def test_default_free_failures_are_3_per_username_and_address_and_10_per_address():
    limiter, _ = throttle()
    for n in range(10):                         # ten users, once each, one address
        limiter.failed(f"user{n}", "office-nat")
    assert limiter.wait_time("newcomer", "office-nat") == 0
    limiter.failed("user10", "office-nat")
    assert limiter.wait_time("newcomer", "office-nat") == 1.0
    for _ in range(3):
        limiter.failed("alice", "a1")
    assert limiter.wait_time("alice", "a1") == 0
    limiter.failed("alice", "a1")
    assert limiter.wait_time("alice", "a1") == 1.0


def test_a_guesser_from_one_address_does_not_delay_the_owner_elsewhere():
    limiter, _ = throttle(free_failures=1, free_address_failures=1, base_delay=5.0)
    for _ in range(20):                         # one address guesses alice's password
        limiter.failed("alice", "guesser")
    assert limiter.wait_time("alice", "guesser") == 60.0
    assert limiter.wait_time("alice", "home") == 0       # the owner, from home
    for user in ("u1", "u2", "u3"):             # one address, many users
        limiter.failed(user, "b1")
    assert limiter.wait_time("carol", "b1") == 5.0 * 2   # the address's budget
    assert limiter.wait_time("u1", "b9") == 0


def test_delay_is_capped_however_many_failures():
    limiter, clock = throttle(free_failures=3, base_delay=1.0, max_delay=60.0)
    for _ in range(1100):
        limiter.failed("alice", "10.0.0.1")
        wait = limiter.wait_time("alice", "10.0.0.1")
        assert 0 < wait <= 60.0 or _ < 3
        clock.advance(wait)
    limiter.failed("alice", "10.0.0.1")
    assert limiter.wait_time("alice", "10.0.0.1") == 60.0


def test_success_clears_that_username_from_that_address_only():
    limiter, _ = throttle(free_failures=0, free_address_failures=1, base_delay=3.0)
    limiter.failed("alice", "a1")
    limiter.failed("alice", "a2")
    assert limiter.wait_time("alice", "a1") == 3.0
    limiter.succeeded("alice", "a1")
    assert limiter.wait_time("alice", "a1") == 0
    assert limiter.wait_time("alice", "a2") == 3.0      # another address still waits
    limiter.failed("bob", "a2")
    assert limiter.wait_time("carol", "a2") == 3.0      # a2's budget is used up
    limiter.succeeded("nobody", "nowhere")              # harmless


def test_failures_are_forgotten_after_a_while():
    limiter, clock = throttle(free_failures=2, base_delay=1.0, forget_after=900.0)
    for _ in range(4):
        limiter.failed("alice", "a1")
    assert limiter.wait_time("alice", "a1") == 2.0
    clock.advance(901)
    assert limiter.wait_time("alice", "a1") == 0
    limiter.failed("alice", "a1")      # counting starts again: a free failure
    assert limiter.wait_time("alice", "a1") == 0


def test_old_failures_restart_the_count_even_unread():
    limiter, clock = throttle(free_failures=2, base_delay=1.0, forget_after=100.0)
    for _ in range(3):
        limiter.failed("alice", "a1")
    clock.advance(101)
    limiter.failed("alice", "a1")      # no wait_time() in between
    assert limiter.wait_time("alice", "a1") == 0


def test_max_entries_bound():
    limiter, _ = throttle(free_failures=0, base_delay=7.0, max_entries=10)
    limiter.failed("oldest", "old-address")
    assert limiter.wait_time("oldest", "old-address") == 7.0
    for n in range(20):
        limiter.failed(f"user{n}", f"address{n}")
    assert len(limiter._entries) <= 10
    assert limiter.wait_time("oldest", "old-address") == 0     # evicted first
    assert limiter.wait_time("user19", "address19") == 7.0     # the newest stay


# ------------------------------------------------------------------ tickets


T0 = 1_700_000_000.0


def test_ticket_round_trip():
    ticket = issue_ticket(SECRET, 42, "alice", T0 + 0.25, nonce="n1")
    assert isinstance(ticket, str) and ticket.startswith("42:alice:")
    assert check_ticket(SECRET, ticket) == (42, "alice", T0 + 0.25, "n1")
    other = check_ticket(SECRET, issue_ticket(SECRET, 42, "alice", T0))
    assert other.nonce != "n1" and len(other.nonce) >= 16      # a fresh random nonce


def test_tampered_ticket_is_refused():
    ticket = issue_ticket(SECRET, 42, "alice", T0, nonce="n1")
    account_id, username, issued, nonce, mac = ticket.split(":")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    assert check_ticket(SECRET, f"{account_id}:{username}:{issued}:{nonce}:{flipped}") is None
    assert check_ticket(SECRET, f"43:{username}:{issued}:{nonce}:{mac}") is None
    assert check_ticket(SECRET, f"{account_id}:bob:{issued}:{nonce}:{mac}") is None
    assert check_ticket(SECRET, f"{account_id}:{username}:{int(issued) + 1}:{nonce}:{mac}") \
        is None                                               # made younger
    assert check_ticket(SECRET, f"{account_id}:{username}:{issued}:n2:{mac}") is None
    assert check_ticket(SECRET, ticket.upper()) is None
    assert check_ticket(b"another secret", ticket) is None


@pytest.mark.parametrize("ticket", [None, "", "a:b", "x:y:z:w", "1:alice:", ":::",
                                    "1:alice:1:n:\u00e9", "1:alice:1:n:" + "\u00e9" * 64,
                                    b"1:alice:1:n:00", 42],
                         ids=["None", "empty", "a:b", "x:y:z:w", "no-mac", "colons",
                              "non-ascii-mac", "long-non-ascii-mac", "bytes", "int"])
def test_malformed_tickets_give_none(ticket):
    assert check_ticket(SECRET, ticket) is None


def test_non_digit_account_id_or_time_gives_none_even_with_a_good_mac():
    for account_id in ("x", "-1", "1a", ""):
        assert check_ticket(SECRET, issue_ticket(SECRET, account_id, "alice", T0)) is None
    assert check_ticket(SECRET, issue_ticket(SECRET, 1, "alice", -5.0)) is None


class Holder:
    """Stands for the connection a ticket binds."""


def book(**options):
    clock = FakeClock(T0)
    return auth.TicketBook(clock=clock, **options), clock


def ticket_at(issued_at, nonce="n1", account_id=7):
    return check_ticket(SECRET, issue_ticket(SECRET, account_id, "alice", issued_at, nonce))


def test_a_fresh_ticket_binds_once():
    tickets, _ = book()
    ticket = ticket_at(T0)
    assert tickets.bind(ticket, Holder())
    assert not tickets.bind(ticket, Holder())          # a second Bind, while live
    tickets.ended(ticket)
    assert not tickets.bind(ticket, Holder())          # and after the session ended


def test_a_ticket_too_old_or_from_the_future_does_not_bind():
    tickets, clock = book(ttl=30.0)
    clock.advance(30.5)
    assert not tickets.bind(ticket_at(T0, "late"), Holder())
    assert tickets.bind(ticket_at(T0 + 1, "just-in-time"), Holder())
    assert not tickets.bind(ticket_at(clock() + 5, "future"), Holder())


def test_the_sessions_a_crash_cut_off_may_bind_once_more_whatever_their_age():
    running = ticket_at(T0, "running")
    tickets, clock = book(ttl=30.0, resumable=["running"])
    clock.advance(3600)
    assert tickets.bind(running, Holder())
    assert not tickets.bind(running, Holder())
    tickets.ended(running)
    assert not tickets.bind(running, Holder())


def test_used_tickets_are_forgotten_only_once_too_old_to_bind():
    tickets, clock = book(ttl=30.0, kept=3)
    for n in range(5):
        ticket = ticket_at(clock(), f"t{n}")
        assert tickets.bind(ticket, Holder())
        tickets.ended(ticket)
    assert len(tickets._used) <= 3
    clock.advance(31)
    assert not tickets.bind(ticket_at(T0, "t4"), Holder())     # too old now anyway
    assert tickets._used == {} and tickets.live == {}
