"""The admin socket: the operator's commands from any shell on the host.

The daemon listens on `<runtime dir>/admin.sock` (the runtime dir is 0700,
the socket 0600, and the lock file in the data dir says where it is: see
`server/instance.py`). Each connection carries one request — one line of
JSON, `{"words": ["kick", "alice"]}` — and gets one line of JSON back,
`{"status": 0, "data": {...}, "text": "..."}`, then the daemon closes it.
The command is run by `server/admin_commands.py` on an `AdminContext`:
a link to the monitor in its admin role, opened for the Unix user of the
caller.

Who may ask: the caller's credentials are read from the socket
(SO_PEERCRED), not from any file mode: only the server's own Unix user and
root are served; anyone else is told so in one sentence, logged and
closed. Caps: a request line of at most 64 KiB, 10 seconds to send it, at
most `MAX_CLIENTS` requests served at once (more are told to try again).

Talks to: the admin command line (`server/admin_cli.py`) over the socket,
the monitor over its Unix socket (`DbLink`), and the daemon through the
`hooks` it is given (figures, log level, shutdown), from its own threads.
How it fails: garbage, a huge or a slow request is answered with a status
2 error and closed; nothing a caller sends reaches the daemon's loop or
stops the other requests.
"""

import json
import logging
import os
import pwd
import socket
import struct
import threading

from Modules.database.link import DbLink
from Modules.server import admin_commands

log = logging.getLogger("parley.admin")

SOCKET_NAME = "admin.sock"
REQUEST_MAX = 64 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CLIENTS = 8
DB_CONNECT_TIMEOUT = 5.0


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def peer_credentials(sock):
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                               struct.calcsize("3i")))


class AdminContext:
    """What a command runs against: the monitor's admin role, and the daemon."""

    reply_timeout = None         # seconds each reply may take (None: as long as it takes)

    def __init__(self, db_socket, operator, hooks):
        self.db_socket, self.operator, self.hooks = db_socket, operator, hooks
        self._link = None

    def call(self, op, **fields):
        """One admin request to the monitor (fields given as None are left out)."""
        if self._link is None:
            link = DbLink(self.db_socket, connect_timeout=DB_CONNECT_TIMEOUT)
            link.connect()
            link.sock.settimeout(self.reply_timeout)     # a late reply: DbUnavailable
            link.call("Admin", operator=self.operator)
            self._link = link
        return self._link.call(op, **{k: v for k, v in fields.items() if v is not None})

    def server_figures(self):
        return self.hooks.server_figures()

    def set_log_level(self, level):
        self.hooks.set_log_level(level)

    def shutdown(self, seconds):
        self.hooks.shutdown_in(seconds)

    def close(self):
        if self._link is not None:
            self._link.close()
            self._link = None


class AdminServer:
    """The listening socket and a thread per request (at most MAX_CLIENTS)."""

    def __init__(self, runtime_dir, db_socket, hooks):
        self.path = os.path.join(runtime_dir, SOCKET_NAME)
        self.db_socket, self.hooks = db_socket, hooks
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._sock = None

    def start(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        sock.listen(16)
        self._sock = sock
        threading.Thread(target=self._accept_loop, name="parley-admin", daemon=True).start()

    def close(self):
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def _accept_loop(self):
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return                                   # closed: the daemon is stopping
            if not self._slots.acquire(blocking=False):
                _answer(conn, admin_commands.Outcome(1, {"error": "busy"}, "The server is "
                                                     "busy with other admin requests; try "
                                                     "again."))
                continue
            threading.Thread(target=self._serve, args=(conn,), name="parley-admin-request",
                             daemon=True).start()

    def _serve(self, conn):
        try:
            operator = self._allowed(conn)
            if operator is not None:
                words = _read_request(conn)
                if isinstance(words, admin_commands.Outcome):
                    _answer(conn, words)
                else:
                    _answer(conn, self._run(operator, words))
        finally:
            self._slots.release()

    def _allowed(self, conn):
        """The caller's user name if it may administer this server, else None."""
        pid, uid, _gid = peer_credentials(conn)
        if uid in (os.getuid(), 0):
            return user_name(uid)
        log.warning("admin request from %s (pid %d) refused: not the server's user",
                    user_name(uid), pid)
        _answer(conn, admin_commands.Outcome(1, {"error": "not allowed"}, (
            f"Only {user_name(os.getuid())} (the server's Unix user) and root may "
            "administer this server.")))
        return None

    def _run(self, operator, words):
        context = AdminContext(self.db_socket, operator, self.hooks)
        try:
            log.info("admin command %s by %s", words[0][:32] if words else "-", operator)
            return admin_commands.run(context, words)
        finally:
            context.close()


def _read_request(conn):
    """The request's words, or an Outcome saying what was wrong with it."""
    conn.settimeout(REQUEST_TIMEOUT)
    data = bytearray()
    try:
        while b"\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            if len(data) > REQUEST_MAX:
                return _bad(f"The request is longer than {REQUEST_MAX // 1024} KiB.")
    except (socket.timeout, OSError):
        return _bad("The request did not arrive in time.")
    try:
        request = json.loads(bytes(data).split(b"\n", 1)[0].decode("utf-8"))
        words = request["words"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        return _bad('A request is one line of JSON: {"words": ["who"]}.')
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or \
            sum(len(w) for w in words) > admin_commands.LINE_MAX:
        return _bad(f"The words must be text, {admin_commands.LINE_MAX} characters at most.")
    return words


def _bad(text):
    return admin_commands.Outcome(2, {"error": text}, text)


def _answer(conn, outcome):
    reply = {"status": outcome.status, "data": outcome.data, "text": outcome.text}
    try:
        conn.settimeout(REQUEST_TIMEOUT)
        conn.sendall(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass
    finally:
        conn.close()
