"""The admin socket of a real daemon: `Modules/server/admin_socket.py`.

Only the server's Unix user and root are served, by the caller's socket
credentials even when the file modes would let others in; bad requests
(garbage bytes, a huge line, JSON of the wrong shape, silence) get a
status 2 answer and leave the server serving; its files are private.
"""

import io
import json
import os
import socket
import stat

import pytest

from Modules.server import admin_cli, instance
from Modules.server.admin_socket import REQUEST_MAX, SOCKET_NAME
from Tests.support import WAIT, run_admin, session

NOBODY = 65534


def socket_path(server):
    return os.path.join(instance.find_running(server.data_dir)["runtime_dir"], SOCKET_NAME)


def raw_request(server, data):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(socket_path(server))
    sock.sendall(data)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return json.loads(answer)


def test_the_socket_and_its_directory_are_private(server):
    path = socket_path(server)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def as_nobody(fn, *args):
    """What `fn(*args)` returns (text) when run by another Unix user: a forked child
    drops to `nobody` (this Python lives under /root, which nobody may execute)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child: never back into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = fn(*args)
        except BaseException as error:                # noqa: BLE001 -- reported, not raised
            result = f"child failed: {error!r}"
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


def kick_over_socket(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(path)
    try:
        sock.sendall(b'{"words": ["kick", "alice"]}\n')
    except BrokenPipeError:           # refused before the request was read
        pass
    return sock.recv(4096).decode()


def admin_cli_errors(data_dir):
    err = io.StringIO()
    status = admin_cli.main(["--data-dir", data_dir, "who"], out=io.StringIO(), err=err)
    return f"{status} {err.getvalue()}"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
def test_another_unix_user_is_refused_by_credentials_not_only_by_file_modes(server):
    path = socket_path(server)
    os.chmod(os.path.dirname(path), 0o755)            # a mistake in modes must not let
    os.chmod(path, 0o666)                             # anyone else administer the server
    answer = json.loads(as_nobody(kick_over_socket, path))
    assert answer["status"] == 1 and "may administer this server" in answer["text"]
    assert "admin request from nobody" in server.log()
    said = as_nobody(admin_cli_errors, server.data_dir)       # and with the modes as made
    assert said.startswith("1 parley admin: cannot read") and "only the server's" in said


@pytest.mark.parametrize("data", [
    b"\xff\xfe\x00garbage\n", b"not json\n", b'{"words": "who"}\n', b'{"words": [1, 2]}\n',
    b'[]\n', b'{"nowords": []}\n', b'{"words": ["' + b"x" * 5000 + b'"]}\n'])
def test_bad_requests_get_a_clear_answer_and_harm_nothing(server, data):
    answer = raw_request(server, data)
    assert answer["status"] == 2 and answer["text"]
    assert run_admin(server, "who")[0] == 0


def test_a_huge_request_is_cut_off(server):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(socket_path(server))
    try:
        sock.sendall(b"x" * (REQUEST_MAX * 4))
    except OSError:
        pass                                          # the daemon may close first
    answer = json.loads(sock.recv(65536) or b'{"status": 2}')
    sock.close()
    assert answer["status"] == 2
    alice, _ = session(server, "alice")               # everyone else is served on
    assert run_admin(server, "who", as_json=True)[1]["sessions"][0]["user"] == "alice"


def test_an_unknown_command_on_the_socket_is_status_2(server):
    answer = raw_request(server, b'{"words": ["rm", "-rf"]}\n')
    assert answer == {"status": 2, "data": {"error": "unknown command"},
                      "text": "Unknown command 'rm'; `help` lists the commands."}
