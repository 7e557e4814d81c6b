"""The long crash run: many kills, many messages, then the promise is checked.

    python bench/crash_soak.py --kills 60 --messages 3000 [--users 10] [--seed 7]
                               [--kinds database,user,login,tree] [--pipeline 1] [--keep]

What it does: runs `Code/Tests/support/crash_harness.py` (the same harness as the
fast tests in `Code/Tests/test_crash_safety.py`) once with the numbers
given: real server, one client thread per user speaking the wire protocol,
SIGKILL of the chosen kinds of process at seeded random points, restarts,
then a clean drain and a check of every acknowledgement against what was
delivered and stored. Extra kinds, outside the default four: `forkserver`
(the multiprocessing forkserver) and `daemon` (the daemon alone, then a new
server is started the way a supervisor would).

Talks to: a server it starts itself in a new temporary directory (kept with
--keep or when a violation is found, so the data dir and server.log can be
examined; removed otherwise). Every server process is killed by process
group before it exits.

How it fails: prints the figures (acknowledgements, kills by kind,
reconnects, re-pushes, violations, one line each) and exits 1 if any
promise was broken, 0 otherwise. The same --seed gives the same plan
(messages, senders, kill kinds and points), not the same timings.
"""

import argparse
import os
import shutil
import sys
import tempfile

CODE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Code")
sys.path.insert(0, CODE_DIR)

from Tests.support.crash_harness import EXTRA_KINDS, KINDS, CrashRun, RunConfig


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Kill Parley's processes at random while "
                                     "clients send and read; check nothing is lost.")
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs to send (default 60)")
    parser.add_argument("--messages", type=int, default=3000,
                        help="messages to send in all (default 3000)")
    parser.add_argument("--users", type=int, default=10, help="client threads (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="Sends each client keeps in flight (default 1)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated kinds to kill, from "
                             f"{','.join(KINDS + EXTRA_KINDS)} (default: the first four)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed for the sending phase "
                             "(default 60 + messages/2 + 10 per kill)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and log")
    args = parser.parse_args(argv)
    args.kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(args.kinds) - set(KINDS + EXTRA_KINDS)
    if unknown or not args.kinds:
        parser.error(f"unknown kinds {sorted(unknown)}; use {','.join(KINDS + EXTRA_KINDS)}")
    if args.users < 2 or args.messages < 1 or args.kills < 0 or args.pipeline < 1:
        parser.error("need --users >= 2, --messages >= 1, --kills >= 0, --pipeline >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    timeout = args.timeout or 60 + args.messages / 2 + 10 * args.kills
    config = RunConfig(users=args.users, messages=args.messages, kills=args.kills,
                       seed=args.seed, kinds=args.kinds, pipeline=args.pipeline,
                       timeout=timeout)
    base_dir = tempfile.mkdtemp(prefix="parley-soak-")
    report = CrashRun(base_dir, config).run()
    print(report.figures(), flush=True)
    if args.keep or not report.ok():
        print(f"data dir and server.log kept in {base_dir}")
    else:
        shutil.rmtree(base_dir, ignore_errors=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
