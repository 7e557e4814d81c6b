"""The interactive prompt's commands: `Runner` with the comforts of a person.

`InteractiveRunner` runs the same parsed commands as batch mode, but:

* `send` asks for whatever is missing (recipient with completion, subject,
  multi-line body; the terminal asks about an empty answer, while ""
  typed on the command line is taken as meant); a message finished while the connection is down, or
  whose Send was cut off by a lost connection, goes to the *outbox* and is
  sent (again, with the same client_id, so the server stores it once) as
  soon as the connection is back, with no key pressed;
* `inbox` prints a table fitted to the terminal and pages through long
  inboxes a screenful at a time, fetching older pages from the server as
  the person asks for more; `read` wraps a message to the terminal and
  shows a long one through the same pager;
* `read` and `inbox` remember who wrote, `send` whom it wrote to (the
  names `send` completes); a returned message says why in one sentence;
* `help` and `help COMMAND` explain with examples; `reconnect` and
  `logout` work while disconnected; `count_unread()` is the login greeting.

Talks to: the interactive client (`client`: its link's current session,
terminal, store and output). Fails like `Runner`: usage mistakes and Error
replies are reported and the prompt goes on; `ConnectionLost` propagates
(except for `send`, whose message is kept in the outbox).
"""

import threading
from typing import NamedTuple

from Modules import operations
from Modules.client.commands import (
    LOGOUT,
    OK,
    SEND,
    Runner,
    UsageError,
    checked,
    parse_send,
    suggest,
)
from Modules.client.output import inbox_record, message_record, neutralise, sent_record
from Modules.client.screen import HELP, Pager, terminal_size
from Modules.client.session import ConnectionLost, RequestFailed, new_client_id

PAGE = 50             # inbox entries fetched per request while paging
COUNT_PAGE = operations.get("Inbox").field("limit").high   # the server's largest page
COUNT_PAGES = 5       # count at most this many pages at login
TRANSFER_WAIT = 300   # seconds a file transfer cut off waits for the connection to be back


class Draft(NamedTuple):
    to: str
    subject: str
    body: str
    client_id: str


def _parse_reconnect(words):
    if words:
        raise UsageError("Usage: reconnect")
    return {}


def _parse_send(words):
    return parse_send(words) if words else {}


# The interactive prompt's own commands (and `send` without a name).
EXTRA_PARSERS = {"reconnect": _parse_reconnect, "send": _parse_send}
# What runs while disconnected: `send` keeps its message in the outbox.
OFFLINE_COMMANDS = frozenset({"help", "logout", "reconnect", "send"})


