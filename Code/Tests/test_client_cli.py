"""Unit tests of the client parts that need no server.

Command-line options, batch command parsing (shell quoting, multi-line
quotes), the --json record shapes, ISO times, neutralising terminal
escapes, message de-duplication and acknowledgement, request/reply
matching and Send retries, the scripted login answers and the server-key
pin. The network session is exercised with its socket replaced, never
with a real connection.
"""

import io
import json

import pytest

from Modules.client import cli as client_cli
from Modules.client import commands as client_commands
from Modules.client import login as client_login
from Modules.client import output as client_output
from Modules.client import session as client_session
from Modules import identity
from Modules.wire import protocol
from Modules.client.commands import Command, LineJoiner, UsageError, parse_line
from Modules.client.output import iso_time, json_line, neutralise
from Modules.wire.serializers import Packet

HOSTILE = "a\x1b]0;owned\x07b\x1b[2Jc\x9b1m\u202eevil\x7f\r"


# ------------------------------------------------------------ command line


def test_defaults_without_environment():
    args = client_cli.parse_args([], {})
    assert (args.host, args.port) == ("127.0.0.1", 7117)
    assert not (args.batch or args.json or args.create or args.accept_new_host_key)
    assert args.known_hosts == identity.default_known_hosts_path()


def test_environment_gives_host_and_port_and_flags_win():
    environ = {"PARLEY_HOST": "example.org", "PARLEY_PORT": "9000"}
    args = client_cli.parse_args([], environ)
    assert (args.host, args.port) == ("example.org", 9000)
    args = client_cli.parse_args(["--host", "h", "--port", "1234"], environ)
    assert (args.host, args.port) == ("h", 1234)


def test_all_flags_parse():
    args = client_cli.parse_args(
        ["--user", "bob", "--password-env", "PW", "--create", "--batch", "--json",
         "--known-hosts", "/tmp/kh", "--accept-new-host-key", "--no-color"], {})
    assert (args.user, args.password_env, args.known_hosts) == ("bob", "PW", "/tmp/kh")
    assert args.create and args.batch and args.json and args.accept_new_host_key
    assert args.no_color


@pytest.mark.parametrize("argv, environ, words", [
    (["--port", "x"], {}, "--port"),
    (["--port", "70000"], {}, "1 to 65535"),
    ([], {"PARLEY_PORT": "seven"}, "PARLEY_PORT"),
    (["--frobnicate"], {}, "unrecognized"),
    (["--user", " "], {}, "--user"),
])
def test_bad_usage_is_one_sentence(argv, environ, words):
    with pytest.raises(UsageError) as caught:
        client_cli.parse_args(argv, environ)
    assert words in caught.value.reason


def test_password_comes_from_the_named_variable():
    args = client_cli.parse_args(["--password-env", "PW"], {})
    assert client_cli.password_from(args, {"PW": "s3cret-pw"}) == "s3cret-pw"
    with pytest.raises(UsageError) as caught:
        client_cli.password_from(args, {})
    assert "PW" in caught.value.reason and "s3cret" not in caught.value.reason
    assert client_cli.password_from(client_cli.parse_args([], {}), {}) is None


def test_main_exits_2_on_bad_usage(capsys):
    assert client_cli.main(["--port", "nope"], {}) == 2
    assert "--port" in capsys.readouterr().err


def test_batch_without_credentials_exits_2_before_connecting(capsys):
    status = client_cli.main(["--batch", "--port", "1"], {}, io.StringIO(""))
    assert status == 2
    assert "--user" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert client_cli.main(["--help"], {}) == 0
    assert "--accept-new-host-key" in capsys.readouterr().out


# ------------------------------------------------------------ batch lines


def test_blank_and_comment_lines_are_nothing():
    for line in ("", "   ", "# a comment", "   # indented comment"):
        assert parse_line(line) is None


def test_send_with_shell_quoting():
    command = parse_line('send Bob "Lunch today" \'At noon? "yes"\'')
    assert command == Command("send", {"to": "bob", "subject": "Lunch today",
                                       "body": 'At noon? "yes"'},
                              'send Bob "Lunch today" \'At noon? "yes"\'')


