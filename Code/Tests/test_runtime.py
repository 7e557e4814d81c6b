"""Tests for Modules/runtime.py: what every server process does first.

The log level from options, the log file (created 0600, appended, plain,
every line with the connection id, reopened when moved and on demand, a
bad path one sentence, kept by a contained process, or replaced by the
daemon's), the lifeline (a child whose daemon's end of the pipe closes gets
SIGTERM, with no thread of its own), lower priority per thread, process
liveness by /proc, and the process title seen by `ps`. What configures
logging runs in a child interpreter, never in pytest's own.
"""

import multiprocessing
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
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
    assert threading.active_count() == 1   # no thread watches: the kernel signals
    with open("/proc/self/status") as status:
        assert "Threads:\t1\n" in status.read()
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


def _run_child(code):
    """Run `code` in a fresh interpreter that can import Modules; its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60, env=child_env({"PYTHONPATH": CODE_DIR}))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_log_file_is_private_plain_appended_and_names_the_connection(tmp_path):
    path = tmp_path / "parley.log"
    path.write_text("an earlier run\n")
    os.chmod(path, 0o600)
    fresh = tmp_path / "fresh.log"
    _run_child(f"""
        import logging
        from Modules import runtime
        runtime.start_process("tester", {{"log_file": {str(path)!r}, "conn_id": "c5",
                                          "log_level": "WARNING"}})
        log = logging.getLogger("parley.test")
        log.warning("one \\x1b[31mred\\x1b[0m line\\nforged 2020-01-01 line")
        log.warning("about another", extra={{"conn_id": "c9"}})
        log.info("below the level")
        runtime.log_always(log, "a header at any level")
        runtime.setup_logging(logging.INFO, {str(fresh)!r})
        runtime.set_connection_id(None)
        logging.getLogger("x").info("no connection")
    """)
    lines = path.read_text().splitlines()
    assert lines[0] == "an earlier run"
    assert re.fullmatch(r"\S+ \S+ WARNING \[parley: tester\] c5 one \\x1b\[31mred"
                        r"\\x1b\[0m line", lines[1])
    assert lines[2] == "    forged 2020-01-01 line"            # indented: not a record
    assert lines[3].endswith("WARNING [parley: tester] c9 about another")
    assert lines[4].endswith("INFO    [parley: tester] c5 a header at any level")
    assert len(lines) == 5 and "\x1b" not in path.read_text()
    assert fresh.read_text().strip().endswith("[parley: tester] - no connection")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_a_moved_log_file_is_made_again_and_reopen_forces_it(tmp_path):
    path = tmp_path / "parley.log"
    out = _run_child(f"""
        import logging, os
        from Modules import runtime
        print(runtime.reopen_log_file())         # none yet
        runtime.start_process("tester", {{"log_file": {str(path)!r}}})
        log = logging.getLogger("parley.test")
        log.info("first")
        os.rename({str(path)!r}, {str(path) + ".1"!r})
        log.info("second")                       # the watched file: made again
        os.rename({str(path)!r}, {str(path) + ".2"!r})
        print(runtime.reopen_log_file(), os.path.exists({str(path)!r}))   # made at once
        log.info("third")
    """)
    assert out.split() == ["False", "True", "True"]
    assert (tmp_path / "parley.log.1").read_text().strip().endswith("first")
    assert (tmp_path / "parley.log.2").read_text().strip().endswith("second")
    assert path.read_text().strip().endswith("third")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_kept_log_file_stays_and_an_adopted_one_replaces_it(tmp_path):
    path, other = tmp_path / "parley.log", tmp_path / "daemons.log"
    out = _run_child(f"""
        import logging, os
        from Modules import runtime
        runtime.start_process("tester", {{"log_file": {str(path)!r}}})
        log = logging.getLogger("parley.test")
        runtime.keep_log_file()                  # a contained process: the path is gone
        os.rename({str(path)!r}, {str(path) + ".1"!r})
        log.info("kept")                         # into the moved file, nothing made anew
        print(os.path.exists({str(path)!r}))
        fd = os.open({str(other)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        runtime.adopt_log_file(os.dup(fd))       # the daemon's, passed with a job
        log.info("adopted")
        print(runtime.log_file_descriptor() is not None)
    """)
    assert out.split() == ["False", "True"]
    assert (tmp_path / "parley.log.1").read_text().strip().endswith("kept")
    assert other.read_text().strip().endswith("adopted")


@pytest.mark.parametrize("where, why", [
    ("missing/parley.log", "the directory {tmp}/missing does not exist"),
    (".", "that is a directory"),
])
def test_a_log_file_that_cannot_be_written_is_one_sentence(tmp_path, where, why):
    path = os.path.normpath(str(tmp_path / where))
    with pytest.raises(runtime.LogFileError) as info:
        runtime._log_file_handler(path)
    assert str(info.value) == f"cannot write the log file {path}: " + why.format(tmp=tmp_path)


def test_a_log_file_this_user_may_not_write_names_the_user():
    problem = runtime.log_file_problem("/srv/parley.log", PermissionError(13, "denied"))
    assert problem == (f"cannot write the log file /srv/parley.log: the Unix user "
                       f"{runtime.unix_user()} may not write there")


def test_unix_user_names_the_uid():
    assert runtime.unix_user().endswith(f"(uid {os.getuid()})")
