"""Tests for Modules/server/containment.py: login and user processes contained.

Each test starts the real server (as root, as CI runs; one test also as a
non-root user inside a user namespace, another where user namespaces are
refused) and looks at its processes two ways: from outside, through /proc
(uids, groups, root, no_new_privs, seccomp, threads, limits, and whether a
process's uid and root leave it any way to a file of the data dir), and from
inside, through the test-only probe (PARLEY_TEST_CONTAINMENT_PROBE=1): each
contained process tries to open the data dir's files, fork, execute, open an
Internet socket and signal the daemon, logs what happened, and logs any
module imported afterwards. A normal session (login, send, receive, a file
there and back) must work under the limits.
"""

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from Modules.server import containment
from Tests.support import BatchClient, RawClient, of_type, run_ok, wait_until
from Tests.support.files import known_bytes, sha256
from Tests.support.processes import SERVER, ServerProcess, child_env

PROBE = {containment.PROBE_VARIABLE: "1"}
MIB = 1024 * 1024
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as CI has")
# Run the server as uid 1000 in a user namespace of its own: not root, as far as
# it can tell (python lives under /root here, out of reach of a real other user).
NOT_ROOT = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"]
# ... and with unshare(2) refused by a syscall filter, as a kernel without
# unprivileged user namespaces refuses it.
NO_USERNS = [sys.executable, "-c", """
import ctypes, errno, os, sys, pyseccomp
ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
f.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare")
f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""]


def status(pid):
    with open(f"/proc/{pid}/status") as file:
        return dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)


def limits(pid):
    """{'Max processes': ('0', '0'), ...} from /proc/PID/limits."""
    found = {}
    with open(f"/proc/{pid}/limits") as file:
        for line in file.readlines()[1:]:
            name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
            found[name] = (soft, hard)
    return found


def contained(server):
    """The pids of every login, user and spare process now."""
    return [pid for prefix in ("parley: login", "parley: user", "parley: spare")
            for pid in server.pids_titled(prefix)]


def jail_of(server):
    return re.search(r"in the empty root (\S+) ", server.log()).group(1)


def data_paths(data_dir):
    paths = [data_dir]
    for folder, dirs, names in os.walk(data_dir):
        paths += [os.path.join(folder, name) for name in dirs + names]
    return paths


def may_open(info, uid, gids):
    """Whether a process with `uid` and `gids` passes the file's permission bits."""
    if info.st_uid == uid:
        return bool(info.st_mode & 0o600)
    if info.st_gid in gids:
        return bool(info.st_mode & 0o060)
    return bool(info.st_mode & 0o006)


def probe_lines(server):
    return [line for line in server.log().splitlines() if "containment probe (" in line]


def assert_probes_found_nothing(server, count):
    lines = probe_lines(server)
    assert len(lines) >= count
    for line in lines:
        assert re.search(r"opened 0 of \d+ data dir paths; fork: refused \(EPERM\); exec: "
                         r"refused \(EPERM\); inet socket: refused \(EPERM\); signal the "
                         r"daemon: refused \(EPERM\); signal itself: allowed$", line), line
    assert "after entering" not in server.log()      # nothing imported in the jail


def a_normal_session(server, tmp_path, create=True):
    """Login, send, receive live, a 3 MiB file there and back: every step works."""
    listening = BatchClient(server, "bob", create=create)
    try:
        listening.wait_type("ready")
        sent = run_ok(server, "alice", ['send bob "Lunch" "At noon?"'], create=create)
        assert of_type(sent, "sent")
        assert listening.wait_type("message", via="push")["subject"] == "Lunch"
        data = known_bytes(3 * MIB + 7)
        source = tmp_path / "report.bin"
        source.write_bytes(data)
        offered = of_type(run_ok(server, "alice", [f"send-file bob {source}"]), "file_sent")
        assert offered[0]["sha256"] == sha256(data)
        listening.wait_type("message", via="push")
        target = tmp_path / "inbox"
        target.mkdir()
        got = of_type(run_ok(server, "bob", [f"download {offered[0]['id']} {target}"]),
                      "file_downloaded")
        assert got[0]["verified"] and (target / "report.bin").read_bytes() == data
        return listening.proc.pid
    finally:
        listening.close()


@AS_ROOT
def test_a_session_woken_from_parking_is_contained_like_any_user_process(make_server):
    """Issue 16: the user process a parked connection is woken into is an ordinary one."""
    from Tests.support import request, session

    server = make_server("--park-after", "0.5")
    account = pwd.getpwnam(containment.DEFAULT_USER)
    bob, _ = session(server, "bob")
    wait_until(lambda: not server.pids_titled("parley: user bob"), message="bob parked")
    assert request(bob, "Inbox").op == "Result"      # woken by the request
    (pid,) = wait_until(lambda: server.pids_titled("parley: user bob"), message="woken")
    seen = status(pid)
    assert seen["Uid"].split() == [str(account.pw_uid)] * 4
    assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"
    assert seen["CapEff"] == "0" * 16
    assert os.readlink(f"/proc/{pid}/root") == jail_of(server)


@AS_ROOT
def test_every_login_user_and_spare_process_is_contained_and_reaches_no_data_file(
        make_server, tmp_path):
    server = make_server(env=PROBE)
    account = pwd.getpwnam(containment.DEFAULT_USER)
    logging_in = RawClient(server.port)
    logging_in.handshake()                            # a login process, mid-login
    online = BatchClient(server, "carol", create=True)
    try:
        online.wait_type("ready")
        # carol's own login process is gone (it exits after the hand-off, and
        # may still be exiting when she is ready): only the one mid-login is left
        wait_until(lambda: len(server.pids_titled("parley: login")) == 1
                   and server.pids_titled("parley: user carol"), message="both kinds")
        jail = jail_of(server)
        assert os.listdir(jail) == ["db.sock"]         # empty but for the database's socket
        assert stat.S_IMODE(os.stat(jail).st_mode) == 0o710
        assert (os.stat(jail).st_uid, os.stat(jail).st_gid) == (0, account.pw_gid)
        pids = contained(server)
        assert len(pids) >= 3
        for pid in pids:
            seen = status(pid)
            assert seen["Uid"].split() == [str(account.pw_uid)] * 4
            assert seen["Gid"].split() == [str(account.pw_gid)] * 4
            assert seen["Groups"].strip() == ""
            assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"
            assert seen["Threads"] == "1" and seen["CapEff"] == "0" * 16
            assert os.readlink(f"/proc/{pid}/root") == jail
            assert limits(pid)["Max processes"] == ("0", "0")
            assert limits(pid)["Max core file size"] == ("0", "0")
            for path in data_paths(server.data_dir):  # no path to it, no permission on it
                assert not os.path.lexists(f"/proc/{pid}/root{path}")
                assert not may_open(os.stat(path), account.pw_uid, {account.pw_gid}), path
        (user_pid,) = server.pids_titled("parley: user carol")
        assert limits(user_pid)["Max cpu time"] == (str(4 * 3600),) * 2
        assert limits(user_pid)["Max data size"] == (str(256 * MIB),) * 2
        login_pid = server.pids_titled("parley: login")[0]
        assert limits(login_pid)["Max cpu time"] == ("30", "30")
        assert limits(login_pid)["Max open files"] == ("64", "64")
        (database,) = server.pids_titled("parley: database")
        assert status(database)["Uid"].split()[0] == "0"   # the data dir's owner: root
        assert_probes_found_nothing(server, len(pids))
    finally:
        online.close()
        logging_in.close()


@AS_ROOT
def test_a_normal_session_works_under_the_limits_and_imports_nothing_in_the_jail(
        make_server, tmp_path):
    server = make_server(env=PROBE)
    a_normal_session(server, tmp_path)
    assert_probes_found_nothing(server, 4)
    assert server.stop() == 0


def free_low_port():
    for port in range(1023, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    pytest.skip("no free port below 1024")


@AS_ROOT
def test_a_port_below_1024_is_bound_before_privileges_drop_and_seccomp_can_be_off(
        make_server, tmp_path):
    port = free_low_port()
    server = make_server("--port", str(port), "--seccomp", "off")
    assert server.port == port
    a_normal_session(server, tmp_path)
    assert "these protections are off: the syscall filter (--seccomp off)" in server.log()
    for pid in contained(server):
        assert status(pid)["Seccomp"] == "0" and status(pid)["NoNewPrivs"] == "1"
        assert status(pid)["Uid"].split()[0] != "0"


@AS_ROOT
def test_the_database_runs_as_the_owner_of_the_data_dir(tmp_path):
    data_dir = tempfile.mkdtemp(prefix="parley-owned-")   # reachable by another uid
    os.chown(data_dir, 12345, 12345)
    server = ServerProcess(tmp_path, "--data-dir", data_dir)
    server.data_dir = data_dir
    try:
        server.start()
        (database,) = server.pids_titled("parley: database")
        assert status(database)["Uid"].split() == ["12345"] * 4
        a_normal_session(server, tmp_path)
        owners = {os.lstat(path).st_uid for path in data_paths(data_dir)}
        assert owners == {12345}                      # the server key and lock too
        runtime = os.path.dirname(jail_of(server))
        assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o711
        assert os.stat(jail_of(server)).st_uid == 12345
        assert server.stop() == 0
    finally:
        server.kill_group()
        shutil.rmtree(data_dir, ignore_errors=True)


def start_failure(data_dir, *args):
    done = subprocess.run([sys.executable, SERVER, "--port", "0", "--data-dir",
                           str(data_dir), *args], capture_output=True, text=True,
                          timeout=60, env=child_env(), stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout, done.stderr


@AS_ROOT
def test_an_account_that_cannot_contain_is_refused_in_one_sentence(tmp_path):
    code, out, err = start_failure(tmp_path / "one", "--user", "nosuchaccount")
    assert code == 1 and out == ""
    assert ("parley: cannot run the server: there is no Unix account nosuchaccount (--user); "
            "create it or leave --user out to use the parley account\n") in err
    account = containment.account(containment.DEFAULT_USER)   # made if missing
    (tmp_path / "two").mkdir()
    os.chown(tmp_path / "two", account.pw_uid, account.pw_gid)
    code, out, err = start_failure(tmp_path / "two")
    assert code == 1 and out == ""
    assert (f"parley: cannot run the server: the account parley owns the data directory "
            f"{tmp_path / 'two'}; login and user processes must not: give the data "
            "directory to another account (chown -R) or name another one with --user\n") in err
    code, _out, err = start_failure(tmp_path / "four", "--user", "root")
    assert code == 1 and "--user root is root; name an unprivileged account" in err
    code, _out, err = start_failure(tmp_path / "three", "--user", "Bad Name")
    assert code == 2 and "bad value 'Bad Name' for --user: use a Unix account name" in err


def test_not_root_gets_the_same_empty_root_through_a_user_namespace(make_server, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command")
    server = make_server(env=PROBE, prefix=NOT_ROOT)
    a_normal_session(server, tmp_path)
    assert ("containment: these protections are off: their own Unix user (not started as "
            "root: they run as this server's uid, and --user is not used)") in server.log()
    jail = jail_of(server)
    for pid in contained(server):
        seen = status(pid)
        assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"
        assert seen["CapEff"] == "0" * 16 and seen["Threads"] == "1"
        root = os.stat(f"/proc/{pid}/root")
        assert (root.st_dev, root.st_ino) == (os.stat(jail).st_dev, os.stat(jail).st_ino)
    assert_probes_found_nothing(server, 4)


def test_without_user_namespaces_it_starts_and_says_exactly_what_is_off(make_server, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare command")
    server = make_server(env=PROBE, prefix=NOT_ROOT + NO_USERNS)
    a_normal_session(server, tmp_path)
    (line,) = [line for line in server.log().splitlines() if "protections are off" in line]
    assert line.endswith(
        "containment: these protections are off: their own Unix user (not started as root: "
        "they run as this server's uid, and --user is not used); the empty root "
        "(unprivileged user namespaces are refused: Operation not permitted: they can open "
        "every file this uid can, the data dir included)")
    for pid in contained(server):
        assert status(pid)["NoNewPrivs"] == "1" and status(pid)["Seccomp"] == "2"
    probes = probe_lines(server)
    assert probes and all("opened 0 of" not in line for line in probes)   # as documented
    assert all("fork: refused (EPERM)" in line for line in probes)
