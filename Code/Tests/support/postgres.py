"""A private PostgreSQL cluster for the tests (issue 18).

`PostgresCluster(directory)` runs `initdb` in a directory of its own and
starts a postmaster that listens on a Unix socket in that directory only
(no TCP port, so parallel test workers never collide), with trust
authentication for its one local superuser and `fsync=on` (durability is
what the tests check). PostgreSQL refuses to run as root: when the tests
run as root the cluster runs as `nobody`, the directory handed to it.

`find_binaries()` looks on PATH, then in /usr/lib/postgresql/*/bin (Debian's
layout; the newest version wins); None when there are none, and the
fixtures then skip with a sentence saying what to install.

`init(tcp_port=N)` also listens on 127.0.0.1:N with TLS required and
scram-sha-256 passwords for every TCP connection (a deployment of several
hosts: `make_tls_certificate` makes its self-signed certificate, and
`add_login(role, password)` a role that is not a superuser, for
`create_database(owner=role)`, as an operator would give Parley).

How it fails: `start()` raises RuntimeError with the server's log when the
cluster does not come up; `stop()` always ends the postmaster (fast
shutdown, then SIGKILL) and is safe to call twice, `remove()` also deletes
the directory; `kill()` is SIGKILL of
the postmaster, for crash tests, after which `start()` recovers it.
"""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from Tests.support.processes import WAIT

SUPERUSER = "parley"


def find_binaries():
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return os.path.dirname(os.path.realpath(on_path))   # where createdb is too
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit()
                   else 0)
    return os.path.dirname(found[-1]) if found else None


def _as_owner():
    """A preexec that drops root to `nobody` (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("nobody")

    def drop():
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)
    return drop


class PostgresCluster:
    """One cluster in `directory`, socket in `directory/socket`. Without a directory, a
    new one in the system's temporary dir (pytest's is closed to `nobody`), which
    `remove()` deletes."""

    def __init__(self, directory=None, binaries=None):
        self.directory = os.path.abspath(directory or tempfile.mkdtemp(prefix="parley-pg-"))
        self.binaries = binaries or find_binaries()
        self.data = os.path.join(self.directory, "pgdata")
        self.socket_dir = os.path.join(self.directory, "socket")
        self.log_path = os.path.join(self.directory, "postgres.log")
        self._created = 0
        self.tcp_port = None

    def _run(self, tool, *args, check=True, timeout=None):
        return subprocess.run([os.path.join(self.binaries, tool), *args],
                              preexec_fn=_as_owner(), cwd=self.directory,
                              capture_output=True, text=True, check=check,
                              timeout=timeout or WAIT * 4)

    def init(self, tcp_port=None):
        os.makedirs(self.socket_dir, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("nobody")
            for path in (self.directory, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", self.data, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.socket_dir}'\n"
                       "fsync = on\nshared_buffers = 16MB\nmax_connections = 200\n"
                       "dynamic_shared_memory_type = posix\n")
        if tcp_port is not None:
            self._listen_with_tls(tcp_port)
        return self

    def _listen_with_tls(self, port):
        """127.0.0.1:`port`, TLS only, passwords checked (scram-sha-256)."""
        self.tcp_port = port
        made = make_tls_certificate(self.data, owner=_owner_ids())
        self.certificate = os.path.join(self.directory, "root.crt")   # the clients' copy
        shutil.copyfile(made, self.certificate)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nssl = on\n"
                       "password_encryption = 'scram-sha-256'\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:   # initdb's trusts TCP
            hba.write("local all all trust\n"
                      "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                      "host all all 127.0.0.1/32 reject\n")

    def add_login(self, role, password):
        """A role that logs in with `password`, not a superuser (what an operator
        gives Parley: `create_database(owner=role)` then gives it a database)."""
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                psycopg.sql.Identifier(role), psycopg.sql.Literal(password)))

    def tcp_dsn(self, role, database, password=None, **query):
        """A libpq URL over TCP that checks the server's certificate."""
        secret = f":{password}" if password is not None else ""
        options = {"sslmode": "verify-full", "sslrootcert": self.certificate, **query}
        return (f"postgresql://{role}{secret}@127.0.0.1:{self.tcp_port}/{database}?"
                + "&".join(f"{key}={value}" for key, value in options.items()))

    def start(self):
        done = self._run("pg_ctl", "-D", self.data, "-l", self.log_path, "-w",
                         "-t", str(int(WAIT * 2)), "start", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {done.stderr}\n{self.log()}")
        return self

    def stop(self):
        if self.pid() is None:
            return
        done = self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)
        if done.returncode != 0:
            self.kill()

    def remove(self):
        """Stop it and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self):
        self.stop()
        self.start()

    def kill(self):
        """SIGKILL of the postmaster and its backends at once (a machine's crash: a
        backend left alive would keep the shared memory and stop the next start)."""
        pid = self.pid()
        if pid is None:
            return
        doomed = [pid, *_children(pid)]
        for victim in doomed:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + WAIT
        while any(_alive(victim) for victim in doomed) and time.monotonic() < deadline:
            time.sleep(0.02)
        # A killed postmaster may stay a zombie until init reaps it, and PostgreSQL
        # takes a zombie's pid in a lock file for a running server: remove the files.
        for lock in (os.path.join(self.data, "postmaster.pid"),
                     os.path.join(self.socket_dir, f".s.PGSQL.{self.tcp_port or 5432}.lock")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)

    def pid(self):
        """The running postmaster's pid, or None (a pid file a kill left is not one)."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as file:
                pid = int(file.readline())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def dsn(self, dbname="postgres"):
        port = f"&port={self.tcp_port}" if self.tcp_port else ""    # it names the socket
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}{port}"

    def create_database(self, name=None, owner=SUPERUSER):
        """A new empty database; its DSN."""
        self._created += 1
        name = name or f"test_{os.getpid()}_{self._created}"
        self._run("createdb", "-h", self.socket_dir, "-p", str(self.tcp_port or 5432),
                  "-U", SUPERUSER, "-O", owner, name)
        return self.dsn(name)

    def drop_database(self, name):
        self._run("dropdb", "-h", self.socket_dir, "-p", str(self.tcp_port or 5432),
                  "-U", SUPERUSER, "--force", "--if-exists",
                  name, check=False)

    def log(self):
        return self.log_text()[-4000:]

    def log_text(self):
        """The server's whole log (what it reported: errors such as deadlocks)."""
        try:
            with open(self.log_path, errors="replace") as file:
                return file.read()
        except OSError:
            return ""


def database_name(dsn):
    """The database a DSN of `dsn()` or `tcp_dsn()` names."""
    return dsn.split("?", 1)[0].rsplit("/", 1)[1]


def make_tls_certificate(directory, owner=None):
    """A self-signed certificate for 127.0.0.1 (`server.crt`, `server.key` in
    `directory`, the key 0600 and owned by `owner` (uid, gid), as PostgreSQL
    insists); the certificate's path, which clients use as their root."""
    crt, key = os.path.join(directory, "server.crt"), os.path.join(directory, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True,
                   timeout=WAIT * 2)
    os.chmod(key, 0o600)
    os.chmod(crt, 0o644)
    if owner is not None:
        for path in (crt, key):
            os.chown(path, *owner)
    return crt


def _owner_ids():
    """The (uid, gid) the cluster runs as, or None when that is us."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("nobody")
    return user.pw_uid, user.pw_gid


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    if int(file.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
