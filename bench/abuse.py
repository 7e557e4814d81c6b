"""Benchmark scenarios for "fair under abuse": what one abuser costs everyone else.

Registered by bench/run.py (names for the command line):
  readflood   10 accounts flood `Inbox` (limit 200, 16 outstanding each) while 5
              pairs send paced messages (100/s in all): send->push latency with
              and without the flood, the flood's answers, PSS around it
  prelogin    one address (127.0.0.2) holds as many idle, handshaken pre-login
              connections as the server admits; 20 logins in a row from
              127.0.0.1: their latency
  createflood 32 connections from 127.0.0.2 keep trying to create random
              accounts while existing users log in from 127.0.0.1 at 2/s
              (argon2 defaults): their latency, the flood's outcomes, PSS

PSS "before" and "after" are taken in the same state (the abuser offline, the
others still there, the server settled; "after" `Sizes.settle_s` after the abuser
closed everything), "during" is the peak of samples taken every second or so.

`prelogin` and `createflood` run the server with its default per-address limits
(`BenchServer(default_limits=True)`); Linux routes all of 127/8 to loopback, so
the abuser's sockets are bound to 127.0.0.2 before connecting. `prelogin` and
`readflood` use tiny argon2 like the other scenarios, `createflood` the defaults.

The load-generator side (traffic patterns run inside one loadgen Engine) is the
second half of this file; its commands are added to `loadgen.COMMANDS`.
"""

import os
import re
import time

import loadgen
import run as bench      # the harness's helpers (Run, paced_once, pct, ...)
from loadgen import DONE, Client, now_ns
from server import PssSampler
from Modules.wire import channel as channel_mod
from Modules.wire.framing import CLOSED, NEED_DATA
from Modules.wire.serializers import BINARY, Packet

SCENARIOS = ["readflood", "prelogin", "createflood"]
TARGETS = {
    "readflood_p99_ms": "<= 100",
    "readflood_max_ms": "<= 500",
    "readflood_pss_after_over_before": "<= 1.2",
    "prelogin_login_p99_ms": "<= 1000",
    "prelogin_pss_after_over_before": "<= 1.2",
    "createflood_login_p99_ms": "<= 1000",
    "createflood_pss_after_over_before": "<= 1.2",
}
UNITS = {
    "readflood_pss_after_over_before": "ratio",
    "createflood_pss_after_over_before": "ratio",
    "prelogin_pss_after_over_before": "ratio",
    "readflood_flood_rate_limited": "requests",
    "readflood_flood_errors": "requests",
    "prelogin_attacker_held": "connections",
    "prelogin_attacker_accepted_before_refusal": "connections",
    "prelogin_login_retries": "retries",
    "createflood_login_retries": "retries",
    "createflood_flood_created": "accounts",
    "createflood_flood_refused": "answers",
    "createflood_flood_busy": "answers",
    "createflood_flood_closed": "connections",
    "createflood_flood_connections_refused": "connections",
}
ABUSER = "127.0.0.2"        # the abuser's source address; everyone else is 127.0.0.1


class Sizes:
    """How big each scenario is; --quick shrinks the durations."""

    def __init__(self, opts):
        q = opts.quick
        self.readflood_accounts = 10
        self.readflood_inbox = 200
        self.readflood_pairs = 5
        self.readflood_rate = 100.0
        self.readflood_window = 16
        self.readflood_seconds = 4.0 if q else 10.0
        self.prelogin_logins = 20
        self.createflood_connections = 32
        self.createflood_login_rate = 2.0
        self.createflood_seconds = 10.0 if q else 30.0
        self.createflood_reconnect_s = 0.1
        self.settle_s = 3.0         # "after": this long after the abuser went away


# --------------------------------------------------------------------------
# Scenario: readflood


def scenario_readflood(opts):
    s = Sizes(opts)
    run = bench.Run(opts, procs=2)       # worker 0: the paced pairs; worker 1: the flood
    try:
        pairs = bench._pair_names(s.readflood_pairs)
        flooders = [f"flood{i:02d}" for i in range(s.readflood_accounts)]
        _fill_inboxes(run, flooders, s.readflood_inbox)
        run.login([[n for p in pairs for n in p], None])
        run.server.wait_settled(expect_users=2 * len(pairs))
        bench.paced_once(run, pairs, s.readflood_rate, s.readflood_seconds,
                         "readflood_base", nworkers=1)
        before = _settled_pss(run, 2 * len(pairs), 1.0)
        flood, during = _paced_during_read_flood(run, s, pairs, flooders)
        after = _settled_pss(run, 2 * len(pairs), s.settle_s)
        _readflood_figures(run, flood, before, during, after)
    finally:
        run.close()
    return [run]


