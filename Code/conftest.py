"""Makes `Modules` and `Tests` importable when pytest runs from anywhere."""

import os
import sys

CODE_DIR = os.path.dirname(os.path.abspath(__file__))
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)


def pytest_configure(config):
    config.addinivalue_line("markers", "both_backends: its servers run on SQLite and on "
                            "PostgreSQL storage (issue 18)")
    config.addinivalue_line("markers", "sqlite_only: a storage test about SQLite itself "
                            "(its files, pragmas or torn commits): not run on PostgreSQL")
