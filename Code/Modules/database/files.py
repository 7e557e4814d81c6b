"""Files between people in the database process: uploads, downloads, declines.

The monitor's answers to FileOffer, FileChunk, FileDone, Files, FileFetch
and FileDecline (`FileAnswers`, mixed into `answers.UserAnswers`), and the
`FileService` they share (one per database process, `monitor.files`): the
encrypted store in `<data dir>/files` (`Modules/database/filestore.py`),
the storage key loaded from its own file when the process starts, the
operator's limits, and the uploads in progress.

An upload: FileOffer announces recipient, name, size and SHA-256; what can
be refused is refused then, before any byte (no such account, too large,
over the sender's quota, no room on the server: `file_upkeep.room_refusal`),
and a row is made in state "uploading", invisible
to everyone (`Modules/database/file_records.py`). FileChunk carries chunk
`index` (64 KiB, base64: the serializers carry no raw bytes) in order; it
is sealed and appended by the store on one I/O thread beside the event
loop, and hashed. FileDone finishes: the SHA-256 must equal the announced
one (else nothing is kept: `hash_mismatch`), the file is fsynced and
renamed to its final name, and only then is the offer committed and pushed
to the recipient as a message.

An upload survives a lost connection and a restart of any process: its
row stays "uploading" and its `.part` stays on disk (until the stale
upload expiry). The sender resumes it by offering the same file again
(same recipient, name, size and SHA-256): FileOffer then answers with
that upload and `next`, the first chunk the server does not hold; the
chunks of the `.part` that verify are kept and hashed again
(`FileStore.resumed_writer`), the rest is written again. A resumed offer
takes the upload over from whichever connection held it. Memory per
transfer is one chunk; no plaintext ever reaches the disk.

A download fetches one chunk per FileFetch, opened and checked by the
store (a chunk changed on disk is a `corrupt` refusal naming it). A
decline marks the row, removes the content and returns the file to its
sender as a bounce. Every answer acts as `conn.user` only: a file that is
not one's own is "not found", whoever asks.

What it logs: who sent a file of how many bytes to whom, downloads
finished and declines, by file id; never a name, a note, a key or content.

How it fails: refusals with one sentence (see `REFUSALS` and the answers);
a malformed storage key file stops the process at start (StorageError).
"""

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from Modules.database import file_records, file_upkeep, filestore, mailbox
from Modules.database.file_records import FileLimits
from Modules.database.filestore import CorruptFile, FileStore, OutOfOrder, StoreError
from Modules.database.schema import StorageError
from Modules.runtime import BACKGROUND_NICE, lower_priority

log = logging.getLogger("parley.database")

UPLOADS_PER_CONNECTION = 4      # uploads one session may have in progress at once
KEY_FILE = "storage_key"
FILES_DIR = "files"


def _size_text(size):
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


# What FileOffer says when it refuses, by the outcome of begin_upload.
REFUSALS = {
    "no_account": ("not_found", "There is no account '{to}' to send a file to."),
    "blocked": ("not_accepted", "The file was not accepted by the recipient."),
    "too_large": ("too_large", "The file is {size}; this server takes files of at most "
                               "{max}."),
    "quota": ("quota_exceeded", "The file is {size}, and with it the files you sent that "
                                "this server keeps would hold more than your quota of "
                                "{quota}."),
    "storage_full": ("storage_full", "The file is {size}, and with it the files this server "
                                     "keeps for everyone would hold more than its limit of "
                                     "{storage}; there is no room for it now."),
    "disk_full": ("storage_full", "The file is {size}, and the server's disk has no room "
                                  "for it now; try again later."),
}


class Upload:
    """One upload in progress: its writer, its hash so far, the connection it is on."""

    def __init__(self, file_id, conn, writer, announced, hasher=None):
        self.file_id, self.conn, self.writer = file_id, conn, writer
        self.announced = announced
        self.hash = hasher or hashlib.sha256()

    def write(self, index, text):
        """On the I/O thread: decode, seal, append and hash chunk `index`."""
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise StoreError(f"chunk {index} of upload {self.file_id} is not base64") \
                from None
        self.writer.write_chunk(index, data)
        self.hash.update(data)
        return self.writer.next_index