def _paced_during_read_flood(run, s, pairs, flooders):
    """The flooders log in (worker 1), flood from 0.5 s before the paced sends
    (worker 0) to 1 s after the last, then log out and close."""
    run.login([None, flooders], concurrency=len(flooders))
    run.server.wait_settled(expect_users=2 * len(pairs) + len(flooders))
    run.figures["readflood_pss_flooders_online_kib"] = run.server.pss_kib()["total"]
    go = loadgen.now_ns() + int(1.0e9)
    stop = go + int((s.readflood_seconds + 1.0) * 1e9)
    run.workers.send(1, ("read_flood", flooders, go - int(0.5e9), stop,
                         s.readflood_window, s.readflood_inbox))
    with PssSampler(run.server) as during:
        bench.paced_once(run, pairs, s.readflood_rate, s.readflood_seconds, "readflood",
                         go=go, nworkers=1)
        flood = run.workers.recv(1)
    run.workers.call([None, ("logout_all",)])
    return flood, during


def _fill_inboxes(run, names, count):
    """Create `names` offline, each with `count` messages in its inbox (worker 1)."""
    run.login([None, names], concurrency=8, keep=False)
    run.login([None, ["filler"]])
    for name in names:
        go = loadgen.now_ns() + int(0.05e9)
        r = run.workers.call([None, ("send_burst", "filler", name, count, 64, go, 120.0)])[1]
        if r["results"] < count or r["errors"]:
            raise RuntimeError(f"filling {name}'s inbox: {r['results']} of {count}, "
                               f"{r['errors'][:3]}")
    run.workers.call([None, ("logout_all",)])
    run.server.wait_settled(expect_users=0)


def _settled_pss(run, users, seconds):
    run.server.wait_settled(expect_users=users)
    time.sleep(seconds)
    return run.server.pss_kib()


def _readflood_figures(run, flood, before, during, after):
    f = run.figures
    wall = max(1e-9, ((flood["last_answer"] or flood["first_send"]) - flood["first_send"]) / 1e9)
    f["readflood_flood_inbox_per_s"] = flood["answered"] / wall
    f["readflood_flood_rate_limited"] = flood["error_codes"].get("rate_limited", 0)
    f["readflood_flood_errors"] = sum(flood["error_codes"].values())
    f["readflood_flood_loadgen_cpu_util"] = flood["cpu"] / wall
    _pss_figures(run, "readflood", before, during, after)
    run.details["readflood_flood"] = {
        "sent": flood["sent"], "answered": flood["answered"],
        "error_codes": flood["error_codes"], "wall_s": round(wall, 3),
        "flooders_closed_by_server": flood["closed"], "errors": flood["errors"][:5],
        "loadgen_cpu_s": round(flood["cpu"], 3)}
    if flood["cpu"] / wall > 0.8:
        bench.log(f"[bench] WARNING readflood: the flood's load generator used "
                  f"{flood['cpu'] / wall:.2f} cores; the flood may be limited by it")


def _pss_figures(run, label, before, during, after):
    f = run.figures
    f[f"{label}_pss_before_kib"] = before["total"]
    f[f"{label}_pss_during_kib"] = during.peak
    f[f"{label}_pss_after_kib"] = after["total"]
    f[f"{label}_pss_after_over_before"] = after["total"] / before["total"]
    run.details[f"{label}_pss"] = {"before": before, "during_peak": during.peak_detail,
                                   "after": after}


# --------------------------------------------------------------------------
# Scenario: prelogin


def scenario_prelogin(opts):
    s = Sizes(opts)
    run = bench.Run(opts, procs=1, default_limits=True)   # one engine: abuser and honest
    try:
        run.login([["honest"]], keep=False)
        run.server.wait_settled(expect_users=0)
        time.sleep(0.5)
        before = run.server.pss_kib()
        fill = run.workers.call([("siege_fill", ABUSER, 8, 1000, 30.0)])[0]
        roles = run.server.count_roles()
        with PssSampler(run.server, interval=0.5) as during:
            r = run.login([["honest"] * s.prelogin_logins], concurrency=1, keep=False)[0]
        held = run.workers.call([("siege_release",)])[0]
        after = _settled_pss(run, 0, 0.5)
        _prelogin_figures(run, r["phases"], fill, held, before, during, roles)
        _pss_figures(run, "prelogin", before, during, after)
    finally:
        run.close()
    return [run]


