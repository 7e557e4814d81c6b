"""The log lines of one user session: what it sent, what was delivered, how it ended.

The user process (`Modules.server.user_process`) keeps one `SessionLog`
per session and calls it as requests are answered, messages pushed and
acknowledged, and when the session ends. It writes to the "parley.user"
logger, and only names, message ids, sizes and peers: never a subject, a
body, a password or a ticket. It talks to nothing else and does not fail:
an id the client made up is skipped, and at most `MAX_UNACKED` pushed
messages are remembered until their Ack.
"""

import logging
import time

log = logging.getLogger("parley.user")

HOW_IT_ENDED = {
    "logout": "logged out",
    "client_closed": "disconnected: the client closed the connection",
    "protocol_error": "disconnected: a protocol error",
    "deleted_elsewhere": "disconnected: the account was deleted in another session",
    "cannot_send": "disconnected: the client did not read, or the connection broke",
    "database_gone": "disconnected: the database was not available",
    "drained": "disconnected: the server shut down",
    "account_deleted": "deleted the account; back to the login dialogue",
}


def message_size(subject, body):
    """A message's size in the log: its subject and body, in UTF-8 bytes."""
    return len(str(subject).encode("utf-8", "replace")) + \
        len(str(body).encode("utf-8", "replace"))


class SessionLog:
    """The log lines of one session: sends, deliveries, throttling, its end.

    Names, message ids, sizes and peers only; never a subject, a body or a
    ticket. Deliveries are logged when the client acknowledges a pushed
    message (that is when it is marked delivered), so pushed messages are
    remembered, at most MAX_UNACKED of them, until then.
    """

    MAX_UNACKED = 10_000
    DELIVERIES_PER_LINE = 50

    def __init__(self, user):
        self.user = user
        self.started = time.monotonic()
        self.sent = self.delivered = 0
        self.unacked = {}       # pushed message id -> (sender, size, kind)

    def send_result(self, note, data):
        to, size = note
        if data.get("duplicate"):
            log.info("%s: a repeated send of #%s to %s, stored once", self.user,
                     data.get("id"), to)
        elif data.get("bounced"):
            log.info("%s: #%s to %s came back at once (%d bytes)", self.user,
                     data.get("id"), to, size)
        else:
            self.sent += 1
            log.info("%s sent #%s to %s (%d bytes)", self.user, data.get("id"), to, size)

    def send_refused(self, note, code):
        log.info("%s: a send to %s was refused: %s", self.user, note[0], code)

    def throttled(self, seconds):
        log.info("%s: too many requests (rate_limited); not read for %d s", self.user,
                 seconds)

    def pushed(self, message):
        if log.isEnabledFor(logging.INFO) and len(self.unacked) < self.MAX_UNACKED:
            self.unacked[message.get("id")] = (
                message.get("from"), message_size(message.get("subject", ""), message.get("body", "")),
                message.get("kind"))

    def acknowledged(self, ids):
        """One line per Ack (in parts of DELIVERIES_PER_LINE): a client acknowledges
        pushes in batches, and a line per message cost a quarter more CPU per
        message relayed at INFO."""
        parts = []
        for message_id in ids:
            if type(message_id) is not int:  # noqa: E721 -- the database refuses it anyway
                continue
            known = self.unacked.pop(message_id, None)
            if known is not None:            # only what we pushed: never ids a client made up
                sender, size, kind = known
                parts.append(f"{'bounce ' if kind == 'bounce' else ''}#{message_id} from "
                             f"{sender} ({size} bytes)")
        self.delivered += len(parts)
        for start in range(0, len(parts), self.DELIVERIES_PER_LINE):
            chunk = parts[start:start + self.DELIVERIES_PER_LINE]
            if len(chunk) == 1:
                head, _, tail = chunk[0].partition(" (")
                log.info("delivered %s to %s (%s", head, self.user, tail)
            else:
                log.info("delivered to %s: %s", self.user, ", ".join(chunk))

    def ended(self, event):
        log.info("%s %s (after %.0f s: %d sent, %d delivered)", self.user,
                 HOW_IT_ENDED.get(event, event), time.monotonic() - self.started,
                 self.sent, self.delivered)
