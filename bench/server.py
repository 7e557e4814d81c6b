"""A freshly started Parley server for one benchmark run, and what it costs.

`BenchServer` starts the real `Code/server_daemon.py --port 0` in a new
temporary data dir, as the leader of its own session, and reads the
port from its "listening on HOST:PORT" line. Everything it measures comes
from /proc, for the whole session (daemon, forkserver, database, login and
user processes; the forkserver and its children have a process group of
their own, but stay in the daemon's session):

* CPU: utime + stime + cutime + cstime of every live process of the session.
  A child that exited and was reaped has its time in its parent's cutime
  (the forkserver reaps login and user processes), so a difference of two
  snapshots counts every CPU-second the server used in between, whether
  the process that used it is still alive or not. Clock ticks (10 ms).
  Also by role (daemon, forkserver, database main thread / other threads, user, login, exited) for the profile of each figure.
* PostgreSQL (`PARLEY_BENCH_POSTGRES=on`, issue 18): the server keeps its
  data in a fresh database of a private cluster the bench starts once
  (`Code/Tests/support/postgres.py`: initdb in a temporary directory,
  fsync on, a Unix socket), and the CPU of that cluster's processes (the
  postmaster and every backend) is counted in the total as role
  "postgres": the database's work is the server's cost either way.
* Memory: proportional set size (Pss in /proc/PID/smaps_rollup) summed
  over the session: shared pages are split between the processes sharing
  them, so the sum is the real footprint of the tree.
"""

import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

CODE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Code")
_CLUSTER = []                # the private PostgreSQL cluster, started on first use

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVER = os.path.join(ROOT, "Code", "server_daemon.py")
TICK = os.sysconf("SC_CLK_TCK")

TINY_ARGON2 = {"PARLEY_ARGON2_MEMORY_KIB": "8", "PARLEY_ARGON2_TIME_COST": "1",
               "PARLEY_ARGON2_PARALLELISM": "1"}


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode(errors="replace")
    return raw[raw.rindex(")") + 2:].split()   # fields from 3 (state) on


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def postgres_storage():
    """A fresh database in the bench's private cluster (started on first use): its URL."""
    if not _CLUSTER:
        sys.path.insert(0, CODE)
        from Tests.support.postgres import PostgresCluster   # noqa: E402
        import atexit
        cluster = PostgresCluster()
        _CLUSTER.append(cluster.init().start())
        atexit.register(cluster.remove)
    return _CLUSTER[0].create_database()


def role_of(title):
    if title == "postgres":
        return "postgres"
    if title.startswith("parley: user"):
        return "user"
    if title.startswith("parley: login"):
        return "login"
    if title.startswith("parley: spare"):
        return "spare"     # started ahead of a login; idle until then
    if title.startswith("parley: database"):
        return "database"
    if title.startswith("parley: daemon"):
        return "daemon"
    if "forkserver" in title:
        return "forkserver"
    if "resource_tracker" in title:
        return "resource_tracker"
    return "other"


