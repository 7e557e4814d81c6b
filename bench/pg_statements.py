"""What one Send costs the single writer on PostgreSQL: statements and time (issue 18).

`python bench/pg_statements.py [N]` starts a private PostgreSQL cluster
(`Code/Tests/support/postgres.py`), makes 100 accounts, and runs N (1,000)
Send jobs (`storage.store_message` as the monitor runs it with several
servers: `mail_signals.delivering`) in one transaction on one connection,
as the writer does in a batch. It prints the writer thread's CPU and wall
time per Send and how many times each statement ran (docs/PERFORMANCE.md
section 16). The cluster is removed at the end, whatever happens.
"""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "Code"))

from Modules.database import backends, mail_signals, mailbox, storage  # noqa: E402
from Modules.database.backends import pg_connection  # noqa: E402
from Tests.support.postgres import PostgresCluster  # noqa: E402
from Tests.support.storage import make_users  # noqa: E402


def main(n=1000):
    cluster = PostgresCluster()
    cluster.init().start()
    try:
        backend = backends.open_backend(cluster.create_database(), "/nonexistent")
        db = backend.open_writer()
        make_users(db, *[f"u{i}" for i in range(100)])
        counts = collections.Counter()
        run = pg_connection.PgConnection.run

        def counted(self, text, params):
            counts[text[:72]] += 1
            return run(self, text, params)
        pg_connection.PgConnection.run = counted
        job = mail_signals.delivering(storage.store_message, lambda s: s["deliveries"],
                                      "bench", {})
        cpu, wall = time.process_time(), time.time()
        db.execute("BEGIN")
        for i in range(n):
            job(db, f"u{i % 100}", f"u{(i + 1) % 100}", "subject", "body", f"c{i}",
                1.0 + i, mailbox.DEFAULT_LIMITS)
        db.execute("COMMIT")
        print(f"{n} Sends: {(time.process_time() - cpu) / n * 1000:.3f} CPU-ms and "
              f"{(time.time() - wall) / n * 1000:.3f} ms wall per Send in the writer")
        for text, times in counts.most_common():
            print(f"{times:6d}  {text}")
        backend.close(db)
    finally:
        cluster.remove()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
