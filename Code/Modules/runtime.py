"""What every Parley server process does first: name itself, set up logging.

`start_process(title, options)` sets the process title seen by `ps` and
`top` (`parley: database`, `parley: user alice`, ...) with setproctitle and
configures logging: colour logs to standard error with colorlog when it is
a terminal, or a pipe the console relays to one (plain ones otherwise), and with `--log-file` plain lines
appended to that file too. Every process opens the file itself
(`PrivateLogFile`: created 0600, O_APPEND, one write() per record, opened
again when logrotate moved it; `reopen_log_file` forces that, for SIGHUP;
`keep_log_file` stops it in a process that cannot see the path any more).
Every line carries the connection id of the process that wrote it (`c17`;
`-` in a process that serves no connection), so one session can be
followed from accept to logout. Log records never carry passwords, hashes,
keys, tickets or message bodies and subjects: callers log names, ids,
sizes and error codes only. Also here: `restore_default_signals` (and the
lifeline that ends a child whose daemon died), `lower_priority` for work
that can wait, `process_alive` by /proc, `signal_quietly`, `end_orphan`,
`raise_fd_limit`, `close_connection`, and
`keep_memory_returnable` / `return_free_memory` so that a process's memory
comes back down after a flood.

How it fails: a log file that cannot be opened at start is a
`LogFileError` with one sentence; nothing else here raises for a platform
that lacks a feature, it does without it.
"""

import fcntl
import logging
import logging.handlers
import os
import pwd
import resource
import select
import signal
import socket
import sys
import threading
import time

import colorlog
import setproctitle

LOG_FORMAT = ("%(log_color)s%(asctime)s %(levelname)-7s%(reset)s [%(processName)s] "
              "%(conn_id)s %(message)s")
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s] %(conn_id)s %(message)s"
NO_CONNECTION = "-"
# Set by the operator's console (server/console.py) when standard error is a pipe
# whose lines it shows on a terminal: the lines keep their colours. Inherited.
STDERR_RELAYED = "PARLEY_STDERR_RELAYED_TO_TERMINAL"
# The database process's exit status when the data dir's files cannot be used: the
# daemon stops instead of restarting it (defined here, so the daemon need not import
# the database package, which only the forkserver and its children load).
EXIT_STORAGE_ERROR = 3


class LogFileError(Exception):
    """The log file cannot be written; the message says why in one sentence."""


def log_level_from(options):
    """The numeric level from a dict with 'log_level' and 'debug'."""
    if options.get("debug"):
        return logging.DEBUG
    name = str(options.get("log_level") or "INFO").upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {options.get('log_level')!r} "
                         "(use DEBUG, INFO, WARNING, ERROR)")
    return level


