"""Tests for Modules/database/filestore.py: files encrypted at rest, chunk by chunk.

Real files in a temporary directory: a round trip of sizes around the
chunk boundary, no plaintext anywhere on disk while writing and after, a
changed, swapped or cut chunk detected, the wrong storage key refused, an
upload carried on after its durable chunks, a half-written upload
invisible, and the storage key file created once, 0600, and refused when
malformed.
"""

import os
import stat

import pytest

from Modules.database import filestore
from Modules.database.filestore import CHUNK, CorruptFile, FileStore, StoreError

MARK = b"PLAINTEXT-MARK-"


def known_bytes(size):
    """Recognisable plaintext: a mark every 64 bytes."""
    pattern = (MARK + b"x" * (64 - len(MARK))) * (size // 64 + 1)
    return pattern[:size]


def store_file(store, file_id, data, key):
    writer = store.writer(file_id, key, len(data))
    for index in range(writer.chunks):
        writer.write_chunk(index, data[index * CHUNK:(index + 1) * CHUNK])
    writer.finish()


def read_all(store, file_id, key, size):
    reader = store.reader(file_id, key, size)
    try:
        return b"".join(reader.chunk(index) for index in range(reader.chunks))
    finally:
        reader.close()


def disk_bytes(directory):
    found = b""
    for folder, _dirs, files in os.walk(directory):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                found += handle.read()
    return found


@pytest.fixture
def store(tmp_path):
    return FileStore(str(tmp_path / "files"))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_a_file_comes_back_as_it_went_in_and_no_plaintext_is_on_disk(store, tmp_path, size):
    key, _wrapped = filestore.new_file_key(os.urandom(32), 7)
    data = known_bytes(size)
    store_file(store, 7, data, key)
    assert read_all(store, 7, key, size) == data
    assert MARK not in disk_bytes(tmp_path)
    mode = stat.S_IMODE(os.stat(store.path(7)).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700


def test_a_half_written_upload_is_invisible_and_holds_no_plaintext(store, tmp_path):
    key = os.urandom(32)
    writer = store.writer(3, key, 2 * CHUNK)
    writer.write_chunk(0, known_bytes(CHUNK))
    writer.durable()
    with pytest.raises(StoreError, match="not stored"):
        store.reader(3, key, 2 * CHUNK)
    assert MARK not in disk_bytes(tmp_path)
    with pytest.raises(StoreError, match="1 of its 2 chunks"):
        writer.finish()
    writer.close()


def test_chunks_only_in_order_and_of_their_length(store):
    writer = store.writer(4, os.urandom(32), CHUNK + 5)
    with pytest.raises(StoreError, match="out of order"):
        writer.write_chunk(1, b"x" * 5)
    with pytest.raises(StoreError, match="has 3 bytes, not 65536"):
        writer.write_chunk(0, b"abc")
    writer.close()


def test_an_upload_carries_on_after_its_durable_chunks(store):
    key, data = os.urandom(32), known_bytes(3 * CHUNK + 1)
    writer = store.writer(5, key, len(data))
    writer.write_chunk(0, data[:CHUNK])
    assert writer.durable() == 1
    writer.write_chunk(1, data[CHUNK:2 * CHUNK])      # written, never made durable
    writer.close()
    again = store.writer(5, key, len(data), durable_chunks=1)
    assert again.next_index == 1
    for index in range(1, again.chunks):
        again.write_chunk(index, data[index * CHUNK:(index + 1) * CHUNK])
    again.finish()
    assert read_all(store, 5, key, len(data)) == data
    with pytest.raises(StoreError, match="does not hold 9 chunks"):
        store.writer(6, key, 20 * CHUNK, durable_chunks=9)


def test_a_resumed_upload_keeps_the_chunks_that_verify_and_hashes_them_again(store):
    key, data = os.urandom(32), known_bytes(4 * CHUNK + 7)
    writer = store.writer(8, key, len(data))
    for index in range(3):
        writer.write_chunk(index, data[index * CHUNK:(index + 1) * CHUNK])
    writer.close()
    path = store.path(8, partial=True)
    with open(path, "r+b") as handle:        # chunk 2 torn: half of it reached the disk
        handle.truncate(os.path.getsize(path) - CHUNK // 2)
    seen = []
    again = store.resumed_writer(8, key, len(data), seen.append)
    assert again.next_index == 2 and b"".join(seen) == data[:2 * CHUNK]
    with pytest.raises(filestore.OutOfOrder) as early:
        again.write_chunk(3, data[3 * CHUNK:4 * CHUNK])
    assert early.value.expected == 2
    for index in range(2, again.chunks):
        again.write_chunk(index, data[index * CHUNK:(index + 1) * CHUNK])
    again.close()
    whole = store.resumed_writer(8, key, len(data), lambda _chunk: None)
    assert whole.next_index == whole.chunks      # every chunk there: FileDone is next
    whole.finish()
    assert read_all(store, 8, key, len(data)) == data


def test_a_resumed_upload_starts_over_from_a_changed_missing_or_foreign_part(store):
    key, data = os.urandom(32), known_bytes(2 * CHUNK)
    assert store.resumed_writer(9, key, len(data), None).next_index == 0   # no .part yet
    writer = store.writer(10, key, len(data))
    writer.write_chunk(0, data[:CHUNK])
    writer.close()
    _flip(store.path(10, partial=True), len(filestore.MAGIC) + 4 + 100)
    assert store.resumed_writer(10, key, len(data), None).next_index == 0
    with open(store.path(11, partial=True), "wb") as handle:
        handle.write(b"not ours" * 100)
    restarted = store.resumed_writer(11, key, len(data), None)
    assert restarted.next_index == 0
    restarted.write_chunk(0, data[:CHUNK])
    restarted.write_chunk(1, data[CHUNK:])
    restarted.finish()
    assert read_all(store, 11, key, len(data)) == data


def _flip(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 1]))


def test_a_changed_chunk_is_detected_and_named(store):
    key, data = os.urandom(32), known_bytes(2 * CHUNK)
    store_file(store, 8, data, key)
    _flip(store.path(8), filestore._offset(1) + filestore.TAG + 100)
    reader = store.reader(8, key, len(data))
    assert reader.chunk(0) == data[:CHUNK]
    with pytest.raises(CorruptFile, match="chunk 1 of file 8 was changed on disk"):
        reader.chunk(1)
    reader.close()


def test_chunks_cannot_be_swapped_cut_or_moved_to_another_file(store):
    key, data = os.urandom(32), known_bytes(2 * CHUNK)
    store_file(store, 9, data, key)
    with open(store.path(9), "rb") as handle:
        blob = handle.read()
    header, first, second = (blob[:filestore._offset(0)],
                             blob[filestore._offset(0):filestore._offset(1)],
                             blob[filestore._offset(1):])
    with open(store.path(9), "wb") as handle:
        handle.write(header + second + first)                    # swapped
    with pytest.raises(CorruptFile):
        read_all(store, 9, key, len(data))
    with open(store.path(9), "wb") as handle:
        handle.write(header + first)                             # cut after chunk 0
    with pytest.raises(CorruptFile, match="cut short at chunk 1"):
        read_all(store, 9, key, len(data))
    with pytest.raises(CorruptFile):                            # chunk 0 as a 1-chunk file
        read_all(store, 9, key, CHUNK)
    with open(store.path(10), "wb") as handle:
        handle.write(blob)                                       # file 9's bytes as file 10
    with pytest.raises(CorruptFile):
        read_all(store, 10, key, len(data))


def test_a_file_key_opens_only_with_its_storage_key_and_its_file_id():
    storage_key = os.urandom(32)
    key, wrapped = filestore.new_file_key(storage_key, 11)
    assert filestore.unwrap_key(storage_key, 11, wrapped) == key
    with pytest.raises(CorruptFile, match="does not open with this server's storage key"):
        filestore.unwrap_key(os.urandom(32), 11, wrapped)
    with pytest.raises(CorruptFile):
        filestore.unwrap_key(storage_key, 12, wrapped)
    with pytest.raises(CorruptFile, match="malformed"):
        filestore.unwrap_key(storage_key, 11, wrapped[:-1])


def test_the_storage_key_file_is_made_once_0600_and_a_bad_one_is_left_alone(tmp_path):
    path = str(tmp_path / "storage_key")
    key = filestore.load_or_create_storage_key(path)
    assert len(key) == 32 and filestore.load_or_create_storage_key(path) == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    bad = tmp_path / "bad_key"
    bad.write_bytes(b"not a key\n")
    with pytest.raises(StoreError, match="not a Parley storage key file"):
        filestore.load_or_create_storage_key(str(bad))
    assert bad.read_bytes() == b"not a key\n"


def test_stale_uploads_are_found_for_cleaning_and_removed(store):
    key = os.urandom(32)
    store.writer(20, key, 10).close()
    store_file(store, 21, b"x" * 10, key)
    os.utime(store.path(20, partial=True), (1, 1))
    assert store.stale_uploads(older_than=1000) == [20]
    assert store.remove(20) and not store.remove(20)
    assert store.stale_uploads(older_than=10**12) == []
