"""What the full-text index costs and gives: `python bench/search.py [--messages N] [--runs R]`.

Storage level, in one process, on real SQLite files in a temporary data
dir: stores N messages (default 100,000) among 200 accounts through
`storage.store_message` in transactions of 100 (the writer's group
commit), once indexing them as the database process does
(`mailbox.index_pending` every 2,000 messages) and once never (no
index), and prints for
each: CPU microseconds per stored message and the size of messages.db.
Then, with the index, the time of `mailbox.search` for a rare word, a
word in about 1 message in 10, and a word in every message, each asked by
one account (page of 50). R runs (default 3): median and range.

The bodies are 20-60 words drawn from a 5,000-word vocabulary with a
Zipf-like spread, like chat text.
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "Code"))

from Modules.database import mailbox, storage  # noqa: E402
from Modules.database.schema import close_databases, open_databases  # noqa: E402

USERS = [f"user{n:03d}" for n in range(200)]
VOCABULARY = [f"w{n}" for n in range(5000)]
WEIGHTS = [1 / (rank + 1) for rank in range(len(VOCABULARY))]
BATCH = 100


def bodies(count, seed):
    rng = random.Random(seed)
    for _ in range(count):
        words = rng.choices(VOCABULARY, WEIGHTS, k=rng.randint(20, 60))
        if rng.random() < 0.1:
            words.append("tenthword")
        yield " ".join(words + ["everyword"])


INDEX_BATCH = 2000       # messages between index_pending calls (about 2 s of relay)


def store_all(db, count, seed, indexed):
    """CPU seconds to store `count` messages, BATCH per transaction, and with
    `indexed` to index them as the database process does, in batches."""
    rng = random.Random(seed)
    texts = iter(list(bodies(count, seed)))
    pairs = [rng.sample(USERS, 2) for _ in range(count)]
    subjects = ["subject " + rng.choice(VOCABULARY) for _ in range(count)]
    started = time.process_time()
    for start in range(0, count, BATCH):
        db.execute("BEGIN")
        for number in range(start, min(start + BATCH, count)):
            sender, recipient = pairs[number]
            storage.store_message(db, sender, recipient, subjects[number], next(texts),
                                  None, time.time())
        db.execute("COMMIT")
        if indexed and (start // BATCH + 1) % (INDEX_BATCH // BATCH) == 0:
            db.execute("BEGIN")
            mailbox.index_pending(db)
            db.execute("COMMIT")
    if indexed:
        db.execute("BEGIN")
        mailbox.index_pending(db)
        db.execute("COMMIT")
    return time.process_time() - started


def one_run(count, indexed, seed):
    data_dir = tempfile.mkdtemp(prefix="parley-search-")
    try:
        db = open_databases(data_dir)
        db.execute("BEGIN")
        for name in USERS:
            storage.create_account(db, name, "$argon2id$bench", time.time())
        db.execute("COMMIT")
        storage.store_message(db, USERS[0], USERS[1], "rare", "a veryrareword here", None,
                              time.time())
        cpu = store_all(db, count, seed, indexed)
        figures = {"us_per_message": cpu / count * 1e6}
        if indexed:
            for word in ("veryrareword", "tenthword", "everyword"):
                started = time.perf_counter()
                mailbox.search(db, USERS[1], word, None, 50)
                figures[f"search_{word}_ms"] = (time.perf_counter() - started) * 1000
        close_databases(db)
        figures["messages_db_mb"] = os.path.getsize(
            os.path.join(data_dir, "messages.db")) / 1e6
        return figures
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for indexed in (False, True):
        runs = [one_run(args.messages, indexed, seed) for seed in range(args.runs)]
        label = "with the FTS5 index" if indexed else "without an index"
        print(f"{args.messages} messages, {label}:")
        for name in runs[0]:
            values = [run[name] for run in runs]
            print(f"  {name:<28} median {statistics.median(values):9.2f}   "
                  f"range {min(values):.2f}-{max(values):.2f}")


if __name__ == "__main__":
    main()
