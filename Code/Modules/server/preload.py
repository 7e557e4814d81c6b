"""Imported last by the forkserver, after the heavy modules: warm up, then freeze.

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

from Modules.wire.channel import SecureChannel
from Modules.wire.noise import KeyPair


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


warm_up()
gc.collect()
gc.freeze()
