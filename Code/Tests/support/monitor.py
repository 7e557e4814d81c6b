"""Links to a real monitor (database process) in each of its phases, for tests.

`link(config)` is a fresh connection (phase "new"); `login_link` has said
Hello; `admin_link` is in the admin phase; `user_link(config, name)` is bound to `name`, whose account is
created if needed. They use `DbLink`, the same client the login and user
processes use. Start the monitor with `Tests.support.running_database`.
"""

from Modules.database.link import DbLink
from Tests.support.processes import PASSWORD, WAIT


def link(config):
    db = DbLink(config["socket_path"])
    db.connect()
    db.sock.settimeout(WAIT)          # a test waiting for what never comes fails, not hangs
    return db


def admin_link(config, operator="root"):
    """An admin connection, as the daemon opens one (the test process is the
    "daemon": `database_config` names its pid)."""
    db = link(config)
    db.call("Admin", operator=operator)
    return db


def login_link(config, peer="127.0.0.1:1"):
    db = link(config)
    db.call("Hello", role="login", peer=peer, address=peer.rsplit(":", 1)[0])
    return db


def ticket_for(config, name, password=PASSWORD):
    """A ticket for `name`, whose account is created if needed."""
    login = login_link(config)
    if login.call("Exists", username=name)["outcome"] == "exists":
        reply = login.call("Verify", username=name, password=password)
    else:
        reply = login.call("Create", username=name, password=password)
    login.close()
    return reply["ticket"]


def user_link(config, name):
    """A user connection bound to `name` (created if needed)."""
    db = link(config)
    assert db.call("Bind", ticket=ticket_for(config, name)) == {"rid": 1, "ok": True,
                                                                 "user": name}
    return db
