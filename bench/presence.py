"""Benchmark scenario for presence (issue 13): what a reconnect storm costs messages.

Registered by bench/run.py (name for the command line):
  presence    10 pairs send paced messages (1,000/s in all) while 200 more
              presence-enabled sessions are online, idle (`presence_base`),
              then the same while those 200 drop their connections at once
              and log in again, every `storm_period_s` (3 s), for the whole
              run (`presence`), then the same storm with the crowd's presence
              turned off (`presence_hidden`: the reconnections without any
              notice, to tell the cost of the notices from that of 200 logins):
              send->push latency of each, the storm's logins, and the
              presence notices each crowd session got

Every session, the pairs' and the crowd's, has presence on (the default), so
each one is told about the 200 coming and going; `presence_notices_max_per_session`
and `presence_notices_per_session_per_storm` count what a crowd session got
(the server sends at most one per session per second; a session lives one
storm period here). Worker 0 runs the pairs, worker 1 the crowd; the server
runs with tiny argon2 like the others.

The load-generator side (the storm, run inside one loadgen Engine) is the
second half of this file; its command is added to `loadgen.COMMANDS`.
"""

import loadgen
import run as bench      # the harness's helpers (Run, paced_once, pct, ...)
from loadgen import login_many, now_ns

SCENARIOS = ["presence"]
TARGETS = {}
UNITS = {f"{label}_{name}": unit for label in ("presence", "presence_hidden")
         for name, unit in (("storm_cycles", "storms"), ("storm_logins", "logins"),
                            ("notices_max_per_session", "notices"),
                            ("notices_per_session_per_storm", "notices"))}
CROWD = 200
RATE = 1000.0
STORM_PERIOD_S = 3.0


def scenario_presence(opts):
    run = bench.Run(opts, procs=2)       # worker 0: the paced pairs; worker 1: the crowd
    try:
        pairs = bench._pair_names(opts.paced_pairs)
        crowd = [f"crowd{i:03d}" for i in range(CROWD)]
        run.login([[n for p in pairs for n in p], crowd], concurrency=32)
        run.server.wait_settled(expect_users=2 * len(pairs) + CROWD)
        bench.paced_once(run, pairs, RATE, opts.paced_seconds, "presence_base", nworkers=1)
        go = loadgen.now_ns() + int(1.0e9)
        stop = go + int(opts.paced_seconds * 1e9)
        run.workers.send(1, ("presence_storm", crowd, go, stop, STORM_PERIOD_S))
        bench.paced_once(run, pairs, RATE, opts.paced_seconds, "presence", go=go,
                         nworkers=1)
        storm = run.workers.recv(1)
        _storm_figures(run, storm, "presence")
        run.workers.call([None, ("presence_set", crowd, "off", 60.0)])
        go = loadgen.now_ns() + int(1.0e9)
        stop = go + int(opts.paced_seconds * 1e9)
        run.workers.send(1, ("presence_storm", crowd, go, stop, STORM_PERIOD_S))
        bench.paced_once(run, pairs, RATE, opts.paced_seconds, "presence_hidden", go=go,
                         nworkers=1)
        _storm_figures(run, run.workers.recv(1), "presence_hidden")
    finally:
        run.close()
    return [run]


def _storm_figures(run, storm, label):
    f = run.figures
    f[f"{label}_storm_cycles"] = storm["cycles"]
    f[f"{label}_storm_logins"] = storm["logins"]
    f[f"{label}_storm_login_p99_ms"] = bench.pct(storm["login_ms"], 99)
    f[f"{label}_notices_max_per_session"] = storm["max_per_session"]
    f[f"{label}_notices_per_session_per_storm"] = (
        storm["notices"] / max(1, storm["sessions"]) / max(1, storm["cycles"]))
    run.details[f"{label}_storm"] = {k: v for k, v in storm.items() if k != "login_ms"}


RUNNERS = {"presence": scenario_presence}


# ==========================================================================
# Load-generator side: the storm inside one Engine (a worker command)


def presence_storm(engine, clients, codec, names, go_ns, stop_ns, period_s):
    """From `go_ns` until `stop_ns`: every `period_s`, the sessions of `names` (kept
    by an earlier login) drop their connections at once and log in again, all at
    once. Counts the presence notices every session gets, with their times."""
    seen = {}                              # session (its Client) -> [notice times, ns]

    def handler(client, op, data):
        if op == "System" and data.get("event") == "presence":
            seen.setdefault(client, []).append(now_ns())

    crowd = [clients[name] for name in names]
    for client in crowd:
        client.handler = handler
    engine.run_until(lambda: False, go_ns)
    cycles, login_ms = 0, []
    while now_ns() + int(period_s * 1e9) <= stop_ns:
        started = now_ns()
        for client in crowd:
            client.close()                 # the connections drop, as in a server restart
        crowd = login_many(engine, names, len(names), stop_ns + int(60e9), codec=codec,
                           handler=handler)
        login_ms += [(c.t["ready"] - c.t["connect"]) / 1e6 for c in crowd]
        cycles += 1
        engine.run_until(lambda: False, started + int(period_s * 1e9))
    engine.run_until(lambda: False, now_ns() + int(1.5e9))   # the last notices arrive
    clients.update({client.name: client for client in crowd})
    return {"cycles": cycles, "logins": len(login_ms), "login_ms": login_ms,
            **_notice_counts(seen, len(names) * (cycles + 1))}


def _notice_counts(seen, sessions):
    """Notices in all, and the most one session got (sessions: how many there were)."""
    return {"notices": sum(len(t) for t in seen.values()), "sessions": sessions,
            "max_per_session": max((len(t) for t in seen.values()), default=0)}


def presence_set(engine, clients, codec, names, state, timeout_s):
    """Every session of `names` sets its presence to `state`; waits for the answers."""
    waiting = set()

    def answered(client, op, data):
        if op in ("Result", "Error"):
            waiting.discard(client)

    for name in names:
        client = clients[name]
        client.handler = answered
        client.send("Presence", rid=1, state=state)
        waiting.add(client)
    if not engine.run_until(lambda: not waiting, now_ns() + int(timeout_s * 1e9)):
        raise loadgen.BenchError(f"{len(waiting)} Presence requests not answered")
    return {"set": len(names)}


loadgen.COMMANDS.update(presence_storm=presence_storm, presence_set=presence_set)