def setup_logging(level, log_file=None):
    """Colour logs on a terminal, plain ones otherwise, to standard error; and
    plain ones appended to `log_file` (an absolute path) if given."""
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty() or os.environ.get(STDERR_RELAYED) == "1":
        handler.setFormatter(colorlog.ColoredFormatter(LOG_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    handlers = [handler]
    if log_file:
        handlers.append(_log_file_handler(log_file))
    for each in handlers:
        each.addFilter(_CONNECTION_ID)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)


def start_process(title, options):
    """Name the process `parley: <title>` and configure its logging: its level,
    its log file and the connection id its lines carry (`conn_id` in options)."""
    import multiprocessing

    full_title = f"parley: {title}"
    setproctitle.setproctitle(full_title)
    multiprocessing.current_process().name = full_title
    set_connection_id(options.get("conn_id"))
    setup_logging(log_level_from(options), options.get("log_file"))


# -- the connection id on every line ------------------------------------------------

_connection = [NO_CONNECTION]


def set_connection_id(conn_id):
    """The id every later line of this process carries (one process per connection)."""
    _connection[0] = conn_id or NO_CONNECTION


class _ConnectionId(logging.Filter):
    """Gives each record this process's connection id, unless the caller named the
    connection the line is about (the daemon: `extra={"conn_id": "c17"}`)."""

    def filter(self, record):
        if not hasattr(record, "conn_id"):
            record.conn_id = _connection[0]
        return True


_CONNECTION_ID = _ConnectionId()


# -- the log file -----------------------------------------------------------------

# Control characters other than the newline are shown as \xNN in the file (no
# colour codes, no carriage returns), and the lines of one record after its
# first are indented: a line that starts with a date is always a record's own.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(32), 127] if code != 10}


class PrivateLogFile(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler whose file is created 0600 and opened with O_APPEND.

    Each record is one write() at the end of the file, so the lines of every
    process stay whole; before each record the path is checked, and a file
    that was moved or removed (logrotate) is opened again, created anew.
    """

    def _open(self):
        fd = os.open(self.baseFilename,
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return open(fd, "a", encoding="utf-8")

    kept = False       # True: never look at the path again (keep_log_file)

    def emit(self, record):
        try:
            if not self.kept:
                self.reopenIfNeeded()
            text = self.format(record).translate(_ESCAPES).replace("\n", "\n    ")
            os.write(self.stream.fileno(), (text + "\n").encode("utf-8", "replace"))
        except Exception:
            self.handleError(record)

    def reopen(self):
        """Close the file and open the path again, moved or not (SIGHUP)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
            self._statstream()
        finally:
            self.release()


_file_handler = [None]


def _log_file_handler(path):
    """This process's handler of `path`: the one it has (a spare that becomes a
    login process keeps it), else a new one; LogFileError if it cannot be opened."""
    current = _file_handler[0]
    if current is not None and current.baseFilename == os.path.abspath(path):
        return current
    try:
        handler = PrivateLogFile(path, encoding="utf-8")
    except OSError as error:
        raise LogFileError(log_file_problem(path, error)) from None
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    if current is not None:
        current.close()
    _file_handler[0] = handler
    return handler


def log_file_problem(path, error):
    """One sentence: why the log file at `path` cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(error, FileNotFoundError) and not os.path.isdir(folder):
        why = f"the directory {folder} does not exist"
    elif isinstance(error, IsADirectoryError):
        why = "that is a directory"
    elif isinstance(error, PermissionError):
        why = f"the Unix user {unix_user()} may not write there"
    else:
        why = (error.strerror or str(error)).lower()
    return f"cannot write the log file {path}: {why}"


def keep_log_file():
    """From now on write to the log file already open, whatever happens to its path:
    a process in an empty root (`Modules/server/containment.py`) cannot see the path,
    and looking for it would only lose the lines. After logrotate moved the file,
    such a process writes on into the moved one until it ends."""
    if _file_handler[0] is not None:
        _file_handler[0].kept = True


def log_file_descriptor():
    """The descriptor of this process's log file, after a look at its path (a file
    logrotate moved is opened anew first), or None without one: the daemon passes it
    with a spare's job, since a contained spare can no longer open the path."""
    handler = _file_handler[0]
    if handler is None or handler.stream is None:
        return None
    if not handler.kept:
        handler.reopenIfNeeded()
    return handler.stream.fileno()


def adopt_log_file(fd):
    """Write this process's log lines to `fd` from now on (the daemon's log file,
    passed with a spare's job); the file opened before is closed."""
    handler = _file_handler[0]
    if handler is None:
        os.close(fd)
        return
    handler.acquire()
    try:
        old, handler.stream = handler.stream, open(fd, "a", encoding="utf-8")
        handler._statstream()
    finally:
        handler.release()
    if old is not None:
        old.close()


def reopen_log_file():
    """Open this process's log file again (after SIGHUP); whether it has one."""
    if _file_handler[0] is None:
        return False
    _file_handler[0].reopen()
    return True


def log_always(logger, message, *args, level=logging.INFO, stderr=True):
    """A line that reaches the log file whatever the level (the header of each
    start, why a start failed); standard error gets it only if `stderr` and the
    level let it through."""
    record = logger.makeRecord(logger.name, level, "(always)", 0, message, args, None)
    for handler in logging.getLogger().handlers:
        if handler is _file_handler[0] or (stderr and logger.isEnabledFor(level)):
            handler.handle(record)


def unix_user():
    """'alice (uid 1000)': who runs this process (the uid alone if it has no name)."""
    uid = os.getuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def restore_default_signals(lifeline=None):
    """What every child does first: ignore Ctrl-C (the daemon handles it) and
    SIGHUP (a moved log file is noticed before the next line), and stop when
    the daemon is gone.

    `lifeline` is the read end of a pipe whose only write end the daemon
    holds and never writes to: end of file on it means the daemon has died
    (even by SIGKILL), and the child then gets SIGTERM and ends cleanly.
    (PR_SET_PDEATHSIG cannot do this: a child's parent is the forkserver,
    which every child keeps alive.) The kernel sends that SIGTERM itself, no
    thread waits for it: the process opens the pipe again for a file
    description of its own (the one passed is shared by every child) and
    asks for a signal when its state changes (O_ASYNC, F_SETSIG). So a login
    or user process stays single-threaded, as a user namespace requires
    (`Modules/server/containment.py`).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # the log file reopens by itself
    if lifeline is not None:
        _watch_lifeline(lifeline.fileno())


F_SETSIG = 10          # Linux's fcntl: which signal O_ASYNC sends (Python has no name)


def _watch_lifeline(fileno):
    fd = os.open(f"/proc/self/fd/{fileno}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, F_SETSIG, signal.SIGTERM)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    DAEMON_GONE.fd = fd
    if DAEMON_GONE.is_set():          # it ended before we asked to be told
        os.kill(os.getpid(), signal.SIGTERM)


class _DaemonGone:
    """Whether this process's lifeline says that the daemon is gone (its end closed)."""

    fd = None

    def is_set(self):
        if self.fd is None:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))


