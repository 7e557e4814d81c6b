"""Parking, the user process's side (issue 16): when an idle session asks to Park.

`SessionParking` is a mixin of `user_process.UserSession` (its state, its database
link, its clocks are that class's). A session parks after `--park-after` seconds
with nothing from its client and nothing in flight: no answer pending, no push
unacknowledged, nothing buffered either way, no rate_limited pause, the backlog of
its Subscribe pushed. It asks the database `Park` with `seen`, the highest message
id it pushed; while that is out (PARKING) it does not read its client, so whatever
the client sends waits in the kernel and wakes the daemon at once. Answered, the
session is PARKED and `park_payload()` goes to the daemon (`server/parking.py`);
refused (`busy`: a push crossed it, an upload is open, no daemon link), it runs on.
A session woken by a message (not by its client) parks again QUICK_REPARK seconds
after its client's last bytes (its Ack), until the client sends a request: a
broadcast to many parked sessions must not keep a process each for --park-after.

Talks to: the database through the session's link. How it fails: a link that is
down when it would park leaves the session running; a lost Park answer (the
database restarted) counts as refused.
"""

import logging
import time

from Modules.database.link import DbUnavailable

log = logging.getLogger("parley.user")

PARKING, PARKED = "PARKING", "PARKED"
RUNNING = "RUNNING"
QUICK_REPARK = 1.0                 # seconds: a session woken by a message parks again


class SessionParking:
    """When to ask Park, its answer, and the hand-back (a mixin of UserSession)."""

    def _park_due(self):
        after = self.park_after if self.client_spoke else min(self.park_after, QUICK_REPARK)
        return max(self.heard_at, self.quiet_since) + after

    def _park_if_idle(self):
        """--park-after: nothing from the client for that long, nothing of ours in
        flight (no answer pending, no push unacknowledged, nothing buffered either
        way): ask the database to Park; its answer hands the connection back."""
        if not self.park_after or self.state != RUNNING or self.shutdown_requested:
            return
        now = time.monotonic()
        if self.pending or self.paused_until is not None or self.unacked or self.out \
                or self.db.out or not self.ready_sent or self.subscribe_rid is not None:
            self.quiet_since = now
            return
        if now < self._park_due():
            return
        try:
            self.park_rid = self.db.send_request("Park", now=False, seen=self.seen)
        except DbUnavailable:
            self.quiet_since = now
            return
        self.life.move("park")

    def _on_park_reply(self, reply):
        self.park_rid = None
        if reply.ok:
            self.life.move("parked")
            log.debug("%s: parked", self.user)
        else:                         # something moved meanwhile: later, perhaps
            self.life.move("park_refused")
            self.quiet_since = time.monotonic()

    def park_payload(self):
        """The hand-back to the daemon: the channel (nonces go on), and how long the
        client has been silent (for --idle-timeout and the next park)."""
        return {"action": "park", "state": self.conn.export_state(),
                "idle_for": time.monotonic() - self.heard_at}

