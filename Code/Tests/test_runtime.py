"""Tests for Modules/runtime.py: what every server process does first.

The log level from options, the lifeline (a child whose daemon's end of the
pipe closes ends itself with SIGTERM), lower priority per thread, process
liveness by /proc, and the process title seen by `ps`.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import threading

import pytest

from Modules import runtime
from Tests.support import CODE_DIR, WAIT, child_env


def test_log_level_from_options():
    assert runtime.log_level_from({"debug": True, "log_level": "ERROR"}) == 10
    assert runtime.log_level_from({"log_level": "warning"}) == 30
    assert runtime.log_level_from({}) == 20
    with pytest.raises(ValueError) as info:
        runtime.log_level_from({"log_level": "LOUD"})
    assert "LOUD" in str(info.value)


def _child_with_lifeline(lifeline, started):
    runtime.restore_default_signals(lifeline)
    started.set()
    threading.Event().wait(WAIT)          # until the lifeline ends us
    os._exit(7)                           # not reached when it works


def test_a_child_whose_lifeline_breaks_ends_with_sigterm():
    ctx = multiprocessing.get_context("forkserver")
    lifeline, writer = ctx.Pipe(duplex=False)
    started = ctx.Event()
    child = ctx.Process(target=_child_with_lifeline, args=(lifeline, started))
    child.start()
    try:
        assert started.wait(WAIT)
        writer.close()                    # the daemon "dies"
        child.join(WAIT)
        assert child.exitcode == -signal.SIGTERM
    finally:
        if child.is_alive():
            child.kill()


def test_lower_priority_of_one_thread_leaves_the_process_alone():
    seen = {}

    def worker():
        runtime.lower_priority(thread=True)
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["thread"] >= runtime.BACKGROUND_NICE
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_process_alive_sees_through_zombies():
    assert runtime.process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_pid = child.pid
    while True:                            # a zombie until it is waited for
        state = open(f"/proc/{child_pid}/stat").read().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
    assert not runtime.process_alive(child_pid)
    child.wait()
    assert not runtime.process_alive(child_pid)


def test_start_process_sets_the_title_ps_shows():
    code = ("from Modules import runtime; runtime.start_process('tester', {}); "
            "print(open('/proc/self/cmdline').read().replace(chr(0), ' ').strip())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=child_env({"PYTHONPATH": CODE_DIR}))
    assert done.stdout.strip() == "parley: tester"
