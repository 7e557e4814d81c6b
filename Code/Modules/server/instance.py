"""One server per data dir, and how other programs find the one that runs.

The daemon `claim()`s its data dir before it starts anything: an exclusive
`flock` on `<data dir>/daemon.lock`, held for the daemon's life. A second
server on the same data dir is refused at once with one sentence naming the
pid of the first (the database process's own lock, `parley.lock`, stays as
the last line of defence against an orphaned database process).

Once the daemon has made its runtime directory it `publish()`es it: the
lock file then holds one line of JSON — pid, runtime dir, port, start time,
version — which the admin command line (`server/admin_cli.py`) reads with
`find_running()` to reach the admin socket. The data dir is 0700 and the
file 0600, so only the server's Unix user (and root) can read it; the admin
socket checks the caller's credentials anyway.

Talks to: the file system only. How it fails: `InstanceError` with a
sentence (another server runs; the data dir cannot be used); a reader that
finds no server says so by returning None, never by raising.
"""

import errno
import fcntl
import json
import os
import time

LOCK_NAME = "daemon.lock"
VERSION = "0.12"


class InstanceError(Exception):
    """This data dir cannot be served now; the message says why."""


class Instance:
    """The daemon's hold on its data dir (see `claim`)."""

    def __init__(self, data_dir, fd):
        self.data_dir, self._fd = data_dir, fd

    def publish(self, runtime_dir, port):
        """Write where this server can be reached; readers see it at once."""
        info = {"pid": os.getpid(), "runtime_dir": runtime_dir, "port": port,
                "started_at": time.time(), "version": VERSION}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self):
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


def lock_path(data_dir):
    return os.path.join(data_dir, LOCK_NAME)


def claim(data_dir):
    """The data dir's lock for this process (created 0700/0600 if missing), or
    InstanceError at once if another server holds it."""
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        fd = os.open(lock_path(data_dir), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise InstanceError(f"the data directory {data_dir} is read-only or not "
                                "writable by this user; Parley must be able to write "
                                "there") from None
        raise InstanceError(f"cannot use the data directory {data_dir}: "
                            f"{error.strerror or error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _read(fd)
        os.close(fd)
        who = f" (pid {info['pid']})" if info and isinstance(info.get("pid"), int) else ""
        raise InstanceError(f"another Parley server{who} is using {data_dir}; "
                            "stop it first") from None
    return Instance(data_dir, fd)


def find_running(data_dir):
    """The published info of the server running on `data_dir`, or None."""
    try:
        fd = os.open(lock_path(data_dir), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)           # held: a server runs (it may still be starting)
            return info if info and isinstance(info.get("runtime_dir"), str) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None                    # nobody holds it: no server
    finally:
        os.close(fd)


def _read(fd):
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        info = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
