"""Real processes for tests: the daemon, a lone database process, and waiting.

`ServerProcess` starts `Code/server_daemon.py --port 0` in a temporary data
dir as its own session (the daemon is its leader: the forkserver and its
children move to a process group of their own, but never leave the
session) and always kills everything in that session when the test ends
(the `server` fixture in conftest.py guarantees it, even on failure). `running_database()` starts a real database process (a
forkserver child on real SQLite files) for tests that talk to the monitor
directly. `wait_until` waits on a condition, never a fixed time;
`unread_by(pid)` is what a (stopped) process has not read from its sockets.
"""

import atexit
import contextlib
import json
import multiprocessing
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

CODE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")
           and k not in ("LINES", "COLUMNS")}   # xdist's workers set them; a child's own
    #                                           terminal (a pty of the test's) decides
    env.update(TEST_ENV)
    env.update({"XDG_DATA_HOME": os.path.join(client_home(), "data"),
                "XDG_CONFIG_HOME": os.path.join(client_home(), "config"),
                "XDG_STATE_HOME": os.path.join(client_home(), "state")})
    env.update(extra or {})
    return env


class ServerProcess:
    """A real Parley daemon (and its children) for one test."""

    def __init__(self, tmp_path, *args, env=None, prefix=()):
        self.tmp_path = tmp_path
        self.data_dir = str(tmp_path / "data")
        self.args, self.env = list(args), env or {}
        self.prefix = list(prefix)   # a command that execs the rest (e.g. nsenter ... --)
        self.proc = None
        self.port = None
        self.log_path = tmp_path / "server.log"
        self.stdout_lines = []
        self.stdin = subprocess.DEVNULL   # never the test runner's terminal (a console)

    def start(self):
        command = [*self.prefix, sys.executable, SERVER, "--port", "0",
                   "--data-dir", self.data_dir, "--log-level", "DEBUG", *self.args]
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, stdin=self.stdin, stdout=subprocess.PIPE,
                                     stderr=self.log_file,
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
        """SIGKILL to everything the server started (its whole session), at once."""
        if self.proc is None:                  # it never started (its start failed early)
            return
        kill_session(self.proc.pid)
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
        """{pid: title} of every live process the server started (in its session)."""
        found = {}
        for pid in session_members(self.proc.pid):
            title = _title(pid)
            if title is not None:
                found[pid] = title
        return found

    def pids_titled(self, prefix):
        return [pid for pid, title in self.processes().items() if title.startswith(prefix)]


def session_members(sid):
    """The pids of the live (not zombie) processes of session `sid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = proc_stat(entry)
                if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                    members.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return members


def kill_session(sid, timeout=10.0):
    """SIGKILL to every process of session `sid`, all in one go, again until none
    is left (a forkserver could fork once more in between). Never raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = session_members(sid)
        if not members:
            return
        groups = set()
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                groups.add(os.getpgid(pid))
        # The forkserver's group (every child) first, then the daemon's: a child that
        # outlived its daemon even briefly would stop cleanly and tell its client so.
        for group in sorted(groups, key=lambda g: g == sid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def _title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
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


def unread_by(pid):
    """Bytes waiting unread in the connected Unix sockets of process `pid` (from
    `ss`): a stopped process that holds requests it has not read yet."""
    lines = subprocess.run(["ss", "-xpnH", "state", "established"], capture_output=True,
                           text=True, check=True).stdout.splitlines()
    return sum(int(line.split()[1]) for line in lines if f"pid={pid}," in line)


def run_admin(server, *words, as_json=False, preexec_fn=None, data_dir=None):
    """`server_daemon.py admin` on the server's data dir: (status, stdout, stderr), and
    with `as_json` the parsed object instead of stdout."""
    command = [sys.executable, SERVER, "admin", "--data-dir", data_dir or server.data_dir,
               *(["--json"] if as_json else []), *words]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT * 2,
                          env=child_env(), preexec_fn=preexec_fn)
    out = json.loads(done.stdout) if as_json and done.stdout.strip() else done.stdout
    return done.returncode, out, done.stderr


def wait_until(predicate, timeout=WAIT, interval=0.05, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def database_config(tmp_path):
    """The config of a database process started by a test, cheap argon2 included."""
    return {"data_dir": str(tmp_path / "data"), "socket_path": str(tmp_path / "db.sock"),
            "db_socket": str(tmp_path / "db.sock"), "ticket_secret": os.urandom(32),
            "argon2": {"memory_kib": 1024, "time_cost": 1, "parallelism": 1},
            "log_level": "DEBUG", "daemon_pid": os.getpid()}   # the test plays the daemon


def _database_main(config, ready, log_path):
    """The database process, with its standard error in `log_path` if given."""
    from Modules.database import monitor

    if log_path is not None:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log_fd, 2)
    monitor.main(config, ready)


@contextlib.contextmanager
def running_database(tmp_path, log_path=None, **config_items):
    """A real database process: (process, config). Always killed at the end.

    `config_items` replace items of the config (ticket_secret, live_tickets, ...).
    """
    ctx = multiprocessing.get_context("forkserver")
    config = {**database_config(tmp_path), **config_items}
    ready = ctx.Event()
    proc = ctx.Process(target=_database_main, args=(config, ready,
                                                    None if log_path is None else str(log_path)))
    proc.start()
    try:
        assert ready.wait(WAIT), "the database process did not become ready"
        yield proc, config
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
