"""Tests for Modules/client/session.py: the network session, with its socket replaced.

Message de-duplication and acknowledgement (per login, none once the server
is back at the login, held back while the account is being deleted and
sent if the deletion fails), a second "ready" not reported, request/reply
matching by rid, Error replies as RequestFailed, Send retries with the same
client_id, the server's reason when the connection closes, a fatal login
error, the operator's greeting before its
prompt and the message of the day after the Welcome. Never a real
connection.
"""

import pytest

from Modules.client import session as client_session
from Modules.wire import protocol
from Modules.wire.serializers import Packet


class Recorder(client_session.Handlers):
    def __init__(self):
        self.shown, self.events, self.login_events = [], [], []

    def on_message(self, message, via):
        self.shown.append((message["id"], via))

    def on_ready(self, user):
        self.events.append(("ready", user))

    def on_system(self, event, message):
        self.events.append((event, message))

    def on_greeting(self, text):
        self.login_events.append(("greeting", text))

    def on_welcome(self, user, created):
        self.login_events.append(("welcome", user))

    def on_motd(self, text):
        self.login_events.append(("motd", text))


def _session():
    handlers = Recorder()
    session = client_session.ClientSession("127.0.0.1", 1, handlers)
    sent = []
    session._send = lambda packet, only_in_session=False: sent.append(packet) or True
    return session, handlers, sent


def _message(message_id):
    return Packet("Message", {"id": message_id, "from": "al", "to": "bob", "subject": "s",
                              "body": "b", "sent_at": 1.0, "kind": "message"})


def test_each_message_is_shown_once_and_every_copy_acknowledged():
    session, handlers, sent = _session()
    session._dispatch([Packet("Welcome", {"user": "bob", "created": False}),
                       _message(1), _message(2)])
    session._dispatch([Packet("System", {"event": "ready", "message": "", "user": "bob"}),
                       _message(2), _message(3), _message(1)])
    assert handlers.shown == [(1, "login"), (2, "login"), (3, "push")]
    assert [p.data["ids"] for p in sent if p.op == "Ack"] == [[1, 2], [2, 3, 1]]


def test_a_second_ready_after_a_database_restart_is_not_reported():
    session, handlers, _sent = _session()
    ready = Packet("System", {"event": "ready", "message": "", "user": "bob"})
    session._dispatch([Packet("Welcome", {"user": "bob", "created": False}), ready])
    session._dispatch([ready, _message(4)])
    assert handlers.events == [("ready", "bob")]
    assert handlers.shown == [(4, "push")]


def test_a_new_login_starts_a_new_set_of_seen_messages():
    session, handlers, _sent = _session()
    welcome = Packet("Welcome", {"user": "bob", "created": False})
    session._dispatch([welcome, _message(1)])
    session._dispatch([Packet("Login", {"prompt": "username", "message": "?"}),
                       welcome, _message(1)])
    assert handlers.shown == [(1, "login"), (1, "login")]


def test_no_ack_is_sent_once_the_server_returned_to_the_login():
    session = client_session.ClientSession("127.0.0.1", 1)
    session.conn.machine.state = protocol.LOGIN   # the socket is never touched
    assert session._send(Packet("Ack", {"ids": [1]}), only_in_session=True) is False


def test_request_waits_for_its_own_rid():
    session, _handlers, sent = _session()

    def answer(packet, only_in_session=False):
        sent.append(packet)
        rid = packet.data["rid"]
        session._on_result(Packet("Result", {"rid": rid + 100, "x": 0}), [])  # not ours
        session._on_result(Packet("Result", {"rid": rid, "deleted": [1], "missing": []}), [])
        return True

    session._send = answer
    assert session.request("Delete", ids=[1])["deleted"] == [1]
    assert sent[0].op == "Delete" and sent[0].data["ids"] == [1]


def test_error_reply_raises_request_failed():
    session, _handlers, _sent = _session()

    def refuse(packet, only_in_session=False):
        session._on_error(Packet("Error", {"rid": packet.data["rid"], "code": "not_found",
                                           "reason": "You have no message 4."}), [])
        return True

    session._send = refuse
    with pytest.raises(client_session.RequestFailed) as caught:
        session.request("Read", id=4)
    assert (caught.value.code, caught.value.message) == ("not_found",
                                                         "You have no message 4.")


def test_send_retries_unavailable_with_the_same_client_id(monkeypatch):
    monkeypatch.setattr(client_session, "SEND_RETRY_DELAYS", (0, 0, 0))
    session, _handlers, sent = _session()
    answers = iter(["unavailable", "unavailable", None])

    def flaky(packet, only_in_session=False):
        sent.append(packet)
        code, rid = next(answers), packet.data["rid"]
        reply = (Packet("Error", {"rid": rid, "code": code, "reason": "restarting"}) if code
                 else Packet("Result", {"rid": rid, "id": 7, "bounced": False,
                                        "duplicate": True}))
        getattr(session, "_on_" + reply.op.lower())(reply, [])
        return True

    session._send = flaky
    assert session.send_message("bob", "s", "b")["id"] == 7
    ids = {packet.data["client_id"] for packet in sent}
    assert len(sent) == 3 and len(ids) == 1 and len(ids.pop()) == 32


