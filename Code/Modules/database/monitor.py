"""The database process: the monitor, sole owner of Parley's three SQLite files.

Talks to: login and user processes over a Unix socket (one
`MonitorConnection` each, `Modules/database/connection.py`; the other end is
`Modules/database/link.py`); the daemon through a readiness event, its
lifeline and signals, and its parking link (the daemon role, issue 16:
`Modules/database/parking.py`). Nothing else opens `passwords.db`, `users.db` or
`messages.db`, and no password hash leaves this process.

This module is the process around the connections: it takes the data
dir's lock, opens the files on the single writer
(`Modules/database/writer.py`: group commit, replies only after COMMIT)
and on reader threads beside it (`Modules/database/readers.py`),
starts the password hasher (`Modules/database/auth.py`), loads the storage
key of the encrypted file store (`Modules/database/files.py`), repairs what a
crash left (torn commits, interrupted account deletions), runs the periodic
tasks (the text index's batches, the files' expiry and clean-up in
`Modules/database/file_upkeep.py`, the IP ledger's pruning), serves the Unix
socket and, on SIGTERM, lets queued work finish and checkpoints the WAL.
What each connection may ask is in `Modules/database/answers.py`: one
dispatch table per phase, built from the registry.

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
import stat
import time
from collections import OrderedDict

from Modules.database import (
    administration,
    auth,
    backends,
    db_key,
    deployment,
    file_upkeep,
    files,
    mailbox,
    mail_signals,
    roster,
    server_key,
    statistics,
    storage,
)
from Modules.database.answers import delete_account
from Modules.database.audit import AuditLog
from Modules.database.connection import Hub, MonitorConnection
from Modules.database.parking import Parking
from Modules.database.presence import PresenceTracker
from Modules.database.readers import ReadBudget, ReaderPool
from Modules.database.writer import SingleWriter
from Modules.runtime import (
    DAEMON_GONE,
    EXIT_STORAGE_ERROR,
    keep_memory_returnable,
    restore_default_signals,
    return_free_memory,
    start_process,
)

log = logging.getLogger("parley.database")

LOCK_FILE = "parley.lock"


class Monitor:
    """State shared by every connection: writer, hasher, throttle, hub, secret."""

    def __init__(self, writer, hasher, throttle, ticket_secret, tickets=None,
                 registration=None):
        self.writer, self.hasher, self.throttle = writer, hasher, throttle
        self.ticket_secret = ticket_secret
        self.tickets = tickets or auth.TicketBook()
        self.readers = None                       # a ReaderPool, set by serve()
        self.requests = 0                         # accepted so far (for give_memory_back)
        self.read_budget = ReadBudget()
        registration = registration or {}
        self.registration_open = registration.get("open", True)
        self.registrations = auth.RegistrationLimit(
            per_address=registration.get("per_address", 20),
            total=registration.get("per_hour", 200))
        self.hub = Hub()
        self.connections = set()
        # The operator's side (issue 12): set by serve() from the config.
        self.daemon_pid = None                    # the only pid an admin connection may have
        self.data_dir = None
        self.ledger_limits = statistics.LedgerLimits()
        self.settings = {}                        # greeting, motd: a copy of the table
        self.audit = None                         # the AuditLog
        self.peak_sessions = 0
        self.session_addresses = OrderedDict()    # ticket nonce -> the login's address
        self.password_changes = {}                # user -> when passwd changed it (Bind)
        self.presence = PresenceTracker(self)     # who comes and goes (issue 13)
        self.parking = Parking(self)              # parked sessions (issue 16)
        self.hub.parked, self.hub.wake = self.parking.by_user, self.parking.wake_user
        self.files = None                         # the FileService (issue 14), by serve()
        self.key_paths = None                     # key files a backup copies (issue 15)
        self.roster = None                        # other servers' sessions (issue 18)

    def job(self, fn, *args, after=None, delivers=None, lazy=False, owner=None, locks=()):
        """A write (or a read that must see the writer's order) on the single writer.
        `delivers(result)` -> [(recipient, message)]: mail the job stored, pushed to the
        recipients' sessions after the commit (and, when servers share PostgreSQL,
        announced to the others inside the job's transaction: `mail_signals.py`).
        `locks`: the people whose rows it changes (locked first, in name order, when
        servers share the data: `writer.py`)."""
        if delivers is not None:
            if self.hub.signals is not None:
                recent = {}                  # filled by the job, read by its after-hook
                fn = mail_signals.delivering(fn, delivers, self.hub.signals.server_id, recent)
                after = lambda result: self.hub.deliver(delivers(result), recent)  # noqa: E731
            else:
                after = self._pushing(delivers)
        return self.writer.submit(fn, *args, after=after, lazy=lazy, owner=owner,
                                  locks=locks)

    def _pushing(self, delivers):
        return lambda result: self.hub.deliver(delivers(result))

    def hasher_idle(self):
        return not any(self.hasher.in_flight.values())

    def read(self, owner, fn, *args):
        """A read-only query on a reader thread (see `Modules/database/readers.py`)."""
        return self.readers.submit(owner, fn, *args)

    # -- sessions, as the operator sees them ---------------------------------------
    def remember_address(self, nonce, address):
        """The address a ticket was issued to, for the session it will bind."""
        self.session_addresses[nonce] = address
        while len(self.session_addresses) > SESSION_ADDRESSES_KEPT:
            self.session_addresses.popitem(last=False)

    def user_sessions(self, everywhere=False):
        """Every session: bound connections, and parked sessions (`parking.py`);
        `everywhere`: also those on the other servers of a shared PostgreSQL
        (`roster.py`), which cannot be told anything from here."""
        local = [conn for conn in self.connections
                 if conn.bound_at is not None and not conn.closed()] \
            + list(self.parking.sessions())
        if everywhere and self.roster is not None:
            return local + self.roster.sessions()
        return local

    def sessions_by_user(self, everywhere=False):
        found = {}
        for conn in self.user_sessions(everywhere):
            found.setdefault(conn.user, []).append(conn)
        return found

    def session_started(self, conn, parked=None):
        """`conn` bound; `parked`: the parked session it wakes (no news to anyone)."""
        conn.bound_at = conn.last_request = time.time()
        if parked is not None:
            conn.bound_at, conn.last_request = parked.bound_at, parked.last_request
        if self.roster is not None:
            self.roster.session_started(conn)
        if parked is not None:
            return
        self.peak_sessions = max(self.peak_sessions, len(self.user_sessions()))
        self.presence.session_started(conn)

    def session_ended(self, conn):
        """Count the logoff (every end: logout, disconnect, kick, shutdown)."""
        if self.roster is not None:
            self.roster.session_ended(conn)
        self.presence.session_ended(conn)
        try:
            future = self.job(statistics.record_logoff, conn.user, locks=(conn.user,))
        except Exception as error:        # the writer has stopped: nothing more is counted
            log.warning("logoff of %s not counted: %s", conn.user, error)
            return
        future.add_done_callback(_consume)

    def end_sessions(self, username, event, message=None, origin=None):
        """Tell `username`'s sessions (but `origin`) why they end, and end them;
        how many. The sentence is the operator's for `event` unless given."""
        ended = 0
        for conn in self.sessions_by_user().get(username, ()):
            if conn is not origin:
                conn.send_notice(event, message or ENDED_BY_ADMIN[event])
                conn.close()
                ended += 1
        return ended


SESSION_ADDRESSES_KEPT = 10_000
ENDED_BY_ADMIN = {
    "kicked": "The server's administrator ended this session.",
    "suspended": "This account has been suspended by the server's administrator.",
    "password_reset": "The server's administrator reset this account's password; log in "
                      "with the one-time password you were given.",
    "account_deleted": "The server's administrator deleted this account.",
}


def _consume(future):
    if not future.cancelled() and future.exception() is not None:
        log.warning("a logoff was not counted: %s", future.exception())


def _now():
    return time.time()


async def recover(monitor):
    """Repair torn commits, finish interrupted deletions, prune old send ids and
    the ledger's old entries."""
    report_repair(await monitor.job(storage.repair_torn_writes))
    await finish_deletions(monitor)
    await monitor.job(storage.prune_sent_ids, _now() - 30 * 86400)
    await prune_ledger(monitor)


async def prune_ledger(monitor):
    older_than = _now() - monitor.ledger_limits.days * 86400
    forgotten = await monitor.job(statistics.prune_ledger, older_than)
    if forgotten:
        log.info("forgot %d IP ledger entries older than %g days", forgotten,
                 monitor.ledger_limits.days)


async def load_settings(monitor, config):
    """The stored greeting and motd; --greeting/--motd given at start replace them."""
    for name in ("greeting", "motd"):
        if config.get(name) is not None:
            await monitor.job(administration.set_setting, name, config[name], _now(),
                              "server start")
    monitor.settings = await monitor.job(administration.settings)


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


def prepare_key(config):
    """The data dir's key (None: not encrypted at rest), any conversion finished.
    With PostgreSQL there is none: its disk is encrypted, if at all, by the operator."""
    if config.get("storage"):
        source = config.get("db_key") or {}
        if source.get("file") or source.get("hex") or os.path.exists(os.path.join(
                source.get("credentials") or "/nonexistent", db_key.CREDENTIAL_NAME)):
            raise storage.StorageError("a database key encrypts the SQLite files at rest; "
                                       "with PostgreSQL storage encrypt its disk instead "
                                       "(docs/postgresql.md)")
        return None
    try:
        return db_key.prepare(config["data_dir"], config.get("db_key"), config.get("log_file"))
    except db_key.AtRestError as error:
        raise storage.StorageError(str(error)) from None


def rekey_offline(data_dir, key_file):
    """`admin rekey` with the server stopped: every file of `data_dir` moved to a new
    key, written to `key_file` (the old one replaced last). A one-sentence error."""
    lock = None
    try:
        if not key_file or not os.path.exists(key_file):
            raise db_key.AtRestError(f"rekey needs the data dir's key file (--key-file); "
                                     f"{key_file or 'none'} does not exist")
        lock = lock_data_dir(data_dir, wait=0)           # refused while a server runs
        old_key = db_key.prepare(data_dir, {"file": key_file})
        storage.close_databases(storage.open_databases(data_dir, old_key))   # it opens
        db_key.rekey(data_dir, key_file, old_key)
    except (db_key.AtRestError, storage.StorageError, OSError) as error:
        return str(error)
    finally:
        if lock is not None:
            os.close(lock)
    return None


async def serve(config, ready):
    loop = asyncio.get_running_loop()
    lock_data_dir(config["data_dir"])
    key = prepare_key(config)
    backend = backends.open_backend(config.get("storage"), config["data_dir"], key)
    writer = SingleWriter(loop, backend.open_writer, backend.close, repair=backend.repair,
                          on_repaired=lambda result: repaired_after_failed_commit(monitor,
                                                                                  result),
                          errors=backend.errors, lost=backend.lost,
                          prelock=backend.prelock, deferred=backend.deferred)
    writer.start()
    readers = ReaderPool(loop, backend.open_reader, backend.close,
                         workers=config.get("readers", 2))
    readers.start()
    file_service = files.FileService.from_config(config, key)   # the storage key, the store
    if backend.shared:                  # one of several servers: their secret, their keys
        config = {**config, "ticket_secret": await writer.submit(
            deployment.join, config["ticket_secret"], public_key_of(config, key),
            file_service.storage_key)}
    argon2 = config.get("argon2") or auth.argon2_params_from_env()   # PARLEY_ARGON2_*
    hasher = auth.PasswordHasher(**argon2, workers=config.get("hash_workers", 2))
    monitor = Monitor(writer, hasher, auth.LoginThrottle(), config["ticket_secret"],
                      resumable_tickets(config), config.get("registration"))
    monitor.readers = readers
    monitor.backend = backend
    monitor.encrypted_at_rest = key is not None
    monitor.db_key = key                    # for the backup's copies (`backup.py`)
    monitor.read_budget = ReadBudget(**config.get("read_budget", {}))
    for raw_ticket in config.get("parked", ()):   # held by the daemon across our restart
        monitor.parking.restore(raw_ticket, wake_if_waiting=True)
    configure_operator_side(monitor, config)
    monitor.files = file_service
    monitor.server_key = server_key.KeyHolder.from_config(config, key)   # for the handshakes
    await recover(monitor)
    await files.recover(monitor)
    await load_settings(monitor, config)
    between_servers = join_the_others(monitor, backend) if backend.shared else []
    server = await loop.create_unix_server(lambda: MonitorConnection(monitor),
                                           config["socket_path"])
    os.chmod(config["socket_path"], config.get("socket_mode", 0o600))   # 0666 in a jail dir
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    trimming = loop.create_task(give_memory_back(monitor))
    pruning = loop.create_task(prune_hourly(monitor))
    indexing = loop.create_task(index_text(monitor))
    upkeep = loop.create_task(file_upkeep.keep_up(monitor, file_upkeep.settings_from(config)))
    ready.set()
    log.info("database ready (%s)", backend.describe())
    await stop.wait()
    for task in between_servers:
        task.cancel()
    trimming.cancel()
    pruning.cancel()
    indexing.cancel()
    upkeep.cancel()
    await shutdown(server, monitor)


def public_key_of(config, key):
    """This server's public key (the deployment's, `deployment.py`)."""
    holder = server_key.KeyHolder.from_config(config, key)
    if holder is None:
        raise storage.StorageError("a server sharing PostgreSQL needs its server key")
    return holder.key.public


def join_the_others(monitor, backend):
    """Several servers on one PostgreSQL: hear their mail and sessions (issue 18)."""
    signals = mail_signals.MailSignals(backend.dsn, monitor.hub, monitor.read)
    monitor.hub.signals = signals
    monitor.roster = roster.Roster(monitor, signals)
    loop = asyncio.get_running_loop()
    return [loop.create_task(signals.run()), loop.create_task(monitor.roster.keep_alive())]


def configure_operator_side(monitor, config):
    monitor.daemon_pid = config.get("daemon_pid")
    monitor.data_dir = config["data_dir"]
    monitor.ledger_limits = statistics.LedgerLimits(**config.get("ledger", {}))
    encrypted = getattr(monitor, "encrypted_at_rest", False)   # no file may name a user
    monitor.audit = AuditLog(config["data_dir"], to_log=encrypted)
    monitor.key_paths = {"storage_key": config.get("storage_key") or os.path.join(
        config["data_dir"], files.KEY_FILE), "server_key": os.path.join(
        config["data_dir"], "server_key"), "server_key.pub": os.path.join(
        config["data_dir"], "server_key.pub")}


TRIM_EVERY = 5.0      # seconds between looks at whether memory can be given back


async def give_memory_back(monitor):
    """After a burst of work (a flood of reads or logins), give the memory it took
    back to the system once things are quiet again."""
    previous, worked = monitor.requests, False
    while True:
        await asyncio.sleep(TRIM_EVERY)
        recent, previous = monitor.requests - previous, monitor.requests
        worked = worked or recent > 0
        if worked and recent < 100 * TRIM_EVERY and monitor.hasher_idle():
            return_free_memory()                # quiet now: under 100 requests a second
            worked = False


async def prune_hourly(monitor):
    while True:
        await asyncio.sleep(3600)
        try:
            await prune_ledger(monitor)
        except Exception as error:          # a failed commit: try again in an hour
            log.warning("pruning the IP ledger failed: %s", error)


INDEX_EVERY = 2.0     # seconds between batches of the text index (a search does not wait)


async def index_text(monitor):
    """Put what was stored meanwhile into the text index, a batch every INDEX_EVERY
    seconds: one FTS5 insert per small commit cost more than the rest of a message."""
    while True:
        await asyncio.sleep(INDEX_EVERY)
        try:
            await monitor.job(mailbox.index_pending)
        except Exception as error:          # a failed commit: the next batch takes it
            log.warning("indexing new messages for search failed: %s", error)


def resumable_tickets(config):
    """The TicketBook of a starting monitor: the daemon names the tickets of the
    sessions still running (after a crash of this process), which may bind again."""
    nonces = []
    for ticket in config.get("live_tickets", ()):
        checked = auth.check_ticket(config["ticket_secret"], ticket)
        if checked is not None:
            nonces.append(checked.nonce)
    return auth.TicketBook(resumable=nonces)


async def shutdown(server, monitor):
    """Stop accepting, let queued work finish, checkpoint and close the files."""
    server.close()
    await asyncio.sleep(0.05)
    await asyncio.get_running_loop().run_in_executor(None, monitor.writer.stop)
    monitor.readers.stop()
    for conn in list(monitor.connections):
        conn.close()
    monitor.files.close()
    monitor.hasher.close()
    log.info("database closed cleanly")


def main(config, ready):
    """Entry point of the database process (a forkserver child)."""
    restore_default_signals(config.get("lifeline"))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a file-size limit is an error, not death
    keep_memory_returnable()
    start_process("database", config)
    try:
        asyncio.run(serve(config, ready))
    except storage.StorageError as error:
        log.critical("cannot open the databases: %s", error)
        raise SystemExit(EXIT_STORAGE_ERROR)
    finally:
        if DAEMON_GONE.is_set():
            remove_runtime_dir(config["socket_path"], config.get("runtime_dir"))


def remove_runtime_dir(socket_path, runtime_dir=None):
    """After the daemon died (SIGKILL, OOM): nobody else will remove the runtime
    dir it made for our socket (and its admin socket), so the last process to
    use it does: the sockets in it, then the directory; first the socket's own
    directory (the jail, `server/containment.py`) when it lies in `runtime_dir`."""
    for directory in (os.path.dirname(socket_path), runtime_dir):
        if not directory:
            continue
        try:
            for entry in os.scandir(directory):
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)
            os.rmdir(directory)
        except OSError:
            pass