def test_send_may_leave_subject_and_body_to_questions():
    assert parse_line("send bob").args == {"to": "bob"}
    assert parse_line("send bob Hi").args == {"to": "bob", "subject": "Hi"}


@pytest.mark.parametrize("line, words", [
    ("send", "Usage: send"),
    ("send a b c d", "Usage: send"),
    ("send 9lives x y", "username"),
    ('send bob "x" "y" extra', "Usage"),
    ('send bob "unclosed', "quotation"),
    ("read", "Usage: read"),
    ("read abc", "not a message number"),
    ("read 0", "not a message number"),
    ("delete", "Usage: delete"),
    ("inbox --limit 0", "1 to 200"),
    ("inbox --limit 201", "1 to 200"),
    ("inbox --before", "Usage: inbox"),
    ("inbox --sideways 3", "Usage: inbox"),
    ("logout now", "Usage: logout"),
])
def test_bad_commands_say_what_is_wrong(line, words):
    with pytest.raises(UsageError) as caught:
        parse_line(line)
    assert words in caught.value.reason


def test_unknown_command_suggests_the_closest():
    with pytest.raises(UsageError) as caught:
        parse_line("inbx")
    assert "'inbox'" in caught.value.reason
    with pytest.raises(UsageError) as caught:
        parse_line("delete-acount")
    assert "'delete-account'" in caught.value.reason
    with pytest.raises(UsageError) as caught:
        parse_line("zzzzzz")
    assert "help" in caught.value.reason


def test_unknown_command_word_is_neutralised():
    with pytest.raises(UsageError) as caught:
        parse_line("\x1b[2J")
    assert "\x1b" not in caught.value.reason


def test_ids_aliases_and_flags():
    assert parse_line("read #12").args == {"id": 12}
    assert parse_line("delete 12 13 12").args == {"ids": [12, 13]}
    assert parse_line("inbox --before 40 --limit=10").args == {"before": 40, "limit": 10}
    assert parse_line("QUIT").name == "logout"
    assert parse_line("exit").name == "logout"
    assert parse_line("help send").args == {"topic": "send"}
    assert parse_line("delete-account").name == "delete-account"


def test_line_joiner_continues_an_open_quotation():
    joiner = LineJoiner()
    assert joiner.feed('send bob "Hi" "first line\n') is None
    assert joiner.feed("\n") is None
    text = joiner.feed('last line"\n')
    assert parse_line(text).args["body"] == "first line\n\nlast line"
    assert joiner.feed("inbox\n") == "inbox"
    assert joiner.leftover() is None


def test_line_joiner_leaves_comments_alone_and_reports_leftovers():
    joiner = LineJoiner()
    assert joiner.feed("# it's a comment\n") == "# it's a comment"
    assert joiner.feed('send bob "never closed\n') is None
    assert joiner.leftover() == 'send bob "never closed'


def test_line_joiner_gives_up_on_endless_quotes():
    joiner = LineJoiner(max_chars=50)
    assert joiner.feed('send bob "x" "' + "y" * 60) is not None


# ------------------------------------------------------------ times


@pytest.mark.parametrize("epoch, text", [
    (0, "1970-01-01T00:00:00.000Z"),
    (1795227000.123, "2026-11-21T02:10:00.123Z"),
    (1795227000.9996, "2026-11-21T02:10:01.000Z"),
    (1795227000, "2026-11-21T02:10:00.000Z"),
    (-1.5, "1969-12-31T23:59:58.500Z"),
])
def test_iso_time_is_utc_with_milliseconds(epoch, text):
    assert iso_time(epoch) == text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "soon", None, 1e20])
def test_iso_time_of_nonsense_is_none(bad):
    assert iso_time(bad) is None


def test_local_time_of_nonsense_is_a_question_mark():
    assert client_output.local_time(None) == "?"
    assert client_output.local_time("2026-11-21T02:10:00.123Z")[:4] == "2026"


# ------------------------------------------------------------ neutralising


