"""Files at rest: every stored file encrypted with its own key, chunk by chunk.

The first brick of issue 14 (files between people). Only the database
process uses it: it owns the data, files included.

Keys. The server's *storage key* (32 random bytes) lives in its own file,
`storage_key` in the data dir unless the operator puts it elsewhere (a
copy of the data dir without it is unreadable): never in the database
files. Every file gets a fresh random 32-byte key; what the database keeps
is that key *wrapped* (AES-256-GCM under the storage key, bound to the
file's id), so a stolen `messages.db` reveals no file key.

Layout of a stored file, `<directory>/<file id>.blob` (`.part` while it is
being written, and invisible to everyone until `finish()` renames it):
a header (`MAGIC`, the chunk size), then one record per chunk of at most
`CHUNK` plaintext bytes: the 16-byte GCM tag and the ciphertext. The nonce
is the chunk's index; the associated data is the file id, the index and
whether it is the last chunk, so chunks cannot be swapped, replayed into
another file, or cut off at the end without `CorruptFile`. Chunk `i`
starts at a computable offset, so a download resumes at any chunk and an
upload (`resumed_writer`) after the chunks of its `.part` that verify:
whatever a lost connection or a killed process left torn at the end is
written again. No plaintext is ever written
to disk, not even in a temporary file; memory per transfer is one chunk.

How it fails: `CorruptFile` (a tag that does not verify: the file on disk
was changed, or the wrong storage key), `StoreError` (a malformed key
file, a file that is not there; `OutOfOrder`, a subclass, for a chunk
that is not the next one), and OSError from
the disk, unchanged.
"""

import os
import secrets
import struct

from Crypto.Cipher import AES

from Modules.database import at_rest

MAGIC = b"PRLYFILE1\n"
CHUNK = 64 * 1024
TAG = 16
KEY_BYTES = 32
KEY_FILE_TAG = b"parley-storage-key-v1"
_HEADER = MAGIC + struct.pack(">I", CHUNK)
_RECORD = TAG + CHUNK


class StoreError(Exception):
    """A request the store cannot carry out; the message says why."""


class CorruptFile(StoreError):
    """A stored file does not decrypt: changed on disk, cut short, or the wrong key."""


class OutOfOrder(StoreError):
    """A chunk that is not the next one the upload needs (`expected`)."""

    def __init__(self, message, expected):
        super().__init__(message)
        self.expected = expected


# -- the storage key ---------------------------------------------------------

