"""Tests for Modules/client/file_commands.py: send-file, files, download, decline.

Pure: the parsers use the server's rules (a bad recipient, a bad number,
a missing path are usage errors); other people's file names are made one
safe name (separators of both kinds, leading and trailing dots and spaces,
control, format and bidirectional characters, characters Windows refuses,
reserved device names, over-long names cut keeping the extension, names
left empty), and the target is always directly inside the directory.

End to end through the real client in batch/--json mode against a real
daemon (`ServerProcess`): a file of a few MiB sent and downloaded with a
matching SHA-256 (the recipient hears of it at login and live; the
sender's copy is in `sent`), no byte of its plaintext anywhere in the data
dir while it is stored; an existing file kept without --force; a hash that
does not match refused with nothing stored; size and quota refusals
before any byte; hostile names (through a raw client, which may announce
any name) saved inside the download directory under a harmless name and
never printed raw; a chunk changed on disk detected at download, nothing
saved; decline returning the file to its sender as a bounce and removing
it; and another user refused every file operation on a file not theirs.
"""

import os
import subprocess

import pytest

from Modules.client import file_commands
from Modules.client.commands import UsageError, parse_line
from Modules.client.file_commands import NAME_BYTES_MAX, safe_file_name, target_path
from Tests.support import (
    BatchClient,
    client_command,
    of_type,
    request,
    run_client,
    run_ok,
    session,
)
from Tests.support.files import known_bytes, plaintext_on_disk, raw_upload, sha256
from Tests.support.processes import PASSWORD, child_env

MIB = 1024 * 1024


# ------------------------------------------------------------ parsing


def test_the_file_commands_parse_with_the_servers_rules():
    assert parse_line("send-file bob ./a.txt").args == {"to": "bob", "path": "./a.txt"}
    assert parse_line('send-file Bob a.txt --note "for you"').args == {
        "to": "bob", "path": "a.txt", "note": "for you"}
    assert parse_line("download 7").args == {"id": 7, "force": False}
    assert parse_line("download #7 out.bin --force").args == {"id": 7, "force": True,
                                                              "path": "out.bin"}
    assert parse_line("decline 7 --note no").args == {"id": 7, "note": "no"}
    assert parse_line("files").args == {}
    for line in ("send-file bob", "send-file 9lives a.txt", "download x", "download",
                 "decline 0", "files 3", "send-file bob a --note " + "x" * 2001):
        with pytest.raises(UsageError):
            parse_line(line)


# ------------------------------------------------------------ other people's names


@pytest.mark.parametrize("name, safe", [
    ("report.pdf", "report.pdf"),
    ("Übersicht 2027.ods", "Übersicht 2027.ods"),
    ("../../.bashrc", "bashrc"),
    ("/etc/passwd", "passwd"),
    ("C:\\Windows\\win.ini", "win.ini"),
    ("dir/", "dir"),
    ("..", "file-7"),
    ("", "file-7"),
    (" . ", "file-7"),
    ("name. . ", "name"),
    ("\x1b]0;title\x07x", "_]0;title_x"),
    ("line\nbreak\u2028", "line_break_"),
    ("evil\u202etxt.exe", "evil_txt.exe"),
    ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("Com1.tar.gz", "_Com1.tar.gz"),
    ("console.txt", "console.txt"),
])
def test_names_are_made_one_plain_name(name, safe):
    assert safe_file_name(name, 7) == safe


def test_a_long_name_is_cut_to_255_bytes_keeping_its_extension():
    cut = safe_file_name("é" * 300 + ".pdf", 1)
    assert cut.endswith(".pdf") and len(cut.encode()) <= NAME_BYTES_MAX
    plain = safe_file_name("x" * 400, 1)
    assert plain == "x" * NAME_BYTES_MAX


@pytest.mark.parametrize("name", ["../../.bashrc", "/abs/path", "..\\..\\x", "a/../../b",
                                  "..", "\x00"])
def test_the_target_is_always_directly_in_the_directory(tmp_path, name):
    path = target_path(str(tmp_path), name, 3)
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path) not in ("", ".", "..")


# ------------------------------------------------------------ end to end


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _accounts(server, *names):
    for name in names:
        run_ok(server, name, create=True)


