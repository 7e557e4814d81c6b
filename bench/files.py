"""Files over loopback (issue 14): `python bench/files.py [--size-mib 500] [--runs 3] [--json]`.

What it measures, on a freshly started server per run (bench/server.py:
real daemon, port 0, temporary data dir, tiny argon2, per-address limits
lifted; here also the file limits raised so that any `--size-mib` fits),
with the real client (`Code/client.py --batch --json`, one process per
person, kept logged in):

1. Throughput. One file of `--size-mib` MiB (random bytes, made once in a
   temporary directory) goes from `fsender` to `frecipient`: upload =
   from the `send-file` line to its `file_sent` record (the client's
   SHA-256 pass over the file, the chunks, the server's fsync and commit);
   download = from the `download ID DIR --force` line to its
   `file_downloaded` record (chunks, the client's hash check and fsync).
   MB/s are 10^6 bytes per second of wall time. The bench then checks the
   downloaded file's size and SHA-256 against the source itself.
2. Memory. Every ~0.2 s during both transfers, Rss and Pss
   (/proc/PID/smaps_rollup) of every process of the server's session and
   of both clients; the peak per role (the sum over the role's processes,
   the largest seen), beside the value just before the upload. Roles come
   from the setproctitle titles: daemon, forkserver, database, the sender's
   and the recipient's user process, spare (idle pre-started logins),
   login, resource_tracker; and the two clients. The same is done on
   another fresh server with a smaller file (`--compare-mib`, default 50):
   bounded (streaming) memory means the peaks are about the same.
3. Live messages beside a transfer. On the big file's server, after the
   transfers: 10 pairs of load-generator sessions send 1,000 messages/s
   in all (bench/run.py's `paced_once`, the `paced` scenario's code) for
   `--seconds` (10) each time: alone (`files_live_base`); while the
   sender's client uploads the big file again and again without a pause
   (`files_live_upload`; each upload declines the one before, so storage
   stays flat); while the recipient's client downloads the last one again
   and again (`files_live_download`); alone again (`files_live_after`: on
   a shared machine base and after bracket the two, so a change of the
   machine's load shows as a difference between them). Each loop starts
   1-2 s before its paced run and stops after it (the transfer under way
   then finishes). Send->push latency p50/p99 of each; server CPU per 10k
   messages for the runs alone (beside a transfer the server's CPU is
   mostly the transfer's: those give the cores the server used, and the
   MB/s of the transfers that overlapped the paced run).

CPU-ms per MiB (server and both clients, from /proc) are printed beside
MB/s: on the shared machine they move much less with the load than MB/s
(31 -> 39 CPU-ms/MiB while MB/s went 50 -> 34, docs/PERFORMANCE.md 4.05).
The sampler itself reads every process's smaps_rollup: ~7 ms of the bench
process's CPU per sample, 3-4 % of a core.

`--unit-costs` first prints what each step of a chunk's path costs in
this one process (base64, AES-256-GCM as the store does it, SHA-256, the
transport's ChaCha20-Poly1305, the binary serializer) per MiB of file,
and what writing and fsyncing the file costs on this file system.
`--profile DIR` records with py-spy the server tree and the client at work
during each upload and download (LABEL.txt, LABEL_client.txt), and the
server tree during each paced run (run.py's profiler: files_live_*.txt);
summarise with bench/profile_summary.py; the figures of such a run are
perturbed. `--client-window N` runs the clients with N
chunks in flight instead of the client's own 8 (patched into
`file_commands.WINDOW` at start; an experiment, not the product).

`--json` prints one JSON object in bench/run.py's layout (figures,
ranges, units, runs, meta, details), so `bench/report.py` renders it.
"""

import argparse
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen  # noqa: E402  (puts Code/ on sys.path)
import run as bench  # noqa: E402
from server import (  # noqa: E402
    TICK,
    _stat_fields,
    cpu_diff,
    idle_fraction,
    load_average,
    machine_cpu,
    role_of,
)

CLIENT = os.path.join(os.path.dirname(HERE), "Code", "client.py")
CODE = os.path.dirname(CLIENT)
PASSWORD = "files bench password"
SENDER, RECIPIENT = "fsender", "frecipient"
MIB = 1024 * 1024
RATE = 1000.0
PAIRS = 10                 # as the paced scenario: 100 messages/s each
SAMPLE_S = 0.2
SETTLE_S = 3.0            # a pause before each paced run alone
UNITS = {}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# The real client, in batch mode


