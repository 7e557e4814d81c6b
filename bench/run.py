"""Parley's benchmark harness: `python bench/run.py [SCENARIO...] [--json] [--quick]`.

`python bench/run.py --compare prosody [relay paced offline memory] [--quick] [--json]`
runs those scenarios against Parley and then, scenario by scenario, against a
private Prosody 0.12 (bench/peers/prosody.py: its own config, data dir and
port; it installs nothing, `apt-get install prosody` first, else it says so
and exits 2) and prints both side by side with parley/prosody ratios
(docs/PERFORMANCE.md section 14).

Runs each scenario against a freshly started server (real daemon, port 0,
temporary data dir) with load-generator processes speaking the real
protocol (bench/loadgen.py) on 127.0.0.1, repeats it (3 runs by default)
and prints the median and min-max of every figure, beside issue 6's
targets. `--json` prints one JSON object instead: figure name -> median,
plus ranges, units, every run's value, targets and details.

Scenarios (names for the command line):
  relay      saturation relay, P = 1, 10, 50 online pairs, pipelined sends
  paced      paced relay at 1,000 and 5,000 messages/s, end-to-end latency
  offline    5,000 messages to an offline user, then its login
  login      login rate/latency (argon2id defaults) and overhead without the hash
  memory     PSS of the server tree idle, with 100 and 1,000 idle sessions
  burst      live paced traffic while 50 logins/s come in
  afterlogin saturation relay (P=50) fresh, then right after 6,000 logins
  readflood  paced relay latency while 10 accounts flood Inbox reads (bench/abuse.py)
  prelogin   honest logins while one address holds its pre-login cap (bench/abuse.py)
  createflood honest logins (argon2 defaults) during an account-creation flood
  presence   paced relay latency (1,000/s) with 200 presence-enabled sessions online,
             then while they reconnect all at once every 3 s (bench/presence.py)

Every scenario except `login` runs the server with tiny argon2 parameters
(PARLEY_ARGON2_MEMORY_KIB=8, _TIME_COST=1) so that creating the accounts
costs no time; `login` runs it with the defaults (m=19 MiB, t=2, p=1) and a
second server with the tiny ones to measure the overhead without the hash;
`createflood` runs it with the defaults too. `prelogin` and `createflood` keep
the server's default per-address limits, which every other scenario lifts.
Every server here runs with `--park-after 0`: these figures are of active
sessions (an idle session parks after 30 s by default; `bench/parking.py`
measures parked ones).
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.modules.setdefault("run", sys.modules[__name__])   # bench/abuse.py imports us as `run`

import loadgen  # noqa: E402
from server import BenchServer, cpu_diff, idle_fraction, load_average, machine_cpu  # noqa: E402,E501
from Modules.database.auth import DEFAULT_ARGON2  # noqa: E402  (bench/loadgen.py put Code/ on the path)

TINY_ARGON2_PARAMS = {"memory_kib": 8, "time_cost": 1, "parallelism": 1}

SCENARIOS = ["relay", "paced", "offline", "login", "memory", "burst", "afterlogin"]

UNITS = {}   # figure name -> unit, where its suffix does not say (see unit_of)
TARGETS = {
    "relay_p50_msgs_per_s": ">= 22000",
    "paced_1000_server_cpu_s_per_10k": "<= 1.9",
    "paced_1000_p99_ms": "<= 3",
    "paced_5000_p99_ms": "<= 5",
    "offline_accept_msgs_per_s": ">= 5000",
    "offline_forward_after_login_s": "<= 0.3",
    "afterlogin_relay_ratio": ">= 0.9",
    "login_overhead_p50_ms": "<= 10",
    "login_argon2_per_s": ">= 100",
    "login_argon2_paced50_p99_ms": "<= 150",
    "burst_live_p99_ms": "<= 10",
    "memory_per_session_1000_kib": "<= 2048",
}
PROSODY = {
    "relay_p50_msgs_per_s": "22000", "relay_p50_server_cpu_s_per_10k": "0.45",
    "paced_1000_p50_ms": "0.2", "paced_1000_p99_ms": "1.6-3.4",
    "paced_1000_server_cpu_s_per_10k": "1.9", "paced_5000_p99_ms": "1.75",
    "offline_accept_msgs_per_s": "570-3200", "offline_forward_after_login_s": "0.3-0.5",
    "login_argon2_per_s": "275 (PBKDF2)", "login_argon2_p99_ms": "43 (PBKDF2)",
    "memory_per_session_1000_kib": "34", "afterlogin_relay_ratio": "0.30",
}


class Options:
    """Sizes of every scenario; --quick shrinks them."""

    def __init__(self, args):
        q = args.quick
        self.quick = q
        self.runs = args.runs or (1 if q else 3)
        self.procs = args.procs
        self.codec = args.codec
        self.relay_pairs = [int(p) for p in args.pairs.split(",")]
        self.relay_seconds = args.seconds or (3.0 if q else 8.0)
        self.window = args.window
        self.paced_rates = [int(r) for r in args.rates.split(",")]
        self.paced_pairs = 10
        self.paced_seconds = args.seconds or (4.0 if q else 10.0)
        self.offline_count = 2000 if q else 5000
        self.login_count = 80 if q else 240
        self.login_paced_seconds = 4.0 if q else 10.0
        self.overhead_count = 40 if q else 150
        self.memory_sessions = [100, 1000]
        self.burst_seconds = 4.0 if q else 10.0
        self.burst_rate = 1000
        self.burst_login_rate = 50
        self.afterlogin_count = 1000 if q else 6000
        self.profile = args.profile
        self.server_cwd = args.server_cwd


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Load-generator processes


class Workers:
    """`count` load-generator processes, each running `target(pipe, *args)`
    (Parley's loadgen by default; bench/peers/prosody.py gives its XMPP one)."""

    def __init__(self, port, count, codec, target=None, args=None,
                 name="parley-bench-loadgen"):
        ctx = multiprocessing.get_context("fork")
        target, args = target or loadgen.worker_main, args or (port, codec)
        self.pipes, self.procs = [], []
        for _ in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(child, *args), daemon=True, name=name)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def __len__(self):
        return len(self.pipes)

    def send(self, index, command):
        self.pipes[index].send(command)

    def recv(self, index, timeout=600.0):
        if not self.pipes[index].poll(timeout):
            raise RuntimeError(f"load generator {index} did not answer in {timeout} s")
        reply = self.pipes[index].recv()
        if not reply.get("ok"):
            raise RuntimeError(f"load generator {index}: {reply.get('error')}")
        return reply

    def call(self, commands, timeout=600.0):
        """Send commands[i] to worker i (None = skip), gather the replies."""
        for i, command in enumerate(commands):
            if command is not None:
                self.send(i, command)
        return [self.recv(i, timeout) if c is not None else None
                for i, c in enumerate(commands)]

    def close(self):
        for i, pipe in enumerate(self.pipes):
            try:
                pipe.send(("stop",))
                if pipe.poll(30):
                    pipe.recv()
            except (OSError, EOFError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def split(items, n):
    return [items[i::n] for i in range(n)]


class Run:
    """One scenario run: a fresh server, its load generators, the figures."""

    def __init__(self, opts, tiny_argon2=True, procs=1, default_limits=False, extra_env=None):
        self.opts = opts
        # --park-after 0: these scenarios measure active sessions; an idle session of
        # the memory scenario would otherwise park after 30 s while the others log in
        # (parked sessions are bench/parking.py's)
        self.server = BenchServer(tiny_argon2=tiny_argon2, cwd=opts.server_cwd,
                                  default_limits=default_limits, extra_env=extra_env,
                                  extra_args=("--park-after", "0")).start()
        self.workers = Workers(self.server.port, procs, opts.codec)
        self.figures, self.details = {}, {}
        self.load = [load_average()]

    def close(self):
        self.load.append(load_average())
        try:
            self.workers.close()
        finally:
            self.server.stop()

    def login(self, names_per_worker, concurrency=8, keep=True, timeout=600.0):
        commands = [("login", names, concurrency, timeout, keep) if names else None
                    for names in names_per_worker]
        return self.workers.call(commands, timeout + 30)

    def profiler(self, label, seconds):
        if not self.opts.profile:
            return None
        os.makedirs(self.opts.profile, exist_ok=True)
        path = os.path.join(self.opts.profile, f"{label}.txt")
        return subprocess.Popen(
            ["py-spy", "record", "--pid", str(self.server.proc.pid), "--subprocesses",
             "--nonblocking", "--rate", "100", "--format", "raw", "--threads",
             "--duration", str(max(1, int(seconds))), "--output", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _finish_profiler(proc):
    if proc is not None:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------
# Scenario (1) and (7): saturation relay


def relay_once(run, pair_names, seconds, window, label):
    """Saturation relay over already logged-in pairs; figures under `label`."""
    replies, go, server = run_relay_workers(run, pair_names, seconds, window, 0.0, label)
    received = sum(r["received"] for r in replies)
    end = max(r["last_receive"] for r in replies)
    wall = (end - go) / 1e9
    lg_cpu = sum(r["cpu"] for r in replies)
    lat = [x / 1e6 for r in replies for x in r["latencies"]]
    f = run.figures
    f[f"{label}_msgs_per_s"] = received / wall
    f[f"{label}_server_cpu_s_per_10k"] = server["total"] / received * 1e4
    f[f"{label}_loadgen_cpu_s_per_10k"] = lg_cpu / received * 1e4
    f[f"{label}_server_cpu_util"] = server["total"] / wall
    f[f"{label}_loadgen_cpu_util"] = lg_cpu / wall
    busiest = max(r["cpu"] for r in replies) / wall
    if busiest > 0.8:   # one load-generator process near a full core: it may be the limit
        log(f"[bench] WARNING {label}: a load-generator process used {busiest:.2f} cores; "
            f"rerun with --procs {len(run.workers) * 2}")
    f[f"{label}_latency_p50_ms"] = pct(lat, 50)
    f[f"{label}_latency_p99_ms"] = pct(lat, 99)
    f[f"{label}_send_error_fraction"] = (sum(r["send_errors"] for r in replies)
                                         / max(1, sum(r["sent"] for r in replies)))
    run.details[label] = {"messages": received, "wall_s": round(wall, 3),
                          "server_cpu_s": server, "loadgen_cpu_s": round(lg_cpu, 3),
                          "loadgen_procs": len(replies)}


def run_relay_workers(run, pair_names, seconds, window, per_sender, label, go=None,
                      nworkers=None):
    """Start the relay on every worker (or the first `nworkers`) at one instant
    (`go`, default in 0.3 s) and collect their replies.

    `window` > 0: pipelined saturation; `per_sender` > 0: paced sending.
    Returns (replies, start time in ns, server CPU used meanwhile).
    """
    per_worker = split(pair_names, nworkers or len(run.workers))
    per_worker += [[]] * (len(run.workers) - len(per_worker))
    go = go or loadgen.now_ns() + int(0.3e9)
    commands = [("relay", pairs, go, seconds, window, per_sender, 10**9) if pairs else None
                for pairs in per_worker]
    for i, c in enumerate(commands):
        if c is not None:
            run.workers.send(i, c)
    time.sleep(max(0.0, (go - loadgen.now_ns()) / 1e9))
    cpu0, machine0 = run.server.cpu(), machine_cpu()
    prof = run.profiler(label, seconds)
    replies = [run.workers.recv(i) if c is not None else None for i, c in enumerate(commands)]
    cpu1, machine1 = run.server.cpu(), machine_cpu()
    _finish_profiler(prof)
    replies = [r for r in replies if r]
    _check_relay(replies)
    run.figures[f"{label}_machine_idle_fraction"] = idle_fraction(machine0, machine1)
    return replies, go, cpu_diff(cpu0, cpu1)


def _check_relay(replies):
    for r in replies:
        if r["errors"]:
            raise RuntimeError(f"relay errors: {r['errors'][:3]}")
        if r["received"] < r["results"] or r["results"] + r["send_errors"] < r["sent"]:
            raise RuntimeError(f"relay did not drain: sent {r['sent']} results "
                               f"{r['results']} errors {r['send_errors']} received "
                               f"{r['received']}")


def _pair_names(count, prefix=""):
    return [(f"{prefix}s{i:04d}", f"{prefix}r{i:04d}") for i in range(count)]


def _login_pairs(run, pairs):
    per_worker = split(pairs, len(run.workers))
    run.login([[n for pair in ps for n in pair] for ps in per_worker])
    run.server.wait_settled(expect_users=2 * len(pairs))
    return per_worker


def scenario_relay(opts):
    out = []
    for p in opts.relay_pairs:
        run = Run(opts, procs=min(opts.procs, p))
        try:
            pairs = _pair_names(p)
            _login_pairs(run, pairs)
            relay_once(run, pairs, opts.relay_seconds, opts.window, f"relay_p{p}")
        except Exception as error:   # the other P still count
            log(f"[bench] relay P={p} FAILED: {error}")
            run.figures[f"relay_p{p}_failed"] = 1.0
            run.details[f"relay_p{p}_failure"] = str(error)
        finally:
            run.close()
        out.append(run)
    return out


def scenario_afterlogin(opts):
    run = Run(opts, procs=opts.procs)
    try:
        pairs = _pair_names(50)
        _login_pairs(run, pairs)
        relay_once(run, pairs, opts.relay_seconds, opts.window, "afterlogin_fresh")
        accounts = [f"l{i:04d}" for i in range(200)]
        names = [accounts[i % len(accounts)] for i in range(opts.afterlogin_count)]
        t0 = time.monotonic()
        cpu0 = run.server.cpu()
        run.login(split(names, len(run.workers)), concurrency=8, keep=False, timeout=1800)
        run.server.wait_settled(expect_users=100)
        elapsed = time.monotonic() - t0
        cpu1 = run.server.cpu()
        run.figures["afterlogin_logins_per_s"] = len(names) / elapsed
        run.details["afterlogin_logins"] = {"logins": len(names), "wall_s": round(elapsed, 2),
                                            "server_cpu_s": cpu_diff(cpu0, cpu1),
                                            "processes": run.server.count_roles()}
        relay_once(run, pairs, opts.relay_seconds, opts.window, "afterlogin_relay")
        run.figures["afterlogin_relay_ratio"] = (run.figures["afterlogin_relay_msgs_per_s"]
                                                 / run.figures["afterlogin_fresh_msgs_per_s"])
    finally:
        run.close()
    return [run]


# --------------------------------------------------------------------------
# Scenario (2): paced relay


def paced_once(run, pair_names, rate, seconds, label, go=None, nworkers=None):
    replies, go, server = run_relay_workers(run, pair_names, seconds, 0,
                                            rate / len(pair_names), label, go, nworkers)
    received = sum(r["received"] for r in replies)
    end = max(r["last_receive"] for r in replies)
    lat = [x / 1e6 for r in replies for x in r["latencies"]]
    lag = [x / 1e6 for r in replies for x in r["send_lag"]]
    lg_cpu = sum(r["cpu"] for r in replies)
    wall = (end - go) / 1e9
    f = run.figures
    f[f"{label}_achieved_msgs_per_s"] = received / wall
    for p in (50, 90, 99):
        f[f"{label}_p{p}_ms"] = pct(lat, p)
    f[f"{label}_max_ms"] = max(lat)
    f[f"{label}_server_cpu_s_per_10k"] = server["total"] / received * 1e4
    f[f"{label}_loadgen_cpu_s_per_10k"] = lg_cpu / received * 1e4
    f[f"{label}_server_switches_per_msg"] = server.get("switches", 0) / received
    f[f"{label}_send_lag_p99_ms"] = pct(lag, 99)
    f[f"{label}_send_error_fraction"] = (sum(r["send_errors"] for r in replies)
                                         / max(1, sum(r["sent"] for r in replies)))
    codes = {}
    for r in replies:
        for code, n in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    run.details[label + "_send_errors"] = codes
    run.details[label] = {"messages": received, "wall_s": round(wall, 3),
                          "server_cpu_s": server, "loadgen_cpu_s": round(lg_cpu, 3)}


def scenario_paced(opts):
    out = []
    for rate in opts.paced_rates:
        run = Run(opts, procs=opts.procs)
        try:
            pairs = _pair_names(opts.paced_pairs)
            _login_pairs(run, pairs)
            paced_once(run, pairs, rate, opts.paced_seconds, f"paced_{rate}")
        except Exception as error:   # the other rates still count
            log(f"[bench] paced {rate}/s FAILED: {error}")
            run.figures[f"paced_{rate}_failed"] = 1.0
            run.details[f"paced_{rate}_failure"] = str(error)
        finally:
            run.close()
        out.append(run)
    return out


# --------------------------------------------------------------------------
# Scenario (3): offline store-and-forward


def scenario_offline(opts):
    run = Run(opts, procs=1)
    try:
        run.login([["offline1"]], keep=False)             # create the recipient
        run.server.wait_settled(expect_users=0)
        run.login([["sender1"]])
        run.server.wait_settled(expect_users=1)
        n = opts.offline_count
        go = loadgen.now_ns() + int(0.2e9)
        run.workers.send(0, ("send_burst", "sender1", "offline1", n, 64, go, 300.0))
        time.sleep(max(0.0, (go - loadgen.now_ns()) / 1e9))
        cpu0 = run.server.cpu()
        prof = run.profiler("offline_accept", n / 1000 + 1)
        r = run.workers.recv(0)
        cpu1 = run.server.cpu()
        _finish_profiler(prof)
        if r["results"] < n or r["errors"]:
            raise RuntimeError(f"offline sends failed: {r['results']} of {n}, {r['errors'][:3]}")
        accept_s = (r["last_result"] - go) / 1e9
        f = run.figures
        f["offline_accept_msgs_per_s"] = n / accept_s
        f["offline_accept_server_cpu_s_per_10k"] = cpu_diff(cpu0, cpu1)["total"] / n * 1e4
        run.details["offline_accept"] = {"messages": n, "wall_s": round(accept_s, 3),
                                         "server_cpu_s": cpu_diff(cpu0, cpu1)}
        cpu0 = run.server.cpu()
        r = run.workers.call([("receive_backlog", "offline1", n, 120.0)])[0]
        cpu1 = run.server.cpu()
        if r["received"] < n:
            raise RuntimeError(f"backlog: only {r['received']} of {n} received")
        f["offline_forward_after_login_s"] = (r["last_message"] - r["welcome"]) / 1e9
        f["offline_forward_from_connect_s"] = (r["last_message"] - r["connect"]) / 1e9
        f["offline_forward_server_cpu_s_per_10k"] = cpu_diff(cpu0, cpu1)["total"] / n * 1e4
        run.details["offline_forward"] = {"messages": n, "server_cpu_s": cpu_diff(cpu0, cpu1)}
    finally:
        run.close()
    return [run]


# --------------------------------------------------------------------------
# Scenario (4): logins


def _phase_summary(phases, prefix, figures):
    for key in ("total", "handshake", "version", "username", "password", "welcome_to_ready"):
        values = [p[key] for p in phases]
        figures[f"{prefix}_{key}_p50_ms"] = pct(values, 50)


def argon2_hash_ms(params, count=5):
    """In-process cost of one argon2id hash with these parameters (this machine)."""
    from passlib.context import CryptContext
    ctx = CryptContext(schemes=["argon2"], argon2__type="ID",
                       argon2__memory_cost=params["memory_kib"],
                       argon2__rounds=params["time_cost"],
                       argon2__parallelism=params["parallelism"])
    stored = ctx.hash("bench password 1")
    t0 = time.perf_counter()
    for _ in range(count):
        ctx.verify("bench password 1", stored)
    return (time.perf_counter() - t0) / count * 1e3


def scenario_login(opts):
    f_runs = []
    # (a) argon2id defaults: closed loop, 8 concurrent connectors
    run = Run(opts, tiny_argon2=False, procs=1)
    try:
        accounts = [f"a{i:04d}" for i in range(64)]
        run.login([accounts], concurrency=8, keep=False)
        run.server.wait_settled(expect_users=0)
        names = [accounts[i % len(accounts)] for i in range(opts.login_count)]
        cpu0 = run.server.cpu()
        r = run.login([names], concurrency=8, keep=False)[0]
        run.server.wait_settled(expect_users=0)
        cpu1 = run.server.cpu()
        totals = [p["total"] for p in r["phases"]]
        f = run.figures
        f["login_argon2_per_s"] = len(names) / r["elapsed_s"]
        f["login_argon2_p50_ms"] = pct(totals, 50)
        f["login_argon2_p99_ms"] = pct(totals, 99)
        f["login_argon2_server_cpu_ms_per_login"] = cpu_diff(cpu0, cpu1)["total"] / len(names) * 1e3
        _phase_summary(r["phases"], "login_argon2", f)
        run.details["login_argon2"] = {"logins": len(names), "concurrency": 8,
                                       "server_cpu_s": cpu_diff(cpu0, cpu1)}
        # (b) paced 50 logins/s
        count = int(50 * opts.login_paced_seconds)
        names = [accounts[i % len(accounts)] for i in range(count)]
        go = loadgen.now_ns() + int(0.3e9)
        r = run.workers.call([("paced_logins", names, go, 50.0, opts.login_paced_seconds)],
                             timeout=300)[0]
        run.server.wait_settled(expect_users=0)
        f["login_argon2_paced50_p50_ms"] = pct(r["latencies_ms"], 50)
        f["login_argon2_paced50_p99_ms"] = pct(r["latencies_ms"], 99)
        f["login_argon2_paced50_ok_fraction"] = r["ok"] / max(1, count)
        f["login_argon2_hash_ms"] = argon2_hash_ms(DEFAULT_ARGON2)
    finally:
        run.close()
    f_runs.append(run)
    # (c) tiny argon2: the login overhead without the hash
    run = Run(opts, tiny_argon2=True, procs=1)
    try:
        accounts = [f"t{i:04d}" for i in range(16)]
        run.login([accounts], concurrency=8, keep=False)
        run.server.wait_settled(expect_users=0)
        names = [accounts[i % len(accounts)] for i in range(opts.overhead_count)]
        r = run.login([names], concurrency=1, keep=False)[0]
        f = run.figures
        _phase_summary(r["phases"], "login_overhead", f)
        totals = [p["total"] for p in r["phases"]]
        f["login_overhead_p50_ms"] = pct(totals, 50)
        f["login_overhead_p99_ms"] = pct(totals, 99)
        f["login_overhead_tiny_hash_ms"] = argon2_hash_ms(TINY_ARGON2_PARAMS, count=50)
        run.server.wait_settled(expect_users=0)
        names = [accounts[i % len(accounts)] for i in range(opts.overhead_count * 2)]
        cpu0 = run.server.cpu()
        r = run.login([names], concurrency=8, keep=False)[0]
        run.server.wait_settled(expect_users=0)
        cpu1 = run.server.cpu()
        f["login_tiny_per_s"] = len(names) / r["elapsed_s"]
        f["login_tiny_server_cpu_ms_per_login"] = cpu_diff(cpu0, cpu1)["total"] / len(names) * 1e3
        run.details["login_tiny"] = {"logins": len(names), "server_cpu_s": cpu_diff(cpu0, cpu1)}
    finally:
        run.close()
    f_runs.append(run)
    return f_runs


# --------------------------------------------------------------------------
# Scenario (5): memory


def scenario_memory(opts):
    run = Run(opts, procs=1)
    try:
        time.sleep(1.0)
        idle = run.server.pss_kib()
        f = run.figures
        f["memory_idle_kib"] = idle["total"]
        run.details["memory_idle"] = idle
        have = 0
        for target in opts.memory_sessions:
            names = [f"m{i:05d}" for i in range(have, target)]
            run.login([names], concurrency=16, keep=True, timeout=900)
            have = target
            run.server.wait_settled(expect_users=target)
            time.sleep(1.0)
            pss = run.server.pss_kib()
            f[f"memory_{target}_sessions_kib"] = pss["total"]
            f[f"memory_per_session_{target}_kib"] = (pss["total"] - idle["total"]) / target
            if pss["count"].get("user"):
                f[f"memory_user_process_{target}_kib"] = pss.get("user", 0) / pss["count"]["user"]
            run.details[f"memory_{target}"] = pss
    finally:
        run.close()
    return [run]


# --------------------------------------------------------------------------
# Scenario (6): live traffic during a login burst


def scenario_burst(opts):
    run = Run(opts, procs=2)
    try:
        pairs = _pair_names(opts.paced_pairs)
        run.login([[n for p in pairs for n in p], []])
        accounts = [f"b{i:04d}" for i in range(50)]
        run.login([None, accounts], concurrency=8, keep=False)
        run.server.wait_settled(expect_users=2 * len(pairs))
        seconds = opts.burst_seconds
        count = int(opts.burst_login_rate * seconds)
        names = [accounts[i % len(accounts)] for i in range(count)]
        go = loadgen.now_ns() + int(0.3e9)
        commands = [("relay", pairs, go, seconds, 0, opts.burst_rate / len(pairs), 10**9),
                    ("paced_logins", names, go, float(opts.burst_login_rate), seconds)]
        for i, c in enumerate(commands):
            run.workers.send(i, c)
        time.sleep(max(0.0, (go - loadgen.now_ns()) / 1e9))
        cpu0 = run.server.cpu()
        prof = run.profiler("burst", seconds)
        relay = run.workers.recv(0)
        logins = run.workers.recv(1)
        cpu1 = run.server.cpu()
        _finish_profiler(prof)
        _check_relay([relay])
        lat = [x / 1e6 for x in relay["latencies"]]
        f = run.figures
        for p in (50, 90, 99):
            f[f"burst_live_p{p}_ms"] = pct(lat, p)
        f["burst_live_max_ms"] = max(lat)
        f["burst_live_send_error_fraction"] = relay["send_errors"] / max(1, relay["sent"])
        f["burst_login_p50_ms"] = pct(logins["latencies_ms"], 50)
        f["burst_login_p99_ms"] = pct(logins["latencies_ms"], 99)
        f["burst_logins_ok_fraction"] = logins["ok"] / max(1, count)
        run.details["burst"] = {"messages": relay["received"], "logins": logins["ok"],
                                "login_errors": logins["errors"],
                                "server_cpu_s": cpu_diff(cpu0, cpu1)}
    finally:
        run.close()
    return [run]


RUNNERS = {"relay": scenario_relay, "paced": scenario_paced, "offline": scenario_offline,
           "login": scenario_login, "memory": scenario_memory, "burst": scenario_burst,
           "afterlogin": scenario_afterlogin}

import abuse  # noqa: E402  (the "fair under abuse" scenarios; they use the helpers above)
import presence  # noqa: E402  (issue 13: paced latency during a presence reconnect storm)

for _extra in (abuse, presence):
    SCENARIOS += _extra.SCENARIOS
    TARGETS.update(_extra.TARGETS)
    UNITS.update(_extra.UNITS)
    RUNNERS.update(_extra.RUNNERS)


# --------------------------------------------------------------------------
# Aggregation and output


def unit_of(name):
    if name in UNITS:
        return UNITS[name]
    for suffix, unit in (("_msgs_per_s", "msg/s"), ("_per_s", "/s"), ("_cpu_s_per_10k", "CPU-s/10k"),
                         ("_ms_per_login", "CPU-ms/login"), ("_ms", "ms"), ("_kib", "KiB"),
                         ("_util", "cores"), ("_ratio", "ratio"), ("_fraction", "fraction"),
                         ("_s", "s")):
        if name.endswith(suffix):
            return unit
    return ""


def aggregate(all_runs):
    values = {}
    for run in all_runs:
        for name, value in run.figures.items():
            if value is not None:
                values.setdefault(name, []).append(value)
    out = {}
    for name, vals in values.items():
        out[name] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
                     "runs": vals, "unit": unit_of(name)}
    # the relay target is about P=50
    return out


def fmt(value):
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(figures, meta):
    print(f"# Parley benchmark  {meta['date']}  {meta['cpu']}  {meta['cores']} cores  "
          f"python {meta['python']}  runs={meta['runs']}  quick={meta['quick']}")
    print(f"# git {meta['git']}  server cwd {meta['server_cwd']}  codec {meta['codec']}  "
          f"load-generator processes {meta['procs']}  window {meta['window']}"
          + ("  PROFILED (figures perturbed)" if meta["profiled"] else ""))
    print(f"# load average before/after each scenario: {meta['load']}")
    for failure in meta["failures"]:
        print(f"# FAILED: {failure['scenario']} run {failure['run']}: {failure['error']}")
    print(f"{'figure':46} {'median':>10} {'min-max':>21} {'unit':>12}  {'target':>10}  prosody")
    for name, fig in figures.items():
        target = TARGETS.get(name.replace("relay_p50_", "relay_p50_"), "")
        rng = f"{fmt(fig['min'])}-{fmt(fig['max'])}"
        print(f"{name:46} {fmt(fig['median']):>10} {rng:>21} {fig['unit']:>12}  "
              f"{target:>10}  {PROSODY.get(name, '')}")


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def git_head():
    try:
        head = subprocess.run(["git", "-C", os.path.dirname(HERE), "rev-parse", "--short",
                               "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", os.path.dirname(HERE), "status", "--porcelain",
                                "--untracked-files=no", "--", "Code"], capture_output=True,
                               text=True,
                               timeout=10).stdout.strip()
        return head + (" (Code/ modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_scenarios(opts, chosen, runners=None, tag="bench"):
    """Every chosen scenario, opts.runs times: (runs, {scenario: loads}, failures).

    `runners` (default: Parley's RUNNERS) lets bench/peers/prosody.py run its own.
    """
    runners = runners or RUNNERS
    runs, loads, failures = [], {}, []
    for scenario in chosen:
        for index in range(opts.runs):
            log(f"[{tag}] {scenario} run {index + 1}/{opts.runs} "
                f"(load {' '.join(load_average())})")
            t0 = time.monotonic()
            try:
                done = runners[scenario](opts)
            except Exception as error:   # one failed run is reported, the rest go on
                log(f"[{tag}] {scenario} run {index + 1} FAILED: {error}")
                failures.append({"scenario": scenario, "run": index + 1, "error": str(error),
                                 "load": load_average()})
                continue
            runs.extend(done)
            loads.setdefault(scenario, []).extend(r.load for r in done)
            log(f"[{tag}] {scenario} run {index + 1} took {time.monotonic() - t0:.1f} s: " +
                ", ".join(f"{k}={fmt(v)}" for r in done for k, v in r.figures.items()
                          if not k.endswith(("_util",))))
    return runs, loads, failures


def run_meta(opts, started, loads, failures):
    return {"date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
            **machine(), "runs": opts.runs, "quick": opts.quick, "codec": opts.codec,
            "procs": opts.procs, "window": opts.window, "git": git_head(),
            "server_cwd": opts.server_cwd or os.getcwd(), "profiled": bool(opts.profile),
            "load": {k: v for k, v in loads.items()},
            "elapsed_s": round(time.time() - started, 1), "failures": failures}


def parse_args(argv=None, scenarios=None):
    """The command line (bench/peers/prosody.py parses its own with `scenarios`)."""
    scenarios = scenarios or SCENARIOS
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help="any of: " + " ".join(scenarios) + " (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--compare", choices=["prosody"], default=None,
                        help="run the same scenarios against a private Prosody 0.12 too and "
                             "print both side by side (bench/peers/prosody.py)")
    parser.add_argument("--quick", action="store_true", help="short runs, 1 repetition")
    parser.add_argument("--runs", type=int, default=0, help="repetitions (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="duration of each relay/paced run (default 8/10 s, quick 3/4 s)")
    parser.add_argument("--pairs", default="1,10,50", help="relay: P values")
    parser.add_argument("--rates", default="1000,5000", help="paced: total rates")
    parser.add_argument("--window", type=int, default=16,
                        help="relay: outstanding Sends per sender")
    parser.add_argument("--procs", type=int, default=2,
                        help="load-generator processes for relay scenarios (default 2)")
    parser.add_argument("--codec", choices=["fast", "protocol"], default="fast",
                        help="load generator's session codec (see bench/loadgen.py)")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="py-spy record the server tree during measured phases "
                             "(the profiler takes CPU: figures of such a run are perturbed)")
    parser.add_argument("--server-cwd", metavar="DIR", default=None,
                        help="working directory of the server daemon (default: the "
                             "current one, like README's `python Code/server_daemon.py`)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in scenarios]
    if unknown:
        parser.error(f"unknown scenario(s) {' '.join(unknown)}; choose from {' '.join(scenarios)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        sys.path.insert(0, os.path.join(HERE, "peers"))
        import prosody   # bench/peers/prosody.py
        return prosody.compare(args)
    opts = Options(args)
    chosen = args.scenarios or SCENARIOS
    started = time.time()
    runs, loads, failures = run_scenarios(opts, chosen)
    figures = aggregate(runs)
    meta = run_meta(opts, started, loads, failures)
    if args.json:
        details = {}
        for run in runs:
            for k, v in run.details.items():
                details.setdefault(k, []).append(v)
        print(json.dumps({"figures": {k: v["median"] for k, v in figures.items()},
                          "ranges": {k: [v["min"], v["max"]] for k, v in figures.items()},
                          "units": {k: v["unit"] for k, v in figures.items()},
                          "runs": {k: v["runs"] for k, v in figures.items()},
                          "targets": TARGETS, "meta": meta, "details": details},
                         indent=1, default=str))
    else:
        print_table(figures, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