def test_neutralise_makes_controls_visible():
    text = neutralise(HOSTILE)
    assert text == "a\\x1b]0;owned\\x07b\\x1b[2Jc\\x9b1m\\u202eevil\\x7f\\x0d"
    assert all(ch.isprintable() for ch in text)


def test_neutralise_keeps_newline_and_tab_only_in_bodies():
    assert neutralise("a\nb\tc") == "a\\x0ab\\x09c"
    assert neutralise("a\r\nb\tc\rd", multiline=True) == "a\nb\tc\\x0dd"


def test_neutralise_handles_surrogates_and_non_text():
    assert neutralise("x\ud800y") == "x\\ud800y"
    assert neutralise(None) == ""
    assert neutralise(12) == "12"
    assert neutralise("héllo — 日本") == "héllo — 日本"


def test_json_line_is_exact_and_inert():
    record = {"type": "message", "subject": HOSTILE, "body": "x\ud800\u2028y"}
    line = json_line(record)
    assert "\n" not in line
    assert all(ch.isprintable() for ch in line)
    assert json.loads(line) == record


def _hostile_message(kind="message", via="push"):
    message = {"id": 5, "from": "m\x1b[0allory", "to": "bob", "subject": HOSTILE,
               "body": HOSTILE + "\nline 2", "sent_at": 1795227000.5, "kind": kind}
    if kind == "bounce":
        message.update(note=HOSTILE, original_to="e\x1bve")
    return client_output.message_record(message, via)


@pytest.mark.parametrize("record", [
    _hostile_message(), _hostile_message("bounce"), _hostile_message(via="read"),
    _hostile_message("bounce", "read"), _hostile_message(via="login"),
    client_output.inbox_record({"messages": [{"id": 1, "from": HOSTILE, "subject": HOSTILE,
                                              "sent_at": 1.0, "kind": "bounce",
                                              "unread": True, "note": HOSTILE}],
                                "more": True}),
    client_output.sent_record({"id": 2, "bounced": True, "duplicate": False,
                               "note": HOSTILE}, "bob"),
    client_output.system_record("shutdown", HOSTILE),
    client_output.login_record(HOSTILE, True),
])
def test_human_rendering_never_passes_escapes(record):
    for color in (False, True):
        text = client_output.Output(color=color).render(record)
        if color:   # our own colour codes are the only escapes allowed
            text = client_output.re.sub(r"\x1b\[[0-9;]*m", "", text)
        assert not any(0 < ord(ch) < 32 and ch not in "\n\t" for ch in text)
        assert not any(0x7f <= ord(ch) <= 0x9f or ch == "\u202e" for ch in text)


def test_errors_to_stderr_are_neutralised(capsys):
    client_output.Output().error(HOSTILE, "x")
    captured = capsys.readouterr()
    assert captured.out == "" and "\x1b" not in captured.err


# ------------------------------------------------------------ JSON shapes


def test_message_record_shape():
    message = {"id": 7, "from": "alice", "to": "bob", "subject": "Hi", "body": "Yo",
                "sent_at": 1795227000.123, "kind": "message", "read": False}
    assert client_output.message_record(message, "login") == {
        "type": "message", "via": "login", "id": 7, "from": "alice", "to": "bob",
        "subject": "Hi", "body": "Yo", "sent_at": "2026-11-21T02:10:00.123Z",
        "kind": "message", "read": False}


def test_bounce_record_has_note_and_original_recipient():
    message = {"id": 8, "from": "parley", "to": "alice", "subject": "Hi", "body": "Yo",
               "sent_at": 0, "kind": "bounce", "note": "No user named 'zed'.",
               "original_to": "zed"}
    record = client_output.message_record(message, "push")
    assert (record["kind"], record["note"], record["original_to"]) == (
        "bounce", "No user named 'zed'.", "zed")
    assert "read" not in record


