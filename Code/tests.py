"""Runs Parley's whole test suite: `python Code/tests.py [pytest options]`.

Extra arguments go to pytest (for example `-k noise` or `-x`). Exits with
pytest's status, so CI fails on any failing test.

The tests run in parallel worker processes (pytest-xdist): most of a test's
time is spent waiting on real servers, clients and disks, not on the CPU,
so one worker more than there are cores brings the suite on 2 cores from
~15 to ~8 minutes. `-n 0` (or PARLEY_TEST_WORKERS=0) runs them in this one
process, `-n N` with N workers; every test is independent of the others
(its own temporary data dir, ports from the kernel, its own client home).
"""

import os
import sys


def workers():
    """Worker processes: PARLEY_TEST_WORKERS, else cores + 1, at most 4 (more
    than that gained nothing on 2 cores, measured)."""
    chosen = os.environ.get("PARLEY_TEST_WORKERS", "")
    if chosen.isdigit():
        return int(chosen)
    return min(4, (os.cpu_count() or 1) + 1)


def main(argv):
    import pytest

    code_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, code_dir)
    parallel = [] if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in argv) \
        else ["-n", str(workers())]
    args = ["-q", "-rs", "-p", "no:cacheprovider", "--rootdir", code_dir, *parallel,
            os.path.join(code_dir, "Tests")] + argv
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
