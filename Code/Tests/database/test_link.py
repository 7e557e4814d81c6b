"""Tests for Modules/database/link.py: framing of requests and events, and DbLink's
connection retries (which a stopping process must be able to cut short)."""

import threading

import pytest

from Modules.database import codec
from Modules.database.link import DbLink, DbProtocol, DbUnavailable, Notice, Push, Reply
from Modules.wire.errors import RemoteProtocolError
from Modules.wire.framing import NEED_DATA, encode_frame
from Modules.wire.serializers import Packet

WAIT = 60.0


def frame(op, **data):
    return encode_frame(codec.dumps(Packet(op, data)), 1 << 20)


def test_requests_get_increasing_rids_and_events_are_typed():
    protocol = DbProtocol()
    first, data = protocol.request("Exists", {"username": "alice"})
    second, _ = protocol.request("Exists", {"username": "bob"})
    assert (first, second) == (1, 2)
    assert codec.loads_request(data[4:]) == Packet("Exists", {"rid": 1, "username": "alice"})
    protocol.receive_data(frame("Reply", rid=1, ok=True, exists=True)
                          + frame("Push", messages=[{"id": 3}]) + frame("Notice", event="x"))
    assert protocol.next_event() == Reply(1, True, {"rid": 1, "ok": True, "exists": True})
    assert protocol.next_event() == Push([{"id": 3}])
    assert protocol.next_event() == Notice("x")
    assert protocol.next_event() is NEED_DATA


def test_an_unexpected_packet_from_the_database_is_a_remote_error():
    protocol = DbProtocol()
    protocol.receive_data(frame("Login", rid=1))
    with pytest.raises(RemoteProtocolError):
        protocol.next_event()


def test_connect_retries_until_its_timeout_then_says_unavailable(tmp_path):
    link = DbLink(str(tmp_path / "no.sock"), connect_timeout=0.2)
    with pytest.raises(DbUnavailable):
        link.connect()


def test_a_stopping_process_stops_retrying_at_once(tmp_path):
    """A process told to stop (its daemon died) must not wait for a database
    that will not come back: `cancelled` ends the retries."""
    stopping = threading.Event()
    link = DbLink(str(tmp_path / "no.sock"), connect_timeout=3600.0,
                  cancelled=stopping.is_set)
    outcome = []

    def connect():
        try:
            link.connect()
        except DbUnavailable as error:
            outcome.append(error)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    stopping.set()
    worker.join(WAIT)
    assert not worker.is_alive() and len(outcome) == 1