def _prelogin_figures(run, phases, fill, held, before, during, roles):
    f = run.figures
    totals = [p["total"] for p in phases]
    f["prelogin_login_p50_ms"] = bench.pct(totals, 50)
    f["prelogin_login_p99_ms"] = bench.pct(totals, 99)
    f["prelogin_login_max_ms"] = max(totals)
    f["prelogin_login_retries"] = sum(p["retries"] for p in phases)
    f["prelogin_attacker_held"] = fill["open"]
    f["prelogin_attacker_accepted_before_refusal"] = fill["before_refusal"]
    run.details["prelogin"] = {
        "attacker_fill": fill, "attacker_at_release": held,
        "server_processes_at_cap": roles, "pss_during": during.peak_detail,
        "honest_logins": len(totals),
        "honest_phase_p50_ms": _phase_p50(phases)}


def _phase_p50(phases):
    keys = ("handshake", "version", "username", "password", "welcome_to_ready")
    return {k: bench.pct([p[k] for p in phases], 50) for k in keys}


# --------------------------------------------------------------------------
# Scenario: createflood


def scenario_createflood(opts):
    s = Sizes(opts)
    run = bench.Run(opts, tiny_argon2=False, procs=2, default_limits=True)
    try:
        honest = [f"honest{i}" for i in range(5)]
        run.login([honest, None], concurrency=5, keep=False)
        before = _settled_pss(run, 0, 1.0)
        seconds = s.createflood_seconds
        count = int(s.createflood_login_rate * seconds)
        names = [honest[i % len(honest)] for i in range(count)]
        go = loadgen.now_ns() + int(1.0e9)       # the flood starts 0.5 s before the logins
        run.workers.send(1, ("create_flood", ABUSER, s.createflood_connections,
                             go - int(0.5e9), go + int(seconds * 1e9),
                             s.createflood_reconnect_s))
        with PssSampler(run.server) as during:
            logins = run.workers.call([("paced_logins", names, go, s.createflood_login_rate,
                                        seconds), None], timeout=seconds + 120)[0]
            flood = run.workers.recv(1)
        after = _settled_pss(run, 0, s.settle_s)
        _createflood_figures(run, logins, count, flood, before, during, after)
    finally:
        run.close()
    return [run]


def _createflood_figures(run, logins, count, flood, before, during, after):
    f = run.figures
    lat = logins["latencies_ms"]
    f["createflood_login_p50_ms"] = bench.pct(lat, 50)
    f["createflood_login_p99_ms"] = bench.pct(lat, 99)
    f["createflood_login_max_ms"] = max(lat) if lat else None
    f["createflood_login_ok_fraction"] = logins["ok"] / max(1, count)
    f["createflood_login_retries"] = logins["retries"]
    out = flood["outcomes"]
    f["createflood_flood_created"] = out.get("created", 0)
    f["createflood_flood_refused"] = out.get("refused", 0)
    f["createflood_flood_busy"] = out.get("busy", 0)
    f["createflood_flood_closed"] = sum(n for k, n in out.items() if k.startswith("closed"))
    f["createflood_flood_connections_refused"] = sum(
        n for k, n in out.items() if k.startswith("connection_refused"))
    _pss_figures(run, "createflood", before, during, after)
    run.details["createflood"] = {
        "honest_logins": logins["ok"], "honest_errors": logins["errors"],
        "honest_phase_p50_ms": _phase_p50(logins["phases"]),
        "flood_outcomes": out, "flood_refusals": flood["refusals"],
        "flood_loadgen_cpu_s": round(flood["cpu"], 3)}


RUNNERS = {"readflood": scenario_readflood, "prelogin": scenario_prelogin,
           "createflood": scenario_createflood}


# ==========================================================================
# Load-generator side: traffic patterns inside one Engine (worker commands)


def _bump(counts, key, n=1):
    counts[key] = counts.get(key, 0) + n


NOTICES = (("server full", "full"), ("still logging in", "per_address"),
           ("too many new connections", "rate"), ("busy with other logins", "startups"))


def why_closed(error):
    """A short key for why a client ended (`Client.error`), for counting."""
    if error is None:
        return "logged_out"
    if error.startswith("server notice: "):
        text = error[len("server notice: "):]
        return "notice:" + next((key for part, key in NOTICES if part in text), text[:40])
    match = re.match(r"(?:login|server) error (\w+)", error)
    if match:
        return "error:" + match.group(1)
    if error.startswith("system event "):
        return "system:" + error.split()[2]
    return error[:40]


# -- readflood: pipelined Inbox requests ---------------------------------------


def _peek_loads(payload):
    """A Result is counted, not read: its op name only (BINARY_FORMAT.md layout)."""
    if payload[2:2 + payload[1]] == b"Result":
        return Packet("Result", {})
    return BINARY.loads(payload)


