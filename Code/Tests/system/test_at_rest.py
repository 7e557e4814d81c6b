"""The data dir encrypted at rest, with real daemons and clients: during a session
(messages sent, server running, WAL not checkpointed) and after it, no file in
the data dir holds a known username, subject, body or an Argon2 hash; the same
scan finds them all with encryption off (so it can fail). A wrong or missing key
stops the start with one clear sentence and a non-zero exit."""

import base64
import os
import re
import stat
import subprocess
import sys

import pytest

from Tests.database.test_at_rest import key_dir, key_file  # noqa: F401  (the same fixtures)
from Tests.database.test_at_rest import found_plaintext
from Tests.support import ServerProcess, send, session
from Tests.support.processes import SERVER, run_admin

USER, OTHER = "wombatuser", "numbatuser"
SUBJECT, BODY = "zebra-subject-8812", "quokka-body-5531"
NEEDLES = (USER.encode(), SUBJECT.encode(), BODY.encode(), b"$argon2id$")


def exchange(server):
    sender, _ = session(server, USER)
    receiver, _ = session(server, OTHER)
    assert send(sender, OTHER, subject=SUBJECT, body=BODY).op == "Result"
    return sender, receiver


def found(data_dir):
    return {needle for _name, needle in found_plaintext(data_dir, NEEDLES)}


def run_scanned(server):
    """Scans during the session and after the stop: (during, after)."""
    server.start()
    try:
        clients = exchange(server)
        assert run_admin(server, "audit")[0] == 0   # audit.log names every user
        during = found(server.data_dir)
        for client in clients:
            client.close()
    finally:
        assert server.stop() == 0
    return during, found(server.data_dir)


def test_without_a_key_the_scan_finds_everything(tmp_path):
    during, after = run_scanned(ServerProcess(tmp_path))
    assert during == set(NEEDLES) and after == set(NEEDLES)


def test_with_a_key_file_no_file_in_the_data_dir_holds_plaintext(tmp_path, key_file):
    server = ServerProcess(tmp_path, "--key-file", key_file)
    during, after = run_scanned(server)
    assert during == set() and after == set()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o400
    assert key_file in server.log()
    assert open(key_file).read().strip() not in server.log()


def test_with_the_env_var_the_server_runs_encrypted(tmp_path):
    key = os.urandom(32).hex()
    during, after = run_scanned(ServerProcess(tmp_path, env={"PARLEY_DB_KEY": key}))
    assert during == set() and after == set()


def test_a_plaintext_data_dir_is_converted_on_a_keyed_start(tmp_path, key_file):
    plain = ServerProcess(tmp_path)
    plain.start()
    clients = exchange(plain)
    for client in clients:
        client.close()
    assert plain.stop() == 0
    server = ServerProcess(tmp_path, "--key-file", key_file)
    server.start()
    try:
        receiver, pending = session(server, OTHER, create=False)
        receiver.close()
        assert SUBJECT in str(pending)          # the message kept through the conversion
    finally:
        assert server.stop() == 0
    assert found(server.data_dir) == set()


def test_the_server_key_is_kept_under_the_database_key_and_stays_the_same(tmp_path,
                                                                         key_file):
    plain = ServerProcess(tmp_path)
    plain.start()
    assert plain.stop() == 0
    key_path = os.path.join(plain.data_dir, "server_key")
    private = base64.b64decode(open(key_path, "rb").read().split()[1])
    server = ServerProcess(tmp_path, "--key-file", key_file)
    for first in (True, False):        # converted; then the daemon has only the public half
        server.start()
        try:
            client, _ = session(server, OTHER, create=first)   # the unwrapped key's DH
            client.close()
        finally:
            assert server.stop() == 0
    assert open(key_path, "rb").read().startswith(b"parley-wrapped-v1")
    secrets = (private, base64.b64encode(private))
    assert {needle for _name, needle in found_plaintext(server.data_dir, secrets)} == set()
    fingerprints = set(re.findall(r"server key fingerprint (\S+)", server.log()))
    assert len(fingerprints) == 1 and len(re.findall("server key fingerprint",
                                                     server.log())) == 3


def test_a_wrong_key_and_a_missing_key_stop_the_start(tmp_path, key_file):
    server = ServerProcess(tmp_path, "--key-file", key_file)
    run_scanned(server)
    before = sorted(os.listdir(server.data_dir))
    os.chmod(key_file, 0o600)
    with open(key_file, "w") as handle:
        handle.write(os.urandom(32).hex())
    for args in (("--key-file", key_file), ()):
        refused = ServerProcess(tmp_path, *args)
        with pytest.raises(RuntimeError):
            refused.start()
        assert refused.proc.wait(30) != 0
        refused.kill_group()
    log = server.log()
    assert "the database key does not open" in log and "wrong key" in log
    assert "encrypted at rest but no database key was given" in log
    assert sorted(os.listdir(server.data_dir)) == before


def test_admin_rekey_offline_changes_the_key_and_keeps_the_messages(tmp_path, key_file):
    server = ServerProcess(tmp_path, "--key-file", key_file)
    run_scanned(server)
    old = open(key_file).read()
    command = [sys.executable, SERVER, "admin", "--data-dir", server.data_dir, "rekey",
               "--key-file", key_file]
    server.start()
    try:
        refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "another Parley server" in refused.stderr
    finally:
        assert server.stop() == 0
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert open(key_file).read() != old and "rekeyed" in done.stdout
    assert old.strip() not in done.stdout + done.stderr
    server.start()
    try:
        receiver, _ = session(server, OTHER, create=False)   # its password still works
        receiver.close()
    finally:
        assert server.stop() == 0
    assert found(server.data_dir) == set()


def test_the_env_var_key_is_in_no_server_process_environment(tmp_path):
    key = os.urandom(32).hex()
    server = ServerProcess(tmp_path, env={"PARLEY_DB_KEY": key}).start()
    try:
        clients = exchange(server)         # login and user processes exist now
        pids = server.processes()
        assert any(title.startswith("parley: user") for title in pids.values())
        for pid in pids:
            if pid == server.proc.pid:     # the daemon's exec'd environment stays as given
                continue
            with open(f"/proc/{pid}/environ", "rb") as handle:
                assert key.encode() not in handle.read(), pids[pid]
        for client in clients:
            client.close()
    finally:
        assert server.stop() == 0
