"""Moving a file's chunks for the client's file commands: resumable, with progress.

`send_file(runner, source, progress)` uploads: FileOffer (size and SHA-256
up front), FileChunk from the chunk the server says it needs next, with
at most `WINDOW` chunks in flight, then FileDone. `fetch_file(runner,
args, progress)` downloads: FileFetch chunk after chunk into a partial
file in the target directory (`Partial`), checked against size and
SHA-256 before it gets its name. Both carry on where they stopped:

* the server's database restarting (`unavailable`), a chunk the server
  did not expect (`out_of_order`), an upload it no longer holds on this
  connection (`not_found`) or one not complete (`incomplete`): wait a
  moment and offer the file again. The server recognises the same file
  to the same person and answers with the upload in progress and the
  chunk to go on from (`next`); a download asks for its next chunk.
* the connection lost: at the interactive prompt the transfer waits for
  the link to come back by itself (`runner.wait_for_connection`) and
  goes on; in batch mode the command fails, and running it again
  resumes: the server kept the upload, the partial download file
  (`.parley-<id>-<hash>.part` beside the target) kept the chunks.
* a file whose SHA-256 does not match (it changed while it was read, or
  was damaged on the way): read again and sent again, or downloaded
  again from the start, up to `ATTEMPTS` times in all; then an error.

Progress (`progress_for`): in --json mode a {"type":"progress",
"direction","id","name","done","size","rate","eta"} record at the start,
at most every `JSON_EVERY` seconds, and at the end, and a
{"type":"transfer_resumed","direction","id","done"} record when a
transfer carries on; at the interactive prompt a bar redrawn in place
(size, rate, time left); in plain batch mode nothing. Memory per transfer
is the window's chunks, whatever the file's size.

Talks to the runner's session (`request`, `start_request`,
`finish_request`), its output and the local file system. Fails with the
session's exceptions: `RequestFailed` for a refusal that waiting cannot
help, `ConnectionLost` when the connection went and does not come back.
"""

import base64
import hashlib
import os
import time
from collections import deque

from Modules import operations
from Modules.client.command_words import UsageError
from Modules.client.output import neutralise
from Modules.client.session import ConnectionLost, RequestFailed

CHUNK = operations.FILE_CHUNK
WINDOW = 8                  # chunks in flight at once, each way
READ_BLOCK = 1024 * 1024
ATTEMPTS = 3                # a file whose hash does not match is sent (fetched) again
STALLS = 8                  # waits in a row without a chunk more, before giving up
# Refusals that waiting, or offering the file again, can get past (of a chunk, of
# FileDone; a download's FileFetch only the first two): anything else is final.
PASSING = frozenset({"unavailable", "timeout"})
RESUMABLE = PASSING | {"out_of_order", "not_found", "incomplete"}
PAUSES = (0.2, 0.5, 1.0, 2.0, 4.0)
JSON_EVERY = 0.5            # seconds between progress records
BAR_EVERY = 0.2             # seconds between redraws of the bar
BAR_WIDTH = 20


# ------------------------------------------------------------ progress


class Progress:
    """Where a transfer is; says nothing (plain batch mode)."""

    def __init__(self, output, direction, name, size, clock=time.monotonic):
        self.output, self.direction, self.name, self.size = output, direction, name, size
        self.clock = clock
        self.id, self.done = None, 0
        self._base = self._started = self._shown_at = None

    def start(self, transfer_id, done):
        """The transfer (upload or file id) starts, or carries on, at `done` bytes."""
        resumed = done > 0
        self.id, self.done = transfer_id, done
        self._base, self._started = done, self.clock()
        if resumed:
            self.resumed()
        self.show(force=True)

    def advance(self, done):
        self.done = min(done, self.size)
        self.show(force=self.done >= self.size)

    def rate(self):
        elapsed = self.clock() - (self._started or self.clock())
        return (self.done - self._base) / elapsed if elapsed > 0 else 0.0

    def eta(self):
        rate = self.rate()
        return (self.size - self.done) / rate if rate > 0 else None

    def show(self, force=False):
        """Redraw, at most every `self.every` seconds unless `force`."""

    def resumed(self):
        """The transfer carries on after an interruption."""

    def finish(self):
        """The transfer is over (whatever its outcome)."""


class JsonProgress(Progress):
    every = JSON_EVERY

    def show(self, force=False):
        now = self.clock()
        if not force and self._shown_at is not None and now - self._shown_at < self.every:
            return
        self._shown_at = now
        eta = self.eta()
        self.output.emit({"type": "progress", "direction": self.direction, "id": self.id,
                          "name": self.name, "done": self.done, "size": self.size,
                          "rate": round(self.rate()),
                          "eta": None if eta is None else round(eta, 1)})

    def resumed(self):
        self.output.emit({"type": "transfer_resumed", "direction": self.direction,
                          "id": self.id, "done": self.done})


