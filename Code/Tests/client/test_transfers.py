"""Tests for Modules/client/transfers.py: resumable transfers, retries, progress.

Pure: the progress bar's text; --json progress records at the start, at
most every JSON_EVERY seconds and at the end, and a transfer_resumed record
only when a transfer does not start at zero; a partial download keeps its
whole chunks (a torn end goes) and refuses to follow a symlink; a refusal
that waiting cannot help is raised at once; a download cut off waits for
a new session, not for the lost one that still looks up for a moment
(sessions served from memory). Against a real server: a file
that changes while it is sent is hashed and sent again (the server's
hash_mismatch is not the end); a partial download whose bytes went bad is
downloaded again from the start, and only the right file is kept. The
interruptions themselves (cut connections, killed processes) are in
Tests/system/test_file_transfers.py.
"""

import io
import os
import threading

import pytest

from Modules import identity
from Modules.client import transfers
from Modules.client.login import ScriptedLogin, check_server_key, run_login
from Modules.client.session import ClientSession, ConnectionLost, RequestFailed
from Tests.support import of_type, run_client, run_ok
from Tests.support.files import known_bytes, sha256
from Tests.support.processes import PASSWORD, WAIT

CHUNK = transfers.CHUNK
MIB = 1024 * 1024


class Recorder:
    """An Output that keeps what it is given."""

    json_mode = True

    def __init__(self):
        self.records, self.notes, self.lines = [], [], []

    def emit(self, record):
        self.records.append(record)

    def note(self, text):
        self.notes.append(text)

    def overwrite(self, text, end=False):
        self.lines.append(text)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_bar_says_how_far_how_fast_and_how_long():
    text = transfers.bar_text("report.pdf", 35 * MIB // 2, 50 * MIB, 9.8 * MIB, 3.2)
    assert text == ("report.pdf [#######-------------]  35%  17.5 of 50.0 MiB  9.8 MiB/s"
                    "  3 s left")
    assert transfers.bar_text("x\x1b[2J", 0, 0, 0.0, None).startswith("x\\x1b[2J [####")
    assert transfers.bar_text("a" * 80, 1, 2, 1.0, 125).endswith("2 min 05 s left")


def test_json_progress_comes_at_the_start_at_most_twice_a_second_and_at_the_end():
    output, clock = Recorder(), Clock()
    progress = transfers.JsonProgress(output, "upload", "a.bin", 10 * CHUNK, clock)
    progress.start(7, 0)
    for step in range(1, 10):
        clock.now += 0.125
        progress.advance(step * CHUNK)
    progress.advance(10 * CHUNK)
    done = [r["done"] for r in output.records]
    assert done == [0, 4 * CHUNK, 8 * CHUNK, 10 * CHUNK]
    assert output.records[1]["rate"] == round(4 * CHUNK / 0.5)
    assert output.records[1]["eta"] == 0.8 and output.records[-1]["eta"] == 0.0
    assert {r["type"] for r in output.records} == {"progress"}
    progress.start(7, 4 * CHUNK)                       # carried on after a break
    assert output.records[-2] == {"type": "transfer_resumed", "direction": "upload",
                                  "id": 7, "done": 4 * CHUNK}


def test_a_partial_download_keeps_its_whole_chunks_and_follows_no_symlink(tmp_path):
    data = known_bytes(3 * CHUNK + 10)
    first = {"id": 4, "size": len(data), "sha256": sha256(data)}
    target = tmp_path / "a.bin"
    partial = transfers.Partial(str(target), first)
    partial.close()
    with open(partial.path, "wb") as handle:             # two chunks and a torn third
        handle.write(data[:2 * CHUNK + 100])
    again = transfers.Partial(str(target), first)
    assert again.next_index == 2 and os.path.getsize(again.path) == 2 * CHUNK
    for index in (2, 3):
        again.add({"index": index, "data": _b64(data[index * CHUNK:(index + 1) * CHUNK])})
    again.keep(str(target), force=False)
    assert target.read_bytes() == data and os.listdir(tmp_path) == ["a.bin"]
    os.symlink(tmp_path / "elsewhere", partial.path)
    with pytest.raises(transfers.UsageError, match="Cannot write in"):
        transfers.Partial(str(target), first)
    assert not (tmp_path / "elsewhere").exists()


def _b64(data):
    import base64
    return base64.b64encode(data).decode("ascii")


def test_a_refusal_that_waiting_cannot_help_is_raised_at_once():
    runner = type("R", (), {"output": Recorder()})()
    retry = transfers.Retry(runner, "upload")
    for code in ("quota_exceeded", "corrupt", "bad_request"):
        with pytest.raises(RequestFailed):
            retry.refused(RequestFailed("no", code))
    final = RequestFailed("There is no account 'x'.", "not_found")
    final.final = True
    with pytest.raises(RequestFailed):
        retry.refused(final)
    assert retry.stalls == 0


class FileServing:
    """A session that serves FileFetch for one file from memory (or, when
    `broken`, fails every request as a lost connection while it still looks
    open, as a session does whose reader thread has not seen the loss yet)."""

    closed = False

    def __init__(self, data, broken=False):
        self.data, self.broken, self.answers, self.rid = data, broken, {}, 0

    def request(self, op, **fields):
        return self.finish_request(self.start_request(op, **fields))

    def start_request(self, op, **fields):
        self.rid += 1
        self.answers[self.rid] = fields["index"]
        return self.rid

    def finish_request(self, rid):
        if self.broken:
            raise ConnectionLost("The server closed the connection.", "closed")
        index = self.answers.pop(rid)
        return {"index": index, "data": _b64(self.data[index * CHUNK:(index + 1) * CHUNK]),
                "name": "back.bin", "size": len(self.data), "sha256": sha256(self.data),
                "chunks": -(-len(self.data) // CHUNK)}


def test_a_download_waits_for_a_new_session_not_for_the_one_it_lost(tmp_path):
    from Modules.client.link import Link
    data = known_bytes(3 * CHUNK + 5)
    link = Link("127.0.0.1", 1, "kh", None, retry=True)
    link.session, link.logged_in = FileServing(data, broken=True), True

    class PromptRunner:
        output = Recorder()
        session = property(lambda self: link.session)

        def wait_for_connection(self, *lost):
            waiting.set()
            return link.wait_until_back(WAIT, *lost)
    waiting = threading.Event()
    # The retrying thread brings a new session once the loss was seen.
    threading.Thread(target=lambda: waiting.wait(WAIT) and setattr(
        link, "session", FileServing(data)), daemon=True).start()
    first, path = transfers.fetch_file(
        PromptRunner(), 4, lambda first: str(tmp_path / first["name"]), False,
        lambda first: transfers.Progress(PromptRunner.output, "download", first["name"],
                                         first["size"]))
    assert first["sha256"] == sha256(data) and open(path, "rb").read() == data
    assert len([note for note in PromptRunner.output.notes if "was lost" in note]) == 1


# ------------------------------------------------------------ against a real server


class Runner:
    """Just what the transfers need of a command runner."""

    def __init__(self, session):
        self.session, self.output = session, Recorder()


def _logged_in(server, name, tmp_path):
    session = ClientSession("127.0.0.1", server.port)
    key = session.open()
    check_server_key(key, identity.host_id("127.0.0.1", server.port), str(tmp_path / "kh"),
                     accept_new=True)
    session.negotiate()
    run_login(session, ScriptedLogin(name, PASSWORD, create=True))
    session.wait_ready()
    return session


class ChangingFile(io.BytesIO):
    """A file that is rewritten after its first full read (the hash) by its owner."""

    def __init__(self, before, after):
        super().__init__(before)
        self.after, self.reads = after, 0

    def read(self, size=-1):
        block = super().read(size)
        if not block:
            self.reads += 1
            if self.reads == 1:
                position = self.tell()
                self.seek(0)
                self.write(self.after)
                self.seek(position)
        return block


def test_a_file_changed_while_it_is_sent_is_hashed_and_sent_again(server, tmp_path):
    before, after = known_bytes(3 * CHUNK), os.urandom(3 * CHUNK)
    handle = ChangingFile(before, after)
    run_ok(server, "bob", create=True)
    session = _logged_in(server, "alice", tmp_path)
    try:
        runner = Runner(session)
        fields = {"to": "bob", "name": "moving.bin", "size": len(before),
                  "sha256": transfers.file_sha256(handle)}
        progress = transfers.Progress(runner.output, "upload", "moving.bin", len(before))
        done, digest = transfers.send_file(runner, handle, fields, progress)
    finally:
        session.close()
    assert digest == sha256(after) != sha256(before) and not done["bounced"]
    assert any("did not match; reading it again" in note for note in runner.output.notes)
    target = tmp_path / "got.bin"
    run_ok(server, "bob", [f"download {done['id']} {target}"])
    assert target.read_bytes() == after


def test_a_partial_download_gone_bad_is_downloaded_again_from_the_start(server, tmp_path):
    data = known_bytes(4 * CHUNK + 3)
    source = tmp_path / "four.bin"
    source.write_bytes(data)
    run_ok(server, "bob", create=True)
    run_ok(server, "alice", create=True)
    sent = of_type(run_ok(server, "alice", [f"send-file bob {source}"]), "file_sent")[0]
    target = tmp_path / "got"
    target.mkdir()
    bad = target / f".parley-{sent['id']}-{sha256(data)[:16]}.part"
    bad.write_bytes(b"\0" * (2 * CHUNK))                  # two whole chunks, all wrong
    code, objects, stderr = run_client(server, "bob", [f"download {sent['id']} {target}"])
    assert code == 0, stderr
    assert "downloading it again (attempt 2 of 3)" in stderr
    assert of_type(objects, "transfer_resumed")[0]["done"] == 2 * CHUNK
    assert (target / "four.bin").read_bytes() == data
    assert os.listdir(target) == ["four.bin"]
