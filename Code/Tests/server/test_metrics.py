"""Tests for Modules/server/metrics.py: the server's figures as Prometheus metrics.

The collection and its text format on their own (a stand-in context: the
daemon's figures and the monitor's ServerStats reply, or a database that
does not answer); then real daemons: `admin metrics` through the real
command line after a real login, a send, a delivery and a bounce (the
counters show them, the text parses with prometheus_client's own parser,
`--json` has the same figures, and nothing in them names a person or
what they wrote); `--metrics-port` serving them over HTTP on 127.0.0.1 and
nowhere else, and without waiting for a database that does not answer; a
taken metrics port refused with one sentence.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from Modules.database.link import DbUnavailable
from Modules.server import metrics
from Tests.support import SERVER, WAIT, child_env, send, session, wait_until

SUBJECT, BODY = "Secret lunch plans", "Meet behind the library"


class StandIn:
    """The two things a collection asks: the daemon's figures, one ServerStats."""

    def __init__(self, stats=None):
        self.stats, self.calls = stats, []

    def server_figures(self):
        return {"uptime": 12.5, "connections": 3, "logging_in": 1, "peak_connections": 7}

    def call(self, op, **fields):
        self.calls.append(op)
        if self.stats is None:
            raise DbUnavailable("database process unreachable")
        return self.stats


STATS = {"sessions": 2, "peak_sessions": 4, "database_bytes": 65536, "rid": 1,
         "totals": {"logins": 10, "failed_logins": 1, "logoffs": 8, "accounts_created": 3,
                    "accounts_deleted": 0, "messages_accepted": 5, "messages_delivered": 4,
                    "messages_bounced": 1, "broadcasts": 0, "accounts": 3,
                    "messages_stored": 6}}


def families(text):
    """{family name: (type, {sample name: value})} of a text the parser reads."""
    return {family.name: (family.type, {s.name: s.value for s in family.samples})
            for family in text_string_to_metric_families(text)}


def samples(text):
    """{sample name: value} of the unlabelled samples."""
    return {name: value for _type, found in families(text).values()
            for name, value in found.items()}


# -- the collection and the text format ------------------------------------------------------

def test_one_collection_is_one_serverstats_request_and_every_figure():
    context = StandIn(STATS)
    values = metrics.read_figures(context)
    assert context.calls == ["ServerStats"]
    assert values["parley_database_up"] == 1
    assert values["parley_connections"] == 3 and values["parley_sessions"] == 2
    assert values["parley_logins_total"] == 10 and values["parley_accounts"] == 3
    assert set(values) == {figure.name for figure in metrics.FIGURES} | {"parley_database_up"}


def test_the_text_parses_with_counters_and_gauges_typed():
    found = families(metrics.render(metrics.read_figures(StandIn(STATS))))
    assert found["parley_logins"] == ("counter", {"parley_logins_total": 10})
    assert found["parley_messages_bounced"] == ("counter",
                                                {"parley_messages_bounced_total": 1})
    assert found["parley_connections"] == ("gauge", {"parley_connections": 3})
    assert found["parley_database_bytes"] == ("gauge", {"parley_database_bytes": 65536})
    assert found["parley_uptime_seconds"][1] == {"parley_uptime_seconds": 12.5}
    for figure in metrics.FIGURES:
        assert found[figure.name.removesuffix("_total")][0] == figure.kind


def test_a_database_away_leaves_the_daemons_figures_and_says_so():
    values = metrics.read_figures(StandIn(None))
    assert values["parley_database_up"] == 0
    assert values["parley_connections"] == 3 and "parley_logins_total" not in values
    text = metrics.render(values)
    assert samples(text)["parley_database_up"] == 0 and "parley_sessions" not in text


# -- through a real daemon ---------------------------------------------------------------

def admin(server, *words):
    return subprocess.run([sys.executable, SERVER, "admin", "--data-dir", server.data_dir,
                           *words], capture_output=True, text=True, timeout=WAIT,
                          env=child_env())


def admin_samples(server):
    done = admin(server, "metrics")
    assert done.returncode == 0, done.stderr
    return samples(done.stdout)


def until_samples(server, predicate, what):
    """`admin metrics`'s samples once `predicate` holds for them."""
    def ready():
        found = admin_samples(server)
        return found if predicate(found) else None
    return wait_until(ready, message=what)


def a_login_a_delivery_and_a_bounce(server):
    """bob and alice log in; alice's message reaches bob, who acknowledges it;
    her second one, to nobody, bounces. The clients stay connected."""
    bob, _ = session(server, "bob")
    alice, _ = session(server, "alice")
    assert send(alice, "bob", SUBJECT, BODY).op == "Result"
    pushed = bob.next_event()
    assert pushed.op == "Message" and pushed.data["subject"] == SUBJECT
    bob.send("Ack", ids=[pushed.data["id"]])
    assert send(alice, "nobody-by-that-name", SUBJECT, BODY).data["bounced"] is True
    return alice, bob


