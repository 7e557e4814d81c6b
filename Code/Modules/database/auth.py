"""Password hashing, login throttling and session tickets (database process only).

* `PasswordHasher`: argon2id through passlib, run on a small thread pool so
  that hashing (tens of MiB and tens of ms per hash) never blocks the
  database process's request loop. At most `workers` hashes run at once and
  at most `max_waiting` are in progress (running or queued); beyond that a
  login is told the server is busy, so a login flood cannot exhaust memory. An unknown username is
  checked against a dummy hash, so it costs the same time as a wrong
  password. Hashes never leave this module's caller, the database process.
* `LoginThrottle`: failed logins per (username, source address) and per
  source address, with a delay that doubles after a few free tries (3
  per username from one address, 10 per address across all usernames).
  The delay applies to that username *from that address* and to that
  address: a guesser cannot keep the owner out, who logs in from
  elsewhere, and one noisy address does not lock out a whole office
  behind one NAT at once. In memory, bounded in size.
* Tickets: after a verified login the database process hands out an
  HMAC-signed ticket naming the account id and username; a user process
  presents it to bind its database connection to that user. The secret
  lives only in the daemon and database processes, so a ticket survives a
  restart of the database process but not of the daemon.
"""

import asyncio
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

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
    """argon2id hashing and verification on a capped thread pool."""

    def __init__(self, memory_kib=19456, time_cost=2, parallelism=1, workers=2,
                 max_waiting=64):
        self.context = CryptContext(
            schemes=["argon2"], argon2__type="ID", argon2__memory_cost=memory_kib,
            argon2__rounds=time_cost, argon2__parallelism=parallelism)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parley-hash",
                                        initializer=lower_priority, initargs=(
                                            BACKGROUND_NICE, True))
        self.max_waiting = max_waiting
        self._in_flight = 0
        self._dummy_hash = self.context.hash(os.urandom(16).hex())

    async def hash(self, password):
        return await self._run(self.context.hash, password)

    async def verify(self, password, stored_hash):
        """(ok, new_hash_or_None): new_hash when the parameters changed."""
        if stored_hash is None:
            await self._run(self.context.verify, password, self._dummy_hash)
            return False, None
        return await self._run(self._verify_and_update, password, stored_hash)

    def _verify_and_update(self, password, stored_hash):
        try:
            return self.context.verify_and_update(password, stored_hash)
        except (ValueError, TypeError):  # a malformed stored hash never verifies
            return False, None

    async def _run(self, fn, *args):
        if self._in_flight >= self.max_waiting:
            raise Busy("too many logins at once; try again in a moment")
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            self._in_flight -= 1

    def close(self):
        self._pool.shutdown(wait=True)


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


def issue_ticket(secret, account_id, username):
    """A ticket binding a database connection to one account."""
    body = f"{account_id}:{username}"
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}:{mac}"


def check_ticket(secret, ticket):
    """(account_id, username) from a genuine ticket, else None."""
    if not isinstance(ticket, str) or ticket.count(":") != 2:
        return None
    account_id, username, mac = ticket.split(":")
    expected = hmac.new(secret, f"{account_id}:{username}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.encode("utf-8", "replace"), expected.encode()) \
            or not (account_id.isascii() and account_id.isdigit()):
        return None
    return int(account_id), username
