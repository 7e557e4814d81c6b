"""Containment of the processes that parse untrusted input: login and user processes.

The daemon decides once, at start (`prepare`), what a login or user process
gets, and makes its *jail*: an empty directory in the runtime dir that holds
only the database's socket. Each login, user and spare process then calls
`enter(config, role)` at the start of its main, once what it must have open is
open (its client's socket, its pipes, the log file), and before it reads a
byte from its client:

* **Started as root**: it changes its root to the jail (`chroot`) and becomes
  the unprivileged account `--user` (default `parley`, a system account made
  with `useradd --system` if missing; a named one must exist), with no
  supplementary groups. The jail dir belongs to the database's user, group
  that account, mode 0710: the account may pass through it to the socket,
  list and write nothing. The database process runs as the owner of the data
  dir (`database_main`: root if root owns it), never as that account.
* **Not started as root**: the same empty root through an unprivileged user
  namespace (`unshare(CLONE_NEWUSER | CLONE_NEWNS)`, its own uid mapped, the
  jail bound read-only onto itself, `chroot`, every capability dropped), where
  the kernel allows it; the process keeps the server's uid. Where it does not,
  the server starts anyway, and one log line says what is off.
* Always: `no_new_privs`, not dumpable, no core files; no new process or
  thread (RLIMIT_NPROC 0); limits on CPU time, memory (RLIMIT_DATA) and open
  files (`LIMITS`); and, unless `--seccomp off` or libseccomp is missing, a
  syscall filter (`pyseccomp` over the system's libseccomp) that refuses with
  EPERM what such a process never needs: executing, forking, tracing,
  mounting, namespaces, kernel modules, keys, BPF, io_uring, changing ids;
  signals to any process but itself; sockets of any family but AF_UNIX; and
  TIOCSTI (typing into a terminal it might hold). Everything else is allowed.

Such a process then reaches its client (the socket it holds), the database
(`/db.sock` in its root, found again after the database restarts: the
monitor binds the same path anew) and nothing else on disk. It imports nothing
after entering: every module it needs is loaded in the forkserver
(`server/children.py`'s PRELOAD, and this module's imports).

Talks to: the kernel only (and `useradd` once, at start). Test-only hook:
with PARLEY_TEST_CONTAINMENT_PROBE=1 in the environment, every contained
process tries to open the data dir's files, fork, execute, open an Internet
socket and signal the daemon right after entering, logs what happened in one
line, and logs any module imported afterwards.

How it fails: at start, a `ContainmentError` with one sentence (no such
account, the account owns the data dir, useradd failed); in a process, a step
that fails ends that process before it reads its client (fail closed).
"""

import ctypes
import errno
import logging
import os
import pwd
import resource
import socket
import struct
import subprocess
import sys
import time

from Modules.runtime import keep_log_file, restore_default_signals, start_process

try:   # a ctypes binding over libseccomp.so.2 (Debian: libseccomp2, there by default)
    import pyseccomp as seccomp
    SECCOMP_MISSING = None
except (ImportError, RuntimeError, OSError) as missing:   # RuntimeError: no libseccomp
    seccomp, SECCOMP_MISSING = None, f"{type(missing).__name__}: {missing}"

log = logging.getLogger("parley.containment")

JAIL_NAME = "jail"
SOCKET_NAME = "db.sock"
DEFAULT_USER = "parley"
PROBE_VARIABLE = "PARLEY_TEST_CONTAINMENT_PROBE"
MIB = 1024 * 1024
# A login costs milliseconds of CPU and must end within 60 s; a session relays
# for hours (a busy day is well under a minute of CPU): a process past these is
# looping, not serving. Memory: a process starts at ~30 MB of data; a session
# holds at most 8 MiB for its client and 4 MiB for the database, frames of 1 MiB.
LIMITS = {"login": {"cpu": 30, "data": 128 * MIB, "nofile": 64},
          "user": {"cpu": 4 * 3600, "data": 256 * MIB, "nofile": 64}}
LIMITS["spare"] = LIMITS["user"]     # the larger; the job's role lowers them
# The data dir's files a probe tries by name, beside those present at start.
DATA_FILE_NAMES = ("passwords.db", "users.db", "messages.db", "passwords.db-wal",
                   "users.db-wal", "messages.db-wal", "server_key", "storage_key",
                   "audit.log", "parley.lock", "daemon.lock", "files")
