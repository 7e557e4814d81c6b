"""What every Parley server process does first: name itself, set up logging.

`start_process(title, options)` sets the process title seen by `ps` and
`top` (`parley: database`, `parley: user alice`, ...) with setproctitle and
configures colour logging to standard error with colorlog. Log records
never carry passwords, hashes, keys or message bodies: callers log names,
ids, sizes and error codes only. Also here: `restore_default_signals`
(and the lifeline that ends a child whose daemon died),
`lower_priority` for work that can wait, `process_alive` by /proc,
`close_connection`, and `keep_memory_returnable` / `return_free_memory` so
that a process's memory comes back down after a flood. Nothing here raises for a platform that lacks a
feature; it does without it.
"""

import logging
import os
import signal
import socket
import sys
import threading

import colorlog
import setproctitle

LOG_FORMAT = "%(log_color)s%(asctime)s %(levelname)-7s%(reset)s [%(processName)s] %(message)s"
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s] %(message)s"


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


def setup_logging(level):
    """Colour logs on a terminal, plain ones otherwise, to standard error."""
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(colorlog.ColoredFormatter(LOG_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def start_process(title, options):
    """Name the process `parley: <title>` and configure its logging."""
    import multiprocessing

    full_title = f"parley: {title}"
    setproctitle.setproctitle(full_title)
    multiprocessing.current_process().name = full_title
    setup_logging(log_level_from(options))


def restore_default_signals(lifeline=None):
    """What every child does first: ignore Ctrl-C (the daemon handles it), and
    stop when the daemon is gone.

    `lifeline` is the read end of a pipe whose only write end the daemon
    holds and never writes to: end of file on it means the daemon has died
    (even by SIGKILL), and the child then ends itself with SIGTERM, cleanly.
    (PR_SET_PDEATHSIG cannot do this: a child's parent is the forkserver,
    which every child keeps alive.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if lifeline is not None:
        threading.Thread(target=_watch_lifeline, args=(lifeline,), daemon=True,
                         name="parley-lifeline").start()


# Set when this process learns through its lifeline that the daemon is gone.
DAEMON_GONE = threading.Event()


def _watch_lifeline(lifeline):
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    DAEMON_GONE.set()
    os.kill(os.getpid(), signal.SIGTERM)


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
