"""The database's side of parked sessions (`Modules/database/parking.py`), on a real
monitor: only the daemon's pid opens the daemon link; Park is refused while a push
is unseen, and once answered keeps the user online while its connection is gone; a
message for a parked user sends one Wake on the daemon link; the woken ticket binds
again, once; Ended makes the user go offline.
"""

from Modules.database.link import Push, Reply, Wake
from Tests.support import running_database
from Tests.support.monitor import link, ticket_for, user_link


def _daemon_link(config):
    daemon = link(config)
    daemon.call("Daemon")
    return daemon


def _next_push(db):
    while not isinstance(event := db.read_event(), Push):
        pass                          # presence notices pass by
    return event


def _online(config, viewer):
    return [p["user"] for p in viewer.call("Online")["people"]]


def test_only_the_daemons_pid_opens_the_daemon_link(tmp_path):
    with running_database(tmp_path, daemon_pid=1) as (_, config):
        other = link(config)
        rid = other.send_request("Daemon")
        reply = other.read_event()
        assert isinstance(reply, Reply) and reply.rid == rid and not reply.ok
        assert reply.data["code"] == "refused"


def test_park_wake_bind_again_and_end(tmp_path):
    with running_database(tmp_path) as (_, config):
        daemon = _daemon_link(config)
        carol = user_link(config, "carol")
        carol.call("Subscribe")
        ticket = ticket_for(config, "bob")
        bob = link(config)
        bob.call("Bind", ticket=ticket)
        bob.call("Subscribe")
        sent = carol.call("Send", to="bob", subject="s", body="one", client_id="c1")["id"]
        _next_push(bob)
        refused = bob.send_request("Park", seen=sent - 1)     # it has not seen the push
        reply = bob.read_event()
        assert reply.rid == refused and not reply.ok and reply.data["code"] == "busy"
        bob.send_request("Ack", ids=[sent])
        assert bob.call("Park", seen=sent)["ok"]
        bob.close()
        assert _online(config, carol) == ["bob", "carol"]   # parked: still online
        carol.call("Send", to="bob", subject="s", body="two", client_id="c2")
        wake = daemon.read_event()
        assert wake == Wake(ticket)
        again = link(config)
        assert again.call("Bind", ticket=ticket)["user"] == "bob"   # the woken process
        again.send_request("Subscribe")
        assert [m["body"] for m in _next_push(again).messages] == ["two"]   # one was acked
        third = link(config)
        rid = third.send_request("Bind", ticket=ticket)
        assert not third.read_event().ok                         # once per wake
        again.call("Park", seen=10**6)
        again.close()
        daemon.send_request("Ended", ticket=ticket)
        daemon.flush()
        assert rid and _online(config, carol) == ["carol"]


def test_park_is_refused_while_no_daemon_link_could_wake_it(tmp_path):
    with running_database(tmp_path) as (_, config):
        bob = user_link(config, "bob")
        bob.call("Subscribe")
        rid = bob.send_request("Park", seen=0)
        while not isinstance(reply := bob.read_event(), Reply) or reply.rid != rid:
            pass
        assert not reply.ok and reply.data["code"] == "busy"
        daemon = _daemon_link(config)
        assert bob.call("Park", seen=0)["ok"]
        daemon.close()
