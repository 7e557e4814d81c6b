"""Parley client: `python Code/client.py [--host H] [--port P] [--user NAME] ...`.

A thin entry point: puts Code/ on sys.path, runs the command-line client
(`Modules/client/cli.py`, which documents the options, batch mode and the
--json output) and exits with its status: 0 success, 1 refused or failed,
2 cannot connect or bad usage.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    from Modules.client.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
