"""Across servers: "there is new mail for X", over PostgreSQL's LISTEN/NOTIFY (issue 18).

When several Parley servers keep their data in one PostgreSQL database, a
message that server B commits for a user whose session lives on server A
must reach A live. Each server's monitor therefore

* announces, inside the very transaction that stores the mail
  (`announce(db, server_id, recipients)`, run by the writer's job through
  `Monitor.job(..., delivers=...)`), the recipients on channel
  `parley_mail`. PostgreSQL delivers a NOTIFY only when its transaction
  commits and drops it when the transaction (or the job's savepoint) rolls
  back, so a notification never runs ahead of the data and never tells of
  mail that was not stored;
* listens on that channel (`MailSignals.run`, its own autocommit
  connection), and for each announced recipient who has a session on this
  server reads that user's undelivered messages from the database and
  pushes the ones that session was not pushed yet
  (`MonitorConnection.push_unseen`); a parked session is woken instead,
  and the session that wakes reads its backlog as at every login.

The notification carries only the sending server's id and usernames,
never a message: the message itself is always read from the database, so
what a session is shown is what is committed, in the order the database
holds it. A server ignores its own announcements: its hub pushed those
already, after its commit.

Talks to: PostgreSQL (psycopg 3, asynchronously, on the monitor's event
loop), the monitor's hub (`connection.Hub`) and its reader pool.

How it fails: a lost listening connection is logged once, retried with a
growing pause (`RETRY_FIRST` to `RETRY_MOST` seconds), and on every
(re)connection every local session is caught up, so a notification missed
while the link was down delays a push and loses nothing. A payload that is
not ours is logged and ignored. A failed catch-up read is logged; the
messages stay undelivered in the database for the next notification or
login.
"""

import asyncio
import logging
import os

from Modules.database import storage

log = logging.getLogger("parley.mail_signals")

CHANNEL = "parley_mail"
PAYLOAD_MAX = 7900        # PostgreSQL refuses a payload of 8000 bytes or more
RETRY_FIRST, RETRY_MOST = 0.5, 30.0


def new_server_id():
    """This monitor's id on the channel: unique per start, no spaces."""
    return os.urandom(8).hex()


def payloads(server_id, recipients):
    """'SERVER_ID user user ...' texts of at most PAYLOAD_MAX bytes, every recipient once."""
    texts, current = [], server_id
    for user in sorted(set(recipients)):
        if len(current) + 1 + len(user) > PAYLOAD_MAX:
            texts.append(current)
            current = server_id
        current += " " + user
    if current != server_id:
        texts.append(current)
    return texts


def parse(payload):
    """(server_id, [users]) of one payload, or None for one that is not ours."""
    parts = payload.split(" ")
    if len(parts) < 2 or not all(parts):
        return None
    return parts[0], parts[1:]


def announce(db, server_id, recipients):
    """Inside the storing transaction: tell the other servers who has new mail."""
    for text in payloads(server_id, recipients):
        storage.execute_later(db, "SELECT pg_notify(?, ?)", (CHANNEL, text))


RECENT = 50           # undelivered rows read back with each delivery (see `delivering`)


def delivering(fn, delivers, server_id, recent):
    """The writer's job `fn`, announcing the recipients of its deliveries before the
    commit (`delivers(result)` -> [(recipient, message)]). It also reads back, in
    the same transaction, each recipient's undelivered messages up to the new one
    (at most RECENT, into `recent[recipient]`): the after-commit hook pushes them
    to this server's sessions in id order at once (`Hub.deliver`), so that mail
    another server committed just before is not overtaken, and the push still
    leaves before the sender's reply, as with SQLite."""
    def job(db, *args):
        result = fn(db, *args)
        deliveries = delivers(result)
        announce(db, server_id, [recipient for recipient, _ in deliveries])
        recent.clear()
        for recipient, message in deliveries:
            recent[recipient] = storage.undelivered_up_to(db, recipient, message["id"], RECENT)
        return result
    job.__name__ = getattr(fn, "__name__", "job")
    return job


