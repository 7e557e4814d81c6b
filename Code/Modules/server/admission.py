"""Who may open a connection: limits on connections that have not logged in yet.

The daemon asks `Admission.admit(address)` for every accepted TCP
connection and tells it when a connection logs in (`logged_in`) or ends
(`ended`). Like OpenSSH's MaxStartups and PerSourceMaxStartups:

* at most `max_clients` connections in all (logged in or not): "server full";
* at most `per_address` connections from one address that have not logged
  in yet (so one address cannot fill the server with idle handshakes);
* at most `rate` new connections per second from one address, with bursts
  of `burst` (a token bucket);
* an address whose logins end badly (login_process.PENALISED: a second
  refused new account, endless answers, a broken protocol) more than
  twice is refused for 1 s, doubling up to 60 s with each further one
  (`penalise`), as OpenSSH's PerSourcePenalties;
* pre-login connections in all: from `start` on, each new one is refused
  with a probability growing from 30 % to 100 % at `full` (early drop), so
  that under a flood from many addresses room stays for the sessions
  already logged in, and some logins still get through.

A refusal is a `Refused` with the sentence the client is shown (a
plaintext notice, before the handshake). Addresses are remembered only
while they have connections or tokens to refill: bounded by the number of
live connections plus `max_addresses`.

Talks to nothing: no sockets, no clock of its own (`clock` is injected),
no randomness of its own (`random` is injected). Never raises.
"""

import random as random_mod
import time
from collections import OrderedDict
from typing import NamedTuple

PENALTY_FREE = 2          # bad logins from an address before they cost it anything
PENALTY_MAX = 60.0        # seconds an address is refused after many bad logins, at most
PENALTY_FORGET = 600.0    # quiet seconds after which its penalties are forgotten


class Refused(NamedTuple):
    reason: str      # a short code for the log
    text: str        # what the client is told


FULL = Refused("full", "server full: too many connections; try again later")
PER_ADDRESS = Refused("per_address", "too many connections from your address are still "
                                     "logging in; finish or close those first")
RATE = Refused("rate", "too many new connections from your address; slow down and try "
                       "again in a few seconds")
STARTUPS = Refused("startups", "the server is busy with other logins; try again in a few "
                               "seconds")
PENALTY = Refused("penalty", "logins from your address are refused for a while after "
                             "broken or refused ones; try again later")


class Admission:
    """The daemon's counts of connections, per address and in all."""

    def __init__(self, max_clients=1000, per_address=32, rate=10.0, burst=20,
                 start=100, full=200, clock=time.monotonic, random=random_mod.random,
                 max_addresses=10_000):
        self.max_clients, self.per_address = max_clients, per_address
        self.rate, self.burst = rate, burst
        self.start, self.full = start, max(full, start + 1)
        self.clock, self.random, self.max_addresses = clock, random, max_addresses
        self.connections = 0                 # every connection the daemon holds
        self.pre_login = 0                   # of which not logged in yet
        self._pre_login_by_address = {}      # address -> count
        self._buckets = OrderedDict()        # address -> (tokens, last refill)
        self._penalties = OrderedDict()      # address -> (count, refused until)

    def admit(self, address):
        """None if a connection from `address` may start now (it is then counted),
        else the Refused to tell it."""
        refusal = self._refusal(address)
        if refusal is None:
            self.connections += 1
            self.pre_login += 1
            self._pre_login_by_address[address] = self._pre_login_by_address.get(address, 0) + 1
        return refusal

    def _refusal(self, address):
        if self.connections >= self.max_clients:
            return FULL
        penalty = self._penalties.get(address)
        if penalty is not None and penalty[1] > self.clock():
            return PENALTY
        if self._pre_login_by_address.get(address, 0) >= self.per_address:
            return PER_ADDRESS
        if not self._take_token(address):
            return RATE
        if self.pre_login >= self.start and self.random() < self._drop_chance():
            return STARTUPS
        return None

    def _drop_chance(self):
        if self.pre_login >= self.full:
            return 1.0
        return 0.3 + 0.7 * (self.pre_login - self.start) / (self.full - self.start)

    def _take_token(self, address):
        now = self.clock()
        tokens, last = self._buckets.pop(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return allowed

    def penalise(self, address):
        """A login from `address` ended badly. The first PENALTY_FREE of them cost
        nothing (a broken client, a typo); after that its new connections are
        refused for 1 s, doubling with each further one up to 60 s. Forgotten
        after 10 quiet minutes. The seconds of this penalty (0: none yet)."""
        now = self.clock()
        count, until = self._penalties.pop(address, (0, now))
        if now - until > PENALTY_FORGET:
            count = 0
        count += 1
        seconds = 0.0 if count <= PENALTY_FREE else min(PENALTY_MAX,
                                                          2.0 ** (count - PENALTY_FREE - 1))
        self._penalties[address] = (count, now + seconds)
        while len(self._penalties) > self.max_addresses:
            self._penalties.popitem(last=False)
        return seconds

    def logged_in(self, address):
        """A connection from `address` has logged in: it no longer counts as starting."""
        self._release(address)

    def logged_out(self, address):
        """A logged-in connection went back to the login dialogue (account deleted)."""
        self.pre_login += 1
        self._pre_login_by_address[address] = self._pre_login_by_address.get(address, 0) + 1

    def ended(self, address, was_logging_in):
        """A connection ended (`was_logging_in`: before it logged in)."""
        self.connections = max(0, self.connections - 1)
        if was_logging_in:
            self._release(address)

    def _release(self, address):
        self.pre_login = max(0, self.pre_login - 1)
        left = self._pre_login_by_address.get(address, 0) - 1
        if left > 0:
            self._pre_login_by_address[address] = left
        else:
            self._pre_login_by_address.pop(address, None)
