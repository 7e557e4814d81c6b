"""Benchmark of parked sessions (issue 16): memory, wake latency, a broadcast.

    python bench/parking.py --quick        # N = 1,000 parked sessions
    python bench/parking.py                # N = 10,000
    python bench/parking.py --wake-costs   # CPU of one wake, by process role
    python bench/parking.py --hold 600 --memory-only   # N = 10,000 held parked 10 minutes

Runs the real server (tiny argon2, `bench/server.py`) with `--park-after 0.5`
and one in-process load generator (`bench/loadgen.py`, codec "fast"):

1. memory: PSS of the whole server tree idle, then with N sessions logged in
   and parked (every user process gone); per parked session = the difference / N;
   with `--hold S`, the N sessions stay parked S seconds, the PSS sampled every 30 s
   (growth and spread: is memory flat?);
2. wake latency: an active sender sends to 200 (quick: 100) parked recipients,
   one every 250 ms; each recipient gets a second message 120 ms after the first,
   while its woken session is still active: send->push latency of both (p50/p99);
3. broadcast: `admin broadcast` to the N parked sessions while two active
   sessions exchange paced traffic (50 messages/s): time from the admin command
   to the last delivery (and first to last), the paced traffic's p50/p99 (and for
   5 s before, alone), and the server tree's CPU-seconds for it (per recipient:
   the stable figure on a shared machine).

Prints one JSON object of figures, with the load average. Latency and time
figures are noisy on a shared 2-core machine; PSS is the stable one.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen                                  # noqa: E402
from loadgen import login_many, now_ns          # noqa: E402
from server import SERVER, BenchServer, load_average   # noqa: E402

PARK_AFTER = 0.5


def pct(values, p):
    values = sorted(values)
    if not values:
        return None
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class Inbox:
    """The handler of every bench client: records each Message's latency, acks it."""

    def __init__(self):
        self.latency = {}      # tag -> [ms]
        self.got = {}          # tag -> count
        self.first = self.last = None

    def __call__(self, client, op, data):
        if op != "Message":
            return
        client.send("Ack", ids=[data["id"]])
        tag, _, sent = data["body"].partition(" ")
        now = now_ns()
        if tag == "broadcast" or data.get("kind") == "broadcast":
            tag = "broadcast"
            self.first = self.first or now
            self.last = now
        elif sent.isdigit():
            self.latency.setdefault(tag, []).append((now - int(sent)) / 1e6)
        self.got[tag] = self.got.get(tag, 0) + 1


def parked_all(server, timeout=600):
    deadline = time.monotonic() + timeout
    while server.count_roles().get("user", 0):
        if time.monotonic() > deadline:
            raise RuntimeError(f"sessions did not park: {server.count_roles()}")
        time.sleep(0.2)


_RIDS = {}


def message(client, to, tag):
    rid = _RIDS[client.name] = _RIDS.get(client.name, 0) + 1
    client.send("Send", rid=rid, to=to, subject=tag, body=f"{tag} {now_ns()}",
                client_id=f"{client.name}-{rid}")


def hold(engine, server, seconds, figures, every=30.0):
    """Keep the N sessions parked for `seconds`, the PSS of the tree sampled every
    `every` s: is memory flat? (The load generator pumps its sockets meanwhile.)"""
    samples, end = [], time.monotonic() + seconds
    while True:
        samples.append(server.pss_kib()["total"])
        if time.monotonic() >= end:
            break
        pump(engine, min(every, max(0.0, end - time.monotonic())))
    figures["hold_s"] = seconds
    figures["hold_pss_samples_kib"] = samples
    figures["hold_pss_growth_kib"] = samples[-1] - samples[0]
    figures["hold_pss_spread_kib"] = max(samples) - min(samples)
    figures["hold_still_parked"] = server.count_roles().get("user", 0) == 0


def run(n, latency_count, hold_s=0.0, memory_only=False):
    figures = {"parked_sessions": n, "load_average_start": load_average()}
    server = BenchServer(extra_args=("--park-after", str(PARK_AFTER))).start()
    inbox = Inbox()
    engine = loadgen.Engine(server.port)
    try:
        time.sleep(1.0)
        idle = server.pss_kib()
        figures["pss_idle_kib"] = idle["total"]
        started = time.monotonic()
        crowd = login_many(engine, [f"park{i:05d}" for i in range(n)], 16,
                           now_ns() + int(1800e9), handler=inbox)
        figures["login_s"] = round(time.monotonic() - started, 1)
        pump(engine, 0.1)
        parked_all(server)
        time.sleep(2.0)
        pss = server.pss_kib()
        figures["pss_parked_kib"] = pss["total"]
        figures["pss_per_parked_session_kib"] = round((pss["total"] - idle["total"]) / n, 1)
        figures["pss_by_role_kib"] = {k: v for k, v in pss.items() if k not in ("total",)}
        if hold_s:
            hold(engine, server, hold_s, figures)
        if not memory_only:
            latency(engine, server, inbox, crowd[:latency_count], figures)
            broadcast(engine, server, inbox, n, figures)
    finally:
        figures["load_average_end"] = load_average()
        server.stop()
    return figures


