"""A TCP relay between a real client and the real server, for the tests.

`Relay(target_port)` listens on 127.0.0.1 (its `port`) and forwards every
connection to the server both ways, one thread per direction. It counts
what it forwarded (`forwarded`, bytes), keeps every byte with
`record=True` (`recorded`: a test scans it for what must never travel in
the clear), and `cut()` ends every connection it carries at once, as a
network that drops: both ends see the connection close, and the next
connection is forwarded again. `close()` stops listening and cuts.

Given a list of ports, each new connection goes to the first one that
accepts it: a TCP balancer in front of several servers, failing over.

`hold_at(n)` makes the relay itself stop forwarding, both ways, once it
has forwarded `n` bytes (`held` is then set) until `release()`: a test
interrupts a transfer at a point the relay decides, not at whatever point
the test's own polling happens to see on a busy machine.
"""

import socket
import threading


class Relay:
    """A TCP relay on 127.0.0.1 that forwards both ways, counts, and can cut."""

    def __init__(self, target_port, record=False):
        self.target_port, self.record = target_port, record
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.recorded = bytearray()
        self.forwarded = 0
        self.lock = threading.Lock()
        self.live = set()
        self.hold_limit = None
        self.held = threading.Event()
        self.released = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = self._connect_to_a_target()
            if server is None:
                client.close()
                continue
            with self.lock:
                self.live.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _connect_to_a_target(self):
        """The first target that takes the connection (a balancer's failover), or None."""
        ports = self.target_port if isinstance(self.target_port, (list, tuple)) \
            else [self.target_port]
        for port in ports:
            try:
                return socket.create_connection(("127.0.0.1", port))
            except OSError:
                continue
        return None

    def _pump(self, source, sink):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._end(source, sink)
                return
            with self.lock:
                self.forwarded += len(data)
                if self.record:
                    self.recorded += data
                holding = self.hold_limit is not None and self.forwarded >= self.hold_limit
            if holding:
                self.held.set()
                self.released.wait()
            try:
                sink.sendall(data)
            except OSError:
                self._end(source, sink)
                return

    def _end(self, *socks):
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            with self.lock:
                self.live.discard(sock)

    def hold_at(self, limit):
        """Stop forwarding (both ways) once `limit` bytes have been forwarded."""
        with self.lock:
            self.hold_limit = limit
        self.released.clear()

    def release(self):
        """Forward again what was held, and everything after it."""
        with self.lock:
            self.hold_limit = None
        self.released.set()

    def cut(self):
        """End every connection carried now (new ones are forwarded again)."""
        with self.lock:
            socks = list(self.live)
        self._end(*socks)

    def close(self):
        self.listener.close()
        self.release()
        self.cut()
