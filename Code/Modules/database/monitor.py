"""The database process: the monitor, sole owner of Parley's three SQLite files.

Talks to: login and user processes over a Unix socket (length-prefixed
frames of the binary serializer, `Modules/database/link.py` is the other end);
the daemon through a readiness event and signals. Nothing else opens
`passwords.db`, `users.db` or `messages.db`, and no password hash leaves
this process.

Like OpenSSH's monitor, every connection has a *phase* and a small table of
the requests allowed in it (`ALLOWED`): a new connection may say Hello (it
becomes a login connection) or Bind a ticket (it becomes a user connection,
bound to the user the ticket names; every later request acts as that user,
taken from this process's own record, never from a request field). A
request outside the table is logged and the connection closed.

All SQL runs on the single writer (`Modules/database/writer.py`): group commit,
and replies only after COMMIT. `Ack` is the one request without a reply
(`NO_REPLY`): it is a lazy job that shares a later commit. Replies and
pushes to a connection leave in one write per loop turn. Password hashing
runs on a capped thread pool at a lower CPU priority (`Modules/database/auth.py`).
New messages are pushed to the recipient's subscribed connections straight
from the writer's after-commit hook, so each recipient sees messages in
the order they were committed, its stored backlog first.

Failures: a request that fails gets an error reply and the connection
stays up; a connection that breaks the protocol is closed; a storage
error at start-up (corrupt or foreign file) is logged and the process exits
with status 3 so that the daemon reports it instead of restarting forever.
"""

import asyncio
import fcntl
import logging
import os
import signal
import time
from typing import NamedTuple

from Modules.database import auth
from Modules import rules
from Modules.database import storage
from Modules.database.writer import CommitFailed, SingleWriter
from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.framing import NEED_DATA, FrameDecoder, encode_frame
from Modules.runtime import DAEMON_GONE, restore_default_signals, start_process
from Modules.wire.serializers import BINARY, Packet

log = logging.getLogger("parley.database")

MAX_FRAME = 2 * 1024 * 1024   # as db_client: above a session's 1 MiB packets
MAX_WRITE_BUFFER = 16 * 1024 * 1024   # a user process that stops reading is cut off
MAX_IDS_PER_REQUEST = 10_000
PUSH_BYTES = 256 * 1024               # worst-case UTF-8 size of one Push packet
INBOX_MAX = 200
EXIT_STORAGE_ERROR = 3
LOCK_FILE = "parley.lock"

ALLOWED = {
    "new": {"Hello", "Bind"},
    "login": {"Exists", "Verify", "Create"},
    "user": {"Subscribe", "Send", "Ack", "Inbox", "Read", "Delete", "DeleteAccount", "Stats"},
    "closed": set(),
}
# Requests answered by nothing: a user process never waits for an Ack, so the
# reply would only cost a frame and a wakeup per acknowledgement.
NO_REPLY = {"Ack"}


class RequestFailed(Exception):
    """A request that cannot be done; code and reason go back to the caller."""

    def __init__(self, code, reason):
        super().__init__(reason)
        self.code, self.reason = code, reason


def _error_fields(error):
    if isinstance(error, RequestFailed):
        return error.code, error.reason
    if isinstance(error, rules.RuleError):
        return error.code, error.reason
    if isinstance(error, CommitFailed):
        return "unavailable", "The server could not store this change; try again."
    if isinstance(error, storage.AccountExists):
        return "exists", "That username is taken."
    if isinstance(error, auth.Busy):
        return "busy", "The server is busy with other logins; try again in a moment."
    log.error("request failed: %s: %s", type(error).__name__, error)
    return "internal", "The server hit an internal error with this request."


def _ids(value):
    if not isinstance(value, list) or len(value) > MAX_IDS_PER_REQUEST or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise RequestFailed("bad_request", f"ids is a list of at most "
                                           f"{MAX_IDS_PER_REQUEST} integers")
    return value


class Shaped(NamedTuple):
    """A handler's answer: reply with shape(result) once the writer's job is done."""

    future: asyncio.Future
    shape: object