class InteractiveRunner(Runner):
    """Runs commands typed at the interactive prompt."""

    def __init__(self, client):     # no Runner.__init__: session and user are live
        # The terminal asks what a command lacks; the windowed client has none (None):
        # its windows give every command whole.
        self.client, self.output, self.ui = client, client.output, client.terminal
        self.sending = set()          # recipients of Sends waiting for their answer
        self.outbox = []              # Drafts cut off by a lost connection
        self._outbox_lock = threading.Lock()

    @property
    def session(self):
        """The link's current session (a new one after each reconnect)."""
        return self.client.link.session

    @property
    def user(self):
        return self.client.link.user

    def wait_for_connection(self, lost):
        """A file transfer cut off by the lost connection (session `lost`) waits
        for it to come back (True) for up to TRANSFER_WAIT seconds; False if it
        does not."""
        return self.client.link.wait_until_back(TRANSFER_WAIT, lost)

    # -- send and the outbox ----------------------------------------------------------
    def _send(self, args):
        to = args.get("to") or checked(SEND.field("to"), self.ui.ask_recipient())
        subject = args.get("subject")
        if subject is None:
            subject = checked(SEND.field("subject"), self.ui.ask_subject(to))
        body = args.get("body")
        if body is None:
            body = checked(SEND.field("body"), self.ui.ask_body(to))
        self.deliver(Draft(to, subject, body, new_client_id()))
        return OK

    def deliver(self, draft):
        """Send one message; into the outbox while the connection is down, or if it
        is lost before the server confirmed the message."""
        with self._outbox_lock:     # flush_outbox() takes the outbox after the link is up
            waiting = not self.client.link.connected
            if waiting:
                self.outbox.append(draft)
        if waiting:
            self.output.warn(f"Not sent yet: the connection is down. Your message to "
                             f"{draft.to} is kept and will be sent "
                             f"{self.client.when_back()}.")
            self.client.link.wake()
            return
        self.sending.add(draft.to)
        try:
            result = self.session.send_message(*draft)
        except ConnectionLost:
            self._keep(draft)
            return
        finally:
            self.sending.discard(draft.to)
        self.output.emit(sent_record(result, draft.to))
        if not result.get("bounced"):
            self.client.remember(draft.to)

    def _keep(self, draft):
        with self._outbox_lock:
            self.outbox.append(draft)
        self.output.warn(f"The connection was lost before the server confirmed your message "
                         f"to {draft.to}. It is kept and will be sent "
                         f"{self.client.when_back()} (it cannot arrive twice).")

    def flush_outbox(self):
        """Send again what the lost connection cut off (after a reconnect)."""
        with self._outbox_lock:
            drafts, self.outbox = self.outbox, []
        for draft in drafts:
            try:
                self.deliver(draft)
            except RequestFailed as failure:
                self.output.error(f"Your message to {draft.to} was not sent: "
                                  f"{failure.message}", failure.code)

    def outbox_summary(self):
        with self._outbox_lock:
            return [f'to {draft.to}: "{neutralise(draft.subject)}"' for draft in self.outbox]

    # -- reading ----------------------------------------------------------------------------
    def _read(self, args):
        message = self.session.request("Read", id=args["id"]).get("message", {})
        self.client.remember(message.get("from"))
        width, height = terminal_size()
        pager = Pager(self.output.human, self.ui.more, height)
        pager.show(self.output.message_lines(message_record(message, "read"), width))
        return OK

    def _inbox(self, args):
        width, height = terminal_size()
        pager = Pager(self.output.human, self.ui.more, height)
        listing = _Listing(self, args.get("before"), args.get("limit"))
        for entries in listing.pages():
            if listing.widths is None:
                listing.widths = self.output.inbox_columns(entries, width)
                pager.show([self.output.inbox_header(listing.widths)])
            if not pager.show(self.output.inbox_lines(entries, listing.widths)):
                return OK
        if listing.shown == 0:
            self.output.human("Your inbox is empty." if args.get("before") is None
                              else "No older messages.")
            return OK
        pager.show([self.output.inbox_footer(listing.shown, listing.unread,
                                             listing.older)])
        return OK

    def show_paged(self, record):
        """A listing's human text a screen at a time (sent, history, search)."""
        text = self.output.render(record)
        if text:
            pager = Pager(self.output.human, self.ui.more, terminal_size()[1])
            pager.show(text.split("\n"))

    def count_unread(self):
        """(unread messages, True if all were counted) for the login greeting."""
        before, unread = None, 0
        for _ in range(COUNT_PAGES):
            result = self.session.request("Inbox", before=before, limit=COUNT_PAGE,
                                          unread=True)
            entries = result.get("messages", [])
            unread += sum(1 for entry in entries if entry.get("unread"))
            if not result.get("more") or not entries:
                return unread, True
            before = entries[-1]["id"]
        return unread, False

    # -- help, reconnect, logout -----------------------------------------------------------
    def _help(self, args):
        topic = args.get("topic")
        if topic is None:
            self.output.human(self.output.help_list())
        elif topic in HELP:
            self.output.human(self.output.help_topic(topic))
        else:
            hint = suggest(topic, EXTRA_PARSERS)
            raise UsageError(f"There is no command '{neutralise(topic)}'." +
                             (f" Did you mean 'help {hint}'?" if hint else
                              " Type 'help' for the list."))
        return OK

    def _reconnect(self, _args):
        self.client.reconnect_command()
        return OK

    def _logout(self, _args):
        return LOGOUT if self.client.may_leave() else OK


class MessageArrivals:
    """`on_message` for a client with a `runner`, a `shown` dict, `remember()` and an
    `output`: the terminal prompt and the windowed client (`client.gui.bridge`).

    A message is shown once per run, across reconnects (shown again after a
    reconnect, it is only acknowledged: True if it was shown whole); a bounce of
    a Send still waiting for its answer is left to that answer's one sentence;
    its sender is remembered for completion (a broadcast has nobody to write
    back to). True when the output showed its whole text (the Ack marks it read).
    """

    def on_message(self, message, via):
        if message.get("id") in self.shown:
            return self.shown[message.get("id")]   # shown before a reconnect, acked now
        if message.get("kind") == "bounce" and message.get("original_to") in \
                self.runner.sending:
            self.shown[message.get("id")] = False
            return False     # the answer to that Send says it, in one sentence
        if message.get("kind") != "broadcast":      # nobody to write back to
            self.remember(message.get("from"))
        record = message_record(message, via)
        self.output.emit(record)
        self.shown[message.get("id")] = whole = self.output.shows_whole(record)
        return whole


class _Listing:
    """The pages of one `inbox` command: all of them, or one with --limit."""

    def __init__(self, runner, before, limit):
        self.runner, self.before, self.limit = runner, before, limit
        self.widths = None
        self.shown = self.unread = 0
        self.older = None       # the id to continue from, when the listing stopped early

    def pages(self):
        """Each page's entries, newest first, until the end (or the --limit)."""
        before = self.before
        while True:
            result = self.runner.session.request("Inbox", before=before,
                                                 limit=self.limit or PAGE)
            entries = inbox_record(result)["messages"]
            self.runner.client.remember(*[entry["from"] for entry in entries])
            self.shown += len(entries)
            self.unread += sum(1 for entry in entries if entry["unread"])
            if entries:
                yield entries
            if not result.get("more") or not entries:
                return
            before = entries[-1]["id"]
            if self.limit:
                self.older = before
                return
