"""Tests for Modules/database/file_upkeep.py: the rest of a file's life.

On real SQLite files (the `db` fixture): an offer its recipient deletes
before downloading becomes "deleted" and stays the sender's until they
delete their copy too, when the content is no longer stored and the quota
is free; a downloaded file goes when neither side keeps the offer; offers
to an account being deleted are left for its deletion to return, and the
files a deleted account sent go once their recipients no longer keep them;
expiry returns what was never downloaded with a bounce saying so and drops
the content of the rest; a stale upload goes only when its row and its
`.part` are both idle; the server's own room (everyone's files, the disk's
margin) and the operator's figures. In process, on a real writer and file
store: an idle upload of a closed connection goes, one on an open
connection stays. Against a real database process: the periodic upkeep
returns an expired file and removes its content while an upload in
progress carries on. End to end, with real daemons, the real client and
the real admin command: the expiry bounce, the access lost and the
storage freed by deleting the offer, the server-wide limit, the states in
`sent`, and file storage in `stats` and `audit`.
"""

import asyncio
import base64
import functools
import os
import subprocess
from types import SimpleNamespace

import pytest

from Modules.database import file_records, file_upkeep, filestore, mailbox, storage
from Modules.database.file_records import FileLimits
from Modules.database.files import FileService, Upload
from Modules.database.monitor import Monitor
from Modules.database.writer import SingleWriter
from Tests.support import (
    PASSWORD,
    BatchClient,
    child_env,
    client_command,
    of_type,
    run_admin,
    run_client,
    run_ok,
    running_database,
    wait_until,
)
from Tests.support.files import known_bytes, sha256
from Tests.support.monitor import user_link

NOW = 1_800_000_000.0
KEY = os.urandom(32)
LIMITS = FileLimits(max_bytes=1000, quota_bytes=1500, storage_bytes=2500)
DAY = 86400.0


def make(db, *names):
    for name in names:
        storage.create_account(db, name, "hash", NOW)


def offered(db, sender="alice", to="bob", size=100, name="a.txt", when=NOW):
    outcome, file_id, _key = file_records.begin_upload(db, KEY, sender, to, name, size,
                                                       "ab" * 32, None, when, LIMITS)
    assert outcome == "ok"
    return file_records.finish_upload(db, file_id, when)


def state_of(db, file_id):
    return db.execute("SELECT state, stored FROM msg.files WHERE id = ?",
                      (file_id,)).fetchone()


# ------------------------------------------------------------ copies of the offer


def test_an_offer_deleted_before_download_is_the_senders_until_they_delete_it_too(db):
    make(db, "alice", "bob")
    sent = offered(db, size=1000)
    file_id, message = sent["file"], sent["id"]
    assert file_upkeep.delete_messages(db, "bob", [message], NOW) == ([message], [], [])
    assert state_of(db, file_id) == ("deleted", 1)
    assert file_records.file_for_download(db, "bob", file_id) is None
    assert file_records.list_files(db, "bob") == []
    assert file_records.decline(db, "bob", file_id, None, NOW) is None
    assert file_records.file_for_download(db, "alice", file_id) is not None
    assert mailbox.sent(db, "alice")[0][0]["file"] == {"id": file_id, "state": "deleted"}
    assert file_records.begin_upload(db, KEY, "alice", "bob", "b", 1000, "ab" * 32, None,
                                     NOW, LIMITS)[0] == "quota"     # still hers, still kept
    assert file_upkeep.delete_messages(db, "alice", [message], NOW)[2] == [file_id]
    assert state_of(db, file_id) == ("deleted", 0)
    assert file_records.file_for_download(db, "alice", file_id) is None
    assert file_records.list_files(db, "alice") == []
    assert file_records.stored_bytes(db, "alice") == 0


