"""Online backup beside live messages (issue 15): `python bench/backup.py [--messages 100000]`.

What it measures: a data dir is filled offline with `--messages` stored
messages (bodies of `--body` bytes, between two accounts made for it; the
text index is marked up to date so that its batches do not run meanwhile),
then a real server (bench/server.py) starts on it. One client (the tests'
RawClient: the real wire protocol, one Send at a time, each waiting for its
acknowledgement) sends messages all along; the send->acknowledgement
latency is recorded for `--seconds` alone (`before`), for as long as `admin
backup DIR` runs (`during`), and for `--seconds` alone again (`after`).
Printed: the backup's wall time as the admin command line sees it, the
seconds the database process reports, its size, and p50 / p99 / max
latency and the count of each phase. A figure of one run on a shared
machine: a guide, not a promise.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CODE = os.path.join(os.path.dirname(HERE), "Code")
sys.path.insert(0, HERE)
sys.path.insert(0, CODE)

from server import SERVER, BenchServer  # noqa: E402

from Modules.database import storage  # noqa: E402
from Tests.support.clients import RawClient, request  # noqa: E402

PASSWORD = "correct horse battery staple"


def fill(data_dir, count, body_bytes):
    """`count` messages between two filler accounts, the text index marked done."""
    db = storage.open_databases(data_dir)
    try:
        db.execute("BEGIN")
        for name in ("filler1", "filler2"):
            storage.create_account(db, name, "$argon2id$not-a-login", time.time())
        body = "x" * body_bytes
        for number in range(count):
            storage.insert_message(db, "filler1", "filler2", f"subject {number}", body,
                                   time.time())
        db.execute("UPDATE msg.text_index_state SET indexed_through = "
                   "(SELECT max(id) FROM msg.messages)")
        db.execute("COMMIT")
    finally:
        storage.close_databases(db)


class Pinger(threading.Thread):
    """One Send at a time; (monotonic time sent, latency seconds) of each."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RawClient(port, timeout=60)
        assert self.client.login("pinger", PASSWORD, create=True).op == "Welcome"
        self.client.until_ready()
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        number = 0
        while not self.stopping.is_set():
            number += 1
            sent = time.monotonic()
            reply = request(self.client, "Send", to="filler2", subject="ping",
                            body="ping", client_id=f"ping-{number}")
            assert reply.op == "Result", reply
            self.samples.append((sent, time.monotonic() - sent))


def summary(samples, start, end):
    chosen = sorted(lat for sent, lat in samples if start <= sent < end)
    if not chosen:
        return {"count": 0}
    return {"count": len(chosen), "p50_ms": round(statistics.median(chosen) * 1000, 2),
            "p99_ms": round(chosen[min(len(chosen) - 1, int(len(chosen) * 0.99))] * 1000, 2),
            "max_ms": round(chosen[-1] * 1000, 2)}


def run(args):
    server = BenchServer()
    target_parent = tempfile.mkdtemp(prefix="parley-bench-backup-")
    try:
        filled = time.monotonic()
        fill(server.data_dir, args.messages, args.body)
        filled = time.monotonic() - filled
        server.start()
        pinger = Pinger(server.port)
        pinger.start()
        time.sleep(args.seconds)                   # the 'before' phase (a bench: wall time)
        began = time.monotonic()
        done = subprocess.run([sys.executable, SERVER, "admin", "--data-dir",
                               server.data_dir, "--json", "backup",
                               os.path.join(target_parent, "b")], capture_output=True,
                              text=True, env=server.env(), timeout=600)
        ended = time.monotonic()
        time.sleep(args.seconds)                   # the 'after' phase
        pinger.stopping.set()
        pinger.join(60)
        reply = json.loads(done.stdout)
        return {"messages": args.messages, "fill_seconds": round(filled, 1),
                "backup_wall_seconds": round(ended - began, 3),
                "backup_reported_seconds": reply.get("seconds"),
                "backup_bytes": reply.get("bytes"), "status": reply.get("status"),
                "before": summary(pinger.samples, began - args.seconds, began),
                "during": summary(pinger.samples, began, ended),
                "after": summary(pinger.samples, ended, ended + args.seconds),
                "slowest_during": [  # (ms after the backup began, latency ms)
                    (round((sent - began) * 1000), round(lat * 1000, 1)) for sent, lat in
                    sorted((s for s in pinger.samples if began <= s[0] < ended),
                           key=lambda s: -s[1])[:3]]}
    finally:
        server.stop()
        shutil.rmtree(target_parent, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--body", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
