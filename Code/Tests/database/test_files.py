"""Tests for Modules/database/files.py: the monitor's file answers and its store.

Against a real database process (`running_database`, real files, real
sockets): the storage key made 0600 in its own file at start, beside the
database files and in none of them, and a malformed one stopping the
process with the storage error status and left as it was; what a restart
finds half-written or no longer kept removed; an upload carried chunk by
chunk, refused out of order or not base64 with a sentence while the upload
goes on, finished only when complete, and visible only to its own
connection; an upload whose connection ends resumed by offering the same
file again, from a new connection or taken over from the one holding it;
every answer acting as the bound user whatever names the request carries;
chunks and FileDone pipelined without waiting finish the file.
"""

import base64
import multiprocessing
import os
import stat

import pytest

from Modules.database import filestore
from Modules.database.files import KEY_FILE, UPLOADS_PER_CONNECTION
from Modules.database.link import DbError, Reply
from Modules.database.monitor import EXIT_STORAGE_ERROR
from Tests.support import running_database
from Tests.support.files import known_bytes, plaintext_on_disk, sha256
from Tests.support.monitor import user_link
from Tests.support.processes import WAIT, _database_main, database_config

CHUNK = filestore.CHUNK


def b64(data):
    return base64.b64encode(data).decode("ascii")


def offer(link, data, to="bob", name="f.bin"):
    return link.call("FileOffer", to=to, name=name, size=len(data), sha256=sha256(data))


def files_dir(config):
    return os.path.join(config["data_dir"], "files")


def test_the_storage_key_is_its_own_file_and_in_no_database_file(tmp_path):
    with running_database(tmp_path) as (_proc, config):
        key_path = os.path.join(config["data_dir"], KEY_FILE)
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
        key = filestore.load_or_create_storage_key(key_path)
        for name in os.listdir(config["data_dir"]):
            if name.endswith((".db", "-wal")):
                with open(os.path.join(config["data_dir"], name), "rb") as handle:
                    content = handle.read()
                assert key not in content and key.hex().encode() not in content


def test_a_malformed_key_file_stops_the_process_and_is_left_alone(tmp_path):
    config = database_config(tmp_path)
    os.makedirs(config["data_dir"])
    key_path = os.path.join(config["data_dir"], KEY_FILE)
    with open(key_path, "wb") as handle:
        handle.write(b"parley-storage-key-v1 nothex\n")
    ctx = multiprocessing.get_context("forkserver")
    ready = ctx.Event()
    proc = ctx.Process(target=_database_main, args=(config, ready, None))
    proc.start()
    try:
        proc.join(WAIT)
        assert proc.exitcode == EXIT_STORAGE_ERROR and not ready.is_set()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    with open(key_path, "rb") as handle:
        assert handle.read() == b"parley-storage-key-v1 nothex\n"


def test_a_restart_removes_half_written_uploads_and_files_no_row_keeps(tmp_path):
    stray = tmp_path / "data" / "files"
    stray.mkdir(parents=True)
    for name in ("41.part", "42.blob", "notes.txt"):
        (stray / name).write_bytes(b"x")
    with running_database(tmp_path) as (_proc, config):
        alice = user_link(config, "alice")
        user_link(config, "bob")
        assert sorted(os.listdir(files_dir(config))) == ["notes.txt"]   # not ours: kept
        alice.call("FileOffer", to="bob", name="a", size=10, sha256=sha256(b"0" * 10))
        assert len(os.listdir(files_dir(config))) == 2                   # and a .part


