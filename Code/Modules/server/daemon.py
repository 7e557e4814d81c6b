"""The daemon: accepts connections and supervises every other process.

Talks to: TCP clients (only to accept them, and to write the plaintext
"server full" notice); the database process (started first, readiness
awaited, restarted if it dies); one login process per new connection and
one user process per logged-in connection, all started through the
multiprocessing forkserver with the heavy modules preloaded, most of them
ahead of time as spares (`Modules/server/spares.py`) so that no process start
lies on a login's path. Each child has a pipe back to the daemon that
carries its hand-off (login → user, and user → login after an account is
deleted).

Who may connect at all is `Modules/server/admission.py`'s: connections in all, connections
still logging in per address and in all (with early drop), and new connections per second
per address; a refused one is told why in a plaintext notice and closed.

It numbers the connections it accepts (`c1`, `c2`, ...) and gives the
id to each process that serves one, so that every log line about a
connection carries it, from accept to logout. It writes the header line of
each start to the log; SIGHUP makes it open its `--log-file` again (the
other processes notice a moved file before their next line), and never
stops the server.

The daemon keeps its own copy of every client socket, so that whatever way a child ends
(even SIGKILL) it notices the pipe closing and closes the connection; it never reads them.
An idle session's connection comes back to it (parked, issue 16) and is held unread until
its client sends or the database says a message came (`Modules/server/parking.py`).

Start-up binds the port first (`Modules/server/listener.py`, `--port-fallback`), so a
taken port is refused before anything exists in the data dir, and a port below 1024 works
as root; then it claims the data dir, loads the key, makes the jail (login and user
processes run unprivileged in an empty root: `Modules/server/containment.py`), starts the
database (as the data dir's owner), and only then prints the ready line (and in a
terminal opens the operator's console, `server/console.py`). Every accepted connection
gets TCP keepalive (`--keepalive`), so one whose client vanished ends and frees its
place. The forkserver and all its children run in a process group of their own
(`Modules/server/preload.py`): a SIGTERM to the daemon's group reaches the daemon alone
and gives the same clean stop as one to its pid.

Shutdown (also after `--exit-when-idle` seconds without any connection): the first
SIGINT/SIGTERM stops accepting, sends SIGTERM to every login and user process (each tells
its client and finishes what is in flight), waits for them, then stops the database process
(which finishes its queue and checkpoints the WAL) and exits 0. A second signal kills
everything and exits 1. A database that cannot open its files (exit status 3) is not
restarted: the daemon says why and exits 1.
"""

import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from Modules import identity
from Modules.runtime import (
    EXIT_STORAGE_ERROR,
    LogFileError,
    end_orphan,
    log_always,
    process_alive,
    raise_fd_limit,
    reopen_log_file,
    signal_quietly,
    start_process,
    unix_user,
)
from Modules.server import children, console, containment, instance, listener, parking, spares
from Modules.server import options as server_options
from Modules.server.admin_socket import AdminContext, AdminServer
from Modules.server.admission import Admission
from Modules.wire import protocol

log = logging.getLogger("parley.daemon")

DB_READY_TIMEOUT = 30.0
CHILD_STOP_GRACE = 6.0


class DaemonError(Exception):
    """The daemon cannot start or keep running; the message says why."""


class DataUnusable(DaemonError):
    """The database process cannot use the files in the data dir: restarting
    it cannot help (it exited with EXIT_STORAGE_ERROR)."""


class ClientRecord:
    """One TCP connection and the process serving it now."""

    __slots__ = ("sock", "peer", "address", "conn_id", "proc", "pipe", "kind", "user",
                 "ticket", "handoff", "wake_pending", "silent_since")

    def __init__(self, sock, peer, address, conn_id):
        self.sock, self.peer, self.address = sock, peer, address
        self.conn_id = conn_id      # "c17": on every log line about this connection
        self.proc = self.pipe = self.kind = self.user = None
        self.ticket = None          # the user process's, for a restarted database
        self.handoff = None         # the login's hand-off: what a woken process gets
        self.wake_pending = None    # a Wake that came while it was parking (parking.py)
        self.silent_since = None    # parked: since when its client sent nothing

    @property
    def about(self):
        """`extra` for a log line about this connection (it carries its id)."""
        return {"conn_id": self.conn_id}