def test_a_downloaded_file_goes_when_neither_side_keeps_the_offer(db):
    make(db, "alice", "bob")
    sent = offered(db)
    file_id, message = sent["file"], sent["id"]
    file_records.mark_downloaded(db, "bob", file_id, NOW)
    assert file_upkeep.delete_messages(db, "alice", [message], NOW)[2] == []
    assert file_records.file_for_download(db, "alice", file_id) is None   # her copy went
    assert file_records.file_for_download(db, "bob", file_id) is not None
    assert file_upkeep.delete_messages(db, "bob", [message, 999], NOW) == (
        [message], [999], [file_id])
    assert state_of(db, file_id) == ("downloaded", 0)


def test_offers_to_an_account_being_deleted_are_left_for_its_deletion_to_return(db):
    make(db, "alice", "bob")
    file_id = offered(db)["file"]
    storage.mark_deleting(db, "bob")
    storage.bounce_and_clear_inbox(db, "bob", NOW)       # the offer's copy went with it
    assert file_upkeep.settle_copies(db, NOW) == []
    assert state_of(db, file_id) == ("offered", 1)
    deliveries, ids = file_records.return_undownloaded(db, "bob", NOW)
    assert ids == [file_id] and deliveries[0][1]["subject"] == "Returned: a.txt"
    assert state_of(db, file_id) == ("returned", 0)
    assert mailbox.sent(db, "alice")[0][0]["file"]["state"] == "returned"


def test_a_deleted_senders_files_go_once_their_recipients_no_longer_keep_them(db):
    make(db, "alice", "bob")
    unwanted, kept = offered(db), offered(db)
    file_upkeep.delete_messages(db, "bob", [unwanted["id"]], NOW)
    storage.mark_deleting(db, "alice")
    storage.bounce_and_clear_inbox(db, "alice", NOW)     # her sent copies go with it
    assert file_upkeep.settle_copies(db, NOW) == [unwanted["file"]]
    assert file_records.file_for_download(db, "bob", kept["file"]) is not None


# ------------------------------------------------------------ expiry


def test_expiry_returns_what_was_never_downloaded_and_drops_the_rest(db):
    make(db, "alice", "bob")
    waiting = offered(db, name="plan\x1b.txt")["file"]
    fetched = offered(db, name="done.txt")["file"]
    file_records.mark_downloaded(db, "bob", fetched, NOW)
    dropped = offered(db, name="gone.txt")
    file_upkeep.delete_messages(db, "bob", [dropped["id"]], NOW)
    recent = offered(db, name="new.txt", when=NOW + 2 * DAY)["file"]
    deliveries, ids = file_upkeep.return_expired(db, NOW + DAY, NOW + 3 * DAY, "30 days")
    assert ids == [waiting, fetched, dropped["file"]]
    (sender, bounce), = deliveries
    assert sender == "alice" and bounce["kind"] == "bounce" and bounce["from"] == "parley"
    assert bounce["note"] == ("The file 'plan?.txt' was not downloaded by bob within "
                              "30 days; the server did not keep it longer.")
    assert bounce["subject"] == "Returned: plan?.txt" and bounce["original_to"] == "bob"
    assert [state_of(db, i) for i in ids] == [("returned", 0), ("downloaded", 0),
                                              ("deleted", 0)]
    assert state_of(db, recent) == ("offered", 1)
    states = {e["file"]["id"]: e["file"]["state"] for e in mailbox.sent(db, "alice")[0]}
    assert states == {waiting: "returned", fetched: "downloaded", dropped["file"]: "deleted",
                      recent: "offered"}
    assert file_upkeep.return_expired(db, NOW + DAY, NOW + 3 * DAY, "30 days") == ([], [])


def test_expiry_times_settings_and_their_words():
    assert file_upkeep.period_text(30 * DAY) == "30 days"
    assert file_upkeep.period_text(DAY) == "1 day"
    assert file_upkeep.period_text(1.5 * 3600) == "1.5 hours"
    assert file_upkeep.period_text(0.00003 * DAY) == "2.59 seconds"
    settings = file_upkeep.settings_from({"files": {"expiry_days": 0.5, "max_bytes": 9}})
    assert settings == (0.5, 24.0)
    assert file_upkeep.settings_from({}) == file_upkeep.UpkeepSettings(30.0, 24.0)
    assert file_upkeep.upkeep_interval(settings) == 30.0
    assert file_upkeep.upkeep_interval(settings._replace(expiry_days=0.00003)) == \
        pytest.approx(1.296)
    assert file_upkeep.upkeep_interval(settings._replace(upload_expiry_hours=1e-6)) == 0.5