def pump(engine, seconds):
    engine.run_until(lambda: False, now_ns() + int(seconds * 1e9))


def latency(engine, server, inbox, recipients, figures):
    (sender,) = login_many(engine, ["parksender"], 1, now_ns() + int(60e9), handler=inbox)
    parked_all(server)       # the recipients parked (the sender too, until it sends)
    message(sender, sender.name, "warm")
    pump(engine, 0.1)
    for client in recipients:
        message(sender, client.name, "parked")
        pump(engine, 0.12)
        message(sender, client.name, "active")
        pump(engine, 0.13)
    engine.run_until(lambda: inbox.got.get("active", 0) >= len(recipients),
                     now_ns() + int(60e9))
    for tag in ("parked", "active"):
        values = inbox.latency.get(tag, [])
        figures[f"latency_{tag}_p50_ms"] = round(pct(values, 50), 2)
        figures[f"latency_{tag}_p99_ms"] = round(pct(values, 99), 2)
        figures[f"latency_{tag}_count"] = len(values)
    figures["wake_extra_p99_ms"] = round(figures["latency_parked_p99_ms"]
                                         - figures["latency_active_p99_ms"], 2)


def broadcast(engine, server, inbox, n, figures):
    a, b = login_many(engine, ["parklive0", "parklive1"], 2, now_ns() + int(60e9),
                      handler=inbox)
    pump(engine, 1.0)
    paced_live(engine, a, b, 5.0)      # the live traffic alone first, for comparison
    live = inbox.latency.pop("live", [])
    figures["live_alone_p50_ms"] = round(pct(live, 50), 2)
    figures["live_alone_p99_ms"] = round(pct(live, 99), 2)
    cpu_before = server.cpu()["total"]
    started = now_ns()
    admin = subprocess.Popen([sys.executable, SERVER, "admin", "--data-dir", server.data_dir,
                              "broadcast", "broadcast to everyone"], env=server.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    want = n + 3                       # the crowd, the sender, the two live ones
    deadline = now_ns() + int(600e9)
    turn = 0
    while inbox.got.get("broadcast", 0) < want and now_ns() < deadline:
        message(a if turn % 2 else b, (b if turn % 2 else a).name, "live")
        turn += 1
        pump(engine, 0.02)             # 50 paced messages a second
    admin.wait(60)
    cpu = server.cpu()["total"] - cpu_before
    figures["broadcast_server_cpu_s"] = round(cpu, 2)
    figures["broadcast_cpu_ms_per_parked_recipient"] = round(1000 * cpu / n, 2)
    figures["broadcast_delivered"] = inbox.got.get("broadcast", 0)
    figures["broadcast_expected"] = want
    figures["broadcast_all_delivered_s"] = round((inbox.last - started) / 1e9, 2)
    figures["broadcast_first_to_last_s"] = round((inbox.last - inbox.first) / 1e9, 2)
    live = inbox.latency.get("live", [])
    figures["live_during_broadcast_p50_ms"] = round(pct(live, 50), 2)
    figures["live_during_broadcast_p99_ms"] = round(pct(live, 99), 2)
    figures["live_during_broadcast_count"] = len(live)


def paced_live(engine, a, b, seconds):
    deadline, turn = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        message(a if turn % 2 else b, (b if turn % 2 else a).name, "live")
        turn += 1
        pump(engine, 0.02)


def wake_costs(count=30):
    """`--wake-costs`: the server tree's CPU per wake, by role, for `count` wakes by a
    client's request (an Inbox) of one parked session (it parks again after each)."""
    server = BenchServer(extra_args=("--park-after", str(PARK_AFTER))).start()
    engine = loadgen.Engine(server.port)
    figures = {"wakes": count, "load_average_start": load_average()}
    try:
        (client,) = login_many(engine, ["waker"], 1, now_ns() + int(60e9), handler=Inbox())
        parked_all(server)
        before = server.cpu()
        for n in range(count):
            client.send("Inbox", rid=n + 1)
            pump(engine, 0.3)
            parked_all(server)
        after = server.cpu()
        figures["cpu_ms_per_wake"] = {role: round(1000 * (after.get(role, 0) - value) / count,
                                                  1) for role, value in before.items()}
    finally:
        figures["load_average_end"] = load_average()
        server.stop()
    return figures


def main(argv):
    if "--wake-costs" in argv:
        print(json.dumps(wake_costs(), indent=1))
        return
    quick = "--quick" in argv
    n = 1000 if quick else 10_000
    if "--sessions" in argv:           # a smaller run, to try the bench itself
        n = int(argv[argv.index("--sessions") + 1])
    hold_s = float(argv[argv.index("--hold") + 1]) if "--hold" in argv else 0.0
    print(json.dumps(run(n, min(n, 100 if quick else 200), hold_s, "--memory-only" in argv),
                     indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