def load_or_create_storage_key(path, db_key=None):
    """The 32-byte storage key from `path`, created (mode 0600) on first use;
    with a database key the file is kept wrapped under it (`at_rest.wrap`)."""
    try:
        with open(path, "rb") as key_file:
            content = key_file.read(4096)
    except FileNotFoundError:
        key = secrets.token_bytes(KEY_BYTES)
        content = KEY_FILE_TAG + b" " + key.hex().encode() + b"\n"
        if db_key is not None:
            content = at_rest.wrap(db_key, os.path.basename(path), content)
        _write_new_key_file(path, content)
        return key
    content = _unwrapped(path, content, db_key)
    fields = content.split()
    if len(fields) != 2 or fields[0] != KEY_FILE_TAG or len(fields[1]) != 2 * KEY_BYTES:
        raise StoreError(f"{path} is not a Parley storage key file (expected "
                         f"'{KEY_FILE_TAG.decode()} <64 hex digits>'); it was left as it is")
    try:
        return bytes.fromhex(fields[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise StoreError(f"{path} holds a malformed storage key; it was left as it "
                         "is") from None


def _unwrapped(path, content, db_key):
    if at_rest.is_wrapped(content) != (db_key is not None):
        state = "wrapped under a database key" if db_key is None else "not wrapped"
        raise StoreError(f"{path} is {state}, unlike the data dir's databases; it was "
                         "left as it is")
    if db_key is None:
        return content
    try:
        return at_rest.unwrap(db_key, os.path.basename(path), content, path)
    except at_rest.AtRestError as error:
        raise StoreError(str(error)) from None


def _write_new_key_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    at_rest.fsync_path(os.path.dirname(os.path.abspath(path)))


def new_file_key(storage_key, file_id):
    """(file key, wrapped key to store in the database) for a new file."""
    key = secrets.token_bytes(KEY_BYTES)
    return key, wrap_key(storage_key, file_id, key)


def wrap_key(storage_key, file_id, key):
    nonce = secrets.token_bytes(12)
    cipher = AES.new(storage_key, AES.MODE_GCM, nonce=nonce)
    cipher.update(b"parley file key " + str(file_id).encode())
    sealed, tag = cipher.encrypt_and_digest(key)
    return nonce + tag + sealed


def unwrap_key(storage_key, file_id, wrapped):
    """The file's key; CorruptFile if the wrapped key or the storage key is wrong."""
    if len(wrapped) != 12 + TAG + KEY_BYTES:
        raise CorruptFile(f"the key of file {file_id} is malformed")
    cipher = AES.new(storage_key, AES.MODE_GCM, nonce=wrapped[:12])
    cipher.update(b"parley file key " + str(file_id).encode())
    try:
        return cipher.decrypt_and_verify(wrapped[12 + TAG:], wrapped[12:12 + TAG])
    except ValueError:
        raise CorruptFile(f"the key of file {file_id} does not open with this server's "
                          "storage key") from None


# -- chunks --------------------------------------------------------------------

def _cipher(key, file_id, index, last):
    cipher = AES.new(key, AES.MODE_GCM, nonce=struct.pack(">4xQ", index))
    cipher.update(struct.pack(">QQ?", int(file_id), index, last))
    return cipher


def chunk_count(size):
    """How many chunks a file of `size` bytes has (an empty file has one, empty)."""
    return max(1, -(-size // CHUNK))


def _offset(index):
    return len(_HEADER) + index * _RECORD


class FileStore:
    """The directory of stored files (created 0700 on first use)."""

    def __init__(self, directory):
        self.directory = directory

    def path(self, file_id, partial=False):
        return os.path.join(self.directory, f"{int(file_id)}.{'part' if partial else 'blob'}")

    def writer(self, file_id, key, size, durable_chunks=0):
        """A Writer for a new upload of `size` bytes, or for one carried on after
        its first `durable_chunks` chunks (the count its last `durable()` gave:
        whatever came after them may be torn, and is written again)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        return Writer(self.path(file_id, partial=True), self.path(file_id), file_id, key, size,
                      durable_chunks)

    def resumed_writer(self, file_id, key, size, on_chunk):
        """A Writer that carries on an upload cut off by a lost connection or a
        restart. The chunks of its `.part` file that open and verify are kept,
        each passed to `on_chunk(plaintext)` in order (the caller hashes them
        again); what follows them, torn or never written, goes. A `.part` that
        is missing or not ours starts the upload over."""
        try:
            handle = open(self.path(file_id, partial=True), "rb")
        except FileNotFoundError:
            return self.writer(file_id, key, size)
        with handle:
            good = _verified_chunks(handle, file_id, key, size, on_chunk)
        if good == 0:
            return self.writer(file_id, key, size)
        return self.writer(file_id, key, size, durable_chunks=good)

    def reader(self, file_id, key, size):
        path = self.path(file_id)
        if not os.path.exists(path):
            raise StoreError(f"file {file_id} is not stored")
        return Reader(path, file_id, key, size)

    def remove(self, file_id):
        """Forget a file, finished or not; False if there was none."""
        removed = False
        for partial in (False, True):
            try:
                os.unlink(self.path(file_id, partial))
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def stale_uploads(self, older_than):
        """Ids of half-written uploads not touched since `older_than` (epoch seconds)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        stale = []
        for name in names:
            stem, _, suffix = name.partition(".")
            if suffix == "part" and stem.isdigit() and \
                    os.path.getmtime(os.path.join(self.directory, name)) < older_than:
                stale.append(int(stem))
        return sorted(stale)


def _verified_chunks(handle, file_id, key, size, on_chunk):
    """How many chunks from the start of a `.part` file open and verify."""
    if handle.read(len(_HEADER)) != _HEADER:
        return 0
    chunks = chunk_count(size)
    for index in range(chunks):
        length = size - index * CHUNK if index == chunks - 1 else CHUNK
        record = handle.read(TAG + length)
        if len(record) != TAG + length:
            return index
        try:
            data = _cipher(key, file_id, index, index == chunks - 1).decrypt_and_verify(
                record[TAG:], record[:TAG])
        except ValueError:
            return index
        on_chunk(data)
    return chunks


class Writer:
    """One upload: chunks in order, each sealed before it reaches the disk."""

    def __init__(self, partial_path, final_path, file_id, key, size, durable_chunks=0):
        self.partial_path, self.final_path = partial_path, final_path
        self.file_id, self.key, self.size = file_id, key, size
        self.chunks = chunk_count(size)
        if durable_chunks:
            try:
                self._file = open(partial_path, "r+b")
            except FileNotFoundError:
                raise StoreError(f"upload {file_id} does not hold {durable_chunks} "
                                 "chunks") from None
            self._resume_at(durable_chunks)
        else:
            self._file = open(partial_path, "wb")
            os.fchmod(self._file.fileno(), 0o600)
            self._file.write(_HEADER)
            self.next_index = 0

    def _resume_at(self, index):
        """Carry on after `index` durable chunks (all of them: FileDone is next);
        the rest of the file goes."""
        length = os.fstat(self._file.fileno()).st_size
        end = _offset(index - 1) + TAG + self.expected_length(index - 1)
        if not 0 < index <= self.chunks or length < end:
            self._file.close()
            raise StoreError(f"upload {self.file_id} does not hold {index} chunks")
        self._file.truncate(end)
        self.next_index = index

    def expected_length(self, index):
        if index == self.chunks - 1:
            return self.size - index * CHUNK
        return CHUNK

    def write_chunk(self, index, data):
        """Seal and append chunk `index`; StoreError unless it is the next one and
        of its exact length."""
        if index != self.next_index or index >= self.chunks:
            raise OutOfOrder(f"chunk {index} of file {self.file_id} is out of order "
                             f"(expected {self.next_index})", self.next_index)
        if len(data) != self.expected_length(index):
            raise StoreError(f"chunk {index} of file {self.file_id} has {len(data)} bytes, "
                             f"not {self.expected_length(index)}")
        sealed, tag = _cipher(self.key, self.file_id, index,
                              index == self.chunks - 1).encrypt_and_digest(data)
        self._file.seek(_offset(index))
        self._file.write(tag + sealed)
        self.next_index = index + 1

    def durable(self):
        """Everything written so far is on disk; the number of chunks that are."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self.next_index

    def finish(self):
        """All chunks written: make the file durable and visible under its name."""
        if self.next_index != self.chunks:
            raise StoreError(f"file {self.file_id} has {self.next_index} of its "
                             f"{self.chunks} chunks")
        self.durable()
        self._file.close()
        os.replace(self.partial_path, self.final_path)
        at_rest.fsync_path(os.path.dirname(self.final_path))

    def close(self):
        self._file.close()


class Reader:
    """One download: any chunk, opened and checked."""

    def __init__(self, path, file_id, key, size):
        self.file_id, self.key, self.size = file_id, key, size
        self.chunks = chunk_count(size)
        self._file = open(path, "rb")
        if self._file.read(len(_HEADER)) != _HEADER:
            self._file.close()
            raise CorruptFile(f"file {file_id} has no Parley file header")

    def chunk(self, index):
        """The plaintext of chunk `index`; CorruptFile if it does not verify."""
        if not 0 <= index < self.chunks:
            raise StoreError(f"file {self.file_id} has no chunk {index}")
        length = self.size - index * CHUNK if index == self.chunks - 1 else CHUNK
        self._file.seek(_offset(index))
        record = self._file.read(TAG + length)
        if len(record) != TAG + length:
            raise CorruptFile(f"file {self.file_id} is cut short at chunk {index}")
        cipher = _cipher(self.key, self.file_id, index, index == self.chunks - 1)
        try:
            return cipher.decrypt_and_verify(record[TAG:], record[:TAG])
        except ValueError:
            raise CorruptFile(f"chunk {index} of file {self.file_id} was changed on "
                              "disk") from None

    def close(self):
        self._file.close()
