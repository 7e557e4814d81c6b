"""Makes `Modules` and `Tests` importable when pytest runs from anywhere."""

import os
import sys

CODE_DIR = os.path.dirname(os.path.abspath(__file__))
if CODE_DIR not in sys.path:
    sys.path.insert(0, CODE_DIR)
