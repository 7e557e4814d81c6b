"""The login process over real TCP: handshake, Version, the login dialogue.

Each test talks to a real daemon with `RawClient`, which drives the
protocol objects directly so it can also misbehave: wrong passwords,
stalling, garbage and oversize frames. After every abuse a well-behaved
client must still be served. The operator's side: the greeting in the
first prompt, the message of the day in the Welcome, a suspended account
refused, and a one-time password changed before the login completes
(account states written into the files while the server is stopped).
"""

import os
import signal
import socket

from Modules.wire import channel
from Modules.wire.framing import CLOSED
from Modules.wire.serializers import Packet
from Tests.support import PASSWORD, RawClient, read_to_end, run_client, wait_until
from Tests.support.storage import change_account_offline


def create(server, name, password=PASSWORD):
    client = RawClient(server.port)
    welcome = client.login(name, password, create=True)
    assert welcome.op == "Welcome" and welcome.data == {"user": name, "created": True}
    return client


def assert_still_serving(server, name="witness"):
    client = RawClient(server.port)
    welcome = client.login(name, PASSWORD, create=True)
    assert welcome.op == "Welcome"
    client.close()


def test_create_then_log_in_again(server):
    create(server, "alice").close()
    client = RawClient(server.port)
    welcome = client.login("Alice", PASSWORD)   # names are case-insensitive
    assert welcome.data == {"user": "alice", "created": False}
    assert client.next_event().data["event"] == "ready"


def test_three_wrong_passwords_close_the_connection(server):
    create(server, "bob").close()
    client = RawClient(server.port)
    reply = client.login("bob", "wrong password 1")
    assert reply.data["prompt"] == "password" and reply.data["attempts_left"] == 2
    assert "Wrong password" in reply.data["message"]
    client.send("Login", password="wrong password 2")
    assert client.next_event().data["attempts_left"] == 1
    client.send("Login", password="wrong password 3")
    final = client.next_event()
    assert final.op == "Error" and final.data["code"] == "too_many_attempts"
    assert client.next_event() is CLOSED


def test_wrong_then_right_password(server):
    create(server, "carol").close()
    client = RawClient(server.port)
    assert client.login("carol", "not the password").data["prompt"] == "password"
    client.send("Login", password=PASSWORD)
    assert client.next_event().op == "Welcome"


def test_username_rules_are_explained(server):
    client = RawClient(server.port)
    assert client.handshake().data["prompt"] == "username"
    client.send("Login", username="x!")
    prompt = client.next_event()
    assert prompt.data["prompt"] == "username"
    assert "characters" in prompt.data["message"]
    client.send("Login", username="parley")
    assert "reserved" in client.next_event().data["message"]


def test_short_new_password_is_refused_with_the_rule(server):
    client = RawClient(server.port)
    client.handshake()
    client.send("Login", username="dave")
    assert client.next_event().data["prompt"] == "new_password"
    client.send("Login", new_password="short")
    prompt = client.next_event()
    assert prompt.data["prompt"] == "new_password" and "at least 8" in prompt.data["message"]
    client.send("Login", cancel=True)
    assert client.next_event().data["prompt"] == "username"


def test_login_timeout_after_handshake(make_server):
    server = make_server("--login-timeout", "1")
    client = RawClient(server.port)
    client.handshake()
    event = client.next_event()
    assert event.op == "System" and event.data["event"] == "timeout"
    assert client.next_event() is CLOSED


def test_login_timeout_covers_a_stalled_handshake(make_server):
    server = make_server("--login-timeout", "1")
    client = RawClient(server.port)   # connects, never sends the handshake
    event = client.next_event()
    assert isinstance(event, channel.Notice) and "time" in event.text
    assert client.next_event() is CLOSED
    assert_still_serving(server)