def test_a_file_goes_there_and_back_checked_and_never_plaintext_on_disk(server, tmp_path):
    _accounts(server, "alice", "bob")
    data = known_bytes(3 * MIB + 12345)
    path = _write(tmp_path, "report.bin", data)
    listening = BatchClient(server, "bob")
    try:
        listening.wait_type("ready")
        sent = of_type(run_ok(server, "alice", [f'send-file bob {path} --note "Q3 numbers"']),
                       "file_sent")[0]
        assert sent["size"] == len(data) and sent["sha256"] == sha256(data)
        live = listening.wait_type("message", via="push")
        assert live["subject"] == "File: report.bin" and "Q3 numbers" in live["body"]
        assert f"download {sent['id']}" in live["body"] and sha256(data) in live["body"]
    finally:
        listening.close()
    assert plaintext_on_disk(server.data_dir) == []
    listed = of_type(run_ok(server, "bob", ["files"]), "files")[0]["files"]
    assert [(f["id"], f["direction"], f["from"], f["state"]) for f in listed] == [
        (sent["id"], "received", "alice", "offered")]
    target = tmp_path / "inbox"
    target.mkdir()
    got = of_type(run_ok(server, "bob", [f"download {sent['id']} {target}"]),
                  "file_downloaded")[0]
    assert got["verified"] and got["path"] == str(target / "report.bin")
    assert (target / "report.bin").read_bytes() == data
    assert os.listdir(target) == ["report.bin"]                  # no temporary left
    code, objects, stderr = run_client(server, "bob", [f"download {sent['id']} {target}"])
    assert "exists already; add --force" in of_type(objects, "error")[0]["error"]
    assert of_type(run_ok(server, "bob", [f"download {sent['id']} {target} --force"]),
                   "file_downloaded")
    mine = of_type(run_ok(server, "alice", ["files", "sent"]), "files")[0]["files"]
    assert mine[0]["state"] == "downloaded" and mine[0]["direction"] == "sent"
    assert plaintext_on_disk(server.data_dir) == []


def test_size_and_quota_refusals_come_before_any_byte(make_server, tmp_path):
    server = make_server("--file-max-bytes", "2M", "--file-quota-bytes", "3M")
    _accounts(server, "alice", "bob")
    big = _write(tmp_path, "big.bin", known_bytes(2 * MIB + 1))
    code, objects, _ = run_client(server, "alice", [f"send-file bob {big}"])
    error = of_type(objects, "error")[0]
    assert error["code"] == "too_large" and "at most 2.0 MiB" in error["error"]
    half = _write(tmp_path, "half.bin", known_bytes(int(1.5 * MIB)))
    objects = run_client(server, "alice", [f"send-file bob {half}"] * 3)[1]
    assert len(of_type(objects, "file_sent")) == 2
    refused = of_type(objects, "error")
    assert [e["code"] for e in refused] == ["quota_exceeded"]
    assert refused[0]["error"].endswith("your quota of 3.0 MiB.")
    files_dir = os.path.join(server.data_dir, "files")
    assert sorted(name.split(".")[1] for name in os.listdir(files_dir)) == ["blob", "blob"]
    missing = run_client(server, "alice", [f"send-file nobody {half}"])[1]
    assert of_type(missing, "error")[0]["code"] == "not_found"


def test_a_hash_that_does_not_match_is_refused_and_nothing_is_stored(server):
    client, _ = session(server, "alice")
    _accounts(server, "bob")
    data = known_bytes(200_000)
    done = raw_upload(client, "bob", "x.bin", data, announced=sha256(b"something else"))
    assert done.op == "Error" and done.data["code"] == "hash_mismatch"
    assert "nothing was stored" in done.data["reason"]
    files_dir = os.path.join(server.data_dir, "files")
    assert os.listdir(files_dir) == []
    assert of_type(run_ok(server, "bob", ["files"]), "files")[0]["files"] == []
    assert of_type(run_ok(server, "bob", ["inbox"]), "inbox")[0]["messages"] == []
    client.close()


HOSTILE = ["../../.bashrc", "/etc/passwd", "..\\..\\win.ini", "CON.txt", "\x1b[31mred\x07",
           "..", "a/b/../../c"]


def test_hostile_names_stay_in_the_directory_and_never_reach_the_terminal_raw(server,
                                                                          tmp_path):
    client, _ = session(server, "mallory")
    _accounts(server, "bob")
    ids = []
    for name in HOSTILE:
        done = raw_upload(client, "bob", name, b"payload of " + name.encode())
        assert done.op == "Result", done
        ids.append(done.data["id"])
    client.close()
    target = tmp_path / "downloads"
    target.mkdir()
    (tmp_path / "etc").mkdir()
    lines = [f"download {file_id} {target}" for file_id in ids]
    objects = run_ok(server, "bob", lines)
    saved = sorted(os.listdir(target))
    assert len(saved) == len(HOSTILE)
    assert saved == sorted(["bashrc", "passwd", "win.ini", "_CON.txt", "_[31mred_",
                            f"file-{ids[5]}", "c"])
    assert all(os.path.dirname(o["path"]) == str(target)
               for o in of_type(objects, "file_downloaded"))
    assert not (tmp_path / ".bashrc").exists() and os.listdir(tmp_path / "etc") == []
    human = run_client_human(server, "bob", ["files", "inbox"])
    assert "\x1b" not in human and "\x07" not in human and "\\x1b" in human


