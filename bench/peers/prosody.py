"""Parley's benchmark scenarios against a private Prosody 0.12: `python bench/peers/prosody.py`.

Usage: `python bench/peers/prosody.py [relay paced offline memory] [--quick] [--json]`,
`python bench/peers/prosody.py --self-check` (the load generator's XML stream
parsing, in memory, no Prosody needed), or through bench/run.py:
`python bench/run.py --compare prosody [SCENARIO...] [--quick]`.

What it does: installs nothing. When a `prosody` 0.12 binary is on the PATH
(Debian 12: `apt-get install prosody` gives 0.12.3) it starts a Prosody of
its own for every scenario run: its own config file, data dir and log in a new
temp dir, c2s on a free port of 127.0.0.1 **without TLS** (loopback only;
SASL PLAIN over the plain stream is allowed for this instance), s2s and
everything not needed switched off, `authentication = "internal_hashed"`
(Prosody's default: SCRAM-style salted PBKDF2, 10,000 iterations),
`storage = "internal"` (files), mod_offline on, the accounts created by
in-band registration (XEP-0077, open to 127.0.0.1 only), and it stops it
afterwards (SIGTERM, then SIGKILL) and removes the temp dir. The load is
bench/peers/xmpp_load.py, in worker processes like bench/loadgen.py's;
the figures are computed by bench/run.py's own `relay_once`/`paced_once`
and carry the same names, so the two servers print side by side.

Measured from /proc as bench/server.py does for Parley: server CPU is
utime+stime (+ reaped children) of the Prosody process, memory its PSS
(smaps_rollup). Prosody is one process (one Lua VM, epoll), so the whole
tree is that one process.

What differs from Parley's scenarios (XMPP has no per-message receipt):
the relay's window is end to end (at most `--window` messages sent by a pair
and not yet received by its receiver); the offline accept rate is timed by
XMPP pings, one after every 64 messages with one outstanding (a ping's answer
means Prosody has handled, and stored, every message before it: the same
window of 64 as Parley's Sends); Prosody's internal storage appends to files
without fsync, where Parley commits every message with synchronous=FULL.

How it fails: without a prosody binary it says so and how to install it
(exit 2); a Prosody that does not start shows its log; a failed scenario run
is reported and the others go on, as in bench/run.py.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PEERS = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(PEERS)
for _path in (PEERS, BENCH):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import run as bench  # noqa: E402  (bench/run.py: Options, relay_once, paced_once, tables)
import xmpp_load  # noqa: E402
from server import TICK, _context_switches, _raise_fd_limit, _stat_fields, load_average  # noqa: E402

DOMAIN = "localhost"
SCENARIOS = ["relay", "paced", "offline", "memory"]
INSTALL_HINT = ("Prosody 0.12 is not installed (no `prosody` on the PATH); install it with "
                "`apt-get install prosody` (Debian 12 gives 0.12.3) and run again.")

CONFIG = """-- a private Prosody for bench/peers/prosody.py; removed after the run
run_as_root = {run_as_root}
pidfile = "{tmp}/prosody.pid"
data_path = "{tmp}/data"
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{tmp}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
network_backend = "epoll"
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "register", "offline" }}
modules_disabled = {{ "s2s", "tls" }}
authentication = "internal_hashed"
storage = "internal"
allow_registration = true
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
VirtualHost "{domain}"
"""


def prosody_binary():
    return shutil.which("prosody")


def prosody_version():
    """The package's version (the binary itself has no --version: it would start)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return out or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProsodyServer:
    """One private Prosody in a temp dir; the BenchServer interface the helpers use."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="parley-bench-prosody-")
        self.port = free_port()
        self.config = os.path.join(self.tmp, "prosody.cfg.lua")
        self.log_path = os.path.join(self.tmp, "prosody.log")
        self.proc = None

    def start(self, timeout=30.0):
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()          # the temp dir goes too, whatever failed
            raise

    def _start(self, timeout):
        os.makedirs(os.path.join(self.tmp, "data"))
        with open(self.config, "w") as f:
            f.write(CONFIG.format(tmp=self.tmp, port=self.port, domain=DOMAIN,
                                  run_as_root="true" if os.geteuid() == 0 else "false"))
        self._out = open(os.path.join(self.tmp, "stdout.log"), "ab")
        self.proc = subprocess.Popen([prosody_binary(), "-F", "--config", self.config],
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=_raise_fd_limit)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Prosody did not start; log:\n{self.log_tail()}")

    def log_tail(self, size=3000):
        text = ""
        for name in ("stdout.log", "prosody.log"):
            try:
                with open(os.path.join(self.tmp, name), "rb") as f:
                    text += f.read()[-size:].decode(errors="replace")
            except OSError:
                pass
        return text

    def cpu(self):
        fields = _stat_fields(self.proc.pid)
        own = (int(fields[11]) + int(fields[12])) / TICK
        reaped = (int(fields[13]) + int(fields[14])) / TICK
        switches = _context_switches(self.proc.pid)
        return {"total": own + reaped, "prosody": own, "switches": switches,
                "switches.prosody": switches}

    def pss_kib(self):
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            kib = int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))
        return {"total": kib, "prosody": kib, "count": {"prosody": 1}}

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_out", None):
            self._out.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class XmppWorkers(bench.Workers):
    """bench/run.py's Workers (call/recv/close), running xmpp_load.worker_main."""

    def __init__(self, port, count):
        super().__init__(port, count, None, target=xmpp_load.worker_main, args=(port, DOMAIN),
                         name="parley-bench-xmpp")


