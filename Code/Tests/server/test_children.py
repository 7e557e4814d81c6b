"""Tests for Modules/server/children.py: what each kind of child is given.

The configs are built from a real daemon (`Daemon(options)` on a temporary
data dir, its key made by `identity.daemon_key`; nothing is started): only
the database process's carries a secret, and every config pickles (the
forkserver sends it to the child). The forkserver context's preload is
tested in test_preload.py; that its children do not run the daemon's
script again, here.
"""

import os
import pickle
import subprocess
import sys

import pytest

from Modules import identity
from Modules.server import children
from Modules.server.daemon import Daemon
from Modules.server.options import parse_server_options
from Tests.support import CODE_DIR, child_env

SECRETS = ("db_key", "server_private_key", "ticket_secret")


@pytest.fixture
def daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_DB_KEY", "ab" * 32)            # taken out of the environment
    made = Daemon(parse_server_options(["--data-dir", str(tmp_path / "data"), "--port", "0",
                                        "--no-console"]))
    made.key = identity.daemon_key(str(tmp_path / "data"))
    yield made
    made.lifeline.close()
    os.rmdir(made.runtime_dir)


def test_only_the_database_process_is_given_a_secret(daemon):
    database = children.db_config(daemon)
    assert database["server_private_key"] == daemon.key.private
    assert database["ticket_secret"] == daemon.ticket_secret
    assert database["db_key"]["hex"] == "ab" * 32
    assert "PARLEY_DB_KEY" not in os.environ                    # no child inherits it
    for config in (children.base_config(daemon), children.login_config(daemon)):
        assert not set(SECRETS) & set(config)
        assert daemon.key.private not in pickle.dumps(config)
        assert daemon.ticket_secret not in pickle.dumps(config)
    assert children.login_config(daemon)["server_public_key"] == daemon.key.public


def test_the_greeting_goes_to_the_first_database_only(daemon):
    daemon.start_settings = {"greeting": "Welcome", "motd": None}
    assert children.db_config(daemon)["greeting"] == "Welcome"
    second = children.db_config(daemon)          # a restarted database keeps live changes
    assert second.get("greeting") is None and second.get("motd") is None


# A main script that counts its own runs, then starts one forkserver child.
MAIN_SCRIPT = """
import multiprocessing, os, sys
with open(sys.argv[1] if len(sys.argv) > 1 else os.environ["RUNS_FILE"], "a") as runs:
    runs.write("ran\\n")
if __name__ == "__main__":
    os.environ["RUNS_FILE"] = sys.argv[1]
    from Modules.server import children
    child = children.forkserver_context().Process(target=os.getpid)
    child.start()
    child.join()
    sys.exit(child.exitcode)
"""


def test_a_child_does_not_run_the_daemons_script_again(tmp_path):
    """Started by path (`python Code/server_daemon.py`), the main module would be run
    again in every child as __mp_main__: CPU on every login and user process start."""
    script, runs = tmp_path / "main_script.py", tmp_path / "runs"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(runs)], cwd=tmp_path, timeout=60,
                          env=child_env({"PYTHONPATH": CODE_DIR}), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert runs.read_text().splitlines() == ["ran"]      # the parent's run only