def run_client_human(server, user, lines):
    """The human text (not --json) a batch client prints for `lines`."""
    done = subprocess.run(client_command(server, user, as_json=False),
                          input="\n".join(lines) + "\n", capture_output=True, text=True,
                          timeout=60, env=child_env({"PARLEY_TEST_PASSWORD": PASSWORD}))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_chunk_changed_on_disk_is_an_error_at_download(server, tmp_path):
    _accounts(server, "alice", "bob")
    path = _write(tmp_path, "data.bin", known_bytes(3 * 64 * 1024))
    sent = of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")[0]
    blob = os.path.join(server.data_dir, "files", f"{sent['id']}.blob")
    with open(blob, "r+b") as handle:
        handle.seek(-100, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-100, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "out"
    target.mkdir()
    _code, objects, _ = run_client(server, "bob", [f"download {sent['id']} {target}"])
    error = of_type(objects, "error")[0]
    assert error["code"] == "corrupt" and "chunk 2" in error["error"]
    assert os.listdir(target) == []


def test_decline_returns_the_file_and_nobody_else_may_touch_it(server, tmp_path):
    _accounts(server, "alice", "bob", "carol")
    path = _write(tmp_path, "plan.txt", known_bytes(100_000))
    sent = of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")[0]
    file_id = sent["id"]
    target = tmp_path / "carol"
    target.mkdir()
    _code, objects, _ = run_client(server, "carol", [
        "files", f"download {file_id} {target}", f"decline {file_id}"])
    assert of_type(objects, "files")[0]["files"] == []
    assert [e["code"] for e in of_type(objects, "error")] == ["not_found", "not_found"]
    assert os.listdir(target) == []
    declined = run_ok(server, "bob", [f'decline {file_id} --note "Not mine"'])
    assert of_type(declined, "file_declined") == [{"type": "file_declined", "id": file_id}]
    assert of_type(run_ok(server, "bob", ["files"]), "files")[0]["files"] == []
    assert not os.path.exists(os.path.join(server.data_dir, "files", f"{file_id}.blob"))
    back = [m for m in of_type(run_ok(server, "alice", ["inbox"]), "message")
            if m["kind"] == "bounce"]
    assert len(back) == 1 and back[0]["subject"] == "Declined: plan.txt"
    assert "bob declined the file 'plan.txt'. Their note: Not mine" == back[0]["note"]
    listed = of_type(run_ok(server, "alice", ["files"]), "files")[0]["files"]
    assert listed[0]["state"] == "declined" and not listed[0]["stored"]
    again = run_client(server, "bob", [f"decline {file_id}"])[1]
    assert of_type(again, "error")[0]["code"] == "not_found"


def test_deleting_an_account_returns_its_undownloaded_files_to_their_senders(server,
                                                                            tmp_path):
    _accounts(server, "alice", "bob")
    path = _write(tmp_path, "plan.txt", known_bytes(70_000))
    file_id = of_type(run_ok(server, "alice", [f"send-file bob {path}"]), "file_sent")[0]["id"]
    deleted = of_type(run_ok(server, "bob", ["delete-account"]), "account_deleted")
    assert deleted[0]["bounced"] == 2                 # the offer message and the file
    assert not os.path.exists(os.path.join(server.data_dir, "files", f"{file_id}.blob"))
    notes = [m["note"] for m in of_type(run_ok(server, "alice", ["inbox"]), "message")
             if m["kind"] == "bounce"]
    assert "The account 'bob' was deleted before the file 'plan.txt' was downloaded." in notes
    listed = of_type(run_ok(server, "alice", ["files"]), "files")[0]["files"]
    assert listed[0]["state"] == "returned" and not listed[0]["stored"]


def test_the_sender_can_fetch_their_own_file_and_a_chunk_out_of_range_is_refused(server):
    client, _ = session(server, "alice")
    _accounts(server, "bob")
    done = raw_upload(client, "bob", "tiny", b"tiny")
    fetched = request(client, "FileFetch", id=done.data["id"], index=0)
    assert fetched.op == "Result" and fetched.data["chunks"] == 1
    beyond = request(client, "FileFetch", id=done.data["id"], index=1)
    assert beyond.op == "Error" and beyond.data["code"] == "bad_request"
    assert file_commands.size_text(3 * MIB) == "3.0 MiB"
    client.close()