def test_result_record_shapes():
    assert client_output.sent_record({"rid": 1, "id": 3, "bounced": False,
                                      "duplicate": True}, "bob") == {
        "type": "sent", "id": 3, "to": "bob", "bounced": False, "duplicate": True}
    assert client_output.sent_record({"id": 4, "bounced": True, "duplicate": False,
                                      "note": "gone"}, "zed")["note"] == "gone"
    inbox = client_output.inbox_record({"rid": 2, "more": True, "messages": [
        {"id": 9, "from": "al", "subject": "s", "sent_at": 0.5, "kind": "message",
         "unread": True}]})
    assert inbox == {"type": "inbox", "more": True, "messages": [
        {"id": 9, "from": "al", "subject": "s", "sent_at": "1970-01-01T00:00:00.500Z",
         "kind": "message", "unread": True}]}
    assert client_output.deleted_record({"rid": 3, "deleted": [1], "missing": [2]}) == {
        "type": "deleted", "deleted": [1], "missing": [2]}
    assert client_output.account_deleted_record({"deleted": True, "bounced": 2}) == {
        "type": "account_deleted", "bounced": 2}
    assert client_output.system_record("goodbye", "Bye.") == {
        "type": "system", "event": "goodbye", "message": "Bye."}
    assert client_output.error_record("No.", "not_found", "read 4") == {
        "type": "error", "error": "No.", "code": "not_found", "command": "read 4"}
    assert client_output.login_record("bob", False) == {
        "type": "login", "user": "bob", "created": False}
    assert client_output.ready_record("bob") == {"type": "ready", "user": "bob"}


def test_json_output_is_one_object_per_line_and_errors_also_on_stderr(capsys):
    output = client_output.Output(json_mode=True)
    output.emit(client_output.ready_record("bob"))
    output.error("You have no message 4.", "not_found", "read 4")
    output.note("a local note")
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["ready", "error"]
    assert json.loads(lines[1])["command"] == "read 4"
    assert captured.err.splitlines() == ["You have no message 4.", "a local note"]


def test_colour_rules():
    tty = type("Tty", (), {"isatty": lambda self: True})()
    pipe = io.StringIO()
    assert client_output.colour_allowed(False, tty, {})
    assert not client_output.colour_allowed(True, tty, {})
    assert not client_output.colour_allowed(False, tty, {"NO_COLOR": "1"})
    assert not client_output.colour_allowed(False, pipe, {})


# ------------------------------------------------------------ the session, no socket


class Recorder(client_session.Handlers):
    def __init__(self):
        self.shown, self.events = [], []

    def on_message(self, message, via):
        self.shown.append((message["id"], via))

    def on_ready(self, user):
        self.events.append(("ready", user))

    def on_system(self, event, message):
        self.events.append((event, message))


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
    assert session.delete([1])["deleted"] == [1]
    assert sent[0].op == "Delete" and sent[0].data["ids"] == [1]


def test_error_reply_raises_request_failed():
    session, _handlers, _sent = _session()

    def refuse(packet, only_in_session=False):
        session._on_error(Packet("Error", {"rid": packet.data["rid"], "code": "not_found",
                                           "reason": "You have no message 4."}), [])
        return True

    session._send = refuse
    with pytest.raises(client_session.RequestFailed) as caught:
        session.read(4)
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


def test_a_closed_connection_ends_waiting_with_the_servers_reason():
    session, _handlers, _sent = _session()
    session._dispatch([Packet("Welcome", {"user": "bob", "created": False}),
                       Packet("System", {"event": "shutdown",
                                         "message": "The server is shutting down."})])
    session._finish(None)
    with pytest.raises(client_session.ConnectionLost) as caught:
        session.inbox()
    assert caught.value.message == "The server is shutting down."


def test_fatal_login_error_ends_the_login_dialogue():
    session, _handlers, _sent = _session()
    session._dispatch([Packet("Error", {"code": "too_many_attempts", "fatal": True,
                                        "reason": "Wrong password, and that was the "
                                                  "last try."})])
    with pytest.raises(client_session.ServerRefused) as caught:
        session.next_login_step()
    assert caught.value.code == "too_many_attempts"


# ------------------------------------------------------------ login answers


