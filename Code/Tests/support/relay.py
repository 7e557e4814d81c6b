"""A TCP relay between a real client and the real server, for the tests.

`Relay(target_port)` listens on 127.0.0.1 (its `port`) and forwards every
connection to the server both ways, one thread per direction. It counts
what it forwarded (`forwarded`, bytes), keeps every byte with
`record=True` (`recorded`: a test scans it for what must never travel in
the clear), and `cut()` ends every connection it carries at once, as a
network that drops: both ends see the connection close, and the next
connection is forwarded again. `close()` stops listening and cuts.
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
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.live.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

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

    def cut(self):
        """End every connection carried now (new ones are forwarded again)."""
        with self.lock:
            socks = list(self.live)
        self._end(*socks)

    def close(self):
        self.listener.close()
        self.cut()
