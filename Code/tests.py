"""Runs Parley's whole test suite: `python Code/tests.py [pytest options]`.

Extra arguments go to pytest (for example `-k noise` or `-x`). Exits with
pytest's status, so CI fails on any failing test.
"""

import os
import sys


def main(argv):
    import pytest

    code_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, code_dir)
    args = ["-q", "-p", "no:cacheprovider", "--rootdir", code_dir,
            os.path.join(code_dir, "Tests")] + argv
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
