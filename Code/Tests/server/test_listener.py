"""Tests for Modules/server/listener.py: the listening socket and accepted connections.

In process: `listen` on a free port, on the next one when the port is
taken (`--port-fallback`), one sentence when every port is taken or the
host is wrong; `tune` gives an accepted socket keepalive and no Nagle.
With the real daemon: a taken port stops it with that sentence, exit
status 1, before anything exists in the data dir; with `--port-fallback`
the ready line names the port really used; a second server started on the
port and data dir of a running one names that server.
"""

import socket
import subprocess
import sys

import pytest

from Modules.server import listener
from Tests.support import SERVER, RawClient, child_env, request, session


def taken_ports(count):
    """`count` consecutive ports on 127.0.0.1, each held by a listening socket."""
    for _ in range(50):
        first = socket.create_server(("127.0.0.1", 0))
        held, port = [first], first.getsockname()[1]
        try:
            for offset in range(1, count):
                held.append(socket.create_server(("127.0.0.1", port + offset)))
            return held
        except OSError:
            for sock in held:
                sock.close()
    raise AssertionError("no run of free ports found")


def test_listen_on_a_free_port():
    sock = listener.listen("127.0.0.1", 0)
    assert sock.getsockname()[1] > 0 and not sock.getblocking()
    sock.close()


def test_a_taken_port_falls_back_to_the_next_free_one():
    held = taken_ports(2)
    port = held[0].getsockname()[1]
    held[1].close()                                  # port + 1 is free again
    sock = listener.listen("127.0.0.1", port, fallback=3)
    assert sock.getsockname()[1] == port + 1
    sock.close()
    held[0].close()


def test_every_port_taken_is_one_sentence():
    held = taken_ports(3)
    port = held[0].getsockname()[1]
    with pytest.raises(listener.ListenError) as info:
        listener.listen("127.0.0.1", port)
    assert str(info.value) == (f"port {port} on 127.0.0.1 is in use by another program; "
                               "choose another with --port or use --port-fallback N")
    with pytest.raises(listener.ListenError) as info:
        listener.listen("127.0.0.1", port, fallback=2)
    assert f"ports {port} to {port + 2} on 127.0.0.1 are all in use" in str(info.value)
    for sock in held:
        sock.close()


@pytest.mark.parametrize("host, words", [("no-such-host.invalid", "no such host"),
                                         ("192.0.2.1", "not an address of this host")])
def test_a_wrong_host_is_one_sentence(host, words):
    with pytest.raises(listener.ListenError) as info:
        listener.listen(host, 0)
    assert words in str(info.value)


def test_tune_turns_keepalive_on_with_the_idle_time_asked_for():
    server = listener.listen("127.0.0.1", 0)
    client = socket.create_connection(server.getsockname())
    server.setblocking(True)
    accepted, _ = server.accept()
    listener.tune(accepted, 8)
    option = accepted.getsockopt
    assert option(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert option(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert option(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 8
    assert option(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 2
    assert option(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == listener.KEEPALIVE_PROBES
    assert option(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 16000
    assert listener.keepalive_interval(60) == 15 and listener.keepalive_interval(1) == 1
    for sock in (accepted, client, server):
        sock.close()


def run_server(*args):
    done = subprocess.run([sys.executable, SERVER, *args], capture_output=True, text=True,
                          timeout=60, env=child_env())
    return done.returncode, done.stdout, done.stderr


def test_a_taken_port_stops_the_server_before_anything_is_created(tmp_path):
    held = taken_ports(1)
    port = held[0].getsockname()[1]
    data_dir = tmp_path / "fresh" / "data"
    code, stdout, stderr = run_server("--port", str(port), "--data-dir", str(data_dir))
    held[0].close()
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (  # after the log's header line
        f"parley: cannot run the server: port {port} on 127.0.0.1 is "
                              "in use by another program; choose another with --port or "
                              "use --port-fallback N")
    assert "listening on" not in stdout
    assert not (tmp_path / "fresh").exists()


def test_port_fallback_listens_on_the_next_port_and_the_ready_line_says_which(make_server):
    held = taken_ports(2)
    port = held[0].getsockname()[1]
    held[1].close()                                  # port + 1 is free again
    try:
        server = make_server("--port", str(port), "--port-fallback", "2")
        assert server.port == port + 1
        assert f"parley: listening on 127.0.0.1:{port + 1}" in server.stdout_lines
        assert request(session(server, "alice")[0], "Inbox").op == "Result"
        RawClient(server.port).close()
    finally:
        held[0].close()


def test_the_port_and_data_dir_of_a_running_server_name_that_server(server):
    code, _stdout, stderr = run_server("--port", str(server.port), "--data-dir",
                                       server.data_dir)
    assert code == 1
    assert f"another Parley server (pid {server.proc.pid}) is using" in stderr
