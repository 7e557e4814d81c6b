"""What a client session gives its caller besides the session itself.

The failures a person is told about in one sentence (`ClientFailure` and
its kinds, each with the CLI's exit code), the `Handlers` a caller
overrides to hear what the server pushes, the Ack of the messages shown
(`ack_packet`: those shown whole are read as well), and a fresh random
message id for a Send (`new_client_id`). `Modules.client.session` uses
them and passes them on; they talk to nothing and raise nothing.
"""

import uuid

from Modules.wire.serializers import Packet


class ClientFailure(Exception):
    """Something a person should be told in one sentence; `exit_code` for the CLI."""

    exit_code = 1

    def __init__(self, message, code="failed"):
        super().__init__(message)
        self.message = message
        self.code = code


class CannotConnect(ClientFailure):
    exit_code = 2


class ServerRefused(ClientFailure):
    """The server said no: a notice, a fatal Error or a closing System event."""


class ConnectionLost(ClientFailure):
    """The connection ended; `message` says why as well as we know."""


class RequestFailed(ClientFailure):
    """The server answered one request with an Error; the session goes on."""

    def __init__(self, message, code="failed", retry_after=None):
        super().__init__(message, code)
        self.retry_after = retry_after


def ack_packet(shown):
    """The Ack of (id, shown whole) pairs: all ids, and those read in full."""
    packet = {"ids": [message_id for message_id, _whole in shown]}
    read = [message_id for message_id, whole in shown if whole]
    if read:
        packet["read"] = read
    return Packet("Ack", packet)


class Handlers:
    """What the session calls from its reader thread; the CLI overrides these."""

    def on_greeting(self, text):
        """The operator's greeting, before the first username prompt."""

    def on_welcome(self, user, created):
        pass

    def on_motd(self, text):
        """The message of the day, right after on_welcome."""

    def on_message(self, message, via):
        """`via` is "login" for the backlog before System ready, else "push".
        True if the message's whole text was shown (the Ack then marks it read)."""

    def on_ready(self, user):
        pass

    def on_system(self, event, message):
        pass

    def on_error(self, code, reason):
        """An Error the server sent that belongs to no request."""

    def on_wait(self, seconds, reason):
        """The server asked to slow down; the request is sent again in `seconds`."""

    def on_closed(self, reason):
        pass


def new_client_id():
    """A fresh random id for one message (reused only to retry that message)."""
    return uuid.uuid4().hex