class Hub:
    """Who is subscribed for pushes; shared by every connection of the process."""

    def __init__(self):
        self.subscribers = {}   # username -> set of MonitorConnection

    def add(self, conn):
        self.subscribers.setdefault(conn.user, set()).add(conn)

    def remove(self, conn):
        conns = self.subscribers.get(conn.user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.subscribers[conn.user]

    def deliver(self, deliveries):
        """After-commit hook: push each (recipient, message) to its connections."""
        for recipient, message in deliveries:
            for conn in self.subscribers.get(recipient, ()):
                conn.queue_push(message)

    def account_deleted(self, username, origin):
        for conn in list(self.subscribers.get(username, ())):
            if conn is not origin:
                conn.send_notice("account_deleted")
                conn.close()


class Monitor:
    """State shared by every connection: writer, hasher, throttle, hub, secret."""

    def __init__(self, writer, hasher, throttle, ticket_secret):
        self.writer, self.hasher, self.throttle = writer, hasher, throttle
        self.ticket_secret = ticket_secret
        self.hub = Hub()
        self.connections = set()

    def job(self, fn, *args, after=None, lazy=False):
        return self.writer.submit(fn, *args, after=after, lazy=lazy)


class MonitorConnection(asyncio.Protocol):
    """One login or user process's connection, with its phase and allow table."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.phase = "new"
        self.user = None
        self.peer = self.address = "?"
        self.decoder = FrameDecoder(MAX_FRAME)
        self.transport = None
        self.subscription = None    # None, a list buffering pushes, or "live"
        self.close_after_reply = False
        self._outbox = []           # pushes waiting for the end of this loop turn
        self._wbuf = bytearray()    # frames waiting for the end of this loop turn

    # -- transport events ----------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.monitor.connections.add(self)

    def connection_lost(self, exc):
        self.monitor.connections.discard(self)
        if self.user is not None:
            self.monitor.hub.remove(self)
        self.phase = "closed"

    def data_received(self, data):
        try:
            self.decoder.receive_data(data)
            while (frame := self.decoder.next_event()) is not NEED_DATA:
                self.handle(BINARY.loads(frame))
        except RemoteProtocolError as error:
            log.warning("closing %s connection (%s): %s", self.phase, self.describe(),
                        error.reason)
            self.close()

    def describe(self):
        return f"user {self.user}" if self.user else f"peer {self.peer}"

    def close(self):
        self.phase = "closed"
        if self.transport is not None:
            self._flush_writes()
            self.transport.close()

    # -- requests --------------------------------------------------------------
    def handle(self, packet):
        if self.phase == "closed":
            return
        rid = packet.data.get("rid")
        if type(rid) is not int:   # noqa: E721 -- not a bool, not a huge string echoed back
            log.warning("request without an integer rid from %s; closing", self.describe())
            self.close()
            return
        if packet.op not in ALLOWED[self.phase]:
            log.warning("refused %s request from %s connection (%s); closing",
                        packet.op, self.phase, self.describe())
            self.reply_error(rid, "refused", f"{packet.op} is not allowed here")
            self.close()
            return
        handler = getattr(self, "op_" + packet.op.lower())
        try:
            result = handler(packet.data)
        except Exception as error:  # validation errors: reply, keep serving
            if packet.op in NO_REPLY:
                log.info("%s from %s ignored: %s", packet.op, self.describe(), error)
            else:
                self.reply_error(rid, *_error_fields(error))
            return
        if packet.op not in NO_REPLY:
            self._reply_when_done(rid, result)

    def _reply_when_done(self, rid, result):
        if type(result) is Shaped:
            result.future.add_done_callback(
                lambda f: self._reply_future(rid, f, result.shape))
            return
        if asyncio.iscoroutine(result):
            asyncio.ensure_future(result).add_done_callback(lambda f: self._reply_future(rid, f))
        else:
            self.reply(rid, result or {})

    def _reply_future(self, rid, future, shape=None):
        if future.cancelled():
            self.reply_error(rid, "unavailable", "The database is shutting down.")
        elif future.exception() is not None:
            self.reply_error(rid, *_error_fields(future.exception()))
        elif shape is not None:
            self.reply(rid, shape(future.result()))
        else:
            self.reply(rid, future.result() or {})

    # -- output --------------------------------------------------------------
    def send(self, packet):
        """Queue a frame; every frame of this loop turn leaves in one write."""
        if self.transport is None or self.transport.is_closing():
            return
        try:
            frame = encode_frame(BINARY.dumps(packet), MAX_FRAME)
        except LocalProtocolError as error:   # a reply we cannot frame: this one ends
            log.error("cannot send %s to %s: %s; closing", packet.op, self.describe(),
                      error.reason)
            self.close()
            return
        if not self._wbuf:
            asyncio.get_running_loop().call_soon(self._flush_writes)
        self._wbuf += frame

    def _flush_writes(self):
        if not self._wbuf or self.transport.is_closing():
            return
        data, self._wbuf = bytes(self._wbuf), bytearray()
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("%s does not read its pushes; disconnecting it", self.describe())
            self.close()

    def reply(self, rid, fields):
        self.send(Packet("Reply", {"rid": rid, "ok": True, **fields}))

    def reply_error(self, rid, code, reason):
        self.send(Packet("Reply", {"rid": rid, "ok": False, "code": code, "reason": reason}))
        if self.close_after_reply:
            self.close()

    def send_notice(self, event):
        self.send(Packet("Notice", {"event": event}))

    def queue_push(self, message):
        """Called from the after-commit hook; pushes leave once per batch."""
        if isinstance(self.subscription, list):
            self.subscription.append(message)
        elif self.subscription == "live":
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self._flush_pushes)
            self._outbox.append(message)

    def _flush_pushes(self):
        messages, self._outbox = self._outbox, []
        self._send_pushes(messages)

    def _send_pushes(self, messages):
        """Push packets of at most PUSH_BYTES of text each (frames are bounded)."""
        batch, size = [], 0
        for message in messages:
            weight = 256 + 4 * (len(message["body"]) + len(message["subject"]))
            if batch and size + weight > PUSH_BYTES:
                self.send(Packet("Push", {"messages": batch}))
                batch, size = [], 0
            batch.append(message)
            size += weight
        if batch:
            self.send(Packet("Push", {"messages": batch}))

    # -- phase "new" ---------------------------------------------------------
    def op_hello(self, data):
        if data.get("role") != "login":
            raise RequestFailed("bad_request", "Hello takes role 'login'")
        self.peer = str(data.get("peer", "?"))[:64]
        self.address = str(data.get("address") or self.peer)[:64]   # the throttle's key
        self.phase = "login"
        return {}

    async def op_bind(self, data):
        bound = auth.check_ticket(self.monitor.ticket_secret, data.get("ticket"))
        account = bound and await self.monitor.job(storage.account, bound[1])
        if not account or account["id"] != bound[0] or account["state"] != "active":
            self.close_after_reply = True
            raise RequestFailed("bad_ticket", "That session is no longer valid; log in again.")
        self.user, self.phase = bound[1], "user"
        return {"user": self.user}

    # -- phase "login" -------------------------------------------------------
    def op_exists(self, data):
        username = rules.check_username(data.get("username"))
        return self._wrap(self.monitor.job(storage.user_exists, username), "exists")

    async def op_verify(self, data):
        username = rules.check_username(data.get("username"))
        password = data.get("password")
        if not isinstance(password, str) or len(password) > rules.PASSWORD_MAX:
            raise RequestFailed("wrong_password", "Wrong username or password.")
        self._check_throttle(username)
        stored, account_id = await self.monitor.job(storage.credentials, username)
        ok, new_hash = await self.monitor.hasher.verify(password, stored)
        now = _now()
        if not ok:
            return await self._login_failed(username, stored is not None, now)
        if new_hash:
            await self.monitor.job(storage.set_password_hash, username, new_hash, now)
        log.info("login of %s from %s", username, self.peer)
        return await self._login_succeeded(username, account_id, now)

    def _check_throttle(self, username):
        wait = self.monitor.throttle.wait_time(username, self.address)
        if wait > 0:
            raise RequestFailed("throttled", f"Too many failed logins; try again in "
                                             f"{max(1, round(wait))} seconds.")

    async def _login_failed(self, username, exists, now):
        self.monitor.throttle.failed(username, self.address)
        if exists:
            await self.monitor.job(storage.record_login, username, now, False)
        log.info("failed login for %s from %s", username, self.peer)
        raise RequestFailed("wrong_password", "Wrong username or password.")

    async def _login_succeeded(self, username, account_id, now):
        self.monitor.throttle.succeeded(username)
        await self.monitor.job(storage.record_login, username, now, True)
        return {"ticket": auth.issue_ticket(self.monitor.ticket_secret, account_id, username)}

    async def op_create(self, data):
        username = rules.check_username(data.get("username"))
        password = rules.check_password(data.get("password"))
        password_hash = await self.monitor.hasher.hash(password)
        now = _now()
        account_id = await self.monitor.job(storage.create_account, username, password_hash, now)
        log.info("account %s created from %s", username, self.peer)
        return await self._login_succeeded(username, account_id, now)

    # -- phase "user": every request acts as self.user -------------------------
    def op_subscribe(self, _data):
        if self.subscription is not None:
            raise RequestFailed("bad_request", "already subscribed")
        self.subscription = []
        self.monitor.hub.add(self)
        return self._wrap(self.monitor.job(storage.undelivered, self.user,
                                           after=self._push_backlog), None,
                          lambda rows: {"backlog": len(rows)})

    def _push_backlog(self, rows):
        buffered, self.subscription = self.subscription, "live"
        last = rows[-1]["id"] if rows else 0
        fresh = [m for m in buffered or () if m["id"] > last]
        self._send_pushes(rows)
        for message in fresh:
            self.queue_push(message)

    def op_send(self, data):
        args = (self.user, rules.check_recipient(data.get("to")),
                rules.check_subject(data.get("subject")), rules.check_body(data.get("body")),
                rules.check_client_id(data.get("client_id")), _now())
        future = self.monitor.job(storage.store_message, *args,
                                  after=lambda r: self.monitor.hub.deliver(r["deliveries"]))
        return self._wrap(future, None, _send_result)

    def op_ack(self, data):
        """No reply (NO_REPLY): the commit may wait to share a later transaction."""
        self.monitor.job(storage.mark_delivered, self.user, _ids(data.get("ids")), _now(),
                         lazy=True).add_done_callback(_log_failure)

    def op_inbox(self, data):
        before, limit = data.get("before"), data.get("limit", 50)
        if before is not None and (type(before) is not int):   # noqa: E721
            raise RequestFailed("bad_request", "before is an integer message id")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= INBOX_MAX:
            raise RequestFailed("bad_request", f"limit is between 1 and {INBOX_MAX}")
        future = self.monitor.job(storage.inbox, self.user, before, limit)
        return self._wrap(future, None, lambda r: {"messages": r[0], "more": r[1]})

    async def op_read(self, data):
        if not isinstance(data.get("id"), int) or isinstance(data.get("id"), bool):
            raise RequestFailed("bad_request", "id is an integer")
        message = await self.monitor.job(storage.read_message, self.user, data.get("id"), _now())
        if message is None:
            raise RequestFailed("not_found", f"You have no message {data.get('id')}.")
        return {"message": message}

    def op_delete(self, data):
        future = self.monitor.job(storage.delete_messages, self.user, _ids(data.get("ids")))
        return self._wrap(future, None, lambda r: {"deleted": r[0], "missing": r[1]})

    async def op_deleteaccount(self, _data):
        user = self.user
        bounced = await delete_account(self.monitor, user)
        self.monitor.hub.account_deleted(user, origin=self)
        self.monitor.hub.remove(self)
        self.phase, self.subscription = "closed", None
        log.info("account %s deleted; %d unread messages returned", user, bounced)
        return {"deleted": True, "bounced": bounced}

    async def op_stats(self, _data):
        account = await self.monitor.job(storage.account, self.user)
        return {"account": {k: v for k, v in account.items() if k != "id"}}

    @staticmethod
    def _wrap(future, field, shape=None):
        """The writer's future, with how its result becomes the reply's fields."""
        return Shaped(future, shape or (lambda value: {field: value}))


def _log_failure(future):
    """Done-callback of a job nobody waits for (an Ack): its failure goes to the log."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("a deferred write was not stored: %s", future.exception())


def _send_result(result):
    fields = {"id": result["id"], "bounced": result["bounced"], "duplicate": result["duplicate"]}
    if result.get("note"):
        fields["note"] = result["note"]
    return fields


def _now():
    return time.time()


async def delete_account(monitor, username):
    """The crash-safe deletion steps, each committed before the next begins."""
    await monitor.job(storage.mark_deleting, username)
    bounces = await monitor.job(storage.bounce_and_clear_inbox, username, _now(),
                                after=monitor.hub.deliver)
    await monitor.job(storage.remove_password, username)
    await monitor.job(storage.remove_account, username)
    return len(bounces)


async def recover(monitor):
    """Repair torn commits, finish interrupted deletions, prune old send ids."""
    report_repair(await monitor.job(storage.repair_torn_writes))
    await finish_deletions(monitor)
    await monitor.job(storage.prune_sent_ids, _now() - 30 * 86400)


def report_repair(result):
    if result["torn_accounts"]:
        log.warning("%d account creations were cut off by a crash or a failed write; "
                    "removing them: %s", len(result["torn_accounts"]),
                    ", ".join(result["torn_accounts"]))
    if result["orphan_passwords"] or result["counts_fixed"]:
        log.warning("repaired after a crash or a failed write: %d stray passwords, "
                    "%d undelivered counts", result["orphan_passwords"],
                    result["counts_fixed"])


async def finish_deletions(monitor):
    for username in await monitor.job(storage.accounts_being_deleted):
        log.warning("finishing the deletion of account %s", username)
        await delete_account(monitor, username)


def repaired_after_failed_commit(monitor, result):
    """Writer hook (loop thread): report, and finish any deletion the repair started."""
    report_repair(result)
    if result["torn_accounts"]:
        asyncio.ensure_future(finish_deletions(monitor))


def lock_data_dir(data_dir, wait=10.0):
    """An exclusive lock on the data dir for as long as this process lives.

    Two database processes on the same files (an orphan of a killed
    forkserver, or a second server started by mistake) would lose writes;
    the second one waits a little for the first to die, then gives up.
    """
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    storage.check_writable(data_dir)
    fd = os.open(os.path.join(data_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise storage.StorageError(f"another Parley server is using {data_dir}; "
                                           "stop it first") from None
            time.sleep(0.1)


async def serve(config, ready):
    loop = asyncio.get_running_loop()
    lock_data_dir(config["data_dir"])
    writer = SingleWriter(loop, lambda: storage.open_databases(config["data_dir"]),
                          storage.close_databases, repair=storage.repair_torn_writes,
                          on_repaired=lambda result: repaired_after_failed_commit(monitor,
                                                                                  result))
    writer.start()
    hasher = auth.PasswordHasher(**config["argon2"], workers=config.get("hash_workers", 2))
    monitor = Monitor(writer, hasher, auth.LoginThrottle(), config["ticket_secret"])
    await recover(monitor)
    server = await loop.create_unix_server(lambda: MonitorConnection(monitor),
                                           config["socket_path"])
    os.chmod(config["socket_path"], 0o600)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    ready.set()
    log.info("database ready (%s)", config["data_dir"])
    await stop.wait()
    await shutdown(server, monitor)


async def shutdown(server, monitor):
    """Stop accepting, let queued work finish, checkpoint and close the files."""
    server.close()
    await asyncio.sleep(0.05)
    await asyncio.get_running_loop().run_in_executor(None, monitor.writer.stop)
    for conn in list(monitor.connections):
        conn.close()
    monitor.hasher.close()
    log.info("database closed cleanly")


def main(config, ready):
    """Entry point of the database process (a forkserver child)."""
    restore_default_signals(config.get("lifeline"))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a file-size limit is an error, not death
    start_process("database", config)
    try:
        asyncio.run(serve(config, ready))
    except storage.StorageError as error:
        log.critical("cannot open the databases: %s", error)
        raise SystemExit(EXIT_STORAGE_ERROR)
    finally:
        if DAEMON_GONE.is_set():
            remove_runtime_dir(config["socket_path"])


def remove_runtime_dir(socket_path):
    """After the daemon died (SIGKILL, OOM): nobody else will remove the runtime
    dir it made for our socket, so the last process to use it does."""
    try:
        os.unlink(socket_path)
        os.rmdir(os.path.dirname(socket_path))
    except OSError:
        pass