DENIED = (
    "execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "process_vm_readv",
    "process_vm_writev", "process_madvise", "pidfd_open", "pidfd_getfd", "pidfd_send_signal",
    "kcmp", "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl",
    "syslog", "personality", "uselib", "vhangup", "iopl", "ioperm", "modify_ldt",
    "name_to_handle_at", "open_by_handle_at", "setuid", "setgid", "setreuid", "setregid",
    "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid", "capset",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "move_pages",
    "migrate_pages", "lookup_dcookie")
SIGNALS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
TIOCSTI = 0x5412
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 4, 22, 38, 2
PID_PLACEHOLDER = 0x7FFFFFF1           # above any pid (pid_max is at most 2**22)
FILTER = None                          # the compiled syscall filter (below)

_libc = ctypes.CDLL(None, use_errno=True)


class ContainmentError(OSError):
    """The server cannot contain its processes as asked; the message says why."""


def socket_path(runtime_dir):
    """Where the database's socket is: in the jail, where contained processes see it."""
    return os.path.join(runtime_dir, JAIL_NAME, SOCKET_NAME)


# -- the daemon's side: decided once, at start ------------------------------------

def prepare(options, runtime_dir):
    """Make the jail and decide what contained processes get: the `jail` entry of
    every child's config. Logs one line saying so, a warning if anything is off."""
    data_dir = os.path.abspath(options.data_dir)
    jail = {"dir": os.path.join(runtime_dir, JAIL_NAME), "data_dir": data_dir,
            "data_files": sorted(set(os.listdir(data_dir)) | set(DATA_FILE_NAMES)),
            "daemon_pid": os.getpid(),
            "seccomp": bool(getattr(options, "seccomp", True) and seccomp)}
    owner = os.stat(data_dir)
    if os.geteuid() == 0:
        entry = account(getattr(options, "user", DEFAULT_USER))
        if entry.pw_uid == 0:
            raise ContainmentError(f"--user {entry.pw_name} is root; name an unprivileged "
                                   "account, or leave --user out to use the parley account")
        if entry.pw_uid == owner.st_uid:
            raise ContainmentError(
                f"the account {entry.pw_name} owns the data directory {data_dir}; login and "
                "user processes must not: give the data directory to another account "
                "(chown -R) or name another one with --user")
        jail.update(mode="root", user=entry.pw_name, uid=entry.pw_uid,
                    gid=entry.pw_gid, db_uid=owner.st_uid, db_gid=owner.st_gid)
        _make_jail_dir(jail["dir"], owner.st_uid, entry.pw_gid, 0o710)
        if owner.st_uid != 0:       # the database, as that owner, must reach its socket
            os.chmod(runtime_dir, 0o711)
            _give_to_owner(data_dir, owner)
    else:
        _make_jail_dir(jail["dir"], os.geteuid(), os.getegid(), 0o700)
        refused = _user_namespace_refused(jail)
        jail.update(mode="userns" if refused is None else "none", uid=os.geteuid(),
                    gid=os.getegid(), refused=refused)
    _announce(jail, options)
    return jail


