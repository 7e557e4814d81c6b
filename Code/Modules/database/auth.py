"""Password hashing, login throttling and session tickets (database process only).

* `PasswordHasher`: argon2id through passlib, run on small thread pools so
  that hashing (tens of MiB and tens of ms per hash) never blocks the
  database process's request loop. Logins of existing accounts and the
  creation of new ones have a lane each (their own threads, their own cap
  on work in progress: 64 and 8 by default); beyond its cap a request is
  told the server is busy, so a login flood cannot exhaust memory and an
  account-creation flood cannot delay anyone's login. An unknown username is
  checked against a dummy hash, so it costs the same time as a wrong
  password. Hashes never leave this module's caller, the database process.
* `LoginThrottle`: failed logins per (username, source address) and per
  source address, with a delay that doubles after a few free tries (3
  per username from one address, 10 per address across all usernames).
  The delay applies to that username *from that address* and to that
  address: a guesser cannot keep the owner out, who logs in from
  elsewhere, and one noisy address does not lock out a whole office
  behind one NAT at once. In memory, bounded in size.
* `RegistrationLimit`: new accounts per source address and in all, per
  hour (a sliding window), so that a flood of account creations is refused
  with one clear sentence instead of filling the hasher.
* Tickets: after a verified login the database process hands out an
  HMAC-signed ticket naming the account id, the username, when it was
  issued and a nonce; a user process presents it to bind its database
  connection to that user. `TicketBook` lets each ticket bind once, within
  `TICKET_TTL` seconds of its issue, and never again once its session
  ended; after a database restart the daemon hands the new monitor the
  tickets of the sessions still running, which may each bind once more.
  The secret lives only in the daemon and database processes.
"""

import asyncio
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from passlib.context import CryptContext

from Modules.runtime import BACKGROUND_NICE, lower_priority

DEFAULT_ARGON2 = {"memory_kib": 19456, "time_cost": 2, "parallelism": 1}


class Busy(Exception):
    """Too many password checks are waiting; the client should retry soon."""


def argon2_params_from_env(environ=os.environ):
    """Argon2 parameters, overridable by PARLEY_ARGON2_MEMORY_KIB/_TIME_COST/_PARALLELISM."""
    params = dict(DEFAULT_ARGON2)
    for key in params:
        value = environ.get(f"PARLEY_ARGON2_{key.upper()}")
        if value:
            params[key] = int(value)
    return params


class PasswordHasher:
    """argon2id hashing and verification on capped thread pools, one per lane.

    Checking the password of an existing account ("verify") and hashing the
    password of a new one ("create") never wait for each other: each lane
    has its own threads and its own cap on work in progress, so a flood of
    account creations fills only its own lane (and is answered Busy beyond
    it) while logins go on being checked.
    """

    def __init__(self, memory_kib=19456, time_cost=2, parallelism=1, workers=2,
                 max_waiting=64, create_workers=1, max_creating=8):
        self.context = CryptContext(
            schemes=["argon2"], argon2__type="ID", argon2__memory_cost=memory_kib,
            argon2__rounds=time_cost, argon2__parallelism=parallelism)
        self._pools = {lane: ThreadPoolExecutor(
            max_workers=count, thread_name_prefix=f"parley-hash-{lane}",
            initializer=lower_priority, initargs=(BACKGROUND_NICE, True))
            for lane, count in (("verify", workers), ("create", create_workers))}
        self.limits = {"verify": max_waiting, "create": max_creating}
        self.in_flight = {"verify": 0, "create": 0}
        self._dummy_hash = self.context.hash(os.urandom(16).hex())

    @property
    def max_waiting(self):
        return self.limits["verify"]

    @max_waiting.setter
    def max_waiting(self, value):
        self.limits["verify"] = value

    async def hash(self, password):
        """The hash of a new account's password (the "create" lane)."""
        return await self._run("create", self.context.hash, password)

    async def verify(self, password, stored_hash):
        """(ok, new_hash_or_None): new_hash when the parameters changed."""
        if stored_hash is None:
            await self._run("verify", self.context.verify, password, self._dummy_hash)
            return False, None
        return await self._run("verify", self._verify_and_update, password, stored_hash)

    def _verify_and_update(self, password, stored_hash):
        try:
            return self.context.verify_and_update(password, stored_hash)
        except (ValueError, TypeError):  # a malformed stored hash never verifies
            return False, None

    async def _run(self, lane, fn, *args):
        if self.in_flight[lane] >= self.limits[lane]:
            raise Busy("too many logins at once; try again in a moment")
        self.in_flight[lane] += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pools[lane], fn, *args)
        finally:
            self.in_flight[lane] -= 1

    def close(self):
        for pool in self._pools.values():
            pool.shutdown(wait=True)