class ProsodyRun:
    """One scenario run against a fresh Prosody: what bench/run.py's helpers expect of a Run."""

    def __init__(self, opts, procs=1):
        self.opts = opts
        self.server = ProsodyServer().start()
        self.workers = XmppWorkers(self.server.port, procs)
        self.figures, self.details = {}, {}
        self.load = [load_average()]

    def profiler(self, label, seconds):
        return None

    def accounts(self, names_per_worker, login=True, concurrency=16, timeout=600.0):
        """Register every name (in-band), then log them in and keep them if `login`."""
        self.workers.call([("register", n, concurrency, timeout) if n else None
                           for n in names_per_worker], timeout + 30)
        if login:
            self.workers.call([("login", n, concurrency, timeout) if n else None
                               for n in names_per_worker], timeout + 30)

    def close(self):
        self.load.append(load_average())
        try:
            self.workers.close()
        finally:
            self.server.stop()


def _pairs_online(run, pairs):
    per_worker = bench.split(pairs, len(run.workers))
    run.accounts([[n for pair in ps for n in pair] for ps in per_worker])


def _runs_of_pairs(opts, cases):
    """One fresh Prosody per case (procs, pair count, label, measure(run, pairs)); a case
    that fails is a figure `<label>_failed` = 1 rather than the end of the bench."""
    out = []
    for procs, count, label, measure in cases:
        run = ProsodyRun(opts, procs=procs)
        try:
            pairs = bench._pair_names(count)
            _pairs_online(run, pairs)
            measure(run, pairs)
        except Exception as error:
            bench.log(f"[prosody] {label} FAILED: {error}")
            run.figures[f"{label}_failed"] = 1.0
        finally:
            run.close()
        out.append(run)
    return out


def scenario_relay(opts):
    return _runs_of_pairs(opts, [
        (min(opts.procs, p), p, f"relay_p{p}",
         lambda run, pairs, p=p: bench.relay_once(run, pairs, opts.relay_seconds, opts.window,
                                                  f"relay_p{p}"))
        for p in opts.relay_pairs])


def scenario_paced(opts):
    return _runs_of_pairs(opts, [
        (opts.procs, opts.paced_pairs, f"paced_{rate}",
         lambda run, pairs, rate=rate: bench.paced_once(run, pairs, rate, opts.paced_seconds,
                                                        f"paced_{rate}"))
        for rate in opts.paced_rates])


