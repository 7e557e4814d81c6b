"""Imported last by the forkserver, after the heavy modules: own group, warm up, freeze.

Own process group: the forkserver leaves the daemon's process group for one
of its own, and so does every process it forks (the database, login, user
and spare processes). A SIGTERM sent to the daemon's whole group at once
(`kill -TERM -PGID`, `timeout`, a terminal's job control) then reaches the
daemon alone, which stops its children in order: the database last, after
every session said goodbye. (systemd signals by cgroup, not by group: its
unit must use KillMode=mixed, see contrib/parley.service.) SIGTTOU is
ignored so that a child in this background group may still log to the
terminal the daemon runs in, even with `stty tostop`.

Warm-up: a handshake, a transport message and a key import run once here,
in memory, so that what pycryptodome and cffi load lazily on first use
(curve code, library handles, caches) is loaded once in the forkserver and
inherited, instead of costing every new login process ~5 ms before it can
answer its client.

`gc.freeze()` then moves every object that exists now into a permanent
generation the collector never scans, so the login and user processes
forked from the server do not write to (and so copy) the pages they
inherit when their garbage collector runs. Imported nowhere else.
"""

import gc
import os
import signal

from Modules.wire.channel import SecureChannel
from Modules.wire.noise import KeyPair


def own_process_group():
    """Leave the daemon's process group (see above); never fails."""
    try:
        os.setpgid(0, 0)
    except OSError:      # already a group or session leader
        pass
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)


def warm_up():
    """One in-memory handshake and message each way; no file or socket."""
    server = SecureChannel("responder", KeyPair(os.urandom(32)))
    client = SecureChannel("initiator")
    server.receive_data(client.initiate())
    server.next_event()
    client.receive_data(server.accept())
    client.next_event()
    server.receive_data(client.send(b"warm"))
    server.next_event()
    client.receive_data(server.send_many([b"up", b"twice"]))
    client.next_event()


own_process_group()
warm_up()
gc.collect()
gc.freeze()