class LoginThrottle:
    """Growing delays after failed logins, per (username, address) and per address."""

    def __init__(self, free_failures=3, free_address_failures=10, base_delay=1.0,
                 max_delay=60.0, forget_after=900.0, max_entries=100_000, clock=time.monotonic):
        self.free = {"pair": free_failures, "addr": free_address_failures}
        self.base_delay, self.max_delay = base_delay, max_delay
        self.forget_after, self.max_entries, self.clock = forget_after, max_entries, clock
        self._entries = OrderedDict()  # key -> (failures, blocked_until, last_failure)

    def wait_time(self, username, address):
        """Seconds until a login for this user from this address may be tried."""
        now = self.clock()
        return max(self._wait_for(("pair", username, address), now),
                   self._wait_for(("addr", address), now))

    def failed(self, username, address):
        now = self.clock()
        for key in (("pair", username, address), ("addr", address)):
            self._record_failure(key, now)

    def succeeded(self, username, address):
        """The right password: that username's failures from that address are forgiven
        (the address's count stays: one good login does not clear a guesser)."""
        self._entries.pop(("pair", username, address), None)

    def _wait_for(self, key, now):
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        if now - entry[2] > self.forget_after:
            del self._entries[key]
            return 0.0
        return max(0.0, entry[1] - now)

    def _record_failure(self, key, now):
        failures, _, last = self._entries.pop(key, (0, 0.0, now))
        if now - last > self.forget_after:
            failures = 0
        failures += 1
        extra = failures - self.free[key[0]]
        delay = 0.0 if extra <= 0 else min(self.max_delay, self.base_delay * 2.0 ** min(extra - 1, 64))
        self._entries[key] = (failures, now + delay, now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class RegistrationLimit:
    """At most `per_address` new accounts per address and `total` in all, per
    `window` seconds (a sliding window). In memory, bounded in size."""

    def __init__(self, per_address=20, total=200, window=3600.0, clock=time.monotonic,
                 max_addresses=10_000):
        self.per_address, self.total, self.window = per_address, total, window
        self.clock, self.max_addresses = clock, max_addresses
        self._by_address = OrderedDict()    # address -> deque of creation times
        self._all = deque()

    def wait_time(self, address):
        """Seconds until `address` may create an account (0: now)."""
        now = self.clock()
        mine = self._by_address.get(address, ())
        return max(self._wait(mine, self.per_address, now), self._wait(self._all, self.total, now))

    def record(self, address):
        now = self.clock()
        mine = self._by_address.pop(address, None) or deque()
        for times in (mine, self._all):
            times.append(now)
            while times and times[0] <= now - self.window:
                times.popleft()
        self._by_address[address] = mine
        while len(self._by_address) > self.max_addresses:
            self._by_address.popitem(last=False)

    def forget(self, address):
        """Take back the latest record of `address` (a creation that failed)."""
        mine = self._by_address.get(address)
        if mine:
            mine.pop()
            if self._all:
                self._all.pop()

    def _wait(self, times, limit, now):
        recent = [t for t in times if t > now - self.window]
        if len(recent) < limit:
            return 0.0
        return recent[len(recent) - limit] + self.window - now


TICKET_TTL = 30.0           # seconds a fresh ticket may wait for its Bind
TICKETS_KEPT = 100_000      # used tickets remembered (logins within one TTL), at most


class Ticket(NamedTuple):
    """What a genuine ticket says."""

    account_id: int
    username: str
    issued_at: float            # the monitor's clock when it was issued
    nonce: str                  # unique per login


def issue_ticket(secret, account_id, username, issued_at, nonce=None):
    """A ticket that binds one database connection to one account, once."""
    nonce = nonce or secrets.token_hex(12)
    body = f"{account_id}:{username}:{int(issued_at * 1000)}:{nonce}"
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}:{mac}"


def check_ticket(secret, ticket):
    """The Ticket a genuine ticket string carries, else None (forged, malformed)."""
    if not isinstance(ticket, str) or ticket.count(":") != 4:
        return None
    account_id, username, issued_ms, nonce, mac = ticket.split(":")
    body = f"{account_id}:{username}:{issued_ms}:{nonce}"
    expected = hmac.new(secret, body.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.encode("utf-8", "replace"), expected.encode()) \
            or not all(part.isascii() and part.isdigit() for part in (account_id, issued_ms)):
        return None
    return Ticket(int(account_id), username, int(issued_ms) / 1000, nonce)


class TicketBook:
    """Which tickets may still bind a connection: each one once, soon, while its
    session lives.

    A fresh ticket binds if it was issued less than `ttl` seconds ago and has
    never bound; binding makes it *live* until its connection ends, and then
    it is dead for good. A monitor started again after a crash is handed the
    tickets of the sessions still running (`resumable`): each of those may
    bind once more, whatever its age, so that their user processes carry on.
    In memory, bounded: a used ticket is remembered until it is too old to
    bind anyway.
    """

    def __init__(self, ttl=TICKET_TTL, resumable=(), clock=time.time, kept=TICKETS_KEPT):
        self.ttl, self.clock, self.kept = ttl, clock, kept
        self.resumable = set(resumable)     # nonces of sessions a crash cut off
        self.live = {}                      # nonce -> whatever bound it
        self._used = OrderedDict()          # nonce -> the time it stops mattering

    def bind(self, ticket, holder):
        """True if `ticket` (a checked Ticket) may bind `holder` now; it is then live."""
        now = self.clock()
        self._forget_old(now)
        nonce = ticket.nonce
        if nonce in self.live or nonce in self._used:
            return False
        if nonce in self.resumable:
            self.resumable.discard(nonce)
        elif not (ticket.issued_at - 1.0 <= now <= ticket.issued_at + self.ttl):
            return False
        self.live[nonce] = holder
        self._used[nonce] = max(now, ticket.issued_at) + self.ttl
        while len(self._used) > self.kept:
            self._used.popitem(last=False)
        return True

    def ended(self, ticket):
        """The session bound by `ticket` is over: the ticket is dead."""
        self.live.pop(ticket.nonce, None)

    def _forget_old(self, now):
        while self._used:
            nonce, until = next(iter(self._used.items()))
            if until > now or nonce in self.live:
                return
            self._used.popitem(last=False)
