"""The daemon's listening socket, and the TCP options of every accepted connection.

`listen(host, port, fallback)` binds the server's port before anything else
is started (before the data dir is claimed or created), so that a port in
use costs nothing: it tries `port`, then the next `fallback` ports, and
returns the first socket it could bind. `tune(sock, keepalive)` gives an
accepted connection what every connection needs: no Nagle delay, and TCP
keepalive, so that a client that vanished without closing (a laptop lid
shut, a cable pulled, a NAT that forgot the connection) is noticed within
minutes: after `keepalive` silent seconds the kernel sends up to
`KEEPALIVE_PROBES` probes, `keepalive_interval()` apart, and resets the
connection when none is answered. `TCP_USER_TIMEOUT` gives the same bound
to data the client never acknowledges (a push to a vanished client). The
process serving the connection then reads an error, ends, and frees its
`--max-clients` place.

Talks to: the kernel's sockets only. How it fails: `ListenError` with one
sentence (the port is taken by another program, the address is not this
host's, the port needs privileges, the host name does not resolve); `tune`
never raises: an option the platform lacks is done without.
"""

import errno
import os
import socket

BACKLOG = 1024
KEEPALIVE_PROBES = 4


class ListenError(Exception):
    """The server cannot listen where it was asked to; the message says why."""


def listen(host, port, fallback=0):
    """A bound, listening, non-blocking socket on `host`, on `port` or one of the
    `fallback` ports after it; ListenError when none can be used."""
    last = min(65535, port + fallback) if port else port
    for candidate in range(port, last + 1):
        try:
            sock = socket.create_server((host, candidate), backlog=BACKLOG,
                                        reuse_port=False)
        except OSError as error:   # create_server rewords bind's errors: go by errno
            if error.errno == errno.EADDRINUSE:
                continue
            raise ListenError(_bind_failure(host, candidate, error)) from None
        sock.setblocking(False)
        return sock
    raise ListenError(_in_use(host, port, last))


def _in_use(host, first, last):
    if first == last:
        return (f"port {first} on {host} is in use by another program; choose another "
                "with --port or use --port-fallback N")
    return (f"ports {first} to {last} on {host} are all in use by other programs; "
            "choose another with --port or a larger --port-fallback")


def _bind_failure(host, port, error):
    if isinstance(error, socket.gaierror) or (error.errno or 0) < 0:   # getaddrinfo's
        return (f"cannot listen on {host}: no such host or address (use an address of "
                "this host, e.g. 127.0.0.1 or 0.0.0.0)")
    if error.errno == errno.EADDRNOTAVAIL:
        return (f"cannot listen on {host}: it is not an address of this host (use one "
                "of its addresses, e.g. 127.0.0.1 or 0.0.0.0)")
    if error.errno in (errno.EACCES, errno.EPERM):
        return (f"port {port} on {host} may only be used with privileges "
                "(CAP_NET_BIND_SERVICE); choose a port above 1023 with --port")
    reason = os.strerror(error.errno) if error.errno else str(error)
    return f"cannot listen on {host}:{port}: {reason.lower()}"


def keepalive_interval(idle):
    """Seconds between probes: a quarter of the idle time, from 1 s to 15 s."""
    return max(1, min(15, idle // 4))


def tune(sock, keepalive):
    """TCP_NODELAY and keepalive (`keepalive` idle seconds) on an accepted socket."""
    interval = keepalive_interval(keepalive)
    options = [(socket.IPPROTO_TCP, "TCP_NODELAY", 1),
               (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
               (socket.IPPROTO_TCP, "TCP_KEEPIDLE", keepalive),
               (socket.IPPROTO_TCP, "TCP_KEEPINTVL", interval),
               (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPALIVE_PROBES),
               # Unacknowledged data gets the same bound (milliseconds).
               (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT",
                1000 * (keepalive + interval * KEEPALIVE_PROBES))]
    for level, name, value in options:
        option = getattr(socket, name, None)
        if option is None:
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass
