"""Micro-measurements behind the proposals in docs/PERFORMANCE.md.

    python bench/micro.py [crypto] [layers] [internal] [sqlite] [fork] [--json]

* crypto: one ChaCha20-Poly1305 transport message: the server's
  CipherState (pycryptodome's C primitives through Modules/wire/aead.py),
  pycryptodome's public API (a new cipher object per message, what the
  server used before) and `cryptography`'s reusable AEAD object.
* layers: the server's per-message work in a user process, layer by
  layer, with the real sans-IO objects: decrypt+parse a client Send
  (Connection.receive_data/next_event), the request frame to the database
  (DbProtocol.request), the Reply parsed back (DbProtocol.next_event) and
  the Result encrypted to the client (Connection.send); the recipient's
  side: Push parsed, Message encrypted.
* internal: the codec of the Unix sockets between the processes, per
  relayed message (Send, Reply, Push, Ack each encoded and decoded once):
  the notebook's binary serializer against msgpack (issue 16).
* sqlite: Modules.database.storage.store_message on a fresh data dir (the real
  schema and pragmas), one COMMIT per message against one COMMIT per 100,
  with synchronous FULL (the server's setting), NORMAL and OFF.
* fork: the proportional set size of an idle child forked from a process
  that preloaded the server's modules, with and without gc.freeze(): the
  floor of a process-per-session design.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "Code"))

from Modules.wire import protocol  # noqa: E402
from Modules.database.link import DbProtocol  # noqa: E402
from Modules.wire.framing import encode_frame  # noqa: E402
from Modules.wire.noise import CipherState, KeyPair  # noqa: E402
from Modules.database import codec  # noqa: E402
from Modules.wire.serializers import BINARY, Packet  # noqa: E402

BODY = f"{time.monotonic_ns()} " + "x" * 48


def _per_call_us(fn, n):
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        per = (time.perf_counter() - t0) / n * 1e6
        best = per if best is None else min(best, per)
    return best


def crypto(n=20000):
    key = os.urandom(32)
    plaintext = b"\x00" + os.urandom(150)
    cs = CipherState(key)
    out = {"pycryptodome_encrypt_us": _per_call_us(lambda: cs.encrypt_with_ad(b"", plaintext), n)}
    from Modules.wire import aead as parley_aead
    nonce12 = bytes(12)
    out["pycryptodome_public_api_encrypt_us"] = _per_call_us(
        lambda: parley_aead._public_seal(key, nonce12, b"", plaintext), n)
    try:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
        import struct
        aead = ChaCha20Poly1305(key)
        nonce = struct.Struct("<4xQ")
        counter = iter(range(10**9))
        out["cryptography_encrypt_us"] = _per_call_us(
            lambda: aead.encrypt(nonce.pack(next(counter)), plaintext, None), n)
    except ImportError:
        pass
    return out


def _session_pair():
    """A client Connection and a server Connection in SESSION, talking to each other."""
    server_key = KeyPair.generate()
    client = protocol.Connection.client()
    server = protocol.Connection.server(server_key)
    server.receive_data(client.start())
    server.next_event()
    client.receive_data(server.accept())
    client.next_event()
    server.receive_data(client.send(protocol.version_offer()))
    offer = server.next_event()
    client.receive_data(server.send(protocol.choose_version(offer)))
    client.next_event()
    server.machine.state = client.machine.state = protocol.SESSION   # skip the login dialogue
    server.channel.max_payload = protocol.SESSION_MAX_PAYLOAD
    return client, server


def layers(n=5000):
    client, server = _session_pair()
    send = Packet("Send", {"rid": 1, "to": "bob", "subject": "bench", "body": BODY,
                           "client_id": "c1.2.3"})
    frames = [client.send(send) for _ in range(n * 3 + 10)]
    it = iter(frames)

    def receive_send():
        server.receive_data(next(it))
        server.next_event()
    out = {"user_decrypt_parse_send_us": _per_call_us(receive_send, n)}
    db = DbProtocol()
    fields = {"to": "bob", "subject": "bench", "body": BODY, "client_id": "c1.2.3"}
    out["user_db_request_us"] = _per_call_us(lambda: db.request("Send", fields), n)
    reply = encode_frame(codec.dumps(Packet("Reply", {"rid": 1, "ok": True, "id": 123456,
                                                       "bounced": False,
                                                       "duplicate": False})), 1 << 20)
    def parse_reply():
        db.receive_data(reply)
        db.next_event()
    out["user_db_reply_parse_us"] = _per_call_us(parse_reply, n)
    result = Packet("Result", {"rid": 1, "id": 123456, "bounced": False, "duplicate": False})
    out["user_encrypt_result_us"] = _per_call_us(lambda: server.send(result), n)
    message = {"id": 123456, "from": "alice", "to": "bob", "subject": "bench", "body": BODY,
               "sent_at": time.time(), "kind": "message", "read": False}
    push = encode_frame(codec.dumps(Packet("Push", {"messages": [message]})), 1 << 20)
    def parse_push():
        db.receive_data(push)
        db.next_event()
    out["user_push_parse_us"] = _per_call_us(parse_push, n)
    out["user_encrypt_message_us"] = _per_call_us(lambda: server.send(Packet("Message", message)), n)
    out["binary_dumps_send_us"] = _per_call_us(lambda: BINARY.dumps(send), n)
    out["binary_loads_send_us"] = _per_call_us(
        lambda b=BINARY.dumps(send): BINARY.loads(b), n)
    out["user_total_python_us"] = sum(v for k, v in out.items() if k.startswith("user_"))
    return out


def internal(n=20000):
    """The codec of the Unix sockets per relayed message: the Send request, its
    Reply, the Push and the Ack, each encoded once and decoded once; the notebook's
    binary serializer (used there until issue 16) against msgpack (database/codec.py)."""
    message = {"id": 123456, "from": "alice", "to": "bob", "subject": "bench", "body": BODY,
               "sent_at": time.time(), "kind": "message", "read": False}
    packets = {  # packet -> does the database read it (strict) or write it
        "send": (Packet("Send", {"rid": 77, "to": "bob", "subject": "bench", "body": BODY,
                                 "client_id": "c1.2.3"}), True),
        "reply": (Packet("Reply", {"rid": 77, "ok": True, "id": 123456, "bounced": False,
                                   "duplicate": False}), False),
        "push": (Packet("Push", {"messages": [message]}), False),
        "ack": (Packet("Ack", {"rid": 78, "ids": [123456], "read": []}), True),
    }
    out = {}
    for name, (packet, to_database) in packets.items():
        loads = codec.loads_request if to_database else codec.loads_reply
        encoded, old = codec.dumps(packet), BINARY.dumps(packet)
        out[f"internal_{name}_binary_us"] = (_per_call_us(lambda: BINARY.dumps(packet), n)
                                             + _per_call_us(lambda: BINARY.loads(old), n))
        out[f"internal_{name}_msgpack_us"] = (_per_call_us(lambda: codec.dumps(packet), n)
                                              + _per_call_us(lambda: loads(encoded), n))
    for form in ("binary", "msgpack"):
        out[f"internal_per_message_{form}_us"] = sum(
            v for k, v in out.items() if k.endswith(f"_{form}_us") and "per_message" not in k)
    return out


def sqlite(n=2000):
    from Modules.database import storage
    out = {}
    for sync in ("FULL", "NORMAL", "OFF"):
        for per_commit in (1, 100):
            tmp = tempfile.mkdtemp(prefix="parley-sqlite-")
            try:
                db = storage.open_databases(tmp)
                for schema in ("main", "pw", "msg"):
                    db.execute(f"PRAGMA {schema}.synchronous = {sync}")
                db.execute("BEGIN IMMEDIATE")
                storage.create_account(db, "alice", "x", time.time())
                storage.create_account(db, "bob", "x", time.time())
                db.execute("COMMIT")
                t0 = time.perf_counter()
                cpu0 = time.process_time()
                for i in range(0, n, per_commit):
                    db.execute("BEGIN IMMEDIATE")
                    for j in range(i, i + per_commit):
                        db.execute("SAVEPOINT job")
                        storage.store_message(db, "alice", "bob", "bench", BODY, f"c{j}",
                                              time.time())
                        db.execute("RELEASE job")
                    db.execute("COMMIT")
                wall = time.perf_counter() - t0
                cpu = time.process_time() - cpu0
                key = f"sqlite_{sync.lower()}_commit_every_{per_commit}"
                out[key + "_msgs_per_s"] = n / wall
                out[key + "_cpu_us_per_msg"] = cpu / n * 1e6
                storage.close_databases(db)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    fd, path = tempfile.mkstemp(prefix="parley-fsync-")
    for _ in range(200):
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    out["fsync_4k_ms"] = (time.perf_counter() - t0) / 200 * 1e3
    os.close(fd)
    os.unlink(path)
    return out


def _pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M).group(1))


def fork(children=20):
    out = {}
    for freeze in (False, True):
        code = ("import sys, gc, os, time; sys.path.insert(0, %r);"
                "import Modules.server.login_process, Modules.server.user_process, Modules.database.monitor;"
                "import passlib.handlers.argon2;"
                "%s"
                "pids = [];\n"
                "for _ in range(%d):\n"
                "    pid = os.fork()\n"
                "    if pid == 0:\n"
                "        time.sleep(3); os._exit(0)\n"
                "    pids.append(pid)\n"
                "print(' '.join(map(str, pids)), flush=True); time.sleep(4)\n"
                % (os.path.join(os.path.dirname(HERE), "Code"),
                   "gc.collect(); gc.freeze();" if freeze else "", children))
        import subprocess
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        pids = [int(p) for p in proc.stdout.readline().split()]
        time.sleep(1.0)
        values = [_pss_kib(p) for p in pids]
        parent = _pss_kib(proc.pid)
        proc.wait()
        key = "fork_child_pss_kib" + ("_frozen" if freeze else "")
        out[key] = statistics.median(values)
        out["fork_parent_pss_kib" + ("_frozen" if freeze else "")] = parent
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", default=[])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    parts = args.parts or ["crypto", "layers", "internal", "sqlite", "fork"]
    results = {}
    for part in parts:
        results.update({"crypto": crypto, "layers": layers, "internal": internal,
                        "sqlite": sqlite,
                        "fork": fork}[part]())
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for k, v in results.items():
            print(f"{k:48} {v:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