class InboxFlood:
    """One flooder: keeps `window` Inbox requests outstanding until stop_ns."""

    def __init__(self, client, stats, window, limit, stop_ns):
        self.client, self.stats, self.window = client, stats, window
        self.limit, self.stop_ns = limit, stop_ns
        self.outstanding = self.rid = 0
        client.handler = self.on_answer
        if client.fast is not None:
            client.fast.loads = _peek_loads

    def fill(self):
        if now_ns() >= self.stop_ns or self.client.state == DONE:
            return
        while self.outstanding < self.window:
            self.rid += 1
            self.outstanding += 1
            self.stats["sent"] += 1
            self.client.send("Inbox", rid=self.rid, limit=self.limit)

    def on_answer(self, client, op, data):
        if op == "Result":
            self.stats["answered"] += 1
        elif op == "Error":
            _bump(self.stats["error_codes"], data.get("code"))
        else:
            return                       # a pushed Message, a System event
        self.stats["last_answer"] = now_ns()
        self.outstanding -= 1
        self.fill()

    def drained(self):
        return self.outstanding <= 0 or self.client.state == DONE

    def stop(self):
        self.client.handler = None
        if self.client.fast is not None:
            self.client.fast.loads = BINARY.loads


def read_flood(engine, clients, codec, names, start_ns, stop_ns, window, limit,
               drain_s=10.0):
    """The logged-in `names` flood Inbox from start_ns to stop_ns, then drain."""
    stats = {"sent": 0, "answered": 0, "error_codes": {}, "last_answer": None}
    floods = [InboxFlood(clients[n], stats, window, limit, stop_ns) for n in names]
    engine.run_until(lambda: False, start_ns)
    cpu0, stats["first_send"] = time.process_time(), now_ns()
    for flood in floods:
        flood.fill()
    engine.run_until(lambda: now_ns() >= stop_ns and all(f.drained() for f in floods),
                     stop_ns + int(drain_s * 1e9))
    for flood in floods:
        flood.stop()
    return {**stats, "cpu": time.process_time() - cpu0, "errors": list(engine.errors),
            "closed": sum(1 for f in floods if f.client.state == DONE)}


# -- prelogin: idle, handshaken connections -------------------------------------


class Idler(Client):
    """A pre-login connection that completes the Noise handshake, then says nothing."""

    __slots__ = ("siege",)

    def __init__(self, engine, siege):
        super().__init__(engine, "idler")
        self.siege = siege

    def _drain(self):
        while self.state != DONE:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return
            if event is CLOSED:
                self.ended()
            elif isinstance(event, channel_mod.HandshakeDone):
                self.t["handshake"] = now_ns()
                self.siege.handshake(self)
            elif isinstance(event, channel_mod.Notice):
                self.fail(f"server notice: {event.text}")
            else:                        # e.g. System timeout after the login timeout
                self.fail(f"server error {getattr(event, 'op', event)}")

    def fail(self, reason):              # counted by the siege, not an engine error
        if self.error is None:
            self.error = reason
        self.close()

    def close(self):
        if self.state != DONE:
            super().close()
            self.siege.ended(self)


class Siege:
    """As many idle pre-login connections from `source` as the server admits."""

    def __init__(self, engine, source):
        self.engine, self.source = engine, source
        self.connecting, self.open = set(), set()
        self.accepted, self.before_refusal, self.replaced = 0, None, 0
        self.refusals, self.lost = {}, {}
        self.at_cap, self.pause_until, self.hold = False, 0, 0

    def connect(self):
        idler = Idler(self.engine, self)
        self.connecting.add(idler)
        idler.connect(self.engine.port, self.source)

    def handshake(self, idler):
        self.connecting.discard(idler)
        self.open.add(idler)
        self.accepted += 1

    def ended(self, idler):
        self.connecting.discard(idler)
        reason = why_closed(idler.error)
        if idler in self.open:           # held, then closed by the server
            self.open.discard(idler)
            _bump(self.lost, reason)
        else:                            # refused before the handshake
            _bump(self.refusals, reason)
            if self.before_refusal is None:
                self.before_refusal = self.accepted
            self.at_cap = self.at_cap or reason == "notice:per_address"
            self.pause_until = now_ns() + int(1e9)
        if self.hold:                    # keep the count: open another one soon
            self.engine.at(now_ns() + int(0.2e9), self.top_up)

    def top_up(self):
        while self.hold and len(self.open) + len(self.connecting) < self.hold:
            self.replaced += 1
            self.connect()

    def fill(self, concurrency, most, deadline_ns):
        """Open connections until the server refuses one for the per-address cap."""
        def done():
            if self.at_cap or self.accepted >= most:
                return not self.connecting
            while len(self.connecting) < concurrency and now_ns() >= self.pause_until:
                self.connect()
            return False
        self.engine.run_until(done, deadline_ns)
        self.hold = len(self.open)

    def report(self):
        return {"open": len(self.open), "accepted": self.accepted,
                "before_refusal": self.before_refusal, "at_cap": self.at_cap,
                "refusals": dict(self.refusals), "lost": dict(self.lost),
                "replaced": self.replaced}

    def release(self):
        self.hold = 0
        for idler in list(self.open | self.connecting):
            idler.close()