class FileService:
    """The store, the storage key, the limits and the uploads of one database process."""

    def __init__(self, data_dir, limits=FileLimits(), key_path=None, db_key=None,
                 directory=None):
        try:
            self.storage_key = filestore.load_or_create_storage_key(
                key_path or os.path.join(data_dir, KEY_FILE),
                db_key if key_path is None else None)   # only the data dir's is wrapped
        except StoreError as error:
            raise StorageError(str(error)) from None
        # `directory` (--files-dir): one that several servers share (docs/postgresql.md)
        self.store = FileStore(directory or os.path.join(data_dir, FILES_DIR))
        self.limits = limits
        self.uploads = {}                   # file id -> Upload
        # Bulk work gives way to messages when the CPU is short (PERFORMANCE.md 4.06).
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="files",
                                     initializer=_bulk_thread)

    @classmethod
    def from_config(cls, config, db_key=None):
        settings = config.get("files") or {}
        limits = FileLimits(**{name: int(settings[name]) for name in FileLimits._fields
                               if settings.get(name)})
        return cls(config["data_dir"], limits, config.get("storage_key"), db_key,
                   config.get("files_dir"))

    def run(self, fn, *args):
        """`fn(*args)` on the I/O thread, in the order asked (one thread: a
        connection's chunks are written in the order they came)."""
        return asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    def uploads_on(self, conn):
        return [upload for upload in self.uploads.values() if upload.conn is conn]

    def connection_closed(self, _monitor, conn):
        """Its uploads wait, row and `.part`, for a resumed offer (or their expiry)."""
        for upload in self.uploads_on(conn):
            self.detach(upload)

    def detach(self, upload):
        """Forget an upload in memory; its `.part` is closed on the I/O thread
        (after the chunks asked before it), its row stays."""
        self.uploads.pop(upload.file_id, None)
        try:
            self.io.submit(upload.writer.close)
        except RuntimeError:                # stopping: the process exit closes it
            pass

    async def resume(self, conn, file_id, key, size, announced):
        """Take over the upload `file_id`: from its connection if one holds it,
        else from its `.part` on disk; the Upload, carrying on after the chunks
        that verify."""
        held = self.uploads.get(file_id)
        if held is not None:
            self.detach(held)
        hasher = hashlib.sha256()
        writer = await self.run(self.store.resumed_writer, file_id, key, size, hasher.update)
        upload = self.uploads[file_id] = Upload(file_id, conn, writer, announced, hasher)
        return upload

    def remove_partial(self, upload):
        upload.writer.close()
        self.store.remove(upload.file_id)

    def read_chunk(self, row, index):
        """On the I/O thread: the plaintext of chunk `index` of a stored file."""
        key = filestore.unwrap_key(self.storage_key, row["id"], row["wrapped_key"])
        reader = self.store.reader(row["id"], key, row["size"])
        try:
            return reader.chunk(index)
        finally:
            reader.close()

    def close(self):
        self.io.shutdown(wait=True)


def _bulk_thread():
    lower_priority(BACKGROUND_NICE, thread=True)
    log.info("file I/O thread %d runs at nice %d", threading.get_native_id(),
             os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))


def _nothing():
    """A job on the I/O thread that only waits for those before it."""


async def recover(monitor):
    """At start: any file on disk no row keeps goes (a `.blob` no longer stored,
    a `.part` of no upload); uploads cut off by the last stop wait to be resumed."""
    files = monitor.files
    kept = await monitor.job(file_records.stored_ids)
    uploading = await monitor.job(file_records.uploading_ids)
    removed = await files.run(_remove_unkept, files.store, kept, uploading)
    if removed:
        log.warning("removed %d files on disk that no upload or stored file keeps", removed)
    if uploading:
        log.info("%d uploads cut off by the last stop wait to be resumed", len(uploading))


def _remove_unkept(store, kept, uploading):
    try:
        names = os.listdir(store.directory)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        stem, _, suffix = name.partition(".")
        if stem.isdigit() and ((suffix == "part" and int(stem) not in uploading)
                               or (suffix == "blob" and int(stem) not in kept)):
            os.unlink(os.path.join(store.directory, name))
            removed += 1
    return removed


