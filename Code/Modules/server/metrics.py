"""The server's figures as Prometheus metrics: `admin metrics` and `--metrics-port`.

One collection is the daemon's own figures (`server_figures()`: uptime,
connections now, still logging in, peak) and one `ServerStats` request to
the monitor in its admin role (sessions now and peak, the size of the
database files, and the durable server totals). `read_figures(context)`
makes it and returns `{sample name: value}`; `render(values)` writes
those values in the Prometheus text format with prometheus_client
(`FiguresCollector` yields a GaugeMetricFamily or CounterMetricFamily per
figure, `generate_latest` writes them). The `FIGURES` table says which
figure becomes which metric. The counters (`parley_logins_total`,
`parley_messages_accepted_total`, ...) are the monitor's totals kept in
`users.db`: they survive restarts and never go down, as Prometheus wants.

No metric has a label naming a user, an address or anything a person
wrote: per-user figures would tell anyone who can read the metrics who
uses the server and when, and would give Prometheus one series per
account. They stay with the operator's `stats USER` and `users`.

`serve(port, make_context)` is `--metrics-port`: an HTTP server on
127.0.0.1 only (there is no option for another address), in threads of
the daemon, answering `GET /metrics` with one collection through a
context that `make_context()` opens (an `AdminContext` with the operator
"metrics": reads are not audited) and closes again. Port 0 is off.

Talks to: the monitor (through the context's `call`), the daemon (its
`server_figures`), and HTTP clients on the loopback address. How it fails:
a database that does not answer is no failure of the scrape: the daemon's
figures are still given and `parley_database_up` is 0 (also when it takes
longer than `DB_TIMEOUT` seconds to answer). A taken port is a
`ListenError` with one sentence, before anything is served. Any other
path is 404; more than `MAX_SCRAPES` scrapes at once get 503; a request
that does not arrive within `REQUEST_TIMEOUT` seconds is dropped.
"""

import errno
import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)

from Modules.database.link import DbError, DbUnavailable
from Modules.server import instance, listener

log = logging.getLogger("parley.metrics")

HOST = "127.0.0.1"               # the only address --metrics-port listens on
PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_SCRAPES = 4                  # served at once; each holds one monitor connection
REQUEST_TIMEOUT = 10.0
DB_TIMEOUT = 4.0                 # seconds the monitor has to answer a scrape's request
POLL = 0.1                       # seconds; how soon close() stops the serving thread
GAUGE, COUNTER = "gauge", "counter"


class Figure(NamedTuple):
    source: str                  # "daemon", "database" (ServerStats) or "totals" (its totals)
    key: str                     # the field there
    name: str                    # the sample's name (a counter's ends in _total)
    kind: str                    # GAUGE or COUNTER
    help: str


FIGURES = (
    Figure("daemon", "uptime", "parley_uptime_seconds", GAUGE,
           "Seconds since the daemon started."),
    Figure("daemon", "connections", "parley_connections", GAUGE,
           "TCP connections open now, logged in or not."),
    Figure("daemon", "logging_in", "parley_connections_logging_in", GAUGE,
           "Connections still logging in."),
    Figure("daemon", "peak_connections", "parley_peak_connections", GAUGE,
           "Most connections open at once since the daemon started."),
    Figure("database", "sessions", "parley_sessions", GAUGE,
           "Logged-in sessions now."),
    Figure("database", "peak_sessions", "parley_peak_sessions", GAUGE,
           "Most logged-in sessions at once since the database process started."),
    Figure("database", "database_bytes", "parley_database_bytes", GAUGE,
           "Size of the database files and their write-ahead logs, in bytes."),
    Figure("totals", "accounts", "parley_accounts", GAUGE,
           "Accounts that exist now."),
    Figure("totals", "messages_stored", "parley_messages_stored", GAUGE,
           "Messages stored now (unread, read, bounces and broadcasts)."),
    Figure("totals", "logins", "parley_logins_total", COUNTER,
           "Successful logins."),
    Figure("totals", "failed_logins", "parley_failed_logins_total", COUNTER,
           "Failed logins to existing accounts (a wrong password)."),
    Figure("totals", "logoffs", "parley_logoffs_total", COUNTER,
           "Sessions ended: logout, disconnect, kick or server shutdown."),
    Figure("totals", "accounts_created", "parley_accounts_created_total", COUNTER,
           "Accounts created."),
    Figure("totals", "accounts_deleted", "parley_accounts_deleted_total", COUNTER,
           "Accounts deleted, by their users or the operator."),
    Figure("totals", "messages_accepted", "parley_messages_accepted_total", COUNTER,
           "Messages accepted for an existing recipient."),
    Figure("totals", "messages_delivered", "parley_messages_delivered_total", COUNTER,
           "Messages delivered (acknowledged by the recipient's client, or read)."),
    Figure("totals", "messages_bounced", "parley_messages_bounced_total", COUNTER,
           "Messages returned to their senders (unknown or deleted recipient)."),
    Figure("totals", "broadcasts", "parley_broadcasts_total", COUNTER,
           "Broadcasts sent by the operator."),
)
DATABASE_UP = "parley_database_up"