# ------------------------------------------------------------ half-written uploads


def test_a_stale_upload_goes_only_when_its_row_and_its_part_are_both_idle(db, tmp_path):
    make(db, "alice", "bob")
    store = filestore.FileStore(str(tmp_path / "files"))
    ids = []
    for n in range(4):
        outcome, file_id, key = file_records.begin_upload(
            db, KEY, "alice", "bob", f"u{n}", 10, "ab" * 32, None, NOW, LIMITS)
        ids.append(file_id)
        if n < 3:
            store.writer(file_id, key, 10).close()
    old = NOW + 60
    os.utime(store.path(ids[0], partial=True), (NOW, NOW))           # idle
    os.utime(store.path(ids[1], partial=True), (old + 1, old + 1))   # written since
    os.utime(store.path(ids[2], partial=True), (NOW, NOW))           # idle, row touched:
    db.execute("UPDATE msg.files SET changed_at = ? WHERE id = ?", (old + 1, ids[2]))
    candidates = file_upkeep.upload_candidates(db, old)
    assert candidates == [ids[0], ids[1], ids[3]]
    quiet = file_upkeep.quiet_parts(store, candidates, old)
    assert quiet == [ids[0], ids[3]]                                 # ids[3]: no .part at all
    assert file_upkeep.abandon_stale_uploads(db, old, quiet) == [ids[0], ids[3]]
    assert file_upkeep.upload_candidates(db, old) == [ids[1]]
    assert file_upkeep.abandon_stale_uploads(db, NOW - 1) == []        # nothing that old
    assert offered(db)["file"] not in file_upkeep.abandon_stale_uploads(db, NOW + DAY)


# ------------------------------------------------------------ room and figures


