"""What encryption at rest costs per stored message, by library (docs/PERFORMANCE.md section 9).

    python bench/at_rest.py [--messages N] [--fresh-venv] [--json]

For plain `sqlite3`, `sqlcipher3` (SQLCipher 4: AES-256-CBC, HMAC-SHA512 per
page, the raw 32-byte key so no key derivation) and `apsw-sqlite3mc`
(SQLite3 Multiple Ciphers, its default ChaCha20-Poly1305, raw key), each on a
fresh file in a temporary directory: WAL, synchronous=FULL (the server's
settings), one INSERT + COMMIT per message of a message-table row (two names,
a 30-byte subject, a 300-byte body, two indexes), N messages. Prints the CPU
time (process_time) and the wall time per message in microseconds. A library
that is not installed is reported as missing.

--fresh-venv also makes a new virtual environment and installs each
candidate there the way requirements.txt does (`pip install NAME`), and
says whether it installed and imported (a wheel, no compiler): the other
half of the choice.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SCHEMA = ("CREATE TABLE messages (id INTEGER PRIMARY KEY, sender TEXT, recipient TEXT, "
          "sent_at REAL, subject TEXT, body TEXT);"
          "CREATE INDEX by_recipient ON messages(recipient, id);"
          "CREATE INDEX by_sender ON messages(sender, id);")
ROW = ("alice", "bob", 0.0, "s" * 30, "b" * 300)
KEY = bytes(range(32))
CANDIDATES = {"sqlite3": None, "sqlcipher3": "sqlcipher3>=0.6.4",
              "apsw-sqlite3mc": "apsw-sqlite3mc"}


def open_sqlite3(path):
    import sqlite3
    return sqlite3.connect(path, isolation_level=None)


def open_sqlcipher3(path):
    import sqlcipher3
    db = sqlcipher3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA key = \"x'{KEY.hex()}'\"")
    return db


def open_sqlite3mc(path):
    import apsw
    db = apsw.Connection(path)
    db.execute(f"PRAGMA hexkey = '{KEY.hex()}'")
    return db


OPENERS = {"sqlite3": open_sqlite3, "sqlcipher3": open_sqlcipher3,
           "apsw-sqlite3mc": open_sqlite3mc}


def measure(name, messages):
    """{cpu_us, wall_us} per message for one library, or {missing: reason}."""
    with tempfile.TemporaryDirectory(prefix="parley-at-rest-") as folder:
        try:
            db = OPENERS[name](os.path.join(folder, "messages.db"))
        except ImportError as error:
            return {"missing": str(error)}
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        sql = ("INSERT INTO messages (sender, recipient, sent_at, subject, body) "
               "VALUES (?, ?, ?, ?, ?)")
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(messages):
            db.execute("BEGIN IMMEDIATE")
            db.execute(sql, ROW)
            db.execute("COMMIT")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        db.close()
    return {"cpu_us": round(cpu / messages * 1e6, 1), "wall_us": round(wall / messages * 1e6, 1)}


def installs_in_fresh_venv(requirement):
    """True if `pip install requirement` works in a new venv and the module imports."""
    module = "apsw" if requirement.startswith("apsw") else requirement.split(">")[0]
    with tempfile.TemporaryDirectory(prefix="parley-venv-") as folder:
        subprocess.run([sys.executable, "-m", "venv", folder], check=True)
        python = os.path.join(folder, "bin", "python")
        install = subprocess.run([python, "-m", "pip", "install", "-q", requirement],
                                 capture_output=True, timeout=600)
        if install.returncode != 0:
            return False
        return subprocess.run([python, "-c", f"import {module}"]).returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--fresh-venv", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {name: measure(name, args.messages) for name in OPENERS}
    if args.fresh_venv:
        for name, requirement in CANDIDATES.items():
            if requirement:
                results[name]["fresh_venv_install"] = installs_in_fresh_venv(requirement)
    if args.json:
        print(json.dumps(results))
        return
    for name, figures in results.items():
        print(f"{name:16} " + "  ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
