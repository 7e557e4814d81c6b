"""Tests for Modules/wire/errors.py: the two error families, codes, and `sticky`."""

import pytest

from Modules.wire.errors import (
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    illegal_move,
    sticky,
)


def test_codes_default_by_family_and_can_be_set():
    assert LocalProtocolError("x").code == "local_protocol_error"
    assert RemoteProtocolError("x").code == "remote_protocol_error"
    error = RemoteProtocolError("too big", code="frame_too_large")
    assert (error.code, error.reason, str(error)) == ("frame_too_large", "too big", "too big")
    assert isinstance(error, ProtocolError)


def test_illegal_move_names_role_state_and_event():
    error = illegal_move(LocalProtocolError, "server", "LOGIN", "Send")
    assert isinstance(error, LocalProtocolError) and error.code == "illegal_move"
    assert error.reason == "server: event 'Send' is not allowed in state LOGIN"


class Parser:
    def __init__(self):
        self._error = None
        self.calls = 0

    @sticky
    def feed(self, good):
        self.calls += 1
        if not good:
            raise RemoteProtocolError("bad byte", code="bad_encoding")
        return "ok"


def test_sticky_re_raises_the_first_error_without_running_again():
    parser = Parser()
    assert parser.feed(True) == "ok"
    with pytest.raises(RemoteProtocolError) as first:
        parser.feed(False)
    with pytest.raises(RemoteProtocolError) as again:
        parser.feed(True)
    assert again.value is first.value and parser.calls == 2


def test_sticky_lets_other_exceptions_through_without_sticking():
    class Flaky:
        _error = None

        @sticky
        def run(self, fail):
            if fail:
                raise ValueError("not a protocol error")
            return 1

    flaky = Flaky()
    with pytest.raises(ValueError):
        flaky.run(True)
    assert flaky.run(False) == 1