def test_send_gives_up_after_three_retries(monkeypatch):
    monkeypatch.setattr(client_session, "SEND_RETRY_DELAYS", (0, 0, 0))
    session, _handlers, sent = _session()

    def unavailable(packet, only_in_session=False):
        sent.append(packet)
        session._on_error(Packet("Error", {"rid": packet.data["rid"], "code": "unavailable",
                                           "reason": "restarting"}), [])
        return True

    session._send = unavailable
    with pytest.raises(client_session.RequestFailed):
        session.send_message("bob", "s", "b")
    assert len(sent) == 4


def test_a_rate_limited_request_is_sent_again_after_the_wait_the_server_names():
    session, handlers, sent = _session()
    waits, notes = [], []
    session._pause = lambda seconds: waits.append(seconds) or False
    handlers.on_wait = lambda seconds, reason: notes.append((seconds, reason))

    def answer(packet, only_in_session=False):
        sent.append(packet)
        rid = packet.data["rid"]
        if len(sent) < 3:
            reply = Packet("Error", {"rid": rid, "code": "rate_limited", "retry_after": 2,
                                     "reason": "Too many requests at once."})
            session._on_error(reply, [])
        else:
            session._on_result(Packet("Result", {"rid": rid, "messages": [], "more": False}),
                               [])
        return True

    session._send = answer
    assert session.request("Inbox", limit=200) == {"rid": 3, "messages": [], "more": False}
    assert waits == [2, 2] and notes[0] == (2, "Too many requests at once.")
    assert [packet.data["limit"] for packet in sent] == [200, 200, 200]


def test_a_closed_connection_ends_waiting_with_the_servers_reason():
    session, _handlers, _sent = _session()
    session._dispatch([Packet("Welcome", {"user": "bob", "created": False}),
                       Packet("System", {"event": "shutdown",
                                         "message": "The server is shutting down."})])
    session._finish(None)
    with pytest.raises(client_session.ConnectionLost) as caught:
        session.request("Inbox")
    assert caught.value.message == "The server is shutting down."


def test_a_request_on_a_connection_that_ended_is_a_lost_connection_not_a_refusal():
    session = client_session.ClientSession("127.0.0.1", 1, Recorder())
    session.conn.machine.state = protocol.CLOSED_STATE   # the reader saw the end
    with pytest.raises(client_session.ConnectionLost):
        session.request("Send", to="bob", subject="s", body="b", client_id="c")
    session.conn.machine.state = protocol.LOGIN          # alive, but not in a session
    with pytest.raises(client_session.RequestFailed) as caught:
        session.request("Inbox")
    assert caught.value.code == "not_now"


def test_fatal_login_error_ends_the_login_dialogue():
    session, _handlers, _sent = _session()
    session._dispatch([Packet("Error", {"code": "too_many_attempts", "fatal": True,
                                        "reason": "Wrong password, and that was the "
                                                  "last try."})])
    with pytest.raises(client_session.ServerRefused) as caught:
        session.next_login_step()
    assert caught.value.code == "too_many_attempts"


def test_acks_are_held_back_while_the_account_is_deleted():
    session, _handlers, sent = _session()
    session._dispatch([Packet("Welcome", {"user": "bob", "created": False})])

    def delete(packet, only_in_session=False):
        sent.append(packet)
        if packet.op == "DeleteAccount":
            session._dispatch([_message(9)])
            session._on_result(Packet("Result", {"rid": packet.data["rid"], "deleted": True,
                                                 "bounced": 0}), [])
        return True

    session._send = delete
    assert session.delete_account()["deleted"] is True
    assert [p.op for p in sent] == ["DeleteAccount"]


def test_held_acks_are_sent_when_the_deletion_fails():
    session, _handlers, sent = _session()

    def refuse(packet, only_in_session=False):
        sent.append(packet)
        if packet.op == "DeleteAccount":
            session._dispatch([_message(9)])
            session._on_error(Packet("Error", {"rid": packet.data["rid"], "code": "busy",
                                               "reason": "Try again."}), [])
        return True

    session._send = refuse
    with pytest.raises(client_session.RequestFailed):
        session.delete_account()
    assert [(p.op, p.data.get("ids")) for p in sent] == [("DeleteAccount", None),
                                                         ("Ack", [9])]


def test_the_greeting_comes_before_its_prompt_and_the_motd_after_the_welcome():
    session, handlers, _sent = _session()
    session._dispatch([Packet("Login", {"prompt": "username", "message": "Username:",
                                        "greeting": "Lab server."})])
    assert handlers.login_events == [("greeting", "Lab server.")]
    assert session.next_login_step().data["prompt"] == "username"   # handed over after
    session._dispatch([Packet("Login", {"prompt": "password", "message": "?"}),
                       Packet("Welcome", {"user": "bob", "created": False,
                                          "motd": "Exam on Friday."})])
    assert handlers.login_events == [("greeting", "Lab server."), ("welcome", "bob"),
                                     ("motd", "Exam on Friday.")]
    session._dispatch([Packet("Welcome", {"user": "bob", "created": False})])
    assert handlers.login_events[-1] == ("welcome", "bob")        # no motd: none shown