def test_an_upload_chunk_by_chunk_refusing_what_is_wrong_with_a_sentence(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    data = known_bytes(2 * CHUNK + 10)
    upload = offer(alice, data)
    assert (upload["chunk_size"], upload["chunks"]) == (CHUNK, 3)
    number = upload["upload"]
    for index, piece, code, words in (
            (1, data[CHUNK:2 * CHUNK], "out_of_order", "needs chunk 0 next, not 1"),
            (0, b"short", "bad_request", "has 5 bytes, not 65536"),
            (0, None, "bad_request", "not base64")):
        with pytest.raises(DbError) as refused:
            alice.call("FileChunk", upload=number, index=index,
                       data="***" if piece is None else b64(piece))
        assert refused.value.code == code and words in refused.value.reason
    assert alice.call("FileChunk", upload=number, index=0,
                      data=b64(data[:CHUNK]))["received"] == 1
    assert plaintext_on_disk(config["data_dir"]) == []         # while it is half-written
    with pytest.raises(DbError) as early:
        alice.call("FileDone", upload=number)
    assert early.value.code == "incomplete" and "1 of its 3 chunks" in early.value.reason
    with pytest.raises(DbError) as foreign:                  # not bob's upload
        bob.call("FileChunk", upload=number, index=1, data=b64(data[CHUNK:2 * CHUNK]))
    assert foreign.value.code == "not_found"
    for index in (1, 2):
        alice.call("FileChunk", upload=number, index=index,
                   data=b64(data[index * CHUNK:(index + 1) * CHUNK]))
    done = alice.call("FileDone", upload=number)
    assert done["id"] == number and done["bounced"] is False
    assert plaintext_on_disk(config["data_dir"]) == []
    fetched = bob.call("FileFetch", id=number, index=2, user="alice")
    assert base64.b64decode(fetched["data"]) == data[2 * CHUNK:]
    assert (fetched["size"], fetched["sha256"], fetched["name"]) == (len(data), sha256(data),
                                                                     "f.bin")


def test_an_upload_whose_connection_ends_is_resumed_by_offering_the_file_again(database):
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    data = known_bytes(3 * CHUNK + 5)
    number = offer(alice, data)["upload"]
    for index in (0, 1):
        alice.call("FileChunk", upload=number, index=index,
                   data=b64(data[index * CHUNK:(index + 1) * CHUNK]))
    alice.close()
    again = user_link(config, "alice")
    assert again.call("Files")["files"] == [] and bob.call("Files")["files"] == []
    with pytest.raises(DbError) as gone:            # no longer in progress on any connection
        again.call("FileDone", upload=number)
    assert gone.value.code == "not_found"
    resumed = offer(again, data)
    assert (resumed["upload"], resumed["next"], resumed["resumed"]) == (number, 2, True)
    assert os.listdir(files_dir(config)) == [f"{number}.part"]
    for index in (2, 3):
        again.call("FileChunk", upload=number, index=index,
                   data=b64(data[index * CHUNK:(index + 1) * CHUNK]))
    assert again.call("FileDone", upload=number)["id"] == number
    fetched = bob.call("FileFetch", id=number, index=0)
    assert base64.b64decode(fetched["data"]) == data[:CHUNK]
    assert fetched["sha256"] == sha256(data)


def test_a_resumed_offer_takes_the_upload_over_from_the_connection_holding_it(database):
    _, config = database
    first, second = user_link(config, "alice"), user_link(config, "alice")
    user_link(config, "bob")
    data = known_bytes(2 * CHUNK)
    number = offer(first, data)["upload"]
    first.call("FileChunk", upload=number, index=0, data=b64(data[:CHUNK]))
    assert offer(second, data)["next"] == 1
    with pytest.raises(DbError) as taken:
        first.call("FileChunk", upload=number, index=1, data=b64(data[CHUNK:]))
    assert taken.value.code == "not_found"
    second.call("FileChunk", upload=number, index=1, data=b64(data[CHUNK:]))
    assert second.call("FileDone", upload=number)["bounced"] is False


def test_a_connection_has_a_few_uploads_at_once_and_each_user_only_their_files(database):
    _, config = database
    alice, bob, carol = (user_link(config, name) for name in ("alice", "bob", "carol"))
    for number in range(UPLOADS_PER_CONNECTION):
        offer(alice, b"x" * (number + 1))
    with pytest.raises(DbError) as busy:
        offer(alice, b"y")
    assert busy.value.code == "busy"
    number = offer(carol, b"hello")["upload"]
    carol.call("FileChunk", upload=number, index=0, data=b64(b"hello"))
    file_id = carol.call("FileDone", upload=number)["id"]
    for request in (("FileFetch", {"id": file_id, "index": 0}),
                    ("FileDecline", {"id": file_id, "username": "bob"})):
        with pytest.raises(DbError) as refused:
            alice.call(request[0], **request[1], user="bob", owner="bob")
        assert refused.value.code == "not_found"
    assert alice.call("Files", user="bob")["files"] == []
    assert [f["id"] for f in bob.call("Files")["files"]] == [file_id]


def test_chunks_and_done_pipelined_without_waiting_finish_the_file(database):
    """FileDone sent right behind its chunks sees them all written and hashed."""
    _, config = database
    alice, bob = user_link(config, "alice"), user_link(config, "bob")
    data = known_bytes(5 * CHUNK + 1)
    number = offer(alice, data)["upload"]
    rids = [alice.send_request("FileChunk", upload=number, index=index,
                               data=b64(data[index * CHUNK:(index + 1) * CHUNK]))
            for index in range(6)]
    rids.append(alice.send_request("FileDone", upload=number))
    replies = {}
    while len(replies) < len(rids):
        event = alice.read_event()
        if isinstance(event, Reply):
            replies[event.rid] = event
    assert all(replies[rid].ok for rid in rids), [replies[r].data for r in rids]
    assert replies[rids[-1]].data["id"] == number
    assert [f["state"] for f in bob.call("Files")["files"]] == ["offered"]