def test_scripted_login_answers_then_stops_on_a_wrong_password():
    login = client_login.ScriptedLogin("Bob", "password1")
    assert login.answer({"prompt": "username", "message": "?"}).fields == {"username": "Bob"}
    prompt = {"prompt": "password", "message": "Password for bob:", "username": "bob"}
    assert login.answer(prompt).fields == {"password": "password1"}
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({**prompt, "message": "Wrong password for bob. 2 tries left."})
    assert caught.value.message == "Wrong password for bob."


def test_scripted_login_without_create_cancels_and_explains():
    login = client_login.ScriptedLogin("zed", "password1")
    answer = login.answer({"prompt": "new_password", "message": "...", "username": "zed"})
    assert answer.fields == {"cancel": True}
    assert answer.stop == "There is no account zed (add --create to create it)."


def test_scripted_login_creates_with_a_good_password_only():
    prompt = {"prompt": "new_password", "message": "...", "username": "zed"}
    assert client_login.ScriptedLogin("zed", "password1", create=True).answer(
        prompt).fields == {"new_password": "password1"}
    answer = client_login.ScriptedLogin("zed", "short", create=True).answer(prompt)
    assert answer.fields == {"cancel": True} and "at least" in answer.stop


def test_scripted_login_stops_when_the_name_is_refused():
    login = client_login.ScriptedLogin("root", "password1")
    login.answer({"prompt": "username", "message": "Username:"})
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({"prompt": "username", "message": "The name 'root' is reserved."})
    assert caught.value.message == "The name 'root' is reserved."


# ------------------------------------------------------------ server key pin

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def test_new_key_is_refused_in_batch_and_accepted_with_the_flag(tmp_path):
    path = str(tmp_path / "known_hosts")
    with pytest.raises(client_session.ServerRefused) as caught:
        client_login.check_server_key(KEY_A, "h:1", path)
    assert "--accept-new-host-key" in caught.value.message
    assert identity.fingerprint(KEY_A) in caught.value.message
    notes = []
    assert client_login.check_server_key(KEY_A, "h:1", path, True, note=notes.append) == "new"
    assert len(notes) == 1
    assert client_login.check_server_key(KEY_A, "h:1", path) == "match"


def test_new_key_at_a_terminal_is_asked(tmp_path):
    path = str(tmp_path / "known_hosts")
    with pytest.raises(client_session.ServerRefused):
        client_login.check_server_key(KEY_A, "h:1", path, ask=lambda q: False,
                                      note=lambda text: None)
    assert client_login.check_server_key(KEY_A, "h:1", path, ask=lambda q: True,
                                         note=lambda text: None) == "new"


def test_changed_key_is_always_refused_with_the_line_to_remove(tmp_path):
    path = tmp_path / "known_hosts"
    identity.KnownHosts(str(path)).add("other:2", KEY_B)
    identity.KnownHosts(str(path)).add("h:1", KEY_A)
    with pytest.raises(client_session.ServerRefused) as caught:
        client_login.check_server_key(KEY_B, "h:1", str(path), accept_new=True,
                                      ask=lambda q: True)
    message = caught.value.message
    assert "CHANGED" in message and "attack" in message and "reinstalled" in message
    assert identity.fingerprint(KEY_A) in message and identity.fingerprint(KEY_B) in message
    assert f"line 2 of {path}" in message


# ------------------------------------------------------------ running commands


class FakeSession:
    def __init__(self):
        self.calls = []

    def delete_account(self):
        self.calls.append("delete_account")
        return {"deleted": True, "bounced": 1}

    def send_message(self, to, subject, body):
        self.calls.append(("send", to, subject, body))
        return {"rid": 1, "id": 5, "bounced": False, "duplicate": False}


def test_batch_runner_needs_whole_send_lines(capsys):
    runner = client_commands.Runner(FakeSession(), client_output.Output(json_mode=True))
    assert runner.run(parse_line("send bob Hi")) == client_commands.FAILED
    record = json.loads(capsys.readouterr().out)
    assert record["type"] == "error" and record["command"] == "send bob Hi"
    assert runner.run(parse_line('send bob Hi "there"')) == client_commands.OK
    assert json.loads(capsys.readouterr().out)["type"] == "sent"