def test_admin_metrics_counts_real_logins_messages_and_bounces(server):
    assert admin_samples(server)["parley_logins_total"] == 0
    alice, bob = a_login_a_delivery_and_a_bounce(server)
    found = until_samples(server, lambda found: found["parley_messages_delivered_total"] == 1,
                          "the acknowledged delivery counted")
    assert found["parley_logins_total"] == 2 and found["parley_accounts"] == 2
    assert found["parley_accounts_created_total"] == 2
    assert found["parley_messages_accepted_total"] == 1
    assert found["parley_messages_bounced_total"] == 1
    assert found["parley_sessions"] == 2 and found["parley_connections"] == 2
    assert found["parley_database_up"] == 1 and found["parley_database_bytes"] > 0
    alice.close()
    until_samples(server, lambda found: found["parley_logoffs_total"] == 1,
                  "alice's disconnect counted as a logoff")
    bob.close()


def test_admin_metrics_json_has_the_same_figures(server):
    session(server, "carol")[0].close()
    done = admin(server, "metrics", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["status"] == 0
    figures = answer["metrics"]
    assert figures["parley_logins_total"] == 1 and figures["parley_accounts"] == 1
    text = samples(admin(server, "metrics").stdout)
    assert set(figures) <= set(text)
    steady = set(figures) - {"parley_uptime_seconds", "parley_database_bytes"}
    assert {name: figures[name] for name in steady} == {name: text[name] for name in steady}


def test_admin_help_lists_metrics_and_it_takes_no_arguments(server):
    assert "metrics" in admin(server, "help").stdout
    done = admin(server, "metrics", "alice")
    assert done.returncode == 2 and "Usage: metrics" in done.stderr


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port, path="/metrics", host="127.0.0.1"):
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=WAIT) as answer:
        return answer.headers["Content-Type"], answer.read().decode()


def test_metrics_port_serves_the_figures_over_http_on_loopback(make_server):
    port = free_port()
    server = make_server("--metrics-port", str(port))
    assert f"metrics on http://127.0.0.1:{port}/metrics" in server.log()
    alice, bob = a_login_a_delivery_and_a_bounce(server)
    content_type, text = scrape(port)
    assert content_type.startswith("text/plain; version=0.0.4")
    found = samples(text)
    assert found["parley_logins_total"] == 2 and found["parley_sessions"] == 2
    assert found["parley_messages_accepted_total"] == 1
    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(port, "/secrets")
    assert info.value.code == 404
    with pytest.raises(OSError):               # 127.0.0.1 only: not even 127.0.0.2
        socket.create_connection(("127.0.0.2", port), timeout=WAIT).close()
    alice.close()
    bob.close()
    assert server.stop() == 0
    with pytest.raises(OSError):               # stopped with the server
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()


def test_a_database_that_does_not_answer_is_reported_not_waited_for(make_server):
    port = free_port()
    server = make_server("--metrics-port", str(port))
    (database,) = server.pids_titled("parley: database")
    os.kill(database, signal.SIGSTOP)
    try:
        found = samples(scrape(port)[1])           # within DB_TIMEOUT, not never
    finally:
        os.kill(database, signal.SIGCONT)
    assert found["parley_database_up"] == 0 and found["parley_connections"] == 0
    assert "parley_logins_total" not in found
    wait_until(lambda: samples(scrape(port)[1])["parley_database_up"] == 1,
               message="the database's figures back")


def test_metrics_port_0_serves_nothing(make_server):
    server = make_server("--metrics-port", "0")
    assert "metrics on" not in server.log()
    assert admin_samples(server)["parley_database_up"] == 1   # admin metrics still works


def test_the_metrics_name_no_person_and_nothing_anyone_wrote(make_server):
    port = free_port()
    server = make_server("--metrics-port", str(port))
    alice, bob = a_login_a_delivery_and_a_bounce(server)
    shown = [admin(server, "metrics").stdout, admin(server, "metrics", "--json").stdout,
             scrape(port)[1]]
    for text in shown:
        for secret in ("alice", "bob", "nobody-by-that-name", SUBJECT, BODY, "127.0.0.1"):
            assert secret not in text
    labelled = {sample.name for family in text_string_to_metric_families(shown[2])
                for sample in family.samples if sample.labels}
    assert labelled == {"parley_build_info"}                 # {version="0.12"}: no user
    alice.close()
    bob.close()


def test_a_taken_metrics_port_is_one_sentence_and_nothing_is_created(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data_dir = tmp_path / "data"
        done = subprocess.run([sys.executable, SERVER, "--port", "0", "--data-dir",
                               str(data_dir), "--metrics-port", str(port)],
                              capture_output=True, text=True, timeout=WAIT, env=child_env())
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"parley: cannot run the server: the metrics port {port} on 127.0.0.1 is in use "
        "by another program; choose another with --metrics-port")
    assert "Traceback" not in done.stderr and "listening on" not in done.stdout
    assert not data_dir.exists()
