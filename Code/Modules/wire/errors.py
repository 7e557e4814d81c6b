"""The two error families of every Parley state machine, as in h11.

LocalProtocolError: our own side misused a protocol object (a bug here).
RemoteProtocolError: the peer sent something the protocol does not allow.
Both carry a short, human-readable reason that is safe to log and to send:
it never contains passwords, keys, hashes or message bodies.

`sticky` makes a method of a state machine record the first error and
re-raise it on every later call. Nothing here does I/O; the modules that raise these decide whether to reply
with an error and close the one connection concerned.
"""

import functools


class ProtocolError(Exception):
    """Base of both families.  `code` is a stable, machine-readable tag."""

    code = "protocol_error"

    def __init__(self, reason, code=None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We tried a move our own state machine does not allow."""

    code = "local_protocol_error"


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or a move the protocol does not allow."""

    code = "remote_protocol_error"


def illegal_move(error_class, role, state, event):
    """An error naming the role, the state and the event that is not in the table."""
    return error_class(
        f"{role}: event {event!r} is not allowed in state {state}", code="illegal_move"
    )


def sticky(method):
    """Make the first ProtocolError of an object stick: later calls re-raise it.

    The object keeps it in `self._error` (None while all is well).
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._error is not None:
            raise self._error
        try:
            return method(self, *args, **kwargs)
        except ProtocolError as error:
            self._error = error
            raise

    return wrapper