def scenario_offline(opts):
    run = ProsodyRun(opts, procs=1)
    try:
        run.accounts([["offline1"]], login=False)
        run.accounts([["sender1"]])
        n = opts.offline_count
        go = xmpp_load.now_ns() + int(0.2e9)
        run.workers.send(0, ("send_burst", "sender1", "offline1", n, 64, go, 300.0))
        time.sleep(max(0.0, (go - xmpp_load.now_ns()) / 1e9))
        cpu0 = run.server.cpu()
        r = run.workers.recv(0)
        cpu1 = run.server.cpu()
        if r["results"] < n or r["errors"]:
            raise RuntimeError(f"offline sends failed: {r['results']} of {n}, {r['errors'][:3]}")
        f = run.figures
        f["offline_accept_msgs_per_s"] = n / ((r["last_result"] - go) / 1e9)
        f["offline_accept_server_cpu_s_per_10k"] = (cpu1["total"] - cpu0["total"]) / n * 1e4
        cpu0 = run.server.cpu()
        r = run.workers.call([("receive_backlog", "offline1", n, 120.0)])[0]
        cpu1 = run.server.cpu()
        if r["received"] < n:
            raise RuntimeError(f"backlog: only {r['received']} of {n} received")
        f["offline_forward_after_login_s"] = (r["last_message"] - r["welcome"]) / 1e9
        f["offline_forward_from_connect_s"] = (r["last_message"] - r["connect"]) / 1e9
        f["offline_forward_server_cpu_s_per_10k"] = (cpu1["total"] - cpu0["total"]) / n * 1e4
    finally:
        run.close()
    return [run]


def scenario_memory(opts):
    run = ProsodyRun(opts, procs=1)
    try:
        time.sleep(1.0)
        idle = run.server.pss_kib()["total"]
        f = run.figures
        f["memory_idle_kib"] = idle
        have = 0
        for target in opts.memory_sessions:
            run.accounts([[f"m{i:05d}" for i in range(have, target)]], timeout=900)
            have = target
            time.sleep(1.0)
            pss = run.server.pss_kib()["total"]
            f[f"memory_{target}_sessions_kib"] = pss
            f[f"memory_per_session_{target}_kib"] = (pss - idle) / target
    finally:
        run.close()
    return [run]


RUNNERS = {"relay": scenario_relay, "paced": scenario_paced, "offline": scenario_offline,
           "memory": scenario_memory}


# The figures worth a row of the side-by-side table (all that both have are in --json)
KEY_FIGURES = [f"relay_p{p}_{k}" for p in (1, 10, 50)
               for k in ("msgs_per_s", "server_cpu_s_per_10k", "latency_p50_ms",
                         "latency_p99_ms")] + \
    [f"paced_{r}_{k}" for r in (1000, 5000)
     for k in ("achieved_msgs_per_s", "p50_ms", "p99_ms", "server_cpu_s_per_10k")] + \
    ["offline_accept_msgs_per_s", "offline_accept_server_cpu_s_per_10k",
     "offline_forward_after_login_s", "offline_forward_server_cpu_s_per_10k",
     "memory_idle_kib", "memory_100_sessions_kib", "memory_1000_sessions_kib",
     "memory_per_session_100_kib", "memory_per_session_1000_kib"]


def measure(opts, chosen):
    """Parley then Prosody, scenario by scenario (so both see the same hour's load)."""
    out = {"parley": ([], {}, []), "prosody": ([], {}, [])}
    for scenario in chosen:
        for side, runners in (("parley", None), ("prosody", RUNNERS)):
            runs, loads, failures = bench.run_scenarios(opts, [scenario], runners, side)
            out[side][0].extend(runs)
            out[side][1].update(loads)
            out[side][2].extend(failures)
    return out


def side_by_side(results):
    """{figure: {"parley": agg, "prosody": agg, "ratio": parley median / prosody median}}."""
    parley, prosody = (bench.aggregate(results[side][0]) for side in ("parley", "prosody"))
    names = [n for n in KEY_FIGURES if n in parley or n in prosody]
    names += [n for n in parley if n in prosody and n not in names]
    failed = sorted(n for n in set(parley) | set(prosody) if n.endswith("_failed"))
    rows = {}
    for name in names + failed:   # "X_failed": a run of X did not finish (see the log)
        a, b = parley.get(name), prosody.get(name)
        ratio = a["median"] / b["median"] if a and b and b["median"] else None
        rows[name] = {"parley": a, "prosody": b, "ratio": ratio,
                      "unit": (a or b)["unit"], "key": name in KEY_FIGURES or name in failed}
    return rows