def test_batch_delete_account_asks_nothing(capsys):
    session = FakeSession()
    runner = client_commands.Runner(session, client_output.Output(json_mode=True))
    assert runner.run(parse_line("delete-account")) == client_commands.ACCOUNT_DELETED
    assert json.loads(capsys.readouterr().out) == {"type": "account_deleted", "bounced": 1}
    assert session.calls == ["delete_account"]


def test_interactive_delete_account_needs_the_username(capsys):
    session = FakeSession()
    ui = type("Ui", (), {"confirm_delete": lambda self, user: False})()
    runner = client_commands.Runner(session, client_output.Output(), ui, "bob")
    assert runner.run(parse_line("delete-account")) == client_commands.OK
    assert session.calls == [] and "not deleted" in capsys.readouterr().out


def test_body_editor_end_marker():
    from Modules.client.terminal import strip_end_marker
    assert strip_end_marker("one\ntwo\n.") == "one\ntwo"
    assert strip_end_marker(".") == ""
    assert strip_end_marker("no marker") == "no marker"


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


# ------------------------------------------------------------ the interactive prompt's parts


def test_no_retry_flag_parses():
    assert client_cli.parse_args(["--no-retry"], {}).no_retry
    assert not client_cli.parse_args([], {}).no_retry


def _completions(completer, text):
    from prompt_toolkit.document import Document
    return [c.text for c in completer.get_completions(Document(text), None)]


def test_completion_of_commands_people_and_help_topics():
    from Modules.client.terminal import CommandCompleter, command_names
    completer = CommandCompleter(command_names(["reconnect", "send"]),
                                 lambda: ["bob", "bobby", "carol"])
    assert _completions(completer, "inb") == ["inbox"]
    assert _completions(completer, "rec") == ["reconnect"]
    assert _completions(completer, "send b") == ["bob", "bobby"]
    assert _completions(completer, "send ") == ["bob", "bobby", "carol"]
    assert _completions(completer, "help se") == ["send"]
    assert _completions(completer, "read ") == []
    assert _completions(completer, 'send bob "x') == []
    assert command_names(["send"]).count("send") == 1


def test_interactive_commands_add_reconnect_and_a_bare_send():
    from Modules.client.actions import EXTRA_PARSERS
    assert parse_line("reconnect", EXTRA_PARSERS).name == "reconnect"
    assert parse_line("send", EXTRA_PARSERS).args == {}
    assert parse_line('send bob "a" "b"', EXTRA_PARSERS).args["body"] == "b"
    with pytest.raises(UsageError) as caught:
        parse_line("reconect", EXTRA_PARSERS)
    assert "'reconnect'" in caught.value.reason
    with pytest.raises(UsageError):       # batch mode knows no such command
        parse_line("reconnect")


def test_body_editor_drops_empty_last_lines():
    from Modules.client.terminal import strip_end_marker
    assert strip_end_marker("one\ntwo\n\n") == "one\ntwo"
    assert strip_end_marker("one\n.\n") == "one\n."     # only a final '.' line ends it


def test_wrong_password_says_what_to_do():
    text = client_login.password_refusal("Wrong password for bob. 2 tries left.")
    assert text.endswith("press Ctrl-C to log in with another name.")
    assert client_login.password_refusal("Too many failed logins; try again in 4 "
                                         "seconds.").endswith("4 seconds.")


# ------------------------------------------------------------ what is kept on disk


def test_data_home_follows_xdg():
    from Modules.client.store import account_dir, data_home
    assert data_home({"XDG_DATA_HOME": "/x"}) == "/x/parley"
    assert data_home({"XDG_DATA_HOME": "rel"}).endswith("/.local/share/parley")
    assert account_dir("::1", 7117, "bob", {"XDG_DATA_HOME": "/x"}) == "/x/parley/__1_7117/bob"


