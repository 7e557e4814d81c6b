"""Soak test: N clients exchange messages for T minutes; nothing lost, nothing leaks.

    python tools/soak.py --clients 200 --minutes 10 --rate 200 [--seed 1]

Starts a real server (tiny argon2 parameters, temporary data dir), creates
N accounts, and measures the server's process tree (proportional set size
and open file descriptors, from /proc) with nobody connected. Then N client
threads, each logged in through the real protocol (Code/Tests/support/crash_harness
`Session`), send messages to random others at `--rate` messages/s in total,
for `--minutes`, acknowledging what they receive. At the end every client
reads on until its messages have arrived, acknowledges, and logs out; each
user then logs in once more to collect anything not acknowledged; the tree
is measured again with nobody connected; the server is stopped with
SIGTERM and storage.check_consistency() is run on its files.

It prints the figures and exits 1 if any message was lost, delivered twice
after being acknowledged, or delivered without having been sent, if the
databases disagree, or if memory (PSS) or open files did not come back to
their starting level (within `--memory-slack` MiB). Every loop is bounded
in time; the server's process group is always killed at the end. Traffic
goes to 127.0.0.1 only.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Code"))

from Modules.database import storage  # noqa: E402
from Tests.support.crash_harness import Disconnected, Session  # noqa: E402
from Tests.support import ServerProcess, wait_until  # noqa: E402

SPARES = 4   # the server's spare processes (its default), so that "idle" means one thing


def tree_resources(server):
    """(PSS in KiB, open file descriptors) summed over the server's process tree."""
    pss = fds = 0
    for pid in server.processes():
        pss += _pss_kib(pid)
        try:
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return pss, fds


def _pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Tally:
    """What every client saw, shared by the threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {}                      # message id -> recipient (acknowledged sends)
        self.received = defaultdict(Counter)   # recipient -> Counter of ids received
        self.confirmed = defaultdict(set)   # recipient -> ids whose Ack was confirmed
        self.duplicates = []
        self.counts = Counter()

    def sent_ok(self, message_id, to):
        with self.lock:
            self.sent[message_id] = to
            self.counts["sends acknowledged"] += 1

    def got(self, user, message):
        with self.lock:
            if message["id"] in self.confirmed[user]:
                self.duplicates.append((user, message["id"]))
            self.received[user][message["id"]] += 1

    def confirm(self, user, ids):
        with self.lock:
            self.confirmed[user].update(ids)

    def problems(self):
        lost = [(to, mid) for mid, to in self.sent.items() if not self.received[to][mid]]
        phantom = [(user, mid) for user, ids in self.received.items() for mid in ids
                   if self.sent.get(mid) != user]
        return ([f"lost: message {mid} to {to}" for to, mid in lost[:20]]
                + [f"delivered twice after its Ack: {mid} to {u}" for u, mid in
                   self.duplicates[:20]]
                + [f"never sent: {mid} to {u}" for u, mid in phantom[:20]])


class SoakClient(threading.Thread):
    """One user: send at its share of the rate, read, acknowledge, until told to stop."""

    def __init__(self, port, name, names, interval, tally, deadline, seed):
        super().__init__(daemon=True)
        self.port, self.name_, self.names = port, name, names
        self.interval, self.tally, self.deadline = interval, tally, deadline
        self.rng = random.Random(seed)
        self.error = None

    def run(self):
        try:
            session = Session(self.port, self.name_)
            self._take(session, session.backlog)
            self._exchange(session)
            self._settle(session)
            session.logout()
        except (Disconnected, OSError) as error:
            self.error = f"{self.name_}: {error}"

    def _exchange(self, session):
        next_send, count = time.monotonic() + self.rng.uniform(0, self.interval), 0
        while time.monotonic() < self.deadline:
            if time.monotonic() >= next_send:
                count += 1
                self._send(session, count)
                next_send += self.interval
            message = session.next_message(timeout=min(0.5, self.interval))
            if message is not None:
                self._take(session, [message] + self._drain_pushed(session))

    def _send(self, session, count):
        to = self.rng.choice([n for n in self.names if n != self.name_])
        client_id = f"{self.name_}-{count}"
        for _ in range(5):
            answer = session.send_message(to, f"soak {count}", client_id, body="x" * 100)
            if answer.op == "Result":
                self.tally.sent_ok(answer.data["id"], to)
                return
        self.tally.counts["sends refused"] += 1

    def _settle(self, session):
        """Read on for a while after the deadline, so messages in flight arrive."""
        quiet_until = time.monotonic() + 3.0
        while time.monotonic() < quiet_until:
            message = session.next_message(timeout=0.5)
            if message is not None:
                self._take(session, [message] + self._drain_pushed(session))
                quiet_until = time.monotonic() + 3.0

    @staticmethod
    def _drain_pushed(session):
        pushed, session.pushed = session.pushed, []
        return pushed

    def _take(self, session, messages):
        for message in messages:
            self.tally.got(self.name_, message)
        ids = [m["id"] for m in messages]
        if ids and session.ack_confirmed(ids):
            self.tally.confirm(self.name_, ids)
        self._take_pushed_during_ack(session)

    def _take_pushed_during_ack(self, session):
        if session.pushed:
            self._take(session, self._drain_pushed(session))


def collect_leftovers(port, names, tally):
    """Each user logs in once more and takes what it never acknowledged."""
    for name in names:
        session = Session(port, name)
        for message in session.backlog:
            tally.got(name, message)
        if session.backlog and session.ack_confirmed([m["id"] for m in session.backlog]):
            tally.confirm(name, [m["id"] for m in session.backlog])
        session.logout()


def quiet(server):
    """No session or login process left, and every spare started: the idle tree."""
    return not server.pids_titled("parley: user") and not server.pids_titled("parley: login") \
        and len(server.pids_titled("parley: spare")) == SPARES


def settle_resources(server, baseline_fds, seconds=15.0):
    """Tree resources once the processes of the sessions have ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if quiet(server) and tree_resources(server)[1] <= baseline_fds:
            break
        time.sleep(0.5)
    return tree_resources(server)


