"""What the tests share, in one place (tests import it as `Tests.support`).

processes: the real daemon (`ServerProcess`), a lone database process
(`running_database`), the environment children get, `wait_until`.
clients: the real client in batch mode (`BatchClient`, `run_client`) and
the raw protocol driver (`RawClient`, `session`, `request`, `send`).
pairs: in-memory endpoint pairs for the sans-IO layers (`channel_pair`,
`connection_pair`, `deliver`, `drain`).
crash_harness: the seeded kill-anything run behind the crash tests and
bench/crash_soak.py.
"""

from Tests.support.clients import (  # noqa: F401  (the shared names)
    BatchClient,
    RawClient,
    client_command,
    next_message,
    of_type,
    parse_json_lines,
    read_to_end,
    request,
    run_client,
    run_ok,
    send,
    session,
)
from Tests.support.processes import (  # noqa: F401
    CLIENT,
    CODE_DIR,
    PASSWORD,
    SERVER,
    TEST_ENV,
    WAIT,
    ServerProcess,
    child_env,
    client_home,
    database_config,
    parent_of,
    proc_stat,
    run_admin,
    running_database,
    wait_until,
)