def test_store_keeps_valid_people_most_recent_first_and_private(tmp_path):
    import os
    from Modules.client.store import UserStore
    directory = str(tmp_path / "parley" / "h_1" / "alice")
    store = UserStore(directory)
    store.remember("Bob", "carol", "parley", "\x1b[2Jx", "bob", None)
    assert store.people() == ["bob", "carol"]
    store.remember("carol")
    assert UserStore(directory).people() == ["carol", "bob"]
    history = store.history_path()
    assert os.path.exists(history)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    for name in ("history", "people"):
        assert os.stat(os.path.join(directory, name)).st_mode & 0o777 == 0o600


def test_store_works_in_memory_when_it_cannot_write(tmp_path):
    from Modules.client.store import UserStore
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    notes = []
    store = UserStore(str(blocker / "alice"), notes.append)
    store.remember("bob")
    assert store.people() == ["bob"] and store.history_path() is None
    assert len(notes) == 1 and "this run only" in notes[0]


# ------------------------------------------------------------ reconnecting


def test_backoff_grows_to_thirty_seconds_with_some_jitter():
    import itertools
    from Modules.client.link import backoff_delays
    assert list(itertools.islice(backoff_delays(lambda: 0.0), 8)) == [1, 2, 4, 8, 15, 30, 30,
                                                                      30]
    assert next(backoff_delays(lambda: 1.0)) == pytest.approx(1.2)


def test_relogin_never_creates_an_account_and_says_why():
    from Modules.client.link import ReLogin
    login = ReLogin("bob", "password1")
    answer = login.answer({"prompt": "new_password", "message": "...", "username": "bob"})
    assert answer.fields == {"cancel": True} and "no longer exists" in answer.stop
    prompt = {"prompt": "password", "message": "Password:", "username": "bob"}
    assert login.answer(prompt).fields == {"password": "password1"}
    with pytest.raises(client_login.LoginFailed) as caught:
        login.answer({**prompt, "message": "Wrong password for bob. 2 tries left."})
    assert caught.value.code == "wrong_password"


class LinkWatcher:
    def __init__(self):
        self.down = []

    def on_link_down(self, reason, was_up):
        self.down.append((reason, was_up))


def test_link_reports_only_the_end_of_its_current_session():
    from Modules.client.link import Link, _Forwarder
    watcher = LinkWatcher()
    link = Link("127.0.0.1", 1, "kh", watcher, retry=False)
    stale = _Forwarder(link)
    link._forwarder, link.logged_in = _Forwarder(link), True
    link.lost(stale, "old news")
    assert watcher.down == []
    link.lost(link._forwarder, "The server closed the connection.")
    assert watcher.down == [("The server closed the connection.", True)]
    assert not link.logged_in and link.down_reason.startswith("The server")


class FlakySession:
    def __init__(self, failures):
        self.failures, self.calls = failures, []

    def send_message(self, to, subject, body, client_id):
        self.calls.append(client_id)
        if len(self.calls) <= self.failures:
            raise client_session.ConnectionLost("The server closed the connection.")
        return {"id": 9, "bounced": False, "duplicate": len(self.calls) > 1}


def _interactive_runner(session):
    from Modules.client.actions import InteractiveRunner
    from Modules.client.screen import ScreenOutput
    link = type("Link", (), {"session": session, "user": "alice"})()
    client = type("Client", (), {"output": ScreenOutput(), "terminal": None, "link": link,
                                 "remember": lambda self, *names: None})()
    return InteractiveRunner(client)


def test_a_send_cut_off_by_a_lost_connection_is_sent_again_with_the_same_id(capsys):
    from Modules.client.actions import Draft
    session = FlakySession(failures=1)
    runner = _interactive_runner(session)
    runner.deliver(Draft("bob", "Hi", "there", "id-1"))
    assert runner.outbox_summary() == ['to bob: "Hi"']
    assert "will be sent when the connection is back" in capsys.readouterr().err
    runner.flush_outbox()
    assert session.calls == ["id-1", "id-1"] and runner.outbox_summary() == []
    assert "Sent message #9 to bob" in capsys.readouterr().out


# ------------------------------------------------------------ the screen


