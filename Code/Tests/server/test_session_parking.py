"""Tests for Modules/server/session_parking.py: when a user session asks to Park.

In memory (`Tests.support.pairs`), no server: a session woken by a message parks
again soon (QUICK_REPARK) until its client sends a request; one with a push not
acknowledged does not ask at all. The real park and wake are `test_parking.py`'s.
"""

import time

from Modules.server import session_parking, user_process
from Modules.wire import protocol
from Modules.wire.serializers import Packet
from Tests.support.pairs import FakeDatabase, connection_pair


def _session(**handoff):
    client, server = connection_pair(protocol.SESSION, serializers=("binary",), user="bob")
    handoff = {"user": "bob", "ticket": "t", "state": server.export_state(), **handoff}
    session = user_process.UserSession(None, handoff, {"db_socket": "/x", "park_after": 30})
    session.db = FakeDatabase()
    return client, session


def test_a_session_woken_by_a_message_parks_again_soon_until_its_client_speaks():
    """A broadcast to many parked sessions must not keep a process each for
    --park-after seconds: woken by a message, a session parks again QUICK_REPARK
    after its client's last bytes (an Ack), until the client sends a request."""
    client, woken = _session(resumed=True, woken_by="message")
    base = max(woken.heard_at, woken.quiet_since)
    assert woken._park_due() - base == session_parking.QUICK_REPARK
    woken._process_client_bytes(client.send(Packet("Ack", {"ids": [1]})))
    assert not woken.client_spoke                       # an Ack is not the person
    woken._process_client_bytes(client.send(Packet("Inbox", {"rid": 1})))
    assert woken.client_spoke
    assert woken._park_due() - max(woken.heard_at, woken.quiet_since) == 30



def test_a_session_with_a_push_not_acknowledged_does_not_ask_to_park():
    _client, session = _session(resumed=True)
    session.unacked.add(7)
    session.heard_at = session.quiet_since = time.monotonic() - 60
    session._park_if_idle()
    assert session.state == user_process.RUNNING and session.park_rid is None
    session.unacked.clear()
    session.quiet_since = time.monotonic() - 60
    session._park_if_idle()
    assert session.state == session_parking.PARKING and session.park_rid is not None