class Daemon:
    def __init__(self, options):
        self.options = options
        self.db_key = server_options.db_key_source(options, os.environ)   # before any child
        self.ctx = children.forkserver_context()
        self.selector = selectors.DefaultSelector()
        self.clients = {}            # pipe -> ClientRecord
        self.by_ticket = {}          # a logged-in connection's ticket -> its ClientRecord
        self.parking = parking.ParkingLot(self)   # parked connections (issue 16)
        self.idle_checked = 0.0
        self.exiting = []            # processes that handed off and are ending
        self.runtime_dir = tempfile.mkdtemp(prefix="parley-")
        self.db_socket, self.jail = containment.socket_path(self.runtime_dir), None
        self.ticket_secret = os.urandom(32)
        self.key = self.listener = self.db_proc = None
        self.instance = None         # our claim on the data dir (server/instance.py)
        self.admin = self.metrics = None   # the admin socket, --metrics-port (server/)
        self.console = console.Console(options)   # in a terminal, fd 2 is relayed from now on
        self.started_at, self.peak_connections = time.time(), 0
        self.db_restart_at, self.db_failures = None, 0
        # --greeting/--motd go to the first database only: a restarted one keeps live changes.
        self.start_settings = {"greeting": options.greeting, "motd": options.motd}
        self.signals = 0
        self.idle_since = None       # since when no connection at all (--exit-when-idle)
        self.hangups = 0             # SIGHUPs not acted on yet: reopen the log file
        self.accepted = 0            # connections accepted so far; the next id is c<n+1>
        self.wake_r, self.wake_w = socket.socketpair()
        # Children watch `lifeline` for end of file: only we hold the write end.
        self.lifeline, self._lifeline_writer = self.ctx.Pipe(duplex=False)
        self.admission = Admission(
            max_clients=options.max_clients, per_address=options.max_startups_per_address,
            rate=options.connection_rate_per_address,
            burst=2 * options.connection_rate_per_address,
            start=max(1, options.max_startups // 2), full=options.max_startups)
        self.spares = spares.SparePool(self._start_process, lambda: self.ctx.Pipe(duplex=True),
                                       lambda: children.base_config(self),
                                       options.spare_processes)

    def _take_start_settings(self):
        settings, self.start_settings = self.start_settings, {}
        return settings

    # -- start-up --------------------------------------------------------------
    def start(self):
        """The port first (nothing is created while it may still fail), then the
        data dir's claim (a second server: refused now), the key, the database."""
        raise_fd_limit()
        self._listen()
        self.instance = instance.claim(self.options.data_dir)
        self.key = identity.daemon_key(self.options.data_dir)
        log.info("server key fingerprint %s", identity.fingerprint(self.key.public))
        self.jail = containment.prepare(self.options, self.runtime_dir)
        log.debug("runtime directory %s", self.runtime_dir)
        self._start_database()
        self.admin = AdminServer(self.runtime_dir, self.db_socket, self)
        self.admin.start()
        self.instance.publish(self.runtime_dir, self.listener.getsockname()[1])
        self._install_signals()
        self._announce()
        self.console.start(self)
        self.spares.refill()

    def _start_database(self):
        ready = self.ctx.Event()
        try:
            proc = self._start_process(containment.database_main, (children.db_config(self), ready),
                                       "parley: database")
        except (OSError, EOFError) as error:   # EOFError: the forkserver died
            raise DaemonError(f"cannot start the database process: {error}") from None
        deadline = time.monotonic() + DB_READY_TIMEOUT
        while not ready.wait(0.05):
            if not proc.is_alive():
                raise self._db_failure(proc.exitcode)
            if time.monotonic() > deadline:
                proc.kill()
                raise DaemonError("the database process did not become ready in time")
        self.db_proc = proc
        self.selector.register(proc.sentinel, selectors.EVENT_READ, "db")
        self.parking.connect(self.db_socket)

    @staticmethod
    def _db_failure(code):
        """The error for a database process that ended with status `code`."""
        if code == EXIT_STORAGE_ERROR:
            return DataUnusable("the database files cannot be used (see the message above); "
                                "nothing was changed")
        return DaemonError(f"the database process exited during start-up (status {code})")

    def _listen(self):
        """Bind the port (or a fallback) and --metrics-port; clients queue until we serve."""
        try:
            self.listener = listener.listen(self.options.host, self.options.port,
                                            self.options.port_fallback)
            if self.options.metrics_port:      # prometheus_client only where it serves
                from Modules.server import metrics

                self.metrics = metrics.serve(self.options.metrics_port, lambda: AdminContext(
                    self.db_socket, "metrics", self))
        except listener.ListenError as error:
            running = instance.find_running(self.options.data_dir)   # creates nothing
            if running and isinstance(running.get("pid"), int):     # the likelier cause
                raise DaemonError(f"another Parley server (pid {running['pid']}) is using "
                                  f"{self.options.data_dir}; stop it first") from None
            raise DaemonError(str(error)) from None
        self.selector.register(self.listener, selectors.EVENT_READ, "listen")

    def _announce(self):
        """The ready line, once everything is up: it names the port really used."""
        host, port = self.listener.getsockname()[:2]
        if self.options.port and port != self.options.port:
            log.warning("port %d was taken; using port %d (--port-fallback)",
                        self.options.port, port)
        sys.stdout.write(f"parley: listening on {host}:{port}\n")   # one write: no log line
        sys.stdout.flush()                                            # lands inside it
        log.info("listening on %s:%s (max %d clients)", host, port, self.options.max_clients)

    def _install_signals(self):
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "signal")
        signal.set_wakeup_fd(self.wake_w.fileno())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    def _on_signal(self, _signum, _frame):
        self.signals += 1
        if self.signals >= 2:
            self._force_exit()

    def _on_hangup(self, _signum, _frame):
        self.hangups += 1            # acted on by the loop, never inside the handler

    def _reopen_log(self):
        """SIGHUP: open the log file again (logrotate moved it). The children
        notice a moved file themselves, before their next line."""
        self.hangups = 0
        if reopen_log_file():
            log.info("SIGHUP: log file reopened")
        else:
            log.info("SIGHUP: no --log-file to reopen")

    # -- the loop --------------------------------------------------------------
    def serve(self):
        while not self.signals and not self._idle_long_enough():
            events = self.selector.select(timeout=self._select_timeout())
            self._dispatch_ready(events)
            self._reap()
            if self.hangups:
                self._reopen_log()
            if self.db_restart_at is not None and time.monotonic() >= self.db_restart_at:
                self._restart_database()
            self.parking.flush()
            if time.monotonic() - self.idle_checked >= 1.0:
                self.idle_checked = time.monotonic()
                self.parking.expire_idle(self.options.idle_timeout)
            if not events:   # between connections: a process start delays no one
                self.spares.refill()
        self.shutdown()

    def _idle_long_enough(self):
        """--exit-when-idle: whether there has been no connection for that long."""
        limit = self.options.exit_when_idle
        if not limit:
            return False
        now = time.monotonic()
        if self.clients or self.parking.records:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= limit:
            log.info("no connection for %g s; stopping (--exit-when-idle)", limit)
            return True
        return False

    def _select_timeout(self):
        if self.spares.wanted():
            return 0.002   # start the missing spares as soon as nothing else is due
        if self.db_restart_at is None:
            return 1.0
        return max(0.0, min(1.0, self.db_restart_at - time.monotonic()))

    def _dispatch_ready(self, events):
        """Each ready key of this turn, but not one that an earlier event of the same
        turn unregistered or registered anew (a database death drops the parking
        link, a wake or a close ends a parked connection): its event is stale."""
        registered = self.selector.get_map()
        for key, _mask in events:
            current = registered.get(key.fd)
            if current is None or current.data is not key.data:
                continue
            self._dispatch(key)

    def _dispatch(self, key):
        if key.data == "listen":
            self._accept()
        elif key.data == "db":
            self._database_died()
        elif key.data == "signal":
            self.wake_r.recv(64)
        elif isinstance(key.data, ClientRecord):
            self._on_pipe(key.data)
        elif key.data == "parking":
            self.parking.on_link_readable()
        elif isinstance(key.data, tuple):          # ("parked", record): its client spoke
            self.parking.on_parked_readable(key.data[1])

    def _accept(self):
        for _ in range(64):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. out of file descriptors: keep serving
                log.error("accept failed: %s", error)
                return
            self.accepted += 1
            record = ClientRecord(sock, f"{address[0]}:{address[1]}", address[0],
                                  f"c{self.accepted}")
            self._admit(record)

    def _admit(self, record):
        sock, peer, address = record.sock, record.peer, record.address
        listener.tune(sock, self.options.keepalive)   # no Nagle stalls; keepalive
        refused = self.admission.admit(address)
        if refused is not None:
            log.warning("refusing %s (%s; %d connections, %d logging in)", peer,
                        refused.reason, self.admission.connections, self.admission.pre_login,
                        extra=record.about)
            self._refuse(sock, refused.text)
            return
        log.info("connection from %s", peer, extra=record.about)
        self.peak_connections = max(self.peak_connections, self.admission.connections)
        try:
            self._spawn(record, "login", peer, children.login_config(self))
        except (OSError, EOFError) as error:   # EOFError: the forkserver died
            log.error("cannot start a login process for %s: %s", peer, error,
                      extra=record.about)
            self.admission.ended(address, was_logging_in=True)
            sock.close()

    def _refuse(self, sock, text):
        try:
            sock.setblocking(False)
            sock.send(protocol.Connection.server(self.key).notice(text))
        except OSError:
            pass
        sock.close()

    def _spawn(self, record, kind, first, config, extra=()):
        """A login or user process for this connection: a spare if one is idle,
        else a new one. It runs `main(sock, first, pipe, config, *extra)`, its
        log lines carrying the connection's id."""
        config = {**config, "conn_id": record.conn_id}
        given = self.spares.give(kind, record.sock, first, config, extra)
        if given is not None:
            proc, receive_end = given
        else:
            receive_end, send_end = self.ctx.Pipe(duplex=False)
            args = (record.sock, first, send_end, config, *extra)
            proc = self._start_process(spares.TARGETS[kind], args,
                                       f"parley: {kind} {record.peer}")
            send_end.close()
        if record.pipe is not None:
            self.selector.unregister(record.pipe)
            self.clients.pop(record.pipe, None)
            self.exiting.append(record.proc)
            record.pipe.close()
        record.proc, record.pipe, record.kind = proc, receive_end, kind
        self.clients[receive_end] = record
        self.selector.register(receive_end, selectors.EVENT_READ, record)

    def _start_process(self, target, args, name):
        """Start a forkserver child; a forkserver that just died is replaced once."""
        try:
            proc = self.ctx.Process(target=target, args=args, name=name)
            proc.start()
        except EOFError:
            log.warning("the forkserver went away; starting a new one")
            time.sleep(0.05)     # let it be reaped, so multiprocessing sees it gone
            proc = self.ctx.Process(target=target, args=args, name=name)
            proc.start()
        return proc

    def _on_pipe(self, record):
        try:
            message = record.pipe.recv()
        except (EOFError, OSError):
            return self._connection_ended(record)
        if self.signals:
            return self._connection_ended(record)
        if not isinstance(message, dict):              # a child's bug: end only this one
            log.error("%s: a malformed hand-off; closing the connection", record.peer,
                      extra=record.about)
            return self._connection_ended(record)
        if "penalty" in message:                       # a login that ended badly
            seconds = self.admission.penalise(record.address)
            if seconds:
                log.warning("%s: login ended (%s); refusing that address for %.0f s",
                            record.peer, str(message["penalty"])[:32], seconds,
                            extra=record.about)
            return self._connection_ended(record)
        try:
            self._hand_over(record, message)
        except (KeyError, TypeError) as error:         # a hand-off without its fields
            log.error("%s: a malformed hand-off (%s); closing the connection", record.peer,
                      type(error).__name__, extra=record.about)
            self._connection_ended(record)
        except (OSError, EOFError) as error:
            log.error("cannot hand %s over to a new process: %s", record.peer, error,
                      extra=record.about)
            self._connection_ended(record)

    def _hand_over(self, record, message):
        if record.kind == "login":
            record.user, record.ticket = message["user"], message["ticket"]
            record.handoff = message
            self.by_ticket[record.ticket] = record
            self._spawn(record, "user", message, children.base_config(self))
            self.admission.logged_in(record.address)
        elif message.get("action") == "park":      # idle: the daemon holds it (parking.py)
            self.parking.park(record, message)
        else:   # the account was deleted: the same connection logs in again
            self.by_ticket.pop(record.ticket, None)
            record.user = record.ticket = record.handoff = None
            self._spawn(record, "login", record.peer, children.login_config(self), (message["state"],))
            self.admission.logged_out(record.address)

    def spawn_user(self, record, handoff):
        """A user process for a parked connection woken (`parking.py`)."""
        self._spawn(record, "user", handoff, children.base_config(self))
        record.kind = "user"

    def connection_closed(self, record):
        self._connection_ended(record)
        record.kind = None

    def _connection_ended(self, record):
        log.info("connection from %s closed (%s)", record.peer,
                 f"user {record.user}" if record.kind == "user" else "not logged in",
                 extra=record.about)
        self.admission.ended(record.address, was_logging_in=record.kind == "login")
        if record.pipe is not None:
            self.selector.unregister(record.pipe)
            self.clients.pop(record.pipe, None)
            record.pipe.close()
            self.exiting.append(record.proc)
        record.sock.close()
        if record.kind == "user" and record.ticket:   # a parked session of it is over
            self.by_ticket.pop(record.ticket, None)
            self.parking._tell("Ended", record.ticket)

    def _reap(self):
        """Forget ended processes and release their descriptors (sentinels)."""
        still = []
        for proc in self.exiting:
            if proc.exitcode is None:
                still.append(proc)
            else:
                proc.close()
        self.exiting = still

    def _database_died(self):
        old = self.db_proc
        self.selector.unregister(old.sentinel)
        self.parking.drop_link()
        old.join()
        if old.exitcode == EXIT_STORAGE_ERROR:
            raise self._db_failure(old.exitcode)
        log.error("the database process died (status %s); restarting it", old.exitcode)
        end_orphan(old.pid)   # the status came from a dead forkserver: it may live on
        self.db_proc, self.db_failures = None, 0
        self.db_restart_at = time.monotonic() + 0.2

    def _restart_database(self):
        """One try; on failure the next one comes later (0.2 s doubling to 5 s)."""
        try:
            self._start_database()
        except DataUnusable:
            raise
        except DaemonError as error:
            self.db_failures += 1
            delay = min(5.0, 0.2 * 2 ** self.db_failures)
            log.error("%s; trying again in %.1f s", error, delay)
            self.db_restart_at = time.monotonic() + delay
            return
        self.db_restart_at = None
        log.info("the database process is back")

    # -- what the admin commands ask of the daemon (from the admin threads) ------------
    def server_figures(self):
        return {"uptime": time.time() - self.started_at,
                "connections": self.admission.connections,
                "logging_in": self.admission.pre_login,
                "parked": len(self.parking.records),
                "peak_connections": self.peak_connections}

    def set_log_level(self, level):
        logging.getLogger().setLevel(level)
        self.options.log_level = level              # processes started from now on

    def shutdown_in(self, seconds):
        """The normal clean stop, `seconds` from now (the reply gets out first)."""
        timer = threading.Timer(max(0.2, seconds), os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    def shutdown(self):
        log.info("shutting down: telling %d connections", len(self.clients))
        self.console.stop()
        for server in (self.admin, self.metrics):   # the admin socket, --metrics-port
            if server is not None:                 # (none without the option)
                server.close()
        self.selector.unregister(self.listener)
        self.listener.close()
        self._stop_children([r.proc for r in self.clients.values()] + self.exiting
                            + self.spares.close())
        for record in list(self.clients.values()):
            record.sock.close()
        self.parking.close_all()
        self._stop_database()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.instance.release()
        log.info("stopped")

    @staticmethod
    def _stop_children(procs):
        """SIGTERM, a grace period, then SIGKILL. By pid: a child of a forkserver
        that died reads as ended to multiprocessing while it still runs."""
        pids = [proc.pid for proc in procs if process_alive(proc.pid)]
        for pid in pids:
            signal_quietly(pid, signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_GRACE
        while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
            for proc in procs:
                proc.join(0.02)
        for pid in pids:
            if process_alive(pid):
                signal_quietly(pid, signal.SIGKILL)
        for proc in procs:
            proc.join(1.0)

    def _stop_database(self):
        if self.db_proc is None or self.db_proc.exitcode is not None:
            return
        self.db_proc.terminate()
        self.db_proc.join(30)
        if self.db_proc.exitcode is None:
            log.error("the database process did not stop; killing it")
            self.db_proc.kill()

    def _force_exit(self):
        children.stop_after_failure(self)
        os._exit(1)


def run(options):
    """Run the daemon until it is stopped; the process exit status."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # until serving (the forkserver inherits it)
    try:
        start_process("daemon", vars(options))
    except LogFileError as error:                  # before anything else is made
        print(f"parley: cannot run the server: {error}", file=sys.stderr, flush=True)
        return 1
    if options.fingerprint:
        new = not os.path.exists(os.path.join(options.data_dir, identity.KEY_FILE_NAME))
        key = identity.daemon_key(options.data_dir)
        print(identity.fingerprint(key.public))
        if new:         # the wrong directory is the usual mistake: not the server's key
            print(f"parley: {options.data_dir} had no server key; this is a new one. A server "
                  "run with --data-dir has its key there: give the same --data-dir.",
                  file=sys.stderr)
        return 0
    log_always(log, "parley %s starting: pid %d, data dir %s, run by Unix user %s",
               instance.VERSION, os.getpid(), os.path.abspath(options.data_dir), unix_user())
    daemon = Daemon(options)
    try:
        daemon.start()
        daemon.serve()
    except (DaemonError, instance.InstanceError, identity.IdentityError, OSError) as error:
        daemon.console.close()                     # the sentence goes to the terminal
        print(f"parley: cannot run the server: {error}", file=sys.stderr, flush=True)
        log_always(log, "cannot run the server: %s", error, level=logging.ERROR,
                   stderr=False)                   # said above; the log file learns it too
        children.stop_after_failure(daemon)
        return 1
    except Exception as error:   # noqa: BLE001 -- a bug: exit, so a supervisor can restart us
        daemon.console.close()
        log.critical("the daemon failed; stopping every process of the server: %s", error,
                     exc_info=True)
        children.stop_after_failure(daemon)
        return 1
    daemon.console.close()                         # the last lines, then fd 2 back
    return 0