def run(options):
    base = Path(tempfile.mkdtemp(prefix="parley-soak-"))
    many = str(10 * (options.clients + 50))
    # One address (127.0.0.1) creates every account and opens every connection:
    # the limits meant for strangers (20 new accounts per address and hour, 10
    # connections per second...) are lifted, as bench/server.py does.
    server = ServerProcess(base, "--max-clients", str(options.clients + 50),
                           "--registrations-per-address", many,
                           "--registrations-per-hour", many,
                           "--connection-rate-per-address", many,
                           "--max-startups", many, "--max-startups-per-address", many,
                           "--spare-processes", str(SPARES))
    try:
        return soak(server, options)
    finally:
        server.kill_group()
        shutil.rmtree(base, ignore_errors=True)


def soak(server, options):
    server.start()
    names = [f"soak{i}" for i in range(options.clients)]
    for name in names:
        Session(server.port, name, create=True).logout()
    wait_until(lambda: quiet(server), message="quiet tree")   # the spares refilled too
    before = tree_resources(server)
    tally, started = Tally(), time.monotonic()
    clients = start_clients(server.port, names, options, tally)
    peak = watch_peak(server, clients)
    errors = [c.error for c in clients if c.error]
    collect_leftovers(server.port, names, tally)
    after = settle_resources(server, before[1])
    server.stop()
    problems = tally.problems() + storage_check(server.data_dir)
    problems += resource_problems(before, after, options.memory_slack)
    report(options, time.monotonic() - started, tally, before, peak, after, errors, problems)
    return 1 if problems or errors else 0


def start_clients(port, names, options, tally):
    interval = options.clients / options.rate
    deadline = time.monotonic() + options.minutes * 60
    clients = [SoakClient(port, name, names, interval, tally, deadline,
                          seed=options.seed * 100_000 + i) for i, name in enumerate(names)]
    for client in clients:
        client.start()
    return clients


def watch_peak(server, clients):
    peak = (0, 0)
    while any(c.is_alive() for c in clients):
        peak = max(peak, tree_resources(server))
        for client in clients:
            client.join(timeout=1.0 / max(1, len(clients)))
    return peak


def storage_check(data_dir):
    db = storage.open_databases(data_dir)
    try:
        return storage.check_consistency(db)
    finally:
        storage.close_databases(db)


def resource_problems(before, after, slack_mib):
    problems = []
    if after[0] > before[0] + slack_mib * 1024:
        problems.append(f"memory did not come back: PSS {before[0]} KiB before, "
                        f"{after[0]} KiB after")
    if after[1] > before[1]:
        problems.append(f"open files did not come back: {before[1]} before, {after[1]} after")
    return problems


def report(options, seconds, tally, before, peak, after, errors, problems):
    print(f"soak: {options.clients} clients, {options.minutes} min at {options.rate} msg/s "
          f"(seed {options.seed}), {seconds:.0f} s in all")
    for key, value in sorted(tally.counts.items()):
        print(f"  {key}: {value}")
    print(f"  messages received: {sum(sum(c.values()) for c in tally.received.values())}")
    print(f"  server tree PSS KiB / open fds: before {before[0]} / {before[1]}, "
          f"peak {peak[0]} / {peak[1]}, after {after[0]} / {after[1]}")
    print(f"  client errors: {len(errors)}")
    for line in errors[:10] + problems:
        print(f"    {line}")
    print("  result:", "FAILED" if problems or errors else "ok")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s in total")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-slack", type=float, default=8.0,
                        help="MiB the idle tree may grow by (caches, WAL index)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse(sys.argv[1:])))