DAEMON_GONE = _DaemonGone()


def process_alive(pid):
    """Whether `pid` runs (a zombie does not). By /proc, because a child of a
    forkserver that died reads as ended to multiprocessing while it still runs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def close_connection(sock):
    """End a client's TCP connection for every holder of the socket, then close ours."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# Work that can wait (a login's handshake and dialogue, password hashing)
# runs at this nice value so that live sessions win the CPU during a login
# storm: logins slow down, messages between people already logged in do not.
BACKGROUND_NICE = 10


def lower_priority(nice=BACKGROUND_NICE, thread=False):
    """Raise the nice value of this process (or only the calling thread) to `nice`.

    Linux keeps a nice value per thread, so `thread=True` touches only the
    caller (a hashing worker). Never fails: a platform without it, or a
    value already higher, leaves things as they are.
    """
    who = threading.get_native_id() if thread else 0
    try:
        current = os.getpriority(os.PRIO_PROCESS, who)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, who, nice)
    except (AttributeError, OSError):
        pass


# -- memory that comes back ---------------------------------------------------------

M_MMAP_THRESHOLD = -3              # glibc's mallopt() parameter
MMAP_THRESHOLD = 1024 * 1024       # allocations this large always get pages of their own


def _libc():
    try:
        import ctypes
        import ctypes.util
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except (OSError, AttributeError):
        return None


def keep_memory_returnable():
    """Large allocations (an argon2 hash's 19 MiB) get their own pages, given back
    when freed: glibc otherwise raises its mmap threshold after the first free
    and keeps the next ones in its heap for good. Does nothing off glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def return_free_memory():
    """Give the heap's free pages back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


# -- processes ---------------------------------------------------------------------

def raise_fd_limit():
    """Up to the hard limit: each connection costs the daemon a few descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def end_orphan(pid, wait=5.0):
    """Make sure process `pid` (not our child: the forkserver's) is gone."""
    deadline = time.monotonic() + wait
    while process_alive(pid) and time.monotonic() < deadline:
        signal_quietly(pid, signal.SIGKILL)
        time.sleep(0.02)


def signal_quietly(pid, signum):
    """os.kill, and nothing if the process is gone already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
