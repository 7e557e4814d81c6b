"""Tests for Modules/server/preload.py and the forkserver's preload list.

The forkserver silently skips a preload module it cannot import, so every
name in the daemon's PRELOAD must import in a fresh interpreter started the
way the forkserver is (PYTHONPATH only); importing preload warms up the
crypto in memory (no file or socket is left open) and freezes the heap.
"""

import json
import os
import subprocess
import sys

from Modules.server import children
from Tests.support import CODE_DIR, child_env

PROBE = """
import gc, json, os, sys
before = set(os.listdir("/proc/self/fd"))
for name in sys.argv[1:]:
    __import__(name)
after = set(os.listdir("/proc/self/fd"))
print(json.dumps({"frozen": gc.get_freeze_count(), "new_fds": len(after - before),
                  "modules": [name for name in sys.argv[1:] if name in sys.modules]}))
"""


def run_probe(*names):
    done = subprocess.run([sys.executable, "-c", PROBE, *names], capture_output=True,
                          text=True, timeout=120, cwd="/",
                          env=child_env({"PYTHONPATH": CODE_DIR}))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_preloaded_module_imports_as_the_forkserver_imports_it():
    found = run_probe(*children.PRELOAD)
    assert found["modules"] == children.PRELOAD
    assert children.PRELOAD[-1] == "Modules.server.preload"     # freezing comes last


def test_preload_warms_up_in_memory_and_freezes_the_heap():
    found = run_probe("Modules.server.preload")
    assert found["frozen"] > 0
    assert found["new_fds"] == 0


def test_the_forkserver_finds_the_modules_through_pythonpath():
    ctx = children.forkserver_context()
    assert CODE_DIR in os.environ["PYTHONPATH"].split(os.pathsep)
    assert ctx.get_start_method() == "forkserver"
