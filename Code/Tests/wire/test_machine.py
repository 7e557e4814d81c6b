"""Tests for Modules/wire/machine.py: one table of moves, and an error that sticks."""

import pytest

from Modules.wire.errors import LocalProtocolError, RemoteProtocolError
from Modules.wire.machine import ERROR, Machine

TABLE = {("IDLE", "start"): "RUNNING", ("RUNNING", "stop"): "IDLE",
         ("RUNNING", "tick"): "RUNNING"}


def test_moves_follow_the_table():
    machine = Machine("clock", TABLE, "IDLE")
    assert machine.allows("start") and not machine.allows("stop")
    assert machine.move("start") == "RUNNING" and machine.state == "RUNNING"
    assert machine.next_state("stop") == "IDLE" and machine.state == "RUNNING"  # no move
    assert machine.move("stop") == "IDLE"


@pytest.mark.parametrize("error_class", [LocalProtocolError, RemoteProtocolError])
def test_a_move_outside_the_table_names_the_machine_state_and_event_and_sticks(error_class):
    machine = Machine("clock", TABLE, "IDLE")
    with pytest.raises(error_class) as info:
        machine.move("tick", error_class)
    assert info.value.code == "illegal_move"
    assert "clock" in info.value.reason and "IDLE" in info.value.reason \
        and "'tick'" in info.value.reason
    assert machine.state == ERROR and machine.failed_in == "IDLE"
    assert not machine.allows("start")
    with pytest.raises(error_class) as again:
        machine.move("start")                       # legal once, not after an error
    assert again.value is info.value


def test_the_mover_and_the_event_can_be_named_for_the_error():
    machine = Machine("connection", {("A", ("client", "Send")): "A"}, "B")
    with pytest.raises(RemoteProtocolError) as info:
        machine.move(("client", "Send"), RemoteProtocolError, who="client", what="Send")
    assert info.value.reason == "client: event 'Send' is not allowed in state B"


def test_the_first_error_is_kept():
    machine = Machine("clock", TABLE, "IDLE")
    first, second = LocalProtocolError("first"), LocalProtocolError("second")
    assert machine.fail(first) is first
    assert machine.fail(second) is first
    with pytest.raises(LocalProtocolError) as info:
        machine.check()
    assert info.value is first