class BarProgress(Progress):
    """A line redrawn in place at the interactive prompt."""

    every = BAR_EVERY

    def show(self, force=False):
        now = self.clock()
        if not force and self._shown_at is not None and now - self._shown_at < self.every:
            return
        self._shown_at = now
        self.output.overwrite(bar_text(self.name, self.done, self.size, self.rate(),
                                       self.eta()))

    def resumed(self):
        self.output.overwrite("")
        self.output.note(f"Resuming the {self.direction} of {neutralise(self.name)} at "
                         f"{percent(self.done, self.size)} (not from the start).")

    def finish(self):
        self.output.overwrite("", end=True)


def percent(done, size):
    return f"{100 * done // size if size else 100}%"


def bar_text(name, done, size, rate, eta):
    """`report.pdf [#######-------------]  35%  17.5 of 50.0 MiB  9.8 MiB/s  3 s left`."""
    filled = BAR_WIDTH * done // size if size else BAR_WIDTH
    left = "" if eta is None else f"  {_duration(eta)} left"
    return (f"{shorten_name(name)} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
            f"{percent(done, size):>4}  {_mib(done)} of {_mib(size)} MiB  "
            f"{_mib(rate)} MiB/s{left}")


def shorten_name(name, width=30):
    shown = neutralise(name)
    return shown if len(shown) <= width else shown[:width - 1] + "…"


def _mib(count):
    return f"{count / (1024 * 1024):.1f}"


def _duration(seconds):
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def progress_for(runner, direction, name, size):
    output = runner.output
    if output.json_mode:
        return JsonProgress(output, direction, name, size)
    if getattr(runner, "wait_for_connection", None) is not None:    # the prompt
        return BarProgress(output, direction, name, size)
    return Progress(output, direction, name, size)


# ------------------------------------------------------------ carrying on


class Retry:
    """Decides what an interruption means: go on (after a pause, or once the
    connection is back) or give up (raise)."""

    def __init__(self, runner, what, resumable=RESUMABLE):
        self.runner, self.what, self.resumable = runner, what, resumable
        self.stalls, self.best = 0, -1

    def made(self, position):
        """Progress up to `position`: the stall count starts again."""
        if position > self.best:
            self.best, self.stalls = position, 0

    def refused(self, failure):
        if failure.code not in self.resumable or self.stalls >= STALLS \
                or getattr(failure, "final", False):
            raise failure
        time.sleep(PAUSES[min(self.stalls, len(PAUSES) - 1)])
        self.stalls += 1

    def lost(self, lost, progress, session):
        """The connection of `session` was lost: wait for another one (at the
        prompt) or give up. Not `session` again: its sender can see the loss
        before its reader thread has marked it closed."""
        wait = getattr(self.runner, "wait_for_connection", None)
        if self.stalls >= STALLS:
            raise lost
        self.stalls += 1
        if wait is not None:
            self.runner.output.note(f"The connection was lost during the {self.what} "
                                    f"({percent(progress.done, progress.size)}); it goes on "
                                    "from there once the connection is back (Ctrl-C to "
                                    "stop).")
            if wait(session):
                return
        self.runner.output.note(f"The {self.what} stopped at "
                                f"{percent(progress.done, progress.size)}; run the same "
                                "command again to carry on from there.")
        raise lost


def windowed(session, requests, on_result):
    """Send `requests` ((op, fields) pairs, an iterator) keeping WINDOW in flight;
    `on_result(data)` for each answer, in order. After a refusal the requests in
    flight are still awaited (their answers dropped), then it is raised."""
    in_flight, failure = deque(), None
    for op, fields in requests:
        in_flight.append(session.start_request(op, **fields))
        if len(in_flight) >= WINDOW:
            failure = _settle(session, in_flight.popleft(), on_result, failure)
            if failure is not None:
                break
    while in_flight:
        failure = _settle(session, in_flight.popleft(), on_result, failure)
    if failure is not None:
        raise failure


def _settle(session, rid, on_result, failure):
    try:
        data = session.finish_request(rid)
    except RequestFailed as error:
        return failure or error
    if failure is None:
        on_result(data)
    return failure


# ------------------------------------------------------------ uploading