def account(name):
    """The passwd entry of --user; the default account is created if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if name != DEFAULT_USER:
            raise ContainmentError(f"there is no Unix account {name} (--user); create it "
                                   "or leave --user out to use the parley account") from None
    command = ["useradd", "--system", "--user-group", "--no-create-home",
               "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
    for _attempt in range(5):          # several servers starting at once: one wins
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except OSError as error:
            raise ContainmentError(f"cannot create the Unix account {name}: {error.strerror}"
                                   "; create it, or name an account with --user") from None
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            time.sleep(0.2)
            continue
        if done.returncode == 0:
            log.warning("created the system account %s (uid %d) for login and user "
                        "processes", name, entry.pw_uid)
        return entry
    why = (done.stderr.strip().splitlines() or ["useradd failed"])[-1]
    raise ContainmentError(f"cannot create the Unix account {name}: {why}; create it, or "
                           "name an account with --user")


def _make_jail_dir(path, uid, gid, mode):
    os.mkdir(path, 0o700)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _give_to_owner(data_dir, owner):
    """Files the daemon made as root in a data dir owned by another account (the
    server key, its lock) go to that account, which the database runs as."""
    for name in os.listdir(data_dir):
        path = os.path.join(data_dir, name)
        if os.lstat(path).st_uid == 0:
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _user_namespace_refused(jail):
    """None if a child can enter a user namespace and the jail; else why not."""
    pid = os.fork()
    if pid == 0:                       # the child tries, says nothing, exits
        code = 1
        try:
            _enter_user_namespace(jail)
            code = 0
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    try:
        _unshare_here_to_see_why()
    except OSError as error:
        return error.strerror or str(error)
    return "the jail could not be entered"


def _unshare_here_to_see_why():
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno())
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code:
        raise OSError(code, f"unprivileged user namespaces are refused: {os.strerror(code)}")


def _announce(jail, options):
    limits = ", ".join(f"{role}: {v['cpu']} s CPU, {v['data'] // MIB} MiB data, "
                       f"{v['nofile']} files" for role, v in LIMITS.items() if role != "spare")
    where = {"root": f"as {jail.get('user')} (uid {jail['uid']}) in the empty root "
                     f"{jail['dir']}",
             "userns": f"in the empty root {jail['dir']} (a user namespace)",
             "none": f"as uid {jail['uid']}"}[jail["mode"]]
    log.info("containment: login and user processes run %s with no_new_privs, no new "
             "processes, limits (%s)%s", where, limits,
             " and the syscall filter" if jail["seccomp"] else "")
    off = []
    if jail["mode"] != "root":
        off.append("their own Unix user (not started as root: they run as this server's "
                   "uid, and --user is not used)")
    if jail["mode"] == "none":
        off.append(f"the empty root ({jail['refused']}: they can open every file this "
                   "uid can, the data dir included)")
    if not jail["seccomp"]:
        off.append("the syscall filter (" + ("--seccomp off" if seccomp else
                   f"pyseccomp or libseccomp missing: {SECCOMP_MISSING}") + ")")
    if off:
        log.warning("containment: these protections are off: %s", "; ".join(off))


def database_main(config, ready):
    """Entry point of the database process: as the owner of the data dir, the
    monitor (`Modules/database/monitor.py`). Its lifeline and log file are opened
    first, as the daemon's user; the jail's socket is made 0666 (its directory keeps
    others out)."""
    jail = config.get("jail") or {}
    if jail.get("mode") == "root":
        restore_default_signals(config.get("lifeline"))   # the pipe is root's: opened now
        start_process("database", config)
        config = {**config, "socket_mode": 0o666, "lifeline": None,
                  "runtime_dir": os.path.dirname(jail["dir"])}
        if jail["db_uid"] != os.geteuid():
            _warm_up_database()
            os.setgroups([])
            os.setresgid(jail["db_gid"], jail["db_gid"], jail["db_gid"])
            os.setresuid(jail["db_uid"], jail["db_uid"], jail["db_uid"])
    elif jail:
        config = {**config, "runtime_dir": os.path.dirname(jail["dir"])}
    from Modules.database import monitor   # preloaded by the forkserver: no import here;
    monitor.main(config, ready)            # the daemon itself never needs it


def _warm_up_database():
    """What the database loads on first use (argon2's backend, AES-GCM's code), loaded
    now, while the Python installation can surely be read: the data dir's owner may
    not be allowed to (here, one under /root)."""
    from Crypto.Cipher import AES          # both preloaded by the forkserver
    from passlib.hash import argon2

    argon2.get_backend()
    AES.new(bytes(32), AES.MODE_GCM, nonce=bytes(12)).encrypt_and_digest(b"")


# -- the contained process's side ------------------------------------------------------

_entered = []


def enter(config, role):
    """Contain this process as `role` ("login", "user", "spare"), once; a spare
    that becomes a login process only lowers its limits. Points
    config["db_socket"] at the socket as seen from the jail."""
    jail = config.get("jail")
    if not jail:
        return
    if not _entered:
        _contain(jail)
        _entered.append(role)
    _limit(role)
    if jail["mode"] != "none":
        inside = os.path.relpath(config["db_socket"], jail["dir"])
        if not inside.startswith(".."):
            config["db_socket"] = "/" + inside
    if len(_entered) == 1 and os.environ.get(PROBE_VARIABLE) == "1":
        _entered.append("probed")
        _probe(jail, role)


def _contain(jail):
    time.localtime()                   # the time zone is read while /etc can be seen
    if jail["mode"] != "none":
        keep_log_file()                # its path is out of sight from now on
    if jail["mode"] == "root":
        os.chroot(jail["dir"])
        os.chdir("/")
        os.setgroups([])
        os.setresgid(jail["gid"], jail["gid"], jail["gid"])
        os.setresuid(jail["uid"], jail["uid"], jail["uid"])   # every capability goes
    elif jail["mode"] == "userns":
        _enter_user_namespace(jail)
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if jail["seccomp"]:
        _load_filter()


def _enter_user_namespace(jail):
    """Not root: a user and mount namespace of our own, the jail read-only, chroot,
    no capability left. Needs a single-threaded process."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount private")
    path = os.fsencode(jail["dir"])
    _check(_libc.mount(path, path, None, MS_BIND, None), "bind the jail")
    _check(_libc.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None),
           "make the jail read-only")
    os.chroot(jail["dir"])
    os.chdir("/")
    _drop_capabilities()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_capabilities():
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()   # version 3: all zero
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _prctl(option, value):
    _check(_libc.prctl(option, value, 0, 0, 0), f"prctl {option}")