# -- one collection ----------------------------------------------------------------------

def read_figures(context):
    """{sample name: value}: the daemon's figures, then the monitor's from one
    ServerStats request; `parley_database_up` says whether it answered."""
    sources = {"daemon": context.server_figures()}
    try:
        stats = context.call("ServerStats")
        sources.update(database=stats, totals=stats.get("totals", {}))
    except (DbError, DbUnavailable) as error:
        log.debug("metrics without the database's figures: %s", error)
    values = {DATABASE_UP: int("database" in sources)}
    for figure in FIGURES:
        value = sources.get(figure.source, {}).get(figure.key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[figure.name] = value
    return values


def scrape(make_context):
    """One collection through a context opened for it, and closed after; a
    monitor that does not answer within DB_TIMEOUT is a database away."""
    context = make_context()
    context.reply_timeout = DB_TIMEOUT
    try:
        return read_figures(context)
    finally:
        context.close()


class FiguresCollector:
    """A prometheus_client collector: one family per figure `read()` returns."""

    def __init__(self, read):
        self.read = read

    def collect(self):
        values = self.read()
        yield InfoMetricFamily("parley_build", "The server's version.",
                               value={"version": instance.VERSION})
        yield GaugeMetricFamily(DATABASE_UP, "1 if the database process answered this "
                                "collection, else 0 (its figures are then missing).",
                                value=values.get(DATABASE_UP, 0))
        for figure in FIGURES:
            if figure.name in values:
                family = CounterMetricFamily if figure.kind == COUNTER else GaugeMetricFamily
                yield family(figure.name, figure.help, value=values[figure.name])


def registry_of(read):
    """A registry holding nothing but our collector (no process or GC metrics of
    the daemon's Python: they would not be the server's figures)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(read))
    return registry


def render(values):
    """The Prometheus text format of figures read before."""
    return generate_latest(registry_of(lambda: values)).decode("utf-8")


# -- --metrics-port -----------------------------------------------------------------------

class MetricsServer(ThreadingHTTPServer):
    """GET /metrics on 127.0.0.1; one collection per scrape, MAX_SCRAPES at once."""

    daemon_threads = True

    def __init__(self, port, make_context):
        self.make_context = make_context
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)
        super().__init__((HOST, port), _Handler)

    def server_bind(self):
        """As HTTPServer's, without its reverse DNS lookup of the address."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    @property
    def url(self):
        return f"http://{HOST}:{self.server_address[1]}{PATH}"

    def handle_error(self, request, client_address):
        log.exception("metrics request from %s failed", client_address[0])

    def close(self):
        """Stop serving (called at shutdown, from the daemon's loop)."""
        self.shutdown()
        self.server_close()


class _Off:
    """--metrics-port 0: nothing is served."""

    url = None

    def close(self):
        pass


def serve(port, make_context):
    """The --metrics-port server, serving from now on in a thread of its own (or
    nothing, for port 0); ListenError with one sentence if the port is taken."""
    if not port:
        return _Off()
    try:
        server = MetricsServer(port, make_context)
    except OSError as error:
        raise listener.ListenError(_bind_failure(port, error)) from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL},
                     name="parley-metrics", daemon=True).start()
    log.info("metrics on %s (--metrics-port)", server.url)
    return server


def _bind_failure(port, error):
    if error.errno == errno.EADDRINUSE:
        return (f"the metrics port {port} on {HOST} is in use by another program; "
                "choose another with --metrics-port")
    return f"cannot serve metrics on {HOST}:{port}: {(error.strerror or str(error)).lower()}"


class _Handler(BaseHTTPRequestHandler):
    server_version = "parley-metrics"
    timeout = REQUEST_TIMEOUT

    def do_GET(self):
        if urlsplit(self.path).path != PATH:
            return self._reply(404, f"Not found: the metrics are at {PATH}.\n")
        if not self.server.slots.acquire(blocking=False):
            return self._reply(503, "Busy with other scrapes; try again.\n")
        try:
            text = render(scrape(self.server.make_context))
        finally:
            self.server.slots.release()
        self._reply(200, text, CONTENT_TYPE)

    def _reply(self, status, text, content_type="text/plain; charset=utf-8"):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug("metrics request from %s: " + format, self.client_address[0], *args)
