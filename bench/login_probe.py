"""One login at a time, seen from the client: where a login's wall time goes.

    python bench/login_probe.py [--logins 40]

Runs the real server (tiny argon2, `--park-after 0`, bench/server.py) and logs
in existing accounts one after the other with the load generator
(bench/loadgen.py), each logged out before the next. Prints p50, min and max
(ms) of: TCP connect to the client's first handshake message sent; that to the
server's first byte (the daemon's accept and hand-off to a spare, the login
process's start and its database connection, the Noise responder with its
KeyAgree round trip); that to the handshake done; the Version exchange; the
dialogue to Welcome (Exists, Verify); Welcome to ready (the hand-off to the
user process, Bind, Subscribe). Wall-clock figures: quiet machine only.
"""

import statistics
import sys
import os

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loadgen                              # noqa: E402
from loadgen import Client, login_many, now_ns   # noqa: E402
from server import BenchServer              # noqa: E402

PHASES = [("connect -> first message sent", "connect", "msg1_sent"),
          ("first message -> server's first byte", "msg1_sent", "first_byte"),
          ("first byte -> handshake done", "first_byte", "handshake"),
          ("handshake -> Version", "handshake", "version"),
          ("Version -> Welcome", "version", "welcome"),
          ("Welcome -> ready", "welcome", "ready")]


class TimedClient(Client):
    """The load generator's client, noting its first write and first read."""

    def readable(self):
        self.t.setdefault("first_byte", now_ns())
        return super().readable()

    def flush(self):
        self.t.setdefault("msg1_sent", now_ns())
        return super().flush()


def main(argv):
    count = int(argv[argv.index("--logins") + 1]) if "--logins" in argv else 40
    loadgen.Client = TimedClient             # login_many builds its clients by this name
    server = BenchServer(extra_args=("--park-after", "0")).start()
    try:
        engine = loadgen.Engine(server.port)
        names = [f"probe{i:03d}" for i in range(8)]
        login_many(engine, names, 4, now_ns() + int(120e9), keep=False)   # the accounts
        rows = []
        for index in range(count):
            client = login_many(engine, [names[index % len(names)]], 1,
                                now_ns() + int(60e9), keep=False)[0]
            rows.append([(client.t[b] - client.t[a]) / 1e6 for _, a, b in PHASES])
    finally:
        server.stop()
    for column, (label, _, _) in enumerate(PHASES):
        values = [row[column] for row in rows]
        print(f"{label:38s} p50 {statistics.median(values):7.2f} ms   "
              f"min {min(values):6.2f}   max {max(values):7.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