_SIEGES = []    # the siege of this worker process, between siege_fill and siege_release


def siege_fill(engine, clients, codec, source, concurrency, most, timeout_s):
    siege = Siege(engine, source)
    _SIEGES.append(siege)
    t0 = now_ns()
    siege.fill(concurrency, most, t0 + int(timeout_s * 1e9))
    return {**siege.report(), "fill_s": (now_ns() - t0) / 1e9}


def siege_release(engine, clients, codec):
    if not _SIEGES:
        raise loadgen.BenchError("siege_release without siege_fill")
    siege = _SIEGES.pop()
    engine.run_until(lambda: False, now_ns() + int(0.05e9))   # notice what the server closed
    report = siege.report()
    siege.release()
    return report


# -- createflood: random new accounts, again and again -----------------------------


def _random_name():
    return "x" + os.urandom(6).hex()


class Creator(Client):
    """One flood connection: asks for a new random account after each refusal."""

    __slots__ = ("flood",)

    def __init__(self, engine, flood):
        super().__init__(engine, _random_name(), on_login=flood.created)
        self.flood = flood

    def _answer_prompt(self, data):
        prompt, count = data.get("prompt"), self.flood.outcomes
        if data.get("retry_after") is not None and self.last_answer is not None:
            _bump(count, "busy")
            self.retry_later(data["retry_after"])
        elif prompt == "new_password":
            _bump(count, "attempts")
            self.answer(new_password=self.password)
        elif prompt == "username":
            if self.last_answer is not None:          # our last try was refused
                _bump(count, "refused")
                _bump(self.flood.refusals, re.sub(r"\d+", "N", data.get("message", ""))[:90])
            self.name = _random_name()
            self.answer(username=self.name)
        elif prompt == "password":                     # a name that exists: next one
            _bump(count, "name_taken")
            self.answer(cancel=True)
        else:
            self.fail(f"unknown prompt {prompt!r}")

    def fail(self, reason):             # counted by the flood, not an engine error
        if self.error is None:
            self.error = reason
        self.close()

    def close(self):
        if self.state != DONE:
            super().close()
            self.flood.ended(self)


class CreateFlood:
    """`slots` connections from `source`, each reconnecting when it is closed."""

    def __init__(self, engine, source, reconnect_s):
        self.engine, self.source, self.reconnect_ns = engine, source, int(reconnect_s * 1e9)
        self.live = set()
        self.outcomes, self.refusals = {}, {}
        self.stopping = False

    def start(self):
        if self.stopping:
            return
        creator = Creator(self.engine, self)
        self.live.add(creator)
        _bump(self.outcomes, "connections")
        creator.connect(self.engine.port, self.source)

    def created(self, creator):
        _bump(self.outcomes, "created")
        creator.logout()

    def ended(self, creator):
        self.live.discard(creator)
        if self.stopping:
            return
        reason = why_closed(creator.error)
        if reason.startswith("notice:"):             # refused before the handshake
            _bump(self.outcomes, "connection_refused:" + reason[len("notice:"):])
        elif reason != "logged_out":                   # logged out after a creation
            _bump(self.outcomes, "closed:" + reason)
        self.engine.at(now_ns() + self.reconnect_ns, self.start)

    def stop(self):
        self.stopping = True
        for creator in list(self.live):
            creator.close()


def create_flood(engine, clients, codec, source, slots, start_ns, stop_ns, reconnect_s):
    flood = CreateFlood(engine, source, reconnect_s)
    engine.run_until(lambda: False, start_ns)
    cpu0 = time.process_time()
    for _ in range(slots):
        flood.start()
    engine.run_until(lambda: False, stop_ns)
    flood.stop()
    return {"outcomes": flood.outcomes, "refusals": flood.refusals,
            "cpu": time.process_time() - cpu0}


loadgen.COMMANDS.update({"read_flood": read_flood, "siege_fill": siege_fill,
                         "siege_release": siege_release, "create_flood": create_flood})