def _closed_after(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        return read_to_end(sock)


def test_oversize_length_prefix_closes_only_that_connection(server):
    _closed_after(server.port, b"\xff\xff\xff\xff" + b"x" * 100)
    assert_still_serving(server)
    assert "frame" in server.log()


def test_garbage_bytes_close_only_that_connection(server):
    for seed in range(5):
        _closed_after(server.port, os.urandom(200 + seed))
    assert_still_serving(server)


def test_a_forged_frame_gets_a_clear_error_and_the_connection_closes(server):
    client = RawClient(server.port)
    client.handshake()
    client.write(b"\x00\x00\x00\x15\x02" + b"forged ciphertext!!!")
    error = client.next_event()
    assert error.op == "Error" and error.data["code"] == "decrypt_failed"
    assert client.next_event() is CLOSED
    assert_still_serving(server)


def test_a_replayed_frame_in_a_session_is_refused(server):
    client = create(server, "ivan")
    assert client.next_event().data["event"] == "ready"
    frame = client.conn.send(Packet("Inbox", {"rid": 1}))
    client.write(frame)
    assert client.next_event().op == "Result"
    client.write(frame)                                  # the same bytes again
    error = client.next_event()
    assert error.op == "Error" and error.data["code"] == "decrypt_failed"
    assert client.next_event() is CLOSED
    assert "authentication" in server.log()


def test_process_titles_name_the_peer_then_the_user(server):
    client = RawClient(server.port)
    client.handshake()
    local_port = client.sock.getsockname()[1]
    wait_until(lambda: server.pids_titled(f"parley: login 127.0.0.1:{local_port}"),
               message="login process title")
    client.send("Login", username="erin")
    client.next_event()
    client.send("Login", new_password=PASSWORD)
    assert client.next_event().op == "Welcome"
    wait_until(lambda: server.pids_titled("parley: user erin"), message="user process title")
    wait_until(lambda: not server.pids_titled(f"parley: login 127.0.0.1:{local_port}"),
               message="login process exit")


def test_failed_logins_are_throttled_but_others_get_in(server):
    create(server, "frank").close()
    throttled = False
    for _ in range(4):
        client = RawClient(server.port)
        reply = client.login("frank", "wrong password!")
        throttled = throttled or "try again in" in reply.data.get("message", "")
        for _ in range(2):
            if reply.op != "Login":
                break
            client.send("Login", password="wrong password!")
            reply = client.next_event()
            throttled = throttled or "try again in" in reply.data.get("message", "")
        client.close()
        if throttled:
            break
    assert throttled
    assert_still_serving(server, "grace")


def test_connection_survives_the_hand_off(server):
    """The same TCP connection carries the login and the session (no reconnect)."""
    client = create(server, "heidi")
    before = client.sock.getsockname()
    assert client.next_event().data["event"] == "ready"
    client.send("Inbox", rid=1)
    result = client.next_event()
    assert result.op == "Result" and result.data["messages"] == []
    assert client.sock.getsockname() == before   # the reply proves the relay works


def _sockets_of(pid):
    try:
        return sum(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:     # gone meanwhile
        return 0


def test_a_login_whose_database_dies_after_its_hello_gets_in(server):
    """The login process sends its Hello and goes on without its reply (it is
    read with the KeyAgree's): the database killed in between costs a new
    connection and Hello, not the login."""
    client = RawClient(server.port)             # connected, the handshake not begun
    wait_until(lambda: any(_sockets_of(pid) >= 2 for pid in server.pids_titled(
        "parley: login")), message="a login process linked to the database")
    (database,) = server.pids_titled("parley: database")
    os.kill(database, signal.SIGKILL)
    welcome = client.login("ivan", PASSWORD, create=True)
    assert welcome.op == "Welcome" and welcome.data["created"] is True
    assert client.next_event().data["event"] == "ready"
    assert "restarting it" in server.log()


def test_with_registration_closed_a_new_name_is_told_and_members_still_log_in(make_server):
    first = make_server()
    assert run_client(first, "member", ["logout"], create=True)[0] == 0
    first.stop()
    server = make_server("--registration", "closed")        # the same data dir
    code, _objects, stderr = run_client(server, "newbie", ["logout"], create=True)
    assert code == 1 and "does not take new accounts" in stderr
    code, objects, _ = run_client(server, "member", ["inbox"])
    assert code == 0 and objects[0]["type"] == "login"


# ------------------------------------------------------------ the operator's side


def test_the_greeting_comes_first_and_the_motd_with_the_welcome(make_server):
    server = make_server("--greeting", "Lab server: be kind.", "--motd", "Exam on Friday.")
    client = RawClient(server.port)
    prompt = client.handshake()
    assert prompt.data["prompt"] == "username"
    assert prompt.data["greeting"] == "Lab server: be kind."
    client.send("Login", username="alice")
    assert "greeting" not in client.next_event().data
    client.send("Login", cancel=True)
    assert "greeting" not in client.next_event().data     # once per connection
    client.send("Login", username="alice")
    client.next_event()
    client.send("Login", new_password=PASSWORD)
    welcome = client.next_event()
    assert welcome.data == {"user": "alice", "created": True, "motd": "Exam on Friday."}
    welcome = RawClient(server.port).login("alice", PASSWORD)
    assert welcome.data["motd"] == "Exam on Friday."


def test_a_suspended_account_is_refused_with_one_sentence(make_server):
    server = make_server()
    create(server, "carl").close()
    server.stop()
    change_account_offline(server.data_dir, "carl", suspended=True)
    server = make_server()
    client = RawClient(server.port)
    error = client.login("carl", PASSWORD)
    assert error.op == "Error" and error.data["code"] == "suspended" and error.data["fatal"]
    assert error.data["reason"] == ("This account is suspended; ask the server's "
                                    "administrator.")
    assert client.next_event() is CLOSED
    assert RawClient(server.port).login("carl", "wrong password!").data["prompt"] == "password"


def test_a_one_time_password_must_be_changed_to_log_in(make_server):
    server = make_server()
    create(server, "dora").close()
    server.stop()
    change_account_offline(server.data_dir, "dora", one_time_password="one-time-1234")
    server = make_server()
    client = RawClient(server.port)
    prompt = client.login("dora", "one-time-1234")
    assert prompt.op == "Login" and prompt.data["prompt"] == "new_password"
    assert "reset" in prompt.data["message"] and prompt.data["username"] == "dora"
    client.send("Login", new_password="short")
    prompt = client.next_event()
    assert prompt.data["prompt"] == "new_password" and "at least 8" in prompt.data["message"]
    client.send("Login", new_password="my own new password")
    welcome = client.next_event()
    assert welcome.op == "Welcome" and welcome.data == {"user": "dora", "created": False}
    assert client.next_event().data["event"] == "ready"
    assert "my own new password" not in server.log() and "one-time-1234" not in server.log()
    assert RawClient(server.port).login("dora", "my own new password").op == "Welcome"
    again = RawClient(server.port).login("dora", "one-time-1234")
    assert again.data["prompt"] == "password" and "Wrong" in again.data["message"]
