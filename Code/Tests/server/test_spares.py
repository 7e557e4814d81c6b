"""Tests for Modules/server/spares.py: processes started ahead of logins, on a real server.

A login takes an idle spare (the very process becomes `parley: login`, then
another spare becomes `parley: user`), the daemon starts replacements, dead
spares are skipped, `--spare-processes 0` turns the pool off, and nothing
is left running after a stop.
"""

import os
import signal
import subprocess
import sys

from Modules.runtime import process_alive
from Tests.support import SERVER, WAIT, child_env, request, session, wait_until


def spare_pids(server):
    return set(server.pids_titled("parley: spare"))


def four_spares(server):
    wait_until(lambda: len(spare_pids(server)) == 4, message="four idle spares")
    return spare_pids(server)


def test_a_login_and_its_session_run_in_spares_that_are_then_replaced(server):
    before = four_spares(server)
    alice, _ = session(server, "alice")
    (user,) = server.pids_titled("parley: user alice")
    assert user in before                       # no process was started for it
    assert request(alice, "Inbox").op == "Result"
    after = four_spares(server)
    assert len(after - before) >= 2 and user not in after
    alice.close()


def test_dead_spares_are_skipped(server):
    killed = four_spares(server)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(process_alive(pid) for pid in killed), message="spares dead")
    alice, _ = session(server, "alice")          # served by processes started now
    assert request(alice, "Inbox").op == "Result"
    alice.close()


def test_no_spares_when_turned_off(make_server):
    server = make_server("--spare-processes", "0")
    alice, _ = session(server, "alice")
    assert request(alice, "Inbox").op == "Result"
    assert spare_pids(server) == set()
    alice.close()


def test_a_stop_leaves_no_spare_behind(server):
    four_spares(server)
    server.proc.send_signal(signal.SIGTERM)     # not server.stop(): it kills the group
    assert server.proc.wait(WAIT) == 0
    # The forkserver and the last children end just after the daemon: wait for
    # them to be gone (a leftover would stay and fail this) rather than look once.
    wait_until(lambda: not server.processes(), timeout=10, message="no process left")


def test_a_bad_spare_count_is_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, SERVER, "--spare-processes", "65",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env=child_env())
    assert done.returncode == 2
    assert "--spare-processes" in done.stderr and "0 to 64" in done.stderr
