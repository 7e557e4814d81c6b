"""`python Code/server_daemon.py admin [--data-dir DIR] COMMAND [ARGS] [--json]`.

The operator's commands from any shell on the host, as prosodyctl and
doveadm do it: find the server running on the data dir (the lock file in
it names the runtime dir: `server/instance.py`), send the command line to
its admin socket (`server/admin_socket.py`), print the answer — the text,
or with `--json` one JSON object `{"status": N, ...data}` — and exit with
the command's status: 0 done, 1 refused or failed (no such account, no
server running, not allowed), 2 not a valid command line. `admin help`
lists the commands.

`admin rekey --key-file PATH` is the one command that needs no running server:
it refuses to run beside one, and moves an encrypted data dir to a new key
in the database's own code (`Modules.database.monitor.rekey_offline`).

The data dir defaults as the server's does (`--data-dir`, else
PARLEY_DATA_DIR, else ./parley-data).

Talks to: the data dir's lock file (read only) and the admin socket. How
it fails: one line on standard error, never a traceback.
"""

import argparse
import json
import os
import socket
import sys

from Modules.server import instance
from Modules.server.admin_socket import SOCKET_NAME
from Modules.server.options import DEFAULT_DATA_DIR

ANSWER_TIMEOUT = 120.0           # an audit of many accounts takes a while
BACKUP_TIMEOUT = 6 * 3600.0      # a backup of a large data dir takes longer (issue 15)
ANSWER_MAX = 64 * 1024 * 1024


class AdminError(Exception):
    """The command could not be delivered; the message says why."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="server_daemon.py admin", description="Run an operator's command on the "
        "Parley server that runs on a data dir. `admin help` lists the commands.")
    parser.add_argument("--data-dir", default=None,
                        help=f"the server's data dir (default: PARLEY_DATA_DIR or "
                             f"{DEFAULT_DATA_DIR})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS]")
    return parser


def split_json_flag(words):
    """`--json` may also come after the command; the words without it, and whether."""
    wanted = "--json" in words
    return [word for word in words if word != "--json"], wanted


def ask(data_dir, words, timeout=ANSWER_TIMEOUT):
    """The server's answer ({"status", "data", "text"}) to one command line."""
    try:
        os.stat(instance.lock_path(data_dir))
        readable = os.access(instance.lock_path(data_dir), os.R_OK)
    except PermissionError:                        # a directory on the way is closed to us
        readable = False
    except OSError:
        readable = True                            # not there: no server, said below
    if not readable:
        raise AdminError(f"cannot read {os.path.abspath(data_dir)}: only the server's Unix "
                         "user and root may administer it")
    info = instance.find_running(data_dir)
    if info is None:
        raise AdminError(f"no Parley server is running on {os.path.abspath(data_dir)}")
    path = os.path.join(info["runtime_dir"], SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        try:
            sock.sendall(json.dumps({"words": words}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass                     # refused before it read the request: read why below
        data = bytearray()
        while b"\n" not in data and len(data) < ANSWER_MAX:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise AdminError(f"the server on {data_dir} (pid {info.get('pid')}) is still "
                         "starting or has no admin socket; try again") from None
    except PermissionError:
        raise AdminError("only the server's Unix user and root may administer it") from None
    except OSError as error:
        raise AdminError(f"cannot reach the server's admin socket: "
                         f"{error.strerror or error}") from None
    finally:
        sock.close()
    try:
        return json.loads(bytes(data).split(b"\n", 1)[0])
    except ValueError:
        raise AdminError("the server closed the connection without an answer") from None


def main(argv, environ=os.environ, out=sys.stdout, err=sys.stderr):
    args = build_parser().parse_args(argv)
    words, as_json = split_json_flag(args.words)
    as_json = as_json or args.json
    data_dir = args.data_dir or environ.get("PARLEY_DATA_DIR") or DEFAULT_DATA_DIR
    if not words:
        print("parley admin: give a command; `admin help` lists them", file=err)
        return 2
    if words[0] == "rekey":
        return rekey(data_dir, words[1:], environ, out, err)
    timeout = ANSWER_TIMEOUT
    if words[0].lower() == "backup" and len(words) == 2:
        words = [words[0], os.path.abspath(words[1])]     # the server has its own cwd
        timeout = BACKUP_TIMEOUT
    try:
        answer = ask(data_dir, words, timeout)
    except AdminError as error:
        if as_json:
            print(json.dumps({"status": 1, "error": str(error)}), file=out)
        print(f"parley admin: {error}", file=err)
        return 1
    status = answer.get("status", 1)
    if as_json:
        print(json.dumps({"status": status, **(answer.get("data") or {})}), file=out)
    elif status == 0:
        print(answer.get("text", ""), file=out)
    if status != 0:
        print(f"parley admin: {answer.get('text', 'failed')}", file=err)
    return status if status in (0, 1, 2) else 1



def rekey(data_dir, words, environ, out, err):
    """`admin rekey --key-file PATH`: offline (the server stopped), in the database's
    own code; a new key file replaces the old one, atomically with every file."""
    from Modules.database.monitor import rekey_offline

    parser = argparse.ArgumentParser(prog="server_daemon.py admin rekey")
    parser.add_argument("--key-file", default=environ.get("PARLEY_KEY_FILE"))
    key_file = parser.parse_args(words).key_file
    problem = rekey_offline(data_dir, key_file)
    if problem:
        print(f"parley admin: rekey refused: {problem}", file=err)
        return 1
    print(f"rekeyed {os.path.abspath(data_dir)}: the new key is in {key_file}; the old key "
          "no longer opens it, so replace any copy of the key file you keep", file=out)
    return 0
