"""Parley server: `python Code/server_daemon.py [--port 7117] [--data-dir DIR] ...`.

Starts the daemon, which starts the database process and serves clients
until SIGINT/SIGTERM. `server_daemon.py admin COMMAND` runs an operator's
command on the server running on the data dir (`admin help` lists them);
`admin restore BACKUP_DIR --data-dir DIR` and `admin check-backup BACKUP_DIR`
work offline, with the server stopped (`Modules/database/restore.py`), and so does
`admin migrate --to|--from postgresql://...` (`Modules/database/migrate.py`). `--help` lists every option; each can also be set as
an environment variable PARLEY_<NAME>. See README.md and docs/DESIGN.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["admin", "migrate"]:       # offline: SQLite <-> PostgreSQL (issue 18)
        from Modules.database.migrate import main as migrate_main

        return migrate_main(argv[2:])
    if argv[:1] == ["admin"] and argv[1:2] in (["restore"], ["check-backup"]):
        from Modules.database.restore import main as restore_main   # offline: no server

        return restore_main(argv[1:])
    if argv[:1] == ["admin"]:          # the operator's command line: admin COMMAND [ARGS]
        from Modules.server.admin_cli import main as admin_main

        return admin_main(argv[1:])
    from Modules.server.daemon import run
    from Modules.server.options import parse_server_options

    return run(parse_server_options(argv))


if __name__ == "__main__":
    sys.exit(main())