class FileAnswers:
    """The file operations, as the connection's own user (mixed into UserAnswers).

    Uses `self.conn`, `self.monitor`, `self.job`, `self.query` and
    `self.refusal(code, reason)` of the answer set it is mixed into.
    """

    def _upload(self, upload_id):
        upload = self.monitor.files.uploads.get(upload_id)
        return upload if upload is not None and upload.conn is self.conn else None

    async def file_offer(self, args):
        files, user = self.monitor.files, self.conn.user
        if len(files.uploads_on(self.conn)) >= UPLOADS_PER_CONNECTION:
            return self.refusal("busy", f"You have {UPLOADS_PER_CONNECTION} uploads in "
                                "progress already; finish one first.")
        outcome, file_id, key = await self.job(
            file_records.begin_upload, files.storage_key, user, args["to"], args["name"],
            args["size"], args["sha256"], args["note"], time.time(), files.limits,
            functools.partial(file_upkeep.room_refusal, files.store))
        if outcome in REFUSALS:
            code, reason = REFUSALS[outcome]
            return self.refusal(code, reason.format(
                to=args["to"], size=_size_text(args["size"]),
                max=_size_text(files.limits.max_bytes),
                quota=_size_text(files.limits.quota_bytes),
                storage=_size_text(files.limits.storage_bytes)))
        if outcome == "resume":
            writer = (await files.resume(self.conn, file_id, key, args["size"],
                                         args["sha256"])).writer
            log.info("%s: upload %d resumed at chunk %d of %d", user, file_id,
                     writer.next_index, writer.chunks)
        else:
            try:
                writer = await files.run(files.store.writer, file_id, key, args["size"])
            except OSError:
                await self.job(file_records.abandon_upload, file_id)
                raise
            files.uploads[file_id] = Upload(file_id, self.conn, writer, args["sha256"])
        return {"upload": file_id, "chunk_size": filestore.CHUNK, "chunks": writer.chunks,
                "next": writer.next_index, "resumed": outcome == "resume"}

    async def file_chunk(self, args):
        upload = self._upload(args["upload"])
        if upload is None:
            return self.refusal("not_found", f"You have no upload {args['upload']} in "
                                "progress.")
        try:
            received = await self.monitor.files.run(upload.write, args["index"], args["data"])
        except OutOfOrder as error:
            return self.refusal("out_of_order", f"Upload {upload.file_id} needs chunk "
                                f"{error.expected} next, not {args['index']}.")
        except StoreError as error:
            return self.refusal("bad_request", f"{error}.")
        return {"received": received}

    async def file_done(self, args):
        upload, files = self._upload(args["upload"]), self.monitor.files
        if upload is None:
            return self.refusal("not_found", f"You have no upload {args['upload']} in "
                                "progress.")
        await files.run(_nothing)      # a barrier: the chunks asked before are written
        writer = upload.writer
        if writer.next_index != writer.chunks:
            return self.refusal("incomplete", f"Upload {upload.file_id} has {writer.next_index}"
                                f" of its {writer.chunks} chunks; send the rest first.")
        if upload.hash.hexdigest() != upload.announced:
            files.uploads.pop(upload.file_id, None)     # gone before the answer says so
            await files.run(files.remove_partial, upload)
            await self.job(file_records.abandon_upload, upload.file_id)
            log.info("%s: upload %d refused, its SHA-256 did not match", self.conn.user,
                     upload.file_id)
            return self.refusal("hash_mismatch", "The file that arrived does not have the "
                                "SHA-256 that was announced (it changed while it was sent, "
                                "or was damaged on the way); nothing was stored.")
        files.uploads.pop(upload.file_id, None)
        await files.run(writer.finish)                        # durable, then visible
        result = await self.job(
            file_records.finish_upload, upload.file_id, time.time(),
            mailbox.limits_from(self.monitor.settings),
            delivers=lambda stored: stored["deliveries"])
        if result["bounced"]:
            await files.run(files.store.remove, upload.file_id)
        log.info("%s sent file %d (%d bytes)%s", self.conn.user, upload.file_id, writer.size,
                 ", bounced" if result["bounced"] else "")
        fields = {"id": upload.file_id, "message": result["id"], "bounced": result["bounced"]}
        if result.get("note"):
            fields["note"] = result["note"]
        return fields

    async def files(self, _args):
        rows = await self.query(file_records.list_files, self.conn.user)
        return {"files": rows}

    async def file_fetch(self, args):
        row = await self.query(file_records.file_for_download, self.conn.user, args["id"])
        if row is None:
            return self.refusal("not_found", f"You have no file {args['id']}.")
        chunks = filestore.chunk_count(row["size"])
        if args["index"] >= chunks:
            return self.refusal("bad_request", f"File {args['id']} has {chunks} chunks; "
                                f"there is no chunk {args['index']}.")
        try:
            data = await self.monitor.files.run(self.monitor.files.read_chunk, row,
                                                args["index"])
        except CorruptFile as error:
            log.error("file %d is damaged on disk: %s", row["id"], error)
            return self.refusal("corrupt", f"File {row['id']} is damaged on the server "
                                f"({error}); it cannot be downloaded.")
        except StoreError as error:
            log.error("file %d cannot be read: %s", row["id"], error)
            return self.refusal("not_found", f"File {row['id']} is no longer stored.")
        if args["index"] == chunks - 1 and row["recipient"] == self.conn.user:
            if await self.job(file_records.mark_downloaded, self.conn.user, row["id"],
                              time.time()):
                log.info("%s downloaded file %d", self.conn.user, row["id"])
        return {"data": base64.b64encode(data).decode("ascii"), "index": args["index"],
                "chunks": chunks, "size": row["size"], "sha256": row["sha256"],
                "name": row["name"]}

    async def file_decline(self, args):
        files = self.monitor.files
        deliveries = await self.job(
            file_records.decline, self.conn.user, args["id"], args["note"], time.time(),
            delivers=lambda found: found or ())
        if deliveries is None:
            return self.refusal("not_found", f"You have no file {args['id']} to decline.")
        await files.run(files.store.remove, args["id"])
        log.info("%s declined file %d", self.conn.user, args["id"])
        return {"declined": True}
