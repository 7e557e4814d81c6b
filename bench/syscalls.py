"""Syscall counts of the server during a relay: `strace -c` on the database
process (all threads) and on one sender's user process.

    python bench/syscalls.py [--pairs 10] [--rate 0|MSGS_PER_S] [--seconds 5]

Rate 0 (the default) is a saturation relay, otherwise a paced one. strace
slows the traced processes a lot: use the counts per message, not the
throughput it prints. Needs `strace` (apt-get install strace).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    ns = argparse.Namespace(quick=True, runs=1, procs=2, codec="fast", pairs=str(args.pairs),
                            seconds=args.seconds, window=16, rates="1000", profile=None,
                            server_cwd=None)
    run = bench.Run(bench.Options(ns), procs=2)
    out = tempfile.mkdtemp(prefix="parley-strace-")
    try:
        pairs = bench._pair_names(args.pairs)
        bench._login_pairs(run, pairs)
        database = run.server.database_pid()
        sender = [p for p, t in run.server.pids().items() if t.endswith("user s0000")][0]
        tracers = [subprocess.Popen(["strace", "-f", "-c", "-o", f"{out}/database.txt", "-p",
                                     str(database)]),
                   subprocess.Popen(["strace", "-c", "-o", f"{out}/user_s0000.txt", "-p",
                                     str(sender)])]
        time.sleep(0.5)
        if args.rate:
            bench.paced_once(run, pairs, args.rate, args.seconds, "traced")
        else:
            bench.relay_once(run, pairs, args.seconds, 16, "traced")
        for tracer in tracers:
            tracer.terminate()
            tracer.wait(30)
        print({k: round(v, 2) for k, v in run.figures.items()})
        print(run.details.get("traced"))
        for name in ("database", "user_s0000"):
            print(f"\n== {name} (whole run; relayed messages: "
                  f"{run.details['traced']['messages']}, this sender's share "
                  f"~1/{args.pairs})")
            with open(f"{out}/{name}.txt") as f:
                print(f.read())
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
