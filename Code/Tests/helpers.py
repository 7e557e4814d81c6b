"""Shared test helpers: a real server daemon, real clients, a raw protocol driver.

`ServerProcess` starts `Code/server_daemon.py --port 0` in a temporary data
dir as its own process group and always kills that whole group when the
test ends (the `server` fixture in conftest.py guarantees it, even on
failure). `BatchClient` runs the real `Code/client.py --batch --json` with
its standard input held open, and reads its JSON lines as they come.
`RawClient` speaks the wire protocol directly through the sans-IO
`Connection`, for tests that must send what a well-behaved client would not.
"""

import atexit
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from Modules.wire import protocol
from Modules.wire.framing import NEED_DATA
from Modules.wire.serializers import Packet

CODE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(CODE_DIR, "server_daemon.py")
CLIENT = os.path.join(CODE_DIR, "client.py")
TEST_ENV = {"PARLEY_ARGON2_MEMORY_KIB": "1024", "PARLEY_ARGON2_TIME_COST": "1",
            "PYTHONUNBUFFERED": "1"}
WAIT = 30.0
PASSWORD = "correct horse battery"


_client_home = []


def client_home():
    """Where clients started by tests keep their history, people and pins (never
    in ~). Made on first use, so that a process which merely imports this module
    (a forkserver, which ends without atexit) leaves nothing behind."""
    if not _client_home:
        _client_home.append(tempfile.mkdtemp(prefix="parley-test-home-"))
        atexit.register(shutil.rmtree, _client_home[0], ignore_errors=True)
    return _client_home[0]


def child_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(TEST_ENV)
    env.update({"XDG_DATA_HOME": os.path.join(client_home(), "data"),
                "XDG_CONFIG_HOME": os.path.join(client_home(), "config")})
    env.update(extra or {})
    return env


class ServerProcess:
    """A real Parley daemon (and its children) for one test."""

    def __init__(self, tmp_path, *args, env=None):
        self.tmp_path = tmp_path
        self.data_dir = str(tmp_path / "data")
        self.args, self.env = list(args), env or {}
        self.proc = None
        self.port = None
        self.log_path = tmp_path / "server.log"
        self.stdout_lines = []

    def start(self):
        command = [sys.executable, SERVER, "--port", "0", "--data-dir", self.data_dir,
                   "--log-level", "DEBUG", *self.args]
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log_file,
                                     env=child_env(self.env), start_new_session=True)
        self.port = self._wait_for_port()
        return self

    def _wait_for_port(self):
        lines = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        raise RuntimeError(f"server did not start; log:\n{self.log()}")

    def _read_stdout(self, lines):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            self.stdout_lines.append(line)
            lines.put(line)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=WAIT):
        """Signal the daemon and wait for it; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill_group()

    def kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if getattr(self, "log_file", None):
            self.log_file.close()
        self._remove_runtime_dir()

    def _remove_runtime_dir(self):
        """A daemon killed with its whole group cannot remove its runtime dir."""
        for path in re.findall(r"runtime directory (\S+)", self.log()):   # every start
            if os.path.basename(path).startswith("parley-"):
                shutil.rmtree(path, ignore_errors=True)

    def processes(self):
        """{pid: title} of every live process in the server's process group."""
        found = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                title = _title_if_in_group(int(entry), self.proc.pid)
                if title is not None:
                    found[int(entry)] = title
        return found

    def pids_titled(self, prefix):
        return [pid for pid, title in self.processes().items() if title.startswith(prefix)]


def _title_if_in_group(pid, pgid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) != pgid or fields[0] == "Z":
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, ValueError, IndexError):
        return None


