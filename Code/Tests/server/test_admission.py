"""Tests for Modules/server/admission.py: who may open a connection, on a fake clock.

The total cap ("server full"), the cap on connections still logging in per
address, the per-address rate (a token bucket), early drop between half
and all of max_startups, and the counts moving as connections log in,
go back to the login dialogue and end.
"""

from Modules.server.admission import (
    FULL,
    PENALTY,
    PER_ADDRESS,
    RATE,
    STARTUPS,
    Admission,
)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def admission(**options):
    clock = Clock()
    defaults = {"max_clients": 100, "per_address": 3, "rate": 1000.0, "burst": 1000,
                "start": 50, "full": 60, "random": lambda: 0.99}
    return Admission(clock=clock, **{**defaults, **options}), clock


def test_one_address_cannot_hold_more_than_its_share_of_logins():
    gate, _ = admission(per_address=3)
    assert [gate.admit("10.0.0.9") for _ in range(3)] == [None, None, None]
    assert gate.admit("10.0.0.9") is PER_ADDRESS
    assert gate.admit("10.0.0.1") is None                   # others still get in
    gate.logged_in("10.0.0.9")                               # one of them logged in
    assert gate.admit("10.0.0.9") is None                    # so one more may start
    gate.ended("10.0.0.9", was_logging_in=True)
    assert gate.admit("10.0.0.9") is None
    assert gate.admit("10.0.0.9") is PER_ADDRESS


def test_the_server_full_cap_counts_every_connection():
    gate, _ = admission(max_clients=2, per_address=10)
    assert gate.admit("a") is None and gate.admit("b") is None
    gate.logged_in("a")
    assert gate.admit("c") is FULL                           # logged-in ones count too
    gate.ended("a", was_logging_in=False)
    assert gate.admit("c") is None
    assert (gate.connections, gate.pre_login) == (2, 2)


def test_new_connections_per_address_are_rate_limited_and_refill():
    gate, clock = admission(per_address=100, rate=2.0, burst=4)
    assert [gate.admit("a") for _ in range(4)] == [None] * 4
    assert gate.admit("a") is RATE
    assert gate.admit("b") is None
    clock.now += 0.5                                         # one token back
    assert gate.admit("a") is None
    assert gate.admit("a") is RATE


def test_early_drop_grows_from_start_to_full():
    draws = iter([0.5, 0.1, 0.9, 0.999])
    gate, _ = admission(per_address=100, start=2, full=4, random=lambda: next(draws))
    assert gate.admit("a") is None and gate.admit("b") is None   # below start: always
    assert gate.admit("c") is None            # 2 logging in: 30 % drop, drew 0.5
    assert gate.admit("d") is STARTUPS        # 3 logging in: 65 % drop, drew 0.1
    assert gate.admit("e") is None            # 3 logging in: 65 % drop, drew 0.9
    assert gate.admit("f") is STARTUPS        # 4, full: every one, whatever it drew


def test_a_deleted_account_back_at_the_login_counts_as_logging_in_again():
    gate, _ = admission(per_address=1)
    assert gate.admit("a") is None
    gate.logged_in("a")
    assert gate.admit("a") is None
    gate.logged_out("a")                       # the first one deleted its account
    gate.ended("a", was_logging_in=True)
    assert gate.pre_login == 1 and gate.connections == 1
    assert gate.admit("a") is PER_ADDRESS


def test_addresses_are_forgotten_beyond_the_bound():
    gate, _ = admission(max_addresses=5, per_address=100)
    for n in range(50):
        gate.admit(f"10.0.0.{n}")
        gate.ended(f"10.0.0.{n}", was_logging_in=True)
    assert len(gate._buckets) <= 5 and gate._pre_login_by_address == {}


def test_bad_logins_beyond_the_free_ones_cost_the_address_growing_refusals():
    gate, clock = admission(per_address=100)
    assert gate.penalise("a") == 0 and gate.penalise("a") == 0     # two are free
    assert gate.admit("a") is None
    assert gate.penalise("a") == 1.0
    assert gate.admit("a") is PENALTY and gate.admit("b") is None    # that address only
    clock.now += 1.01
    assert gate.admit("a") is None
    assert [gate.penalise("a") for _ in range(8)] == [2, 4, 8, 16, 32, 60, 60, 60]
    clock.now += 60 + 601                                             # quiet for a while
    assert gate.admit("a") is None and gate.penalise("a") == 0
