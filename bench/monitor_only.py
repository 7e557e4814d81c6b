"""The database process alone: its CPU per relayed message, without user processes.

    python bench/monitor_only.py [--pairs 20] [--messages 20000] [--window 16] [--runs 3]
                                 [--json] [--profile FILE]

Starts a real database process (as the tests do: a forkserver child on
SQLite files in a temporary directory, `synchronous=FULL`) and drives it
over its Unix socket with `DbLink`, the client the user processes use:
`pairs` senders each keep `window` Sends in flight to their own
recipient, and each recipient, subscribed, acknowledges what was pushed
to it (one Ack per batch it reads). No TCP, no Noise, no user process:
what is left is the serial stage of the relay, the database process's
main thread (requests in, replies and pushes out) and its writer thread
(SQL), which `/proc/PID/task/*/stat` gives apart. Prints the median and
range over the runs of CPU-µs per message of the main thread, of the
other threads and of the whole process; the driver's own CPU is not
counted. On a shared machine CPU per message is the stable figure;
messages/s is printed but depends on the load.
"""

import argparse
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "Code"))

from Modules.database.link import Push, Reply  # noqa: E402
from Tests.support import running_database  # noqa: E402
from Tests.support.monitor import user_link  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
BODY = "x" * 100


def thread_cpu(pid):
    """{thread id: CPU seconds} of every thread of `pid` (the main thread's id is `pid`)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def start_profile(pid, path):
    """py-spy on the database process while the messages flow (`--profile`)."""
    if path is None:
        return None
    spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--threads", "--nonblocking",
                            "--rate", "250", "--format", "raw", "--output", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)   # attached
    return spy


def stop_profile(spy):
    if spy is not None:
        spy.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
        spy.wait(60)


def one_run(pairs, messages, window, profile=None):
    with tempfile.TemporaryDirectory() as tmp, running_database(
            Path(tmp), Path(tmp) / "database.log", log_level="WARNING",
            registration={"per_address": 10_000, "per_hour": 10_000}) as (proc, config):
        senders = [user_link(config, f"snd{i}") for i in range(pairs)]
        recipients = [user_link(config, f"rcv{i}") for i in range(pairs)]
        for db in recipients:
            db.call("Subscribe")
        selector = selectors.DefaultSelector()
        for i, db in enumerate(senders + recipients):
            db.sock.setblocking(False)
            selector.register(db.sock, selectors.EVENT_READ, (i, db))
        per_sender = messages // pairs
        sent, answered, acked = [0] * pairs, [0] * pairs, 0
        spy = start_profile(proc.pid, profile)
        before, t0 = thread_cpu(proc.pid), time.monotonic()

        def top_up(i):
            while sent[i] < per_sender and sent[i] - answered[i] < window:
                senders[i].send_request("Send", now=False, to=f"rcv{i}", subject="bench",
                                        body=BODY, client_id=f"c{sent[i]}")
                sent[i] += 1
            senders[i].flush()

        for i in range(pairs):
            top_up(i)
        total = per_sender * pairs
        while acked < total or sum(answered) < total:
            for key, _ in selector.select(10):
                i, db = key.data
                data = db.sock.recv(262144)
                if not data:
                    raise RuntimeError("the database closed a connection")
                db.feed(data)
                ids = []
                for event in db.events():
                    if isinstance(event, Reply) and i < pairs:
                        answered[i] += 1
                    elif isinstance(event, Push):
                        ids += [m["id"] for m in event.messages]
                if i < pairs:
                    top_up(i)
                elif ids:
                    db.send_request("Ack", ids=ids)
                    acked += len(ids)
        wall = time.monotonic() - t0
        time.sleep(0.1)   # the last lazy Ack's commit
        after = thread_cpu(proc.pid)
        stop_profile(spy)
    main = after[proc.pid] - before[proc.pid]
    whole = sum(after.values()) - sum(before.get(n, 0) for n in after)
    return {"msgs_per_s": total / wall, "main_us": main / total * 1e6,
            "other_threads_us": (whole - main) / total * 1e6, "process_us": whole / total * 1e6,
            "load": os.getloadavg()[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="py-spy raw profile of the last run "
                        "(bench/profile_summary.py FILE)")
    args = parser.parse_args(argv)
    runs = [one_run(args.pairs, args.messages, args.window,
                    args.profile if run == args.runs - 1 else None) for run in range(args.runs)]
    summary = {key: {"median": statistics.median(r[key] for r in runs),
                     "min": min(r[key] for r in runs), "max": max(r[key] for r in runs),
                     "runs": [round(r[key], 1) for r in runs]} for key in runs[0]}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for key, s in summary.items():
            print(f"{key:18} median {s['median']:9.1f}  range {s['min']:.1f}-{s['max']:.1f}  "
                  f"{s['runs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
