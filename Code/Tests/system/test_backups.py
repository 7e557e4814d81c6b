"""Backups under load, then restore, end to end (issue 15).

A real daemon; a client keeps sending messages (each one waits for its
acknowledgement) while `admin backup` runs. The backup checks with `admin
check-backup`; the server stops and `admin restore` puts the backup in a
fresh data dir; a second server starts on it. Every message acknowledged
before the backup began is there, the real client reads them, and the
ids of new messages and accounts are above every id handed out before
the restore. Then the refusals, each one sentence: a target that exists,
a target inside the data dir, a restore onto a running server's data dir,
a backup whose file was changed. A backup of an encrypted data dir holds
no plaintext and restores only with its key, still encrypted.
"""

import os
import sqlite3
import subprocess
import sys
import threading

from Tests.database.test_at_rest import found_plaintext
from Tests.support import of_type, run_admin, run_ok, wait_until
from Tests.support.clients import send, session
from Tests.support.processes import SERVER, WAIT, child_env


NEEDLES = (b"wombatuser", b"zebra-subject-8812", b"quokka-body-5531", b"$argon2id$")


class Sender(threading.Thread):
    """alice sends to bob until stopped; the ids acknowledged, in order."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.client, _ = session(server, "alice", create=False)
        self.acknowledged = []
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            number = 0
            while not self.stopping.is_set():
                number += 1
                result = send(self.client, "bob", f"load {number}", f"body {number}",
                              client_id=f"load-{number}")
                assert result.op == "Result", result
                self.acknowledged.append(result.data["id"])
        except Exception as error:     # reported by the test
            self.error = error

    def stop(self):
        self.stopping.set()
        self.join(WAIT)
        self.client.close()
        assert self.error is None, self.error


def offline_admin(*words, cwd=None):
    done = subprocess.run([sys.executable, SERVER, "admin", *words], capture_output=True,
                          text=True, timeout=WAIT * 4, env=child_env(), cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def message_ids(data_dir):
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'messages.db')}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT id FROM messages")}
    finally:
        db.close()


def test_a_backup_under_load_restores_whole_and_no_id_is_used_twice(make_server, tmp_path):
    server = make_server()
    run_ok(server, "alice", create=True)
    run_ok(server, "bob", create=True)
    sender = Sender(server)
    sender.start()
    try:
        wait_until(lambda: len(sender.acknowledged) >= 50, message="messages before")
        before = list(sender.acknowledged)
        target = str(tmp_path / "backup")
        status, reply, stderr = run_admin(server, "backup", target, as_json=True)
        assert status == 0, stderr
        count = len(sender.acknowledged)
        wait_until(lambda: len(sender.acknowledged) >= count + 20, message="messages after")
    finally:
        sender.stop()
    run_ok(server, "carol", create=True)              # an account after the backup
    handed_out = max(sender.acknowledged)
    assert reply["ids"]["messages"] >= max(before)
    assert offline_admin("check-backup", target)[0] == 0
    server.stop()

    fresh = tmp_path / "restored"
    fresh.mkdir()
    status, out, stderr = offline_admin("restore", target, "--data-dir",
                                        str(fresh / "data"), "--ids-above",
                                        str(handed_out), "--id-margin", "1000")
    assert status == 0, stderr
    assert "New message ids start above" in out
    restored = make_server(subdir="restored")
    assert set(before) <= message_ids(restored.data_dir)
    inbox = of_type(run_ok(restored, "bob", ["inbox --limit 5"]), "inbox")
    assert inbox and inbox[0]["messages"]
    new = of_type(run_ok(restored, "bob", ['send alice "after" "the restore"']), "sent")
    assert new[0]["id"] > handed_out
    run_ok(restored, "dave", create=True)
    db = sqlite3.connect(f"file:{restored.data_dir}/users.db?mode=ro", uri=True)
    try:
        (dave,) = db.execute("SELECT id FROM users WHERE username = 'dave'").fetchone()
    finally:
        db.close()
    assert dave > 1000                                 # above carol's id, 3


def test_the_refusals_are_one_sentence_each(make_server, tmp_path):
    server = make_server()
    run_ok(server, "alice", create=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine").write_text("keep")
    status, _out, stderr = run_admin(server, "backup", str(tmp_path / "full"))
    assert status == 1 and "already exists and is not an empty directory" in stderr
    status, _out, stderr = run_admin(server, "backup", os.path.join(server.data_dir, "b"))
    assert status == 1 and "is inside the data directory" in stderr
    target = str(tmp_path / "backup")
    assert run_admin(server, "backup", target)[0] == 0
    status, _out, stderr = offline_admin("restore", target, "--data-dir", server.data_dir)
    assert status == 1 and "a Parley server is running on" in stderr
    assert stderr.count("\n") == 1
    with open(os.path.join(target, "users.db"), "r+b") as handle:
        handle.seek(200)
        handle.write(b"changed")
    status, _out, stderr = offline_admin("check-backup", target)
    assert status == 1 and "users.db in" in stderr and "does not match its manifest" in stderr
    status, _out, stderr = offline_admin("restore", target, "--data-dir",
                                         str(tmp_path / "elsewhere"))
    assert status == 1 and "does not match its manifest" in stderr
    assert not os.path.exists(tmp_path / "elsewhere")


def test_a_relative_directory_is_the_operators_not_the_servers(make_server, tmp_path):
    server = make_server()
    (tmp_path / "here").mkdir()
    status, out, stderr = offline_admin("--data-dir", server.data_dir, "backup", "copy",
                                        cwd=str(tmp_path / "here"))
    assert status == 0, stderr
    assert "Backed up" in out
    assert (tmp_path / "here" / "copy" / "manifest.json").exists()
    assert offline_admin("check-backup", "copy", cwd=str(tmp_path / "here"))[0] == 0


def test_a_backup_of_an_encrypted_data_dir_is_encrypted_and_restores_only_with_its_key(
        make_server, tmp_path):
    key_file = str(tmp_path / "parley.key")
    server = make_server("--key-file", key_file)
    run_ok(server, "wombatuser", create=True)
    run_ok(server, "numbatuser", create=True)
    run_ok(server, "wombatuser", ['send numbatuser "zebra-subject-8812" "quokka-body-5531"'])
    target = str(tmp_path / "backup")
    assert run_admin(server, "backup", target)[0] == 0
    assert found_plaintext(target, NEEDLES) == []          # the copies stay encrypted
    assert not [name for name in os.listdir(target) if name.endswith(".key")]
    server.stop()

    data_dir = str(tmp_path / "restored" / "data")
    status, _out, stderr = offline_admin("restore", target, "--data-dir", data_dir)
    assert status == 1 and "is encrypted at rest: give its key" in stderr
    status, _out, stderr = offline_admin("restore", target, "--data-dir", data_dir,
                                         "--key-file", str(tmp_path / "no.key"))
    assert status == 1 and "no.key does not exist" in stderr
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    status, _out, stderr = offline_admin("restore", target, "--data-dir", data_dir,
                                         "--key-file", str(other))
    assert status == 1 and "the database key does not open" in stderr
    assert not os.path.exists(data_dir)                    # neither touched anything
    status, _out, stderr = offline_admin("restore", target, "--data-dir", data_dir,
                                         "--key-file", key_file)
    assert status == 0, stderr
    assert found_plaintext(data_dir, NEEDLES) == []
    restored = make_server("--key-file", key_file, subdir="restored")
    inbox = of_type(run_ok(restored, "numbatuser", ["inbox"]), "inbox")
    assert [m["subject"] for m in inbox[0]["messages"]] == ["zebra-subject-8812"]