def test_received_times_read_like_a_person_says_them():
    from datetime import datetime, timedelta
    from Modules.client.screen import received
    now = datetime(2026, 11, 21, 14, 0).astimezone()

    def iso(moment):
        return iso_time(moment.timestamp())
    assert received(iso(now - timedelta(hours=1)), now) == "today 13:00"
    assert received(iso(now - timedelta(days=1)), now) == "yesterday 14:00"
    assert received(iso(now - timedelta(days=30)), now).startswith("22 Oct ")
    assert received(iso(now - timedelta(days=400)), now) == "2025-10-17"
    assert received(None, now) == "?"


def test_fit_counts_terminal_cells():
    from Modules.client.screen import fit
    assert fit("abc", 5) == "abc  "
    assert fit("abcdef", 4) == "abc…"
    assert fit("日本語", 4) == "日… "
    assert fit("x", 0) == ""


def test_pager_asks_between_screens_and_stops_when_told():
    from Modules.client.screen import Pager
    written, answers = [], iter([True, False])
    pager = Pager(written.append, lambda: next(answers), height=5)    # 3 lines a screen
    assert pager.show(range(10)) is False
    assert written == [0, 1, 2, 3, 4, 5] and pager.stopped


def test_next_steps_for_errors():
    from Modules.client.screen import next_step
    assert "'inbox'" in next_step("not_found", "You have no message 4.", "read 4")
    assert next_step("bad_command", "Usage: read ID", "read") == \
        "Type 'help read' for an example."
    assert next_step("busy", "The server is busy.") == "Try again in a moment."
    assert next_step("whatever", "Something.") == ""


def test_every_command_has_help_with_an_example():
    from Modules.client.screen import HELP, ScreenOutput, all_commands
    output = ScreenOutput()
    names = [name for name, _usage, _summary in all_commands()]
    assert set(names) == set(HELP) and "reconnect" in names
    for name in names:
        assert "Example" in output.help_topic(name) and HELP[name][1]
    assert "help COMMAND" in output.help_list()


def test_inbox_table_fits_the_width_neutralises_and_marks_bounces():
    from prompt_toolkit.utils import get_cwidth
    from Modules.client.screen import ScreenOutput
    entries = client_output.inbox_record({"messages": [
        {"id": 12, "from": "bob", "subject": HOSTILE * 5, "sent_at": 1.0, "kind": "message",
         "unread": True},
        {"id": 3, "from": "parley", "subject": "Lost", "sent_at": 1.0, "kind": "bounce",
         "unread": False, "note": "No user named 'zed' exists on this server."}],
        "more": False})["messages"]
    for color in (False, True):
        output = ScreenOutput(color)
        widths = output.inbox_columns(entries, 80)
        lines = [output.inbox_header(widths)] + output.inbox_lines(entries, widths)
        plain = [client_output.re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
        assert all(ch.isprintable() for line in plain for ch in line)
        assert all(sum(map(get_cwidth, line)) <= 80 for line in plain)
        assert plain[1].startswith("* 12  bob") and "Returned: Lost — No user" in plain[2]
        assert ("\x1b[" in "".join(lines)) == color


def test_a_returned_message_says_so_when_read():
    from Modules.client.screen import ScreenOutput
    record = _hostile_message("bounce", "read")
    text = ScreenOutput().render(record)
    assert text.startswith("RETURNED: this message was not delivered to e\\x1bve.")
    sent = client_output.sent_record({"id": 4, "bounced": True, "duplicate": False,
                                      "note": "No user named 'zed' exists."}, "zed")
    assert "Check the name" in ScreenOutput().render(sent)


def test_a_failed_start_says_what_to_do_next():
    from Modules.client.interactive import startup_step
    refused = client_session.ServerRefused("No login within the time allowed.", "timeout")
    assert startup_step(refused) == "Start the client again to log in."
    assert startup_step(client_session.CannotConnect("No answer.", "timeout")) == ""
    assert "administrator" in startup_step(client_session.ServerRefused(
        "Wrong password, and that was the last try.", "too_many_attempts"))