def _check(result, what):
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _limit(role):
    limits = LIMITS[role]
    for which, value in ((resource.RLIMIT_CPU, limits["cpu"]),
                         (resource.RLIMIT_DATA, limits["data"]),
                         (resource.RLIMIT_NOFILE, limits["nofile"]),
                         (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0)):
        _soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


def _compile_filter():
    """The deny-list (see the module's docstring) as a BPF program: EPERM for each,
    all else allowed, with PID_PLACEHOLDER where the process's own pid goes.
    Compiled once, where this module is imported (the forkserver): libseccomp
    takes ~5 ms for it, too much for every process."""
    deny = seccomp.ERRNO(errno.EPERM)
    syscalls = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        _rule(syscalls, deny, name)
    for name in SIGNALS:               # pid 0 and -1 are groups: refused too
        _rule(syscalls, deny, name, seccomp.Arg(0, seccomp.NE, PID_PLACEHOLDER))
    for name in ("socket", "socketpair"):
        _rule(syscalls, deny, name, seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    _rule(syscalls, deny, "ioctl", seccomp.Arg(1, seccomp.EQ, TIOCSTI))
    with open(os.memfd_create("parley-seccomp"), "w+b") as program:
        syscalls.export_bpf(program)
        program.seek(0)
        return program.read()


def _rule(syscalls, action, name, *args):
    try:
        syscalls.add_rule(action, name, *args)
    except (OSError, RuntimeError, ValueError):   # a call this libseccomp does not know
        pass


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _load_filter():
    """The compiled program with this process's pid in it, loaded (needs no_new_privs)."""
    program = bytearray(FILTER)
    for offset in range(0, len(program), 8):      # struct sock_filter: u16, u8, u8, u32 k
        if struct.unpack_from("=I", program, offset + 4)[0] == PID_PLACEHOLDER:
            struct.pack_into("=I", program, offset + 4, os.getpid())
    code = (ctypes.c_char * len(program)).from_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(code))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
           "seccomp")


if seccomp is not None:
    try:
        FILTER = _compile_filter()
    except (OSError, RuntimeError, ValueError) as failed:
        seccomp, SECCOMP_MISSING = None, f"libseccomp failed: {failed}"


# -- the test-only probe ------------------------------------------------------------

def _probe(jail, role):
    paths = [jail["data_dir"]] + [os.path.join(jail["data_dir"], name)
                                  for name in jail["data_files"]]
    opened = [path for path in paths if _opens(path)]
    log.warning("containment probe (%s): opened %d of %d data dir paths%s; fork: %s; "
                "exec: %s; inet socket: %s; signal the daemon: %s; signal itself: %s",
                role, len(opened), len(paths), f" ({', '.join(opened)})" if opened else "",
                _outcome(_fork), _outcome(lambda: os.execv(sys.executable, [sys.executable])),
                _outcome(lambda: socket.socket(socket.AF_INET).close()),
                _outcome(lambda: os.kill(jail["daemon_pid"], 0)),
                _outcome(lambda: os.kill(os.getpid(), 0)))
    sys.addaudithook(_report_imports)


def _opens(path):
    try:
        os.close(os.open(path, os.O_RDONLY))
        return True
    except OSError:
        return False


def _fork():
    if os.fork() == 0:
        os._exit(0)


def _outcome(attempt):
    try:
        attempt()
    except OSError as error:
        return f"refused ({errno.errorcode.get(error.errno, error.errno)})"
    return "allowed"


def _report_imports(event, args):
    if event == "import":
        log.warning("containment probe: imported %s after entering", args[0])