class BenchServer:
    """One server process tree in a temporary data dir."""

    def __init__(self, tiny_argon2=True, extra_env=None, max_clients=20000, keep_dir=False,
                 cwd=None, default_limits=False, extra_args=()):
        self.extra_args = list(extra_args)   # more server options (e.g. --park-after)
        self.tiny_argon2 = tiny_argon2
        self.default_limits = default_limits   # keep the per-address limits (abuse scenarios)
        self.cwd = cwd                   # the daemon's working directory (None: ours)
        self.extra_env = dict(extra_env or {})
        self.max_clients = max_clients
        self.keep_dir = keep_dir
        self.tmp = tempfile.mkdtemp(prefix="parley-bench-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.tmp, "server.log")
        self.proc = None
        self.port = None
        self.storage = None              # PostgreSQL: this server's own fresh database

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        if self.tiny_argon2:
            env.update(TINY_ARGON2)
        env.update(self.extra_env)
        if os.environ.get("PARLEY_BENCH_DB_KEY") == "on":   # the data dir encrypted at rest
            env["PARLEY_DB_KEY"] = os.urandom(32).hex()
        if os.environ.get("PARLEY_BENCH_POSTGRES") == "on":   # PostgreSQL storage (issue 18)
            env["PARLEY_STORAGE"] = self.storage = self.storage or postgres_storage()
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, timeout=60.0):
        command = [sys.executable, SERVER, "--port", "0", "--data-dir", self.data_dir,
                   "--log-level", os.environ.get("PARLEY_BENCH_LOG_LEVEL", "WARNING"), "--max-clients", str(self.max_clients)]
        command += self.extra_args
        if os.environ.get("PARLEY_BENCH_SECCOMP"):   # on/off: the syscall filter's cost
            command += ["--seccomp", os.environ["PARLEY_BENCH_SECCOMP"]]
        # Every load-generator connection comes from 127.0.0.1: it stands for many
        # people, so the per-address limits on logins and new accounts must not apply
        # (unless a scenario measures them: default_limits).
        if not self.default_limits:
            many = str(10 * self.max_clients)
            command += ["--max-startups", many, "--max-startups-per-address", many,
                        "--connection-rate-per-address", many,
                        "--registrations-per-address", many, "--registrations-per-hour", many]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log,
                                     env=self.env(), start_new_session=True, cwd=self.cwd,
                                     preexec_fn=_raise_fd_limit)
        lines = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            match = re.search(r"listening on ([\d.]+):(\d+)", line)
            if match:
                self.port = int(match.group(2))
                self.wait_settled()
                self._lift_mailbox_limits()
                return self
        self.stop()
        raise RuntimeError(f"the server did not start; log:\n{self.log_tail()}")

    def _lift_mailbox_limits(self):
        """A scenario sends a recipient more than an inbox holds by default (10,000
        messages) and never deletes: the operator's limits go up for the bench."""
        subprocess.run([sys.executable, SERVER, "admin", "--data-dir", self.data_dir,
                        "mailbox-limits", str(10**9), str(10**12)], check=True,
                       capture_output=True, env=self.env(), cwd=self.cwd, timeout=60)

    def _read_stdout(self, lines):
        for raw in self.proc.stdout:
            lines.put(raw.decode(errors="replace").strip())

    def log_tail(self, size=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-size:].decode(errors="replace")
        except OSError:
            return ""

    # -- the process tree ------------------------------------------------------
    def pids(self):
        """{pid: title} of every process in the server's session."""
        found = {}
        sid = self.proc.pid
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = _stat_fields(entry)
            except (OSError, ValueError):
                continue
            if int(fields[3]) == sid:
                found[int(entry)] = _cmdline(entry) or "(zombie)"
        return found

    def count_roles(self):
        counts = {}
        for title in self.pids().values():
            role = role_of(title)
            counts[role] = counts.get(role, 0) + 1
        return counts

    def _measured(self):
        """The tree's processes, and (PostgreSQL storage) the cluster's."""
        found = self.pids()
        if _CLUSTER:
            postmaster = _CLUSTER[0].pid()
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        parent = int(_stat_fields(entry)[1])
                    except (OSError, ValueError):
                        continue
                    if int(entry) == postmaster or parent == postmaster:
                        found[int(entry)] = "postgres"
        return found

    def cpu(self):
        """{"total": s, role: s, ...}: CPU-seconds used so far by the tree."""
        out = {"total": 0.0}
        for pid, title in self._measured().items():
            try:
                fields = _stat_fields(pid)
            except (OSError, ValueError):
                continue
            own = (int(fields[11]) + int(fields[12])) / TICK
            reaped = (int(fields[13]) + int(fields[14])) / TICK
            role = role_of(title)
            out["total"] += own + reaped
            out["exited_children"] = out.get("exited_children", 0.0) + reaped
            if role == "database":
                for name, value in _threads_cpu(pid).items():
                    out["database." + name] = out.get("database." + name, 0.0) + value
            out[role] = out.get(role, 0.0) + own
            switches = _context_switches(pid)
            out["switches"] = out.get("switches", 0) + switches
            out["switches." + role] = out.get("switches." + role, 0) + switches
        return out

    def pss_kib(self):
        """{"total": KiB, role: KiB, "count": {role: n}}."""
        out = {"total": 0}
        counts = {}
        for pid, title in self.pids().items():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    text = f.read()
            except OSError:
                continue
            match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
            if not match:
                continue
            kib = int(match.group(1))
            role = role_of(title)
            out["total"] += kib
            out[role] = out.get(role, 0) + kib
            counts[role] = counts.get(role, 0) + 1
        out["count"] = counts
        return out

    def wait_settled(self, timeout=120.0, keep_roles=("user",), expect_users=None):
        """Wait until no login process (and no user process, unless kept) remains."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.count_roles()
            logins = counts.get("login", 0) + counts.get("other", 0)
            users = counts.get("user", 0)
            if logins == 0 and (users == 0 if "user" not in keep_roles or expect_users == 0
                                else expect_users is None or users == expect_users):
                return counts
            time.sleep(0.1)
        raise RuntimeError(f"server processes did not settle: {self.count_roles()}")

    def database_pid(self):
        for pid, title in self.pids().items():
            if role_of(title) == "database":
                return pid
        return None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(100):                   # everything in the session, until none is left
            alive = [pid for pid, title in self.pids().items() if title != "(zombie)"]
            if not alive:
                break
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        if not self.keep_dir:
            shutil.rmtree(self.tmp, ignore_errors=True)


class PssSampler:
    """The tree's PSS every `interval` s in a thread, while a `with` block runs.

    `peak` is the largest total seen (KiB), `samples` how many were taken (one
    at the start and one at the end at least).
    """

    def __init__(self, server, interval=1.0):
        self.server, self.interval = server, interval
        self.peak, self.samples, self.peak_detail = 0, 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self):
        pss = self.server.pss_kib()
        self.samples += 1
        if pss["total"] > self.peak:
            self.peak, self.peak_detail = pss["total"], pss

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False


def _threads_cpu(pid):
    """CPU of the database process's threads: "main" (the asyncio loop) and
    "threads" (the writer thread and the argon2 pool; when no login is
    hashing, as in the relay scenarios, that is the writer alone).
    """
    out = {}
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return out
    for tid in tids:
        try:
            fields = _stat_fields(f"{pid}/task/{tid}")
        except (OSError, ValueError):
            continue
        name = "main" if tid == pid else "threads"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def _context_switches(pid):
    """Context switches so far of every thread of `pid` (voluntary: it slept and was
    woken, the per-wakeup cost that dominates CPU per message at low rates)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_diff(before, after):
    keys = set(before) | set(after)
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in sorted(keys)}


def machine_cpu():
    """(busy, idle) clock ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]            # idle + iowait
    return sum(fields[:8]) - idle, idle


def idle_fraction(before, after):
    busy, idle = after[0] - before[0], after[1] - before[1]
    return idle / max(1, busy + idle)


def load_average():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]