def file_sha256(handle):
    digest = hashlib.sha256()
    handle.seek(0)
    while block := handle.read(READ_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def _chunk_requests(handle, upload, start, chunks):
    handle.seek(start * CHUNK)
    for index in range(start, chunks):
        data = handle.read(CHUNK)
        yield "FileChunk", {"upload": upload, "index": index,
                            "data": base64.b64encode(data).decode("ascii")}


def send_file(runner, handle, fields, progress):
    """Upload the open file `handle` (fields: to, name, size, sha256, note), from
    wherever the server has it; (FileDone's data, the SHA-256 that matched)."""
    retry, attempts = Retry(runner, "upload"), 1
    while True:
        session = runner.session
        try:
            return _upload_once(session, handle, fields, progress, retry), fields["sha256"]
        except RequestFailed as failure:
            if failure.code == "hash_mismatch" and attempts < ATTEMPTS:
                attempts += 1
                runner.output.note(f"The server found the file's SHA-256 did not match; "
                                   f"reading it again and sending it again (attempt "
                                   f"{attempts} of {ATTEMPTS}).")
                fields = {**fields, "sha256": file_sha256(handle)}
                continue
            retry.refused(failure)
        except ConnectionLost as lost:
            retry.lost(lost, progress, session)


def _upload_once(session, handle, fields, progress, retry):
    try:
        offer = session.request("FileOffer", **fields)
    except RequestFailed as failure:
        failure.final = failure.code not in PASSING     # no such account, too large, ...
        raise
    upload, chunks, start = offer["upload"], offer["chunks"], offer.get("next", 0)
    progress.start(upload, min(start * CHUNK, fields["size"]))

    def received(data):
        retry.made(data.get("received", 0))
        progress.advance(data.get("received", 0) * CHUNK)

    windowed(session, _chunk_requests(handle, upload, start, chunks), received)
    done = session.request("FileDone", upload=upload)
    progress.advance(fields["size"])
    return done


# ------------------------------------------------------------ downloading


HEX = frozenset("0123456789abcdef")


class Partial:
    """The partial file of one download, beside its target: kept when the download
    is cut off, so that running it again carries on; its hash and size so far."""

    def __init__(self, path, first):
        directory = os.path.dirname(os.path.abspath(path))
        stem = "".join(ch for ch in str(first.get("sha256", "")) if ch in HEX)[:16]
        self.path = os.path.join(directory, f".parley-{int(first['id'])}-{stem}.part")
        self.size, self.sha256 = first.get("size"), first.get("sha256")
        self.hash, self.next_index = hashlib.sha256(), 0
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as error:
            raise UsageError(f"Cannot write in {neutralise(directory)}: "
                             f"{error.strerror or error}.") from None
        self.handle = os.fdopen(fd, "r+b")
        self._carry_on()

    def _carry_on(self):
        """Keep the whole chunks already there (hashed again); drop a torn end."""
        length = os.fstat(self.handle.fileno()).st_size
        kept = min(length // CHUNK, max(0, -(-self.size // CHUNK) - 1)) if self.size else 0
        self.handle.seek(0)
        for _ in range(kept):
            self.hash.update(self.handle.read(CHUNK))
        self.handle.truncate(kept * CHUNK)
        self.handle.seek(kept * CHUNK)
        self.next_index = kept

    def add(self, data):
        if data.get("index") != self.next_index:
            raise RequestFailed("The server sent the file's chunks out of order.",
                                "bad_reply")
        chunk = base64.b64decode(data.get("data", ""))
        self.handle.write(chunk)
        self.hash.update(chunk)
        self.next_index += 1

    @property
    def done(self):
        return min(self.next_index * CHUNK, self.size or 0)

    def keep(self, path, force):
        """Checked: the file gets its name. Else RequestFailed (hash_mismatch) and the
        partial file is gone."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        length = os.fstat(self.handle.fileno()).st_size
        self.handle.close()
        if length != self.size or self.hash.hexdigest() != self.sha256:
            self.discard()
            raise RequestFailed("The downloaded file does not have the SHA-256 (or the size) "
                                "its sender announced; nothing was saved.", "hash_mismatch")
        if force:
            os.replace(self.path, path)
            return
        try:
            os.link(self.path, path)        # fails if the name was taken meanwhile
        except FileExistsError:
            raise UsageError(f"{neutralise(path)} appeared meanwhile; add --force to "
                             "replace it.") from None
        os.unlink(self.path)

    def close(self):
        self.handle.close()

    def discard(self):
        self.handle.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def fetch_file(runner, file_id, target, force, progress_of):
    """Download file `file_id` to the path `target(first answer)` gives; the
    first answer (name, size, sha256) and the path. `progress_of(first)` makes
    the Progress once the size is known."""
    retry, attempts, progress = Retry(runner, "download", PASSING), 1, None
    while True:
        session = runner.session
        try:
            first = {**session.request("FileFetch", id=file_id, index=0), "id": file_id}
            path = target(first)
            progress = progress or progress_of(first)
            _download_once(session, first, path, force, progress, retry)
            return first, path
        except RequestFailed as failure:
            if failure.code == "hash_mismatch" and attempts < ATTEMPTS:
                attempts += 1
                runner.output.note(f"The downloaded file's SHA-256 did not match; "
                                   f"downloading it again (attempt {attempts} of "
                                   f"{ATTEMPTS}).")
                continue
            retry.refused(failure)
        except ConnectionLost as lost:
            retry.lost(lost, progress or Progress(runner.output, "download", "", 1), session)


def _download_once(session, first, path, force, progress, retry):
    partial = Partial(path, first)
    try:
        progress.start(first["id"], partial.done)
        if partial.next_index == 0:
            partial.add(first)
            progress.advance(partial.done)

        def arrived(data):
            partial.add(data)
            retry.made(partial.next_index)
            progress.advance(partial.done)

        windowed(session, (("FileFetch", {"id": first["id"], "index": index})
                                  for index in range(partial.next_index,
                                                     first.get("chunks", 1))), arrived)
    except (RequestFailed, ConnectionLost) as failure:
        if isinstance(failure, RequestFailed) and failure.code not in PASSING:
            partial.discard()           # refused for good: nothing stays
        else:
            partial.close()             # kept: the next try carries on
        raise
    except BaseException:
        partial.close()
        raise
    partial.keep(path, force)
    progress.advance(first.get("size", 0))