def _disk(free, total, block=1):
    return lambda _path: SimpleNamespace(f_bavail=free // block, f_frsize=block,
                                         f_blocks=total // block)


def test_the_servers_room_counts_everyones_files_and_keeps_the_disk_margin(db, tmp_path):
    make(db, "alice", "bob", "carol")
    store = filestore.FileStore(str(tmp_path / "files"))
    roomy = _disk(100 * 1024 ** 3, 200 * 1024 ** 3)
    offered(db, size=1000)
    offered(db, sender="carol", size=1000)
    assert file_upkeep.room_refusal(store, db, 500, LIMITS, roomy) is None
    assert file_upkeep.room_refusal(store, db, 501, LIMITS, roomy) == "storage_full"
    outcome, file_id, key = file_records.begin_upload(
        db, KEY, "bob", "alice", "big", 400, "ab" * 32, None, NOW, LIMITS)
    assert file_upkeep.room_refusal(store, db, 101, LIMITS, roomy) == "storage_full"
    big = LIMITS._replace(storage_bytes=10 ** 15)
    gib = 1024 ** 3
    assert file_upkeep.room_refusal(store, db, 1000, big, _disk(gib + 1400, 200 * gib)) \
        is None                           # the upload in progress will write 400 more
    assert file_upkeep.room_refusal(store, db, 1001, big, _disk(gib + 1400, 200 * gib)) \
        == "disk_full"
    assert file_upkeep.disk_margin(200 * gib) == gib
    assert file_upkeep.disk_margin(10 * gib) == gib // 2        # 5 % of a small disk
    limited = file_records.begin_upload(db, KEY, "bob", "alice", "x", 600, "ab" * 32, None,
                                        NOW, LIMITS, functools.partial(file_upkeep.room_refusal, store))
    assert limited == ("storage_full", None, None)


def test_the_figures_of_file_storage_for_stats_and_audit(db, tmp_path):
    make(db, "alice", "bob", "carol")
    offered(db, size=100)
    fetched = offered(db, size=200)["file"]
    file_records.mark_downloaded(db, "bob", fetched, NOW)
    offered(db, sender="bob", to="carol", size=50)
    declined = offered(db, sender="carol", to="alice", size=70)["file"]
    file_records.decline(db, "alice", declined, None, NOW)
    file_records.begin_upload(db, KEY, "carol", "bob", "u", 30, "ab" * 32, None, NOW, LIMITS)
    assert file_upkeep.storage_figures(db) == {"stored": 3, "stored_bytes": 350,
                                               "uploads": 1, "upload_bytes": 30,
                                               "waiting": 2}
    assert file_upkeep.storage_by_user(db) == {
        "alice": {"files_stored": 2, "file_bytes": 300, "files_waiting": 0},
        "bob": {"files_stored": 1, "file_bytes": 50, "files_waiting": 1},
        "carol": {"files_stored": 0, "file_bytes": 0, "files_waiting": 1}}
    store = filestore.FileStore(str(tmp_path / "files"))
    assert file_upkeep.disk_bytes(store) == 0
    store.writer(7, os.urandom(32), 10).close()
    assert file_upkeep.disk_bytes(store) == os.path.getsize(store.path(7, partial=True))


def test_files_no_row_keeps_are_removed_but_never_newer_ones(tmp_path):
    store = filestore.FileStore(str(tmp_path))
    for name in ("1.blob", "2.blob", "3.part", "9.blob", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert file_upkeep.remove_unkept(store, kept={2}, through=5) == 2
    assert sorted(os.listdir(tmp_path)) == ["2.blob", "9.blob", "notes.txt"]


# ------------------------------------------------------------ in process: uploads


@pytest.fixture
def served(tmp_path):
    """A Monitor on a real writer and a real file store, in this process."""
    loop = asyncio.new_event_loop()
    data_dir = str(tmp_path / "data")
    writer = SingleWriter(loop, lambda: storage.open_databases(data_dir),
                          storage.close_databases)
    writer.start()
    monitor = Monitor(writer, None, None, os.urandom(32))
    monitor.files = FileService(data_dir)
    yield monitor, loop.run_until_complete
    writer.stop()
    monitor.files.close()
    loop.close()


def test_an_idle_upload_of_a_closed_connection_goes_and_one_on_an_open_one_stays(served):
    monitor, run = served
    files = monitor.files
    for name in ("alice", "bob"):
        run(monitor.job(storage.create_account, name, "hash", NOW))
    ids = []
    for state in ("open", "closed", None):
        outcome, file_id, key = run(monitor.job(
            file_records.begin_upload, files.storage_key, "alice", "bob", f"f{state}", 10,
            "ab" * 32, None, NOW, LIMITS))      # three files: the same one would resume
        ids.append(file_id)
        writer = files.store.writer(file_id, key, 10)
        os.utime(files.store.path(file_id, partial=True), (NOW, NOW))
        if state is None:
            writer.close()                           # no Upload in this process
        else:
            conn = SimpleNamespace(closed=lambda closed=(state == "closed"): closed)
            files.uploads[file_id] = Upload(file_id, conn, writer, "ab" * 32)
    assert run(file_upkeep.expire_uploads(monitor, NOW + 60)) == ids[1:]
    assert list(files.uploads) == [ids[0]]
    assert os.listdir(files.store.directory) == [f"{ids[0]}.part"]
    assert run(monitor.job(file_upkeep.upload_candidates, NOW + 60)) == [ids[0]]
    assert run(file_upkeep.expire_uploads(monitor, NOW + 60)) == []


# ------------------------------------------------------------ a real database process

CHUNK = filestore.CHUNK


def b64(data):
    return base64.b64encode(data).decode("ascii")


def test_the_upkeep_returns_an_expired_file_while_an_upload_in_progress_carries_on(tmp_path):
    tiny = {"expiry_days": 0.00003, "upload_expiry_hours": 1e-6}   # 2.6 s, 3.6 ms
    with running_database(tmp_path, files=tiny) as (_proc, config):
        alice, bob = user_link(config, "alice"), user_link(config, "bob")
        data = known_bytes(3 * CHUNK)
        pending = alice.call("FileOffer", to="bob", name="later.bin", size=len(data),
                             sha256=sha256(data))["upload"]
        alice.call("FileChunk", upload=pending, index=0, data=b64(data[:CHUNK]))
        soon = alice.call("FileOffer", to="bob", name="soon.bin", size=5,
                          sha256=sha256(b"hello"))["upload"]
        alice.call("FileChunk", upload=soon, index=0, data=b64(b"hello"))
        alice.call("FileDone", upload=soon)
        blob = os.path.join(config["data_dir"], "files", f"{soon}.blob")
        assert os.path.exists(blob)

        def state():
            return {f["id"]: f["state"] for f in alice.call("Files")["files"]}.get(soon)
        wait_until(lambda: state() == "returned", message="the expired file returned")
        # its content goes from disk after that commit, on the file I/O thread
        wait_until(lambda: not os.path.exists(blob), message="its content removed")
        assert bob.call("Files")["files"] == []
        bounce = alice.call("Inbox")["messages"][0]
        assert bounce["kind"] == "bounce" and bounce["subject"] == "Returned: soon.bin"
        for index in (1, 2):          # idle far longer than 3.6 ms, but its connection is open
            alice.call("FileChunk", upload=pending, index=index,
                       data=b64(data[index * CHUNK:(index + 1) * CHUNK]))
        assert alice.call("FileDone", upload=pending)["id"] == pending


# ------------------------------------------------------------ end to end


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _accounts(server, *names):
    for name in names:
        run_ok(server, name, create=True)


def _files_dir(server):
    return os.path.join(server.data_dir, "files")


def test_a_file_not_downloaded_in_time_comes_back_to_its_sender(make_server, tmp_path):
    server = make_server("--file-expiry-days", "0.00003")           # 2.6 seconds
    _accounts(server, "alice", "bob")
    path = _write(tmp_path, "report.bin", known_bytes(100_000))
    listening = BatchClient(server, "alice")
    try:
        listening.wait_type("ready")
        sent = of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")[0]
        bounce = listening.wait_for(lambda o: o.get("type") == "message"
                                    and o.get("kind") == "bounce")
    finally:
        listening.close()
    assert bounce["subject"] == "Returned: report.bin" and bounce["original_to"] == "bob"
    assert bounce["note"] == ("The file 'report.bin' was not downloaded by bob within 2.59 "
                              "seconds; the server did not keep it longer.")
    wait_until(lambda: os.listdir(_files_dir(server)) == [],    # after the bounce's commit
               message="the returned file's content removed")
    listed = of_type(run_ok(server, "alice", ["sent"]), "sent_list")[0]["messages"]
    assert listed[0]["file"] == {"id": sent["id"], "state": "returned"}
    target = tmp_path / "bob"
    target.mkdir()
    _code, objects, _ = run_client(server, "bob", ["files", f"download {sent['id']} {target}"])
    assert of_type(objects, "files")[0]["files"] == []
    assert of_type(objects, "error")[0]["code"] == "not_found" and os.listdir(target) == []


def test_deleting_the_offer_ends_access_and_the_file_goes_when_neither_keeps_it(make_server,
                                                                              tmp_path):
    server = make_server("--file-quota-bytes", "1M")
    _accounts(server, "alice", "bob")
    data = known_bytes(700_000)
    path = _write(tmp_path, "plan.bin", data)
    sent = of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")[0]
    run_ok(server, "bob", [f"delete {sent['message']}"])
    target = tmp_path / "out"
    target.mkdir()
    _code, objects, _ = run_client(server, "bob", ["files", f"download {sent['id']} {target}"])
    assert of_type(objects, "files")[0]["files"] == []
    assert of_type(objects, "error")[0]["code"] == "not_found" and os.listdir(target) == []
    mine = run_ok(server, "alice", ["sent", f"download {sent['id']} {target}"])
    assert of_type(mine, "sent_list")[0]["messages"][0]["file"]["state"] == "deleted"
    assert (target / "plan.bin").read_bytes() == data                  # hers while she keeps it
    _code, again, _ = run_client(server, "alice", [f"send-file bob {path}"])
    assert of_type(again, "error")[0]["code"] == "quota_exceeded"      # still kept, still hers
    run_ok(server, "alice", [f"delete {sent['message']}"])
    assert os.listdir(_files_dir(server)) == []          # gone once the delete was answered
    assert of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")


def test_the_servers_limit_refuses_a_file_before_any_byte(make_server, tmp_path):
    server = make_server("--file-storage-bytes", "1M")
    _accounts(server, "alice", "bob", "carol")
    path = _write(tmp_path, "half.bin", known_bytes(700_000))
    assert of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")
    _code, objects, _ = run_client(server, "carol", [f"send-file bob {path}"])
    error = of_type(objects, "error")[0]
    assert error["code"] == "storage_full"
    assert error["error"] == ("The file is 683.6 KiB, and with it the files this server keeps "
                              "for everyone would hold more than its limit of 1.0 MiB; there "
                              "is no room for it now.")
    assert [name.split(".")[1] for name in os.listdir(_files_dir(server))] == ["blob"]


def test_the_sender_sees_what_became_of_each_file_in_sent(server, tmp_path):
    _accounts(server, "alice", "bob")
    paths = [_write(tmp_path, f"f{n}.txt", known_bytes(1000 + n)) for n in range(3)]
    sent = of_type(run_ok(server, "alice", [f"send-file bob {p}" for p in paths]),
                   "file_sent")
    target = tmp_path / "in"
    target.mkdir()
    run_ok(server, "bob", [f"download {sent[0]['id']} {target}", f"decline {sent[1]['id']}"])
    alice = run_ok(server, "alice", ["sent"])
    listed = [m for m in of_type(alice, "sent_list")[0]["messages"] if "file" in m]
    assert [(m["id"], m["file"]) for m in listed] == [
        (sent[2]["message"], {"id": sent[2]["id"], "state": "offered"}),
        (sent[1]["message"], {"id": sent[1]["id"], "state": "declined"}),
        (sent[0]["message"], {"id": sent[0]["id"], "state": "downloaded"})]
    done = subprocess.run(client_command(server, "alice", as_json=False), input="sent\n",
                          capture_output=True, text=True, timeout=60,
                          env=child_env({"PARLEY_TEST_PASSWORD": PASSWORD}))
    assert f"(file {sent[0]['id']}: downloaded)" in done.stdout
    assert f"(file {sent[1]['id']}: declined)" in done.stdout


def test_stats_and_audit_report_file_storage(server, tmp_path):
    _accounts(server, "alice", "bob")
    path = _write(tmp_path, "a.bin", known_bytes(100_000))
    run_ok(server, "alice", [f"send-file bob {path}"])
    code, stats, err = run_admin(server, "stats", as_json=True)
    assert code == 0, err
    figures = stats["files"]
    assert (figures["stored"], figures["stored_bytes"], figures["waiting"],
            figures["uploads"], figures["upload_bytes"]) == (1, 100_000, 1, 0, 0)
    assert figures["disk_bytes"] > 100_000 and figures["storage_limit"] == 50 * 1024 ** 3
    code, text, _ = run_admin(server, "stats")
    assert "files stored" in text and "1 (0.1 MiB of 50.0 GiB), 1 not yet downloaded" in text
    code, report, err = run_admin(server, "audit", as_json=True)
    assert code == 0, err
    lines = open(report["path"]).read().splitlines()
    alice = lines.index(next(line for line in lines if line.startswith("  alice ")))
    assert lines[alice + 2].split() == ["files_stored=1", "file_bytes=100000",
                                        "files_waiting=0"]
    bob = lines.index(next(line for line in lines if line.startswith("  bob ")))
    assert lines[bob + 2].split() == ["files_stored=0", "file_bytes=0", "files_waiting=1"]
    server_line = next(line for line in lines if line.startswith("  server "))
    assert "files_stored=1" in server_line and "files_waiting=1" in server_line
