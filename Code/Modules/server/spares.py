"""Spare processes: login and user processes started before they are needed.

Starting a forkserver child takes ~8 ms, twice per login (the login
process, then the user process), all of it on the path between a person
pressing Enter and their session being ready. The daemon therefore keeps a
few *spares* (`--spare-processes`, default 4): forkserver children that
have started, named `parley: spare`, and wait on their end of a duplex pipe
for one job. A job is the kind ("login" or "user"), its arguments, and the
client's socket passed as a descriptor (SCM_RIGHTS). The spare then runs
`login_process.main` or `user_process.main` exactly as a freshly started
process would, with the same pipe as its channel back to the daemon, and
ends with that connection: a spare serves one connection, once, like every
other login or user process. A spare is contained
(`Modules/server/containment.py`) as soon as it starts, before any job; so
that it writes to the log file of the moment and not to one logrotate moved
since, the daemon passes its own log file's descriptor with the job. The daemon starts a replacement after handing
a spare its job, off the connection's path.

Talks to: the daemon only, over the pipe. How it fails: a spare that died
while idle, or whose pipe breaks, is skipped and the daemon starts a
process the ordinary way; a spare whose daemon goes away sees end of file
(or its lifeline) and exits without doing anything.
"""

import logging
import socket
import time
from multiprocessing import reduction

from Modules.runtime import (
    adopt_log_file,
    log_file_descriptor,
    process_alive,
    restore_default_signals,
    start_process,
)
from Modules.server import containment, login_process, user_process

log = logging.getLogger("parley.spares")

TARGETS = {"login": login_process.main, "user": user_process.main}
REFILL_PER_TURN = 1   # spares started per idle daemon loop turn, to keep accepting quickly
RETRY_AFTER = 1.0     # seconds before trying again when a spare could not be started


def spare_main(pipe, config):
    """Entry point of a spare: wait for one job, then become that process."""
    restore_default_signals(config.get("lifeline"))
    start_process("spare", config)
    containment.enter(config, "spare")   # contained before any job: off the login's path
    try:
        kind, first, job_config, extra = pipe.recv()
        sock = socket.socket(fileno=reduction.recv_handle(pipe))
        if job_config.get("log_file_follows"):   # the daemon's, opened anew after logrotate
            adopt_log_file(reduction.recv_handle(pipe))
    except (EOFError, OSError, ValueError):
        return   # the daemon closed us: not needed
    job_config = {**job_config, "lifeline": None}   # ours is already watched
    TARGETS[kind](sock, first, pipe, job_config, *extra)


class SparePool:
    """The daemon's idle spares, oldest first."""

    def __init__(self, start_process_fn, make_pipe, config_fn, size):
        self._start, self._make_pipe, self._config = start_process_fn, make_pipe, config_fn
        self.size = size
        self.idle = []   # (process, daemon's end of the pipe)
        self._paused_until = 0.0

    def wanted(self):
        """Whether refill() has work to do now."""
        return len(self.idle) < self.size and time.monotonic() >= self._paused_until

    def refill(self):
        """Start spares up to the target size, a few per call."""
        if not self.wanted():
            return
        for _ in range(min(REFILL_PER_TURN, self.size - len(self.idle))):
            ours, theirs = self._make_pipe()
            try:
                proc = self._start(spare_main, (theirs, self._config()), "parley: spare")
            except (OSError, EOFError) as error:
                log.warning("cannot start a spare process: %s", error)
                ours.close()
                self._paused_until = time.monotonic() + RETRY_AFTER
                return
            finally:
                theirs.close()
            self.idle.append((proc, ours))

    def give(self, kind, sock, first, config, extra=()):
        """Hand the job to an idle spare: (process, pipe), or None if none could take it."""
        config = {key: value for key, value in config.items() if key != "lifeline"}
        log_fd = log_file_descriptor()
        config["log_file_follows"] = log_fd is not None
        while self.idle:
            proc, pipe = self.idle.pop(0)
            if not process_alive(proc.pid):
                pipe.close()
                continue
            try:
                pipe.send((kind, first, config, tuple(extra)))
                reduction.send_handle(pipe, sock.fileno(), proc.pid)
                if log_fd is not None:
                    reduction.send_handle(pipe, log_fd, proc.pid)
                return proc, pipe
            except (OSError, ValueError):
                log.info("spare process %s is gone; trying another", proc.pid)
                pipe.close()
        return None

    def close(self):
        """The idle spares (to stop); their pipes are closed so they exit."""
        procs = [proc for proc, _ in self.idle]
        for _, pipe in self.idle:
            pipe.close()
        self.idle = []
        return procs