class BatchClient:
    """`Code/client.py --batch --json` kept running: lines in, JSON records out."""

    def __init__(self, port, user, home, window=None):
        command = [sys.executable, CLIENT]
        if window:            # the experiment: another window, patched in before main
            patched = ("import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
                       "from Modules.client import file_commands; "
                       f"file_commands.WINDOW = {int(window)}; "
                       "sys.argv[0] = sys.argv.pop(1); "
                       "runpy.run_path(sys.argv[0], run_name='__main__')")
            command = [sys.executable, "-c", patched, CODE, CLIENT]
        command += ["--batch", "--json", "--user", user, "--password-env", "PARLEY_BENCH_PW",
                    "--create", "--host", "127.0.0.1", "--port", str(port),
                    "--known-hosts", os.path.join(home, f"known_hosts.{user}"),
                    "--accept-new-host-key"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update({"PARLEY_BENCH_PW": PASSWORD, "PYTHONUNBUFFERED": "1",
                    **{f"XDG_{kind}_HOME": os.path.join(home, kind.lower(), user)
                       for kind in ("DATA", "CONFIG", "STATE")}})
        self.user = user
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.records = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            if line.strip():
                try:
                    self.records.put(json.loads(line))
                except ValueError:
                    self.records.put({"type": "unparsed", "line": line[:200]})
        self.records.put(None)

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_type(self, kind, timeout):
        """The next record of type `kind` (others are dropped); RuntimeError on an
        error record, the end of the client, or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.user}: no {kind} record in {timeout:.0f} s")
            try:
                record = self.records.get(timeout=remaining)
            except queue.Empty:
                continue
            if record is None:
                raise RuntimeError(f"{self.user}'s client ended waiting for {kind}: "
                                   f"{self.proc.stderr.read()[-2000:]}")
            if record.get("type") == "error":
                raise RuntimeError(f"{self.user}: {record}")
            if record.get("type") == kind:
                return record

    def cpu_s(self):
        try:
            fields = _stat_fields(self.pid)
        except (OSError, ValueError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICK

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------
# Memory of every process, sampled


def _rss_pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
    except OSError:
        return None
    rss = re.search(r"^Rss:\s+(\d+) kB", text, re.MULTILINE)
    pss = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    if not (rss and pss):
        return None                        # a zombie, or a kernel thread
    return int(rss.group(1)), int(pss.group(1))


def server_role(title, people):
    """bench/server.py's role, with the user processes told apart by person."""
    role = role_of(title)
    if role == "user":
        name = title.split()[-1]
        return f"user ({people.get(name, 'other')})"
    return role


class MemorySampler:
    """Rss and Pss of the server's processes and of the clients every SAMPLE_S
    seconds in a thread, while a `with` block runs. `peak[role]` is the largest
    sum over the role's processes seen, `before[role]` the first sample."""

    ORDER = ["daemon", "forkserver", "database", "user (sender)", "user (recipient)",
             "user (other)", "login", "spare", "resource_tracker", "other",
             "client (sender)", "client (recipient)"]

    def __init__(self, server, clients, people):
        self.server, self.clients, self.people = server, clients, people
        self.before, self.peak, self.counts = {}, {}, {}
        self.samples = 0
        self._pids = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _refresh(self):
        pids = {pid: server_role(title, self.people)
                for pid, title in self.server.pids().items() if title != "(zombie)"}
        pids.update({client.pid: f"client ({role})" for role, client in self.clients.items()})
        self._pids = pids

    def sample(self):
        if self.samples % 5 == 0:          # the process list every ~1 s: it hardly changes
            self._refresh()
        sums = {}
        for pid, role in self._pids.items():
            got = _rss_pss_kib(pid)
            if got is None:
                continue
            rss, pss, n = sums.get(role, (0, 0, 0))
            sums[role] = (rss + got[0], pss + got[1], n + 1)
        server_rss = sum(v[0] for r, v in sums.items() if not r.startswith("client"))
        server_pss = sum(v[1] for r, v in sums.items() if not r.startswith("client"))
        sums["server total"] = (server_rss, server_pss, sum(
            v[2] for r, v in sums.items() if not r.startswith("client")))
        for role, (rss, pss, n) in sums.items():
            if self.samples == 0:
                self.before[role] = {"rss": rss, "pss": pss}
            peak = self.peak.setdefault(role, {"rss": 0, "pss": 0})
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            self.counts[role] = max(self.counts.get(role, 0), n)
        self.samples += 1

    def _loop(self):
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False

    def roles(self):
        known = [r for r in self.ORDER if r in self.peak]
        return known + sorted(r for r in self.peak if r not in known and r != "server total") \
            + ["server total"]


def role_key(role):
    """'user (sender)' -> 'user_sender', for figure names."""
    return re.sub(r"[^a-z0-9]+", "_", role.lower()).strip("_")


# --------------------------------------------------------------------------
# The file and the transfers


def make_file(directory, size):
    """A file of `size` random bytes; (path, its SHA-256)."""
    path = os.path.join(directory, f"bench-{size // MIB}MiB.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return path, digest.hexdigest()


def transfer_timeout(size):
    return 120.0 + size / 1e6          # at least 1 MB/s, and two minutes more


def upload(sender, path, size, timeout=None):
    """(seconds, the file_sent record) of one send-file."""
    started = time.monotonic()
    sender.send(f"send-file {RECIPIENT} {path}")
    record = sender.wait_type("file_sent", timeout or transfer_timeout(size))
    elapsed = time.monotonic() - started
    if record.get("bounced") or record.get("size") != size:
        raise RuntimeError(f"upload did not go through: {record}")
    return elapsed, record


def download(recipient, file_id, directory, size, sha256, timeout=None):
    """(seconds, the file_downloaded record) of one download, checked here too."""
    started = time.monotonic()
    recipient.send(f"download {file_id} {directory} --force")
    record = recipient.wait_type("file_downloaded", timeout or transfer_timeout(size))
    elapsed = time.monotonic() - started
    if not record.get("verified") or record.get("sha256") != sha256 \
            or os.path.getsize(record["path"]) != size:
        raise RuntimeError(f"download not verified: {record}")
    return elapsed, record


def decline(recipient, file_id):
    recipient.send(f"decline {file_id}")
    recipient.wait_type("file_declined", 60.0)


def check_content(path, sha256):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise RuntimeError(f"{path}: the downloaded bytes are not the source's")


class Measured:
    """Wall time, server CPU by role, client CPU and machine idle of one phase."""

    def __init__(self, server, clients):
        self.server, self.clients = server, clients

    def __enter__(self):
        self.cpu0, self.clients0 = self.server.cpu(), {r: c.cpu_s() for r, c in
                                                       self.clients.items()}
        self.machine0, self.t0 = machine_cpu(), time.monotonic()
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.server_cpu = cpu_diff(self.cpu0, self.server.cpu())
        self.client_cpu = {r: round(c.cpu_s() - self.clients0[r], 2)
                           for r, c in self.clients.items()}
        self.idle = idle_fraction(self.machine0, machine_cpu())
        return False


class Profiled:
    """With a directory: py-spy records the server tree (LABEL.txt) and one client
    (LABEL_client.txt) while the block runs, stopped by SIGINT at its end."""

    def __init__(self, directory, label, server_pid, client_pid):
        self.directory, self.label = directory, label
        self.targets = {"": (server_pid, ["--subprocesses"]), "_client": (client_pid, [])}
        self.procs = []

    def __enter__(self):
        if not self.directory:
            return self
        os.makedirs(self.directory, exist_ok=True)
        for suffix, (pid, extra) in self.targets.items():
            path = os.path.join(self.directory, f"{self.label}{suffix}.txt")
            self.procs.append(subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), *extra, "--nonblocking", "--rate",
                 "100", "--format", "raw", "--threads", "--duration", "3600", "--output",
                 path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)                     # attached before the phase starts
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return False


def transfer_figures(run, label, kind, size, measured):
    f = run.figures
    f[f"{label}_{kind}_s"] = measured.wall
    f[f"{label}_{kind}_mb_per_s"] = size / measured.wall / 1e6
    UNITS[f"{label}_{kind}_mb_per_s"] = "MB/s"
    cpu = measured.server_cpu
    f[f"{label}_{kind}_server_cpu_s"] = cpu["total"]
    for role in ("database", "database.main", "database.threads", "user"):
        f[f"{label}_{kind}_{role.replace('.', '_')}_cpu_s"] = cpu.get(role, 0.0)
    for role, seconds in measured.client_cpu.items():
        f[f"{label}_{kind}_client_{role}_cpu_s"] = seconds
    f[f"{label}_{kind}_machine_idle_fraction"] = measured.idle
    # CPU per MiB moves much less with the machine's load than MB/s: the figure to compare
    mib = size / MIB
    f[f"{label}_{kind}_cpu_ms_per_mib"] = (cpu["total"] + sum(measured.client_cpu.values())) \
        / mib * 1e3
    f[f"{label}_{kind}_server_cpu_ms_per_mib"] = cpu["total"] / mib * 1e3
    f[f"{label}_{kind}_cores"] = (cpu["total"] + sum(measured.client_cpu.values())) \
        / measured.wall
    for name in ("cpu_ms_per_mib", "server_cpu_ms_per_mib"):
        UNITS[f"{label}_{kind}_{name}"] = "CPU-ms/MiB"
    UNITS[f"{label}_{kind}_cores"] = "cores"
    run.details[f"{label}_{kind}"] = {"wall_s": round(measured.wall, 3), "server_cpu_s": cpu,
                                      "client_cpu_s": measured.client_cpu}


def memory_figures(run, label, sampler):
    f = run.figures
    for role in sampler.roles():
        key = role_key(role)
        f[f"{label}_mem_{key}_pss_peak_kib"] = sampler.peak[role]["pss"]
        f[f"{label}_mem_{key}_rss_peak_kib"] = sampler.peak[role]["rss"]
        f[f"{label}_mem_{key}_pss_before_kib"] = sampler.before.get(role, {}).get("pss", 0)
    run.details[f"{label}_memory"] = {"samples": sampler.samples, "before": sampler.before,
                                      "peak": sampler.peak, "processes": sampler.counts}


# --------------------------------------------------------------------------
# One run


class Bench:
    """The invocation's options, its source files and its temporary directory."""

    def __init__(self, args):
        self.args = args
        # what bench.Run reads from its options
        self.codec, self.server_cwd, self.profile = "fast", args.server_cwd, args.profile
        self.seconds = args.seconds
        self.tmp = tempfile.mkdtemp(prefix="parley-files-bench-")
        self.files = {}

    def source(self, size):
        if size not in self.files:
            t0 = time.monotonic()
            self.files[size] = make_file(self.tmp, size)
            log(f"[files] made {size // MIB} MiB of random bytes in "
                f"{time.monotonic() - t0:.1f} s")
        return self.files[size]

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def file_limits(size):
    room = str(max(4 * size, 1 << 30))
    return {"PARLEY_FILE_MAX_BYTES": room, "PARLEY_FILE_QUOTA_BYTES": str(8 * int(room))}


def one_size(bench_, size, live):
    """A fresh server, two clients, one upload and one download of `size` bytes
    (memory sampled); with `live`, the paced messages with and without a transfer
    loop on the same server afterwards. The Run (figures, details)."""
    args = bench_.args
    path, sha256 = bench_.source(size)
    label = f"files_{size // MIB}m"
    run = bench.Run(bench_, procs=args.procs if live else 0, extra_env=file_limits(size))
    home = tempfile.mkdtemp(prefix="home-", dir=bench_.tmp)
    downloads = tempfile.mkdtemp(prefix="downloads-", dir=bench_.tmp)
    clients = {}
    try:
        clients["sender"] = BatchClient(run.server.port, SENDER, home, args.client_window)
        clients["recipient"] = BatchClient(run.server.port, RECIPIENT, home,
                                           args.client_window)
        for client in clients.values():
            client.wait_type("ready", 60.0)
        run.server.wait_settled(expect_users=2)
        time.sleep(1.0)                     # the spare logins settle
        people = {SENDER: "sender", RECIPIENT: "recipient"}
        with MemorySampler(run.server, clients, people) as sampler:
            with Profiled(args.profile, f"{label}_upload", run.server.proc.pid,
                          clients["sender"].pid), Measured(run.server, clients) as up:
                _, sent = upload(clients["sender"], path, size)
            with Profiled(args.profile, f"{label}_download", run.server.proc.pid,
                          clients["recipient"].pid), Measured(run.server, clients) as down:
                _, got = download(clients["recipient"], sent["id"], downloads, size, sha256)
        check_content(got["path"], sha256)
        os.unlink(got["path"])
        decline(clients["recipient"], sent["id"])
        transfer_figures(run, label, "upload", size, up)
        transfer_figures(run, label, "download", size, down)
        memory_figures(run, label, sampler)
        log(f"[files] {size // MIB} MiB: upload {size / up.wall / 1e6:.1f} MB/s, download "
            f"{size / down.wall / 1e6:.1f} MB/s (load {' '.join(load_average())})")
        if live:
            live_messages(run, clients, path, size, sha256, downloads)
    finally:
        for client in clients.values():
            client.close()
        run.close()
    return run


def live_messages(run, clients, path, size, sha256, downloads):
    """Paced 1,000/s from 10 pairs: alone, beside a loop of uploads, beside a loop
    of downloads, alone again."""
    args = run.opts
    pairs = bench._pair_names(PAIRS)
    per_worker = bench.split(pairs, len(run.workers))
    run.login([[n for pair in ps for n in pair] for ps in per_worker])
    run.server.wait_settled(expect_users=2 * len(pairs) + 2)
    time.sleep(SETTLE_S)                     # after the transfers' writes and fsyncs
    bench.paced_once(run, pairs, RATE, args.seconds, "files_live_base")
    kept = []                                # the file the upload loop sent last

    def upload_step():
        _, sent = upload(clients["sender"], path, size)
        if kept:                             # the one before goes: storage stays flat
            decline(clients["recipient"], kept.pop())
        kept.append(sent["id"])

    def download_step():
        download(clients["recipient"], kept[0], downloads, size, sha256)

    beside(run, pairs, "files_live_upload", upload_step, size, warm_up_s=2.0)
    beside(run, pairs, "files_live_download", download_step, size, warm_up_s=1.0)
    decline(clients["recipient"], kept.pop())
    # The same paced run alone again: on a shared machine, what changed between the
    # first and this one is the machine, not the transfer.
    time.sleep(SETTLE_S)
    bench.paced_once(run, pairs, RATE, args.seconds, "files_live_after")


def beside(run, pairs, label, step, size, warm_up_s):
    """The paced run `label` while a thread repeats `step` (one transfer) without
    a pause, from `warm_up_s` before it starts until it has ended."""
    stop, ops, failure = threading.Event(), [], []

    def loop():
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                step()
                ops.append((t0, time.monotonic()))
        except Exception as error:           # reported after the paced run
            failure.append(error)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    time.sleep(warm_up_s)                    # an upload: past the client's hash pass
    go = loadgen.now_ns() + int(0.3e9)
    window0 = time.monotonic() + 0.3
    cpu0 = run.server.cpu()
    bench.paced_once(run, pairs, RATE, run.opts.seconds, label, go=go)
    cpu = cpu_diff(cpu0, run.server.cpu())
    window1 = time.monotonic()
    stop.set()
    worker.join(transfer_timeout(size) * 2)
    if failure or worker.is_alive():
        raise RuntimeError(f"the transfer loop of {label} failed: "
                           f"{failure[0] if failure else 'it did not end'}")
    f = run.figures
    # With a transfer the server's CPU is mostly the transfer's: per 10k messages it
    # says nothing about messages; the cores the server used do.
    f.pop(f"{label}_server_cpu_s_per_10k", None)
    f[f"{label}_server_cpu_util"] = cpu["total"] / (window1 - window0)
    overlapping = [(t0, t1) for t0, t1 in ops if t0 < window1 and t1 > window0]
    covered = sum(min(t1, window1) - max(t0, window0) for t0, t1 in overlapping)
    f[f"{label}_covered_fraction"] = covered / (window1 - window0)
    f[f"{label}_file_mb_per_s"] = statistics.mean(size / (t1 - t0) / 1e6
                                                  for t0, t1 in overlapping)
    UNITS[f"{label}_file_mb_per_s"] = "MB/s"
    run.details[f"{label}_transfers_s"] = [round(t1 - t0, 2) for t0, t1 in ops]
    run.details[f"{label}_server_cpu_s"] = cpu


# --------------------------------------------------------------------------
# Unit costs of one chunk's path, in this process


def unit_costs(directory, size):
    """Seconds per MiB of each step, and write+fsync of `size` bytes here."""
    import base64

    from Modules.database import filestore
    from Modules.wire import aead
    from Modules.wire.serializers import BINARY, Packet

    chunk = os.urandom(filestore.CHUNK)
    text = base64.b64encode(chunk).decode("ascii")
    key = os.urandom(32)
    packet = Packet("FileChunk", {"rid": 1, "upload": 7, "index": 3, "data": text})
    frame = BINARY.dumps(packet)
    sealed = aead.seal(key, bytes(12), b"", frame)
    cipher = filestore._cipher(key, 7, 3, False)
    gcm_sealed, gcm_tag = cipher.encrypt_and_digest(chunk)
    steps = {
        "base64 encode (client up, database down)": lambda: base64.b64encode(chunk),
        "base64 decode, validated (database up)": lambda: base64.b64decode(text, validate=True),
        "base64 decode (client down)": lambda: base64.b64decode(text),
        "AES-256-GCM seal, a cipher per chunk (store)":
            lambda: filestore._cipher(key, 7, 3, False).encrypt_and_digest(chunk),
        "AES-256-GCM open and verify (store)":
            lambda: filestore._cipher(key, 7, 3, False).decrypt_and_verify(gcm_sealed,
                                                                           gcm_tag),
        "SHA-256 of the chunk": lambda: hashlib.sha256(chunk).digest(),
        "serializer dumps of the FileChunk packet": lambda: BINARY.dumps(packet),
        "serializer loads of the FileChunk packet": lambda: BINARY.loads(frame),
        "ChaCha20-Poly1305 seal of the packet (transport)":
            lambda: aead.seal(key, bytes(12), b"", frame),
        "ChaCha20-Poly1305 open of the packet (transport)":
            lambda: aead.open_(key, bytes(12), b"", sealed),
    }
    try:                                     # for comparison: OpenSSL's, as bench/loadgen.py
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
        openssl = ChaCha20Poly1305(key)
        steps["(for comparison) the same seal with cryptography/OpenSSL"] = \
            lambda: openssl.encrypt(bytes(12), frame, b"")
    except ImportError:
        pass
    out = {}
    for name, step in steps.items():
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.3:
            step()
            count += 1
        out[name] = (time.perf_counter() - t0) / count * (MIB / filestore.CHUNK)
    path = os.path.join(directory, "fsync-probe.bin")
    block = os.urandom(MIB)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(block)
        t1 = time.perf_counter()
        f.flush()
        os.fsync(f.fileno())
    t2 = time.perf_counter()
    os.unlink(path)
    out[f"write {size // MIB} MiB to the page cache"] = (t1 - t0) / (size / MIB)
    out[f"fsync of those {size // MIB} MiB"] = (t2 - t1) / (size / MIB)
    return out


# --------------------------------------------------------------------------
# Output


def print_figures(figures, meta):
    print(f"# Parley files bench  {meta['date']}  {meta['cpu']}  {meta['cores']} cores  "
          f"python {meta['python']}  runs={meta['runs']}  git {meta['git']}")
    print(f"# file {meta['size_mib']} MiB (memory compared with {meta['compare_mib']} MiB)  "
          f"client window {meta['client_window'] or 'the client default (8)'}"
          + ("  PROFILED (figures perturbed)" if meta["profiled"] else ""))
    print(f"# load average before/after each run: {meta['load']['files']}")
    for failure in meta["failures"]:
        print(f"# FAILED: run {failure['run']}: {failure['error']}")
    memory = {name: fig for name, fig in figures.items() if "_mem_" in name}
    print(f"{'figure':52} {'median':>10} {'min-max':>21} {'unit':>10}")
    for name, fig in figures.items():
        if name not in memory:
            rng = f"{bench.fmt(fig['min'])}-{bench.fmt(fig['max'])}"
            print(f"{name:52} {bench.fmt(fig['median']):>10} {rng:>21} {fig['unit']:>10}")
    labels = sorted({name.split("_mem_")[0] for name in memory},
                    key=lambda lbl: int(lbl.split("_")[1][:-1]))
    if not labels:
        return
    print("\n# memory during the upload and the download, MiB (median of the runs; "
          "peak = largest sum over the role's processes)")
    head = "".join(f" {lbl[6:] + ' before PSS':>16} {'peak PSS':>9} {'peak RSS':>9}"
                   for lbl in labels)
    print(f"{'role':22}{head}")
    roles = []
    for name in memory:
        role = name.split("_mem_")[1].rsplit("_", 3)[0]
        if role not in roles:
            roles.append(role)
    for role in roles:
        cells = ""
        for lbl in labels:
            def mib(kind, lbl=lbl, role=role):
                fig = figures.get(f"{lbl}_mem_{role}_{kind}_kib")
                return "-" if fig is None else f"{fig['median'] / 1024:.1f}"
            cells += f" {mib('pss_before'):>16} {mib('pss_peak'):>9} {mib('rss_peak'):>9}"
        print(f"{role:22}{cells}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=500, help="the big file (MiB)")
    parser.add_argument("--compare-mib", type=int, default=50,
                        help="the smaller file of the memory comparison (0: none)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="duration of each paced run (default 10 s)")
    parser.add_argument("--no-live", action="store_true",
                        help="skip the paced messages beside a transfer")
    parser.add_argument("--procs", type=int, default=2,
                        help="load-generator processes for the paced messages (default 2)")
    parser.add_argument("--client-window", type=int, default=0,
                        help="chunks in flight in the clients (default: theirs, 8)")
    parser.add_argument("--unit-costs", action="store_true",
                        help="first print the cost of each step of a chunk's path")
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="py-spy record the server tree during the big transfers")
    parser.add_argument("--server-cwd", metavar="DIR", default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--show", metavar="FILE", default=None,
                        help="print the tables of a saved --json result, and run nothing")
    args = parser.parse_args(argv)
    if args.show:
        with open(args.show) as f:
            saved = json.load(f)
        print_figures({name: {"median": median, "min": saved["ranges"][name][0],
                              "max": saved["ranges"][name][1], "unit": saved["units"][name]}
                       for name, median in saved["figures"].items()}, saved["meta"])
        return 0
    bench_ = Bench(args)
    size = args.size_mib * MIB
    started = time.time()
    runs, loads, failures, costs = [], [], [], None
    try:
        if args.unit_costs:
            costs = unit_costs(bench_.tmp, size)
            print("# unit costs in one process, ms per MiB of file "
                  f"(load {' '.join(load_average())})", file=sys.stderr if args.json
                  else sys.stdout)
            for name, seconds in costs.items():
                print(f"  {name:52} {seconds * 1e3:8.2f}", file=sys.stderr if args.json
                      else sys.stdout)
        sizes = ([args.compare_mib * MIB] if args.compare_mib else []) + [size]
        for index in range(args.runs):
            for each in sizes:
                live = each == size and not args.no_live
                before = load_average()
                log(f"[files] run {index + 1}/{args.runs}, {each // MIB} MiB "
                    f"(load {' '.join(before)})")
                try:
                    done = one_size(bench_, each, live)
                except Exception as error:     # one failed run is reported, the rest go on
                    log(f"[files] run {index + 1} ({each // MIB} MiB) FAILED: {error}")
                    failures.append({"run": index + 1, "size_mib": each // MIB,
                                     "error": str(error), "load": load_average()})
                    continue
                runs.append(done)
                loads.append([before, load_average()])
    finally:
        bench_.close()
    bench.UNITS.update(UNITS)
    figures = bench.aggregate(runs)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started)),
            **bench.machine(), "runs": args.runs, "quick": False, "git": bench.git_head(),
            "size_mib": args.size_mib, "compare_mib": args.compare_mib,
            "client_window": args.client_window, "profiled": bool(args.profile),
            "procs": args.procs, "seconds": args.seconds, "load": {"files": loads},
            "elapsed_s": round(time.time() - started, 1), "failures": failures,
            "unit_costs_ms_per_mib": {k: round(v * 1e3, 3) for k, v in (costs or {}).items()}}
    if args.json:
        details = {}
        for done in runs:
            for k, v in done.details.items():
                details.setdefault(k, []).append(v)
        print(json.dumps({"figures": {k: v["median"] for k, v in figures.items()},
                          "ranges": {k: [v["min"], v["max"]] for k, v in figures.items()},
                          "units": {k: v["unit"] for k, v in figures.items()},
                          "runs": {k: v["runs"] for k, v in figures.items()},
                          "targets": {}, "meta": meta, "details": details},
                         indent=1, default=str))
    else:
        print_figures(figures, meta)
    return 1 if failures and not runs else 0


if __name__ == "__main__":
    sys.exit(main())