def proc_stat(pid, thread=None):
    """The fields of /proc/PID[/task/TID]/stat after the name (state first)."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    with open(path) as stat:
        return stat.read().rsplit(")", 1)[1].split()


def parent_of(pid):
    """The parent pid of `pid` from /proc, or None if it is gone."""
    try:
        return int(proc_stat(pid)[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_until(predicate, timeout=WAIT, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def client_command(server, user, *extra, known_hosts=None, batch=True, as_json=True):
    command = [sys.executable, CLIENT, "--port", str(server.port), "--user", user,
               "--password-env", "PARLEY_TEST_PASSWORD", "--accept-new-host-key",
               "--known-hosts", known_hosts or str(server.tmp_path / "known_hosts")]
    if batch:
        command.append("--batch")
    if as_json:
        command.append("--json")
    return command + list(extra)


def run_client(server, user, lines=(), password=PASSWORD, create=False, extra=(),
               timeout=WAIT):
    """Run a batch client to the end of `lines`; (returncode, json objects, stderr)."""
    command = client_command(server, user, *(["--create"] if create else []), *extra)
    done = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True,
                          text=True, timeout=timeout,
                          env=child_env({"PARLEY_TEST_PASSWORD": password}))
    return done.returncode, parse_json_lines(done.stdout), done.stderr


def parse_json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class BatchClient:
    """A batch client kept running: send lines, read JSON objects as they arrive."""

    def __init__(self, server, user, password=PASSWORD, create=False, extra=()):
        command = client_command(server, user, *(["--create"] if create else []), *extra)
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=child_env({"PARLEY_TEST_PASSWORD": password}))
        self.objects = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                self.objects.put(json.loads(line))
        self.objects.put(None)

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout=WAIT):
        """The first object (not yet consumed) for which predicate is true."""
        deadline = time.monotonic() + timeout
        while True:
            for obj in self.seen:
                if predicate(obj):
                    self.seen.remove(obj)
                    return obj
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; got {self.seen}")
            try:
                obj = self.objects.get(timeout=remaining)
            except queue.Empty:
                continue
            if obj is None:
                raise AssertionError(f"client ended; got {self.seen}; "
                                     f"stderr: {self.proc.stderr.read()}")
            self.seen.append(obj)

    def wait_type(self, kind, timeout=WAIT, **fields):
        return self.wait_for(lambda o: o.get("type") == kind and all(
            o.get(k) == v for k, v in fields.items()), timeout)

    def close(self, timeout=WAIT):
        """End standard input (logs out) and wait; the exit status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RawClient:
    """Speaks the wire protocol directly, for tests of misbehaviour."""

    def __init__(self, port, host="127.0.0.1", timeout=WAIT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = protocol.Connection.client()
        self.server_key = None

    def write(self, data):
        self.sock.sendall(data)

    def send(self, op, **data):
        self.write(self.conn.send(Packet(op, data)))

    reset = False   # a server that closes with our later packets unread resets us

    def next_event(self):
        """The next event; CLOSED when the server closed the connection."""
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                self.reset, data = True, b""
            self.conn.receive_data(data)

    def handshake(self):
        self.write(self.conn.start())
        done = self.next_event()
        self.server_key = done.remote_static
        self.send("Version", **protocol.version_offer().data)
        version = self.next_event()
        assert version.op == "Version", version
        return self.next_event()   # the first Login prompt

    def login(self, username, password, create=False):
        """Handshake and login; the events up to and including the outcome."""
        prompt = self.handshake()
        assert prompt.data["prompt"] == "username", prompt
        self.send("Login", username=username)
        prompt = self.next_event()
        field = "new_password" if create else "password"
        assert prompt.data["prompt"] == field, prompt
        self.send("Login", **{field: password})
        return self.next_event()

    def close(self):
        self.sock.close()


def read_to_end(sock, limit=64 * 1024 * 1024):
    """Every byte until the server closes (EOF or reset); bounded in size."""
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def database_config(tmp_path):
    """The config of a database process started by a test, cheap argon2 included."""
    return {"data_dir": str(tmp_path / "data"), "socket_path": str(tmp_path / "db.sock"),
            "db_socket": str(tmp_path / "db.sock"), "ticket_secret": os.urandom(32),
            "argon2": {"memory_kib": 1024, "time_cost": 1, "parallelism": 1},
            "log_level": "DEBUG"}
