"""Who is logged in on the other servers: the session roster (issue 18).

When several Parley servers share one PostgreSQL database, presence
(`who`, `last NAME`, join and leave notices) and the operator's `admin
who` must span them all. Each server's monitor tells the others about its
own sessions on channel `parley_sessions` (through the link of
`mail_signals.MailSignals`), and keeps a copy of theirs in memory; nothing
is stored, so a server that dies leaves nothing stale behind.

A payload is this server's id and events, separated by spaces:

* `+USER:BOUND_AT:KEY:ADDRESS` a session began (KEY: its ticket's nonce)
* `-KEY`                       it ended
* `=HOST`                      forget this server's sessions: what follows
                               (in this payload and the `+` events after it)
                               is all of them, a snapshot
* `?`                          a roll call: every server answers with a snapshot
* `~`                          still alive (every `HEARTBEAT` seconds)

On every (re)connection of the link a server sends its snapshot and a
roll call, so two servers that lost sight of each other agree again. A
server not heard from for `GONE_AFTER` seconds is taken to be gone: its
sessions leave the picture (their people go offline, with a notice, as
for a session that ends). Presence notices are still made by each server
for its own sessions (`presence.py`), from the picture of all servers.

A remote session is a `RemoteSession`: the attributes presence and `who`
read (user, address, bound_at; idle is not known across servers and is
shown as such); it cannot be sent a notice or closed from here.

Talks to: `MailSignals` (send, listen), the monitor (its local sessions,
its presence tracker). How it fails: an event it cannot parse is logged
and skipped; the rest of the payload is still applied.
"""

import asyncio
import logging
import socket
import time

log = logging.getLogger("parley.roster")

CHANNEL = "parley_sessions"
HEARTBEAT = 5.0
GONE_AFTER = 3 * HEARTBEAT
EVENTS_MAX = 7800          # bytes of events in one payload (PostgreSQL: under 8000)


class _NotSubscribed:
    state = "REMOTE"        # never connection.LIVE: no pushes or notices from here


class RemoteSession:
    """A session on another server, as presence and `who` see it."""

    parked = False
    last_request = None
    subscription = _NotSubscribed()

    def __init__(self, user, bound_at, address, server):
        self.user, self.bound_at, self.address, self.server = user, bound_at, address, server

    def send_notice(self, *_args):
        """Its own server tells it (each server tells its own sessions)."""

    def closed(self):
        return False


class _Server:
    def __init__(self, host, seen):
        self.host, self.seen, self.sessions = host, seen, {}


class Roster:
    """This server's sessions told to the others, and theirs as heard."""

    def __init__(self, monitor, signals, host=None, clock=time.monotonic):
        self.monitor, self.signals, self.clock = monitor, signals, clock
        self.host = host or socket.gethostname()
        self.servers = {}                   # server id -> _Server
        signals.listen(CHANNEL, self.received, on_connect=self.connected)

    # -- what the others are told ------------------------------------------------
    def _send(self, events):
        for text in _chunks(events):
            self.signals.send(CHANNEL, f"{self.signals.server_id} {text}")

    def session_started(self, session):
        self._send([_began(session)])

    def session_ended(self, session):
        self._send([f"-{_key(session)}"])

    def connected(self):
        """The link is (back) up: our snapshot, and a roll call for theirs."""
        self._send(self._snapshot() + ["?"])

    def _snapshot(self):
        return [f"={self.host}"] + [_began(session) for session in self.monitor.user_sessions()]

    async def keep_alive(self):
        """Every HEARTBEAT: say we are here, and forget servers that went silent."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            self._send(["~"])
            self.forget_silent()

    # -- what the others say -----------------------------------------------------
    def received(self, payload):
        server_id, _, text = payload.partition(" ")
        if not server_id or server_id == self.signals.server_id:
            return
        online_before = set(self.monitor.sessions_by_user(everywhere=True))
        server = self.servers.get(server_id)
        before = self._people(server)
        for event in filter(None, text.split(" ")):
            server = self._apply(server_id, server, event)
        self._changed(before ^ self._people(server), online_before)

    def _apply(self, server_id, server, event):
        if server is None:
            server = self.servers[server_id] = _Server("?", self.clock())
        server.seen = self.clock()
        try:
            if event.startswith("+"):
                user, bound_at, key, address = event[1:].split(":", 3)
                server.sessions[key] = RemoteSession(user, float(bound_at), address,
                                                     server.host)
            elif event.startswith("-"):
                server.sessions.pop(event[1:], None)
            elif event.startswith("="):
                server.host, server.sessions = event[1:] or "?", {}
            elif event == "?":
                self._send(self._snapshot())
            elif event != "~":
                raise ValueError(event[:1])
        except ValueError:
            log.warning("skipped a session event from another server that is not Parley's")
        return server

    def forget_silent(self):
        now = self.clock()
        for server_id, server in list(self.servers.items()):
            if now - server.seen > GONE_AFTER:
                log.warning("server %s (%s) has not been heard for %.0f s: its %d sessions "
                            "are taken to have ended", server_id, server.host,
                            now - server.seen, len(server.sessions))
                online_before = set(self.monitor.sessions_by_user(everywhere=True))
                del self.servers[server_id]
                self._changed(self._people(server), online_before)

    def _people(self, server):
        return {session.user for session in server.sessions.values()} if server else set()

    def _changed(self, people, online_before):
        """People who came or went on another server: presence, as for local ones."""
        for user in people:
            self.monitor.presence.remote_change(user, user in online_before)

    def sessions(self):
        """Every session heard of on the other servers."""
        return [session for server in self.servers.values()
                for session in server.sessions.values()]


def _key(session):
    """A session's key: its ticket's nonce, the same while it is parked and after."""
    ticket = getattr(session, "ticket", None)
    return getattr(ticket, "nonce", None) or f"s{id(session)}"


def _began(session):
    return f"+{session.user}:{session.bound_at:.3f}:{_key(session)}:{session.address}"


def _chunks(events):
    """Events joined by spaces, at most EVENTS_MAX bytes (UTF-8: a host name may not
    be ASCII) a text."""
    texts, current = [], ""
    for event in events:
        if current and len(current.encode()) + 1 + len(event.encode()) > EVENTS_MAX:
            texts.append(current)
            current = ""
        current = f"{current} {event}" if current else event
    if current:
        texts.append(current)
    return texts
