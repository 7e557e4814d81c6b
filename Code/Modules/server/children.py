"""What the daemon hands its children: the forkserver, and each child's config.

`forkserver_context()` is the multiprocessing forkserver context with
PRELOAD really imported by the forkserver (a fresh interpreter), so every
child starts with the heavy modules loaded and frozen (`server/preload.py`).
`base_config`, `db_config` and `login_config` build the config dict each
kind of child is started with, from the daemon's options and state; the
split is the security boundary of the process design: only the database
process's config carries a secret (the database key's source, the server's
private key, the ticket secret), and a login or user process's carries
none (`Tests/server/test_children.py`).

`stop_after_failure` kills them all when the daemon itself fails.

Talks to: nothing (it reads the daemon object it is given). How it fails:
a preload that cannot be imported is skipped by multiprocessing itself;
`Tests/server/test_preload.py` imports every name of PRELOAD in a fresh
interpreter, as the forkserver does, so that cannot go unnoticed.
"""

import importlib.machinery
import multiprocessing
import os
import shutil
import sys
import time

# Imported once by the forkserver and inherited by every child; preload (gc.freeze) last.
PRELOAD = ["Modules.server.spares", "Modules.server.login_process", "Modules.server.user_process",
           "Modules.database.monitor", "passlib.handlers.argon2", "Modules.server.preload"]


def forkserver_context():
    """The forkserver context, with PRELOAD really preloaded.

    The forkserver is a fresh interpreter: Python 3.11 ignores the sys.path
    it is given and silently skips a preload it cannot import, so `Modules`
    must be findable through PYTHONPATH, whatever the working directory.
    """
    code_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if code_dir not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([code_dir] + [p for p in paths if p])
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    _main_script_not_rerun()
    return ctx


def _main_script_not_rerun():
    """Started as `python Code/server_daemon.py`, the main module has a path and no
    spec, and multiprocessing then runs that script again (as `__mp_main__`, compiled
    from source) in every child before its target: ~1.5 CPU-ms per login and per user
    process. Every target lives in `Modules`, so no child needs it: a main module
    named "__main__" is one multiprocessing leaves alone (spawn._fixup_main_from_name).
    (Preloading "__main__" would do it too, but Python 3.11's forkserver drops the
    path that needs.)"""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None:
        main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)


def base_config(daemon):
    """What every child gets: the log, the jail, the database's socket, the lifeline,
    the session timers. Nothing secret: login, user and spare processes get this."""
    return {"log_level": daemon.options.log_level, "debug": daemon.options.debug, "jail": daemon.jail,
            "log_file": daemon.options.log_file, "db_socket": daemon.db_socket,
            "lifeline": daemon.lifeline, "idle_timeout": daemon.options.idle_timeout,
            "park_after": daemon.options.park_after}


def db_config(daemon):
    """The database process's: the only one with the data dir, its key, the server's
    private key and the ticket secret; the tickets of the sessions alive (a restarted
    database binds them again) and of those parked."""
    return {**base_config(daemon), "data_dir": daemon.options.data_dir, "db_key": daemon.db_key,
            "storage": daemon.options.storage,      # None: SQLite in the data dir
            "files_dir": daemon.options.files_dir,  # None: files/ in the data dir
            "server_private_key": getattr(daemon.key, "private", None),   # it alone
            "socket_path": daemon.db_socket, "ticket_secret": daemon.ticket_secret,
            **daemon._take_start_settings(),
            "live_tickets": [record.ticket for record in daemon.clients.values()
                             if record.kind == "user" and record.ticket],
            "parked": daemon.parking.tickets(),   # held parked by us (parking.py)
            "registration": {"open": daemon.options.registration == "open",
                             "per_address": daemon.options.registrations_per_address,
                             "per_hour": daemon.options.registrations_per_hour},
            "daemon_pid": os.getpid(),     # the only pid that may open an admin link
            "ledger": {"addresses": daemon.options.ledger_addresses,
                       "days": daemon.options.ledger_days},
            "files": {name.removeprefix("file_"): value for name, value in  # --file-*
                      vars(daemon.options).items() if name.startswith(("file_", "upload_"))}}


def login_config(daemon):
    """A login process's: the server's public key and the login's deadline."""
    return {**base_config(daemon), "server_public_key": daemon.key.public,
            "deadline": time.time() + daemon.options.login_timeout}


def stop_after_failure(daemon):
    """After the daemon failed: every child killed (a spare waiting for its job would
    keep multiprocessing's exit handler waiting for ever, and the daemon would never
    exit for a supervisor to restart it), the runtime dir removed."""
    daemon.signals = 2
    for proc in multiprocessing.active_children():
        proc.kill()
    shutil.rmtree(daemon.runtime_dir, ignore_errors=True)
