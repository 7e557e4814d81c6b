"""Tests for Modules/client/output.py: what batch and --json mode print.

ISO times (UTC, milliseconds; nonsense gives None or "?"), neutralising
terminal escapes (visible, newline and tab kept only in bodies), exact and
inert JSON lines, human rendering that never passes an escape, the --json
record shapes, one object per line with errors also on stderr, and when
colour is allowed. The operator's texts: greeting and motd records, and
broadcasts marked as such in pushes, the inbox and `read`.
"""

import io
import json

import pytest

from Modules.client import output as client_output
from Modules.client.output import iso_time, json_line, neutralise
from Tests.support.client_fakes import HOSTILE, _hostile_message

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
    client_output.greeting_record(HOSTILE), client_output.motd_record(HOSTILE),
    _hostile_message("broadcast"), _hostile_message("broadcast", "read"),
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


# ------------------------------------------------------------ the operator's texts


def test_greeting_and_motd_records_and_text():
    assert client_output.greeting_record("Hi") == {"type": "greeting", "message": "Hi"}
    assert client_output.motd_record("Exam") == {"type": "motd", "message": "Exam"}
    output = client_output.Output()
    assert output.render(client_output.greeting_record("Lab\nserver")) == "Lab\nserver"
    assert output.render(client_output.motd_record("Exam")) == "Message of the day: Exam"


def test_a_broadcast_is_marked_in_pushes_the_inbox_and_read():
    message = {"id": 9, "from": "parley", "to": "bob", "subject": "Exam moved",
               "body": "To Monday.", "sent_at": 0, "kind": "broadcast"}
    output = client_output.Output()
    for via in ("push", "login", "read"):
        record = client_output.message_record(message, via)
        assert record["kind"] == "broadcast"
        assert "[broadcast] from the administrator" in output.render(record)
    inbox = client_output.inbox_record({"messages": [
        {"id": 9, "from": "parley", "subject": "Exam moved", "sent_at": 0,
         "kind": "broadcast", "unread": True}], "more": False})
    assert inbox["messages"][0]["kind"] == "broadcast"
    assert "[broadcast] Exam moved" in output.render(inbox)