def _ignore(_payload):
    pass


async def _first_to_end(*coroutines):
    """Run them together until one ends (a lost connection raises); cancel the rest."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        task.result()


class MailSignals:
    """Listens for the other servers' announcements and pushes what they stored.
    Other modules share its link: `listen(channel, handler, on_connect)` adds a
    channel (the session roster, `roster.py`), `send(channel, text)` notifies on
    one, in order, from a second connection of its own."""

    def __init__(self, dsn, hub, read, server_id=None):
        self.dsn, self.hub, self.read = dsn, hub, read
        self.server_id = server_id or new_server_id()
        self.connected = asyncio.Event()
        self._handlers = {CHANNEL: self.received}
        self._on_connect = [self.catch_up_everyone]
        self._outgoing = asyncio.Queue()
        self._looking = {}          # user -> True while a catch-up runs (True: run again)
        self._tasks = set()

    def listen(self, channel, handler, on_connect=None):
        self._handlers[channel] = handler
        if on_connect is not None:
            self._on_connect.append(on_connect)

    def send(self, channel, text):
        """Queued; sent while connected (dropped while not: `on_connect` resends)."""
        if self.connected.is_set():
            self._outgoing.put_nowait((channel, text))

    async def run(self):
        """Listen until cancelled, reconnecting after any failure."""
        import psycopg                     # only a PostgreSQL deployment needs it

        pause, down_since = RETRY_FIRST, None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                        self.dsn, autocommit=True) as conn, \
                        await psycopg.AsyncConnection.connect(
                            self.dsn, autocommit=True) as sender:
                    for channel in self._handlers:
                        await conn.execute(f"LISTEN {channel}")
                    if down_since is not None:
                        log.warning("listening to the other servers again")
                    pause, down_since = RETRY_FIRST, None
                    await self._connected()
                    await _first_to_end(self._listen_all(conn), self._send_all(sender))
            except (psycopg.Error, OSError) as error:
                self.connected.clear()
                if down_since is None:
                    down_since = asyncio.get_running_loop().time()
                    log.warning("lost the link to the other servers (%s); retrying",
                                type(error).__name__)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MOST)

    async def _connected(self):
        while not self._outgoing.empty():   # from before the outage: the hooks resend
            self._outgoing.get_nowait()
        self.connected.set()
        for hook in self._on_connect:
            hook()

    async def _listen_all(self, conn):
        async for note in conn.notifies():
            self._handlers.get(note.channel, _ignore)(note.payload)

    async def _send_all(self, sender):
        while True:
            channel, text = await self._outgoing.get()
            await sender.execute("SELECT pg_notify(%s, %s)", (channel, text))

    def received(self, payload):
        parsed = parse(payload)
        if parsed is None:
            log.warning("ignored a %d-byte notification that is not Parley's", len(payload))
            return
        sender, users = parsed
        if sender == self.server_id:
            return                          # our hub pushed these after our commit
        for user in users:
            self.look(user)

    def catch_up_everyone(self):
        for user in list(self.hub.subscribers):
            self.look(user)

    def look(self, user):
        """New mail for `user` somewhere: wake a parked session, catch up live ones."""
        if user in self.hub.parked:
            self.hub.wake(user)
        if user not in self.hub.subscribers:
            return
        if user in self._looking:           # one read at a time per user; then again
            self._looking[user] = True
            return
        self._looking[user] = False
        task = asyncio.get_running_loop().create_task(self._catch_up(user))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, user):
        try:
            while True:
                try:
                    rows = await self.read(user, storage.undelivered, user)
                except Exception as error:   # noqa: BLE001  (logged; the mail waits)
                    log.warning("could not read %s's new mail from another server (%s)",
                                user, type(error).__name__)
                    return
                for conn in list(self.hub.subscribers.get(user, ())):
                    conn.push_unseen(rows)
                if not self._looking.get(user):
                    return
                self._looking[user] = False
        finally:
            self._looking.pop(user, None)
