"""Two Parley servers on one PostgreSQL, traffic between them (issue 18).

`python bench/pg_servers.py [--pairs P] [--seconds S] [--runs N] [--json]`
starts the bench's private PostgreSQL cluster (`bench/server.py`), server A
on a new database and server B on the same one (given A's key files, as
docs/postgresql.md tells an operator, and one files directory), then
logs in P pairs of people: in each pair one person is on A and the other
on B (the load generator routes a name by its first letter: x… to A, y…
to B), half the pairs sending A→B and half B→A, pipelined (window 16), so
every message crosses servers, both writers take the same people's rows,
and both commit at once.

It prints, per run: messages relayed per second, send→push latency p50 and
p99, the server CPU of both trees and PostgreSQL's per 10,000 messages,
the Sends answered with an error (`unavailable` after a deadlock or a
lost link), and the deadlocks PostgreSQL detected in the database
(`pg_stat_database.deadlocks`, an exact count): the figure that says
whether writers of two servers fight over row locks (docs/PERFORMANCE.md
section 17). Both servers and the cluster are stopped at the end,
whatever happens.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["PARLEY_BENCH_POSTGRES"] = "on"        # BenchServer's storage: PostgreSQL

import loadgen  # noqa: E402
import server as bench_server  # noqa: E402

KEY_FILES = ("server_key", "server_key.pub", "storage_key")


def start_servers(files_dir):
    first = bench_server.BenchServer(extra_args=["--files-dir", files_dir, "--park-after", "0"])
    first.start()
    second = bench_server.BenchServer(extra_args=["--files-dir", files_dir, "--park-after", "0"])
    second.storage = first.storage
    os.makedirs(second.data_dir, mode=0o700)
    for name in KEY_FILES:
        shutil.copy2(os.path.join(first.data_dir, name), second.data_dir)
    second.start()
    return first, second


def deadlocks(dsn):
    import psycopg
    name = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = %s",
                            (name,)).fetchone()[0]


def pair_names(count, run):
    pairs = []
    for index in range(count):
        on_a, on_b = f"x{run}n{index:04d}", f"y{run}n{index:04d}"
        pairs.append((on_a, on_b) if index % 2 == 0 else (on_b, on_a))
    return pairs


def server_cpu(first, second):
    """CPU-s of both trees and the cluster (counted once)."""
    a, b = first.cpu(), second.cpu()
    return a["total"] + b["total"] - b.get("postgres", 0.0), a.get("postgres", 0.0)


def one_run(workers, first, second, pairs, seconds, window):
    per_worker = [pairs[i::len(workers)] for i in range(len(workers))]
    for pipe, mine in zip(workers, per_worker):
        names = [name for pair in mine for name in pair]
        pipe.send(("login", names, 16, 120.0, True))
    for pipe in workers:
        reply = pipe.recv()
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
    before_deadlocks = deadlocks(first.storage)
    go = loadgen.now_ns() + int(0.3e9)
    for pipe, mine in zip(workers, per_worker):
        pipe.send(("relay", mine, go, seconds, window, 0.0, 10**9))
    time.sleep(max(0.0, (go - loadgen.now_ns()) / 1e9))
    cpu0, pg0 = server_cpu(first, second)
    replies = [pipe.recv() for pipe in workers]
    cpu1, pg1 = server_cpu(first, second)
    for pipe in workers:
        pipe.send(("logout_all",))
        pipe.recv()
    for reply in replies:
        if reply.get("errors"):
            raise RuntimeError(f"load generator errors: {reply['errors'][:3]}")
    received = sum(r["received"] for r in replies)
    wall = (max(r["last_receive"] for r in replies) - go) / 1e9
    latencies = sorted(x / 1e6 for r in replies for x in r["latencies"])
    return {"messages": received, "msgs_per_s": received / wall,
            "latency_p50_ms": latencies[len(latencies) // 2],
            "latency_p99_ms": latencies[int(len(latencies) * 0.99)],
            "server_cpu_s_per_10k": (cpu1 - cpu0) / received * 1e4,
            "postgres_cpu_s_per_10k": (pg1 - pg0) / received * 1e4,
            "send_errors": sum(r["send_errors"] for r in replies),
            "error_codes": _merged(r.get("error_codes") or {} for r in replies),
            "deadlocks": deadlocks(first.storage) - before_deadlocks}


def _merged(dicts):
    out = {}
    for each in dicts:
        for key, value in each.items():
            out[key] = out.get(key, 0) + value
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    files_dir = tempfile.mkdtemp(prefix="parley-bench-files-")
    first = second = None
    workers, procs = [], []
    try:
        first, second = start_servers(files_dir)
        ports = {"x": first.port, "y": second.port}
        ctx = multiprocessing.get_context("fork")
        for _ in range(2):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=loadgen.worker_main, args=(child, ports), daemon=True)
            proc.start()
            workers.append(parent)
            procs.append(proc)
        runs = [one_run(workers, first, second, pair_names(args.pairs, run), args.seconds,
                        args.window) for run in range(args.runs)]
    except BaseException:
        for each in (first, second):
            if each is not None:
                print(f"--- {each.log_path}:\n{each.log_tail()}", file=sys.stderr)
        raise
    finally:
        for pipe in workers:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        for each in (second, first):
            if each is not None:
                each.stop()
        shutil.rmtree(files_dir, ignore_errors=True)
    report(runs, args)


def report(runs, args):
    if args.json:
        print(json.dumps({"pairs": args.pairs, "seconds": args.seconds, "runs": runs}))
        return
    print(f"two servers on one PostgreSQL, {args.pairs} pairs across them, "
          f"window {args.window}, {args.seconds:g} s, {len(runs)} runs")
    for key in ("msgs_per_s", "latency_p50_ms", "latency_p99_ms", "server_cpu_s_per_10k",
                "postgres_cpu_s_per_10k", "send_errors", "deadlocks"):
        values = [run[key] for run in runs]
        print(f"  {key:24} median {statistics.median(values):10.2f}   "
              f"range {min(values):.2f}-{max(values):.2f}")
    codes = _merged(run["error_codes"] for run in runs)
    if codes:
        print(f"  error codes: {codes}")


if __name__ == "__main__":
    main()