def print_side_by_side(rows, meta):
    print(f"# Parley against Prosody {meta['prosody']}  {meta['date']}  {meta['cpu']}  "
          f"{meta['cores']} cores  python {meta['python']}  runs={meta['runs']}  "
          f"quick={meta['quick']}  git {meta['git']}")
    for side in ("parley", "prosody"):
        print(f"# load average before/after, {side}: {meta['load'][side]}")
        for failure in meta["failures"][side]:
            print(f"# FAILED ({side}): {failure['scenario']} run {failure['run']}: "
                  f"{failure['error']}")
    print(f"{'figure':40} {'parley':>10} {'(min-max)':>19} {'prosody':>10} {'(min-max)':>19} "
          f"{'parley/prosody':>14} {'unit':>10}")
    for name, row in rows.items():
        if not row["key"]:
            continue
        cells = []
        for side in ("parley", "prosody"):
            fig = row[side]
            cells += ([bench.fmt(fig["median"]), f"{bench.fmt(fig['min'])}-{bench.fmt(fig['max'])}"]
                      if fig else ["-", ""])
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"{name:40} {cells[0]:>10} {cells[1]:>19} {cells[2]:>10} {cells[3]:>19} "
              f"{ratio:>14} {row['unit']:>10}")


def compare(args):
    """`python bench/run.py --compare prosody [SCENARIO...]`: both servers, one run."""
    if not prosody_binary():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    chosen = args.scenarios or SCENARIOS
    other = [s for s in chosen if s not in SCENARIOS]
    if other:
        print(f"--compare prosody runs {' '.join(SCENARIOS)} only, not {' '.join(other)}.",
              file=sys.stderr)
        return 2
    if not prosody_version().startswith("0.12"):
        bench.log(f"[prosody] WARNING: prosody {prosody_version()} is not 0.12, the version "
                  f"these scenarios and docs/PERFORMANCE.md section 14 were written for")
    opts = bench.Options(args)
    started = time.time()
    results = measure(opts, chosen)
    rows = side_by_side(results)
    meta = bench.run_meta(opts, started, {}, [])
    meta.update(prosody=prosody_version(), load={s: results[s][1] for s in results},
                failures={s: results[s][2] for s in results})
    if args.json:
        import json
        print(json.dumps({side: {n: r[side]["median"] for n, r in rows.items() if r[side]}
                          for side in ("parley", "prosody")} | {
            "ranges": {side: {n: [r[side]["min"], r[side]["max"]] for n, r in rows.items()
                              if r[side]} for side in ("parley", "prosody")},
            "runs": {side: {n: r[side]["runs"] for n, r in rows.items() if r[side]}
                     for side in ("parley", "prosody")},
            "ratios": {n: r["ratio"] for n, r in rows.items()},
            "units": {n: r["unit"] for n, r in rows.items()}, "meta": meta},
            indent=1, default=str))
    else:
        print_side_by_side(rows, meta)
    return 1 if any(meta["failures"].values()) else 0


def main(argv=None):
    """Prosody alone (`compare` runs both)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--self-check" in argv:
        print(xmpp_load.self_check())
        return 0
    if not prosody_binary():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    args = bench.parse_args(argv, SCENARIOS)
    if args.compare:
        return compare(args)
    opts = bench.Options(args)
    started = time.time()
    runs, loads, failures = bench.run_scenarios(opts, args.scenarios or SCENARIOS, RUNNERS,
                                                "prosody")
    figures = bench.aggregate(runs)
    meta = bench.run_meta(opts, started, loads, failures)
    meta["prosody"] = prosody_version()
    if args.json:
        import json
        print(json.dumps({"figures": {k: v["median"] for k, v in figures.items()},
                          "ranges": {k: [v["min"], v["max"]] for k, v in figures.items()},
                          "units": {k: v["unit"] for k, v in figures.items()},
                          "meta": meta}, indent=1, default=str))
    else:
        print(f"# Prosody {meta['prosody']}  {meta['date']}  runs={opts.runs}  "
              f"quick={opts.quick}  load {loads}")
        for failure in failures:
            print(f"# FAILED: {failure['scenario']} run {failure['run']}: {failure['error']}")
        for name, fig in figures.items():
            rng = f"{bench.fmt(fig['min'])}-{bench.fmt(fig['max'])}"
            print(f"{name:46} {bench.fmt(fig['median']):>10} {rng:>21} {fig['unit']:>12}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
