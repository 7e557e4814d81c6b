"""Tests for Modules/operations.py: the registry, and everything that must agree with it.

* validation: required and optional fields, defaults, exact types (a bool
  is not an int), ranges, list items, the rules' own codes, and no refusal
  that quotes the value it refused;
* the protocol's schemas and session moves are the registry's;
* docs/PROTOCOL.md documents exactly the registry's session operations,
  with the registry's fields and results, and docs/DESIGN.md quotes the
  monitor's tables as the code builds them;
* every limit the client checks early is the server's: boundary values of
  every limited field go through the client's command parser and through
  the registry's validation (what the monitor runs), and both must agree.
"""

import os
import re
import shlex

import pytest

from Modules import operations, rules
from Modules.client.commands import UsageError, parse_line
from Modules.database.dispatch import describe_tables
from Modules.wire import protocol
from Tests.support import CODE_DIR, PASSWORD

DOCS = os.path.join(os.path.dirname(CODE_DIR), "docs")
ID_MAX = operations.ID_MAX
VALID = {"Send": {"to": "bob", "subject": "s", "body": "b", "client_id": "c1"},
         "Inbox": {}, "Read": {"id": 1}, "Delete": {"ids": [1]},
         "DeleteAccount": {"confirm": True}, "Ack": {"ids": [1]}, "Logout": {},
         "Sent": {}, "History": {"with": "bob"}, "Search": {"text": "lunch"},
         # issue 13, my account
         "ChangePassword": {"old_password": PASSWORD, "new_password": PASSWORD + "!"},
         "Block": {"username": "bob"}, "Unblock": {"username": "bob"}, "Blocked": {},
         # issue 14, files
         "FileOffer": {"to": "bob", "name": "a.txt", "size": 1, "sha256": "0" * 64},
         "FileFetch": {"id": 1, "index": 0}, "FileDecline": {"id": 1}}
VALID.update(Online={}, Presence={}, LastSeen={"username": "bob"})       # presence (issue 13)


def read_doc(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as doc:
        return doc.read()


# -- validation ------------------------------------------------------------------

def test_defaults_fill_absent_optional_fields():
    assert operations.get("Inbox").validate({}) == {"before": None, "limit": 50,
                                                    "unread": None}
    assert operations.get("Inbox").validate({"before": None}) == {"before": None,
                                                                  "limit": 50, "unread": None}


@pytest.mark.parametrize("op, data, code", [
    ("Read", {}, "bad_request"),                                   # missing
    ("Read", {"id": True}, "bad_request"),                         # a bool is no int
    ("Read", {"id": "7"}, "bad_request"),
    ("Read", {"id": 0}, "bad_request"),
    ("Inbox", {"limit": operations.INBOX_PAGE_MAX + 1}, "bad_request"),
    ("Delete", {"ids": [1, "2"]}, "bad_request"),
    ("Delete", {"ids": list(range(1, operations.IDS_MAX + 2))}, "bad_request"),
    ("Send", {**VALID["Send"], "subject": "x" * (rules.SUBJECT_MAX + 1)}, "too_large"),
    ("Send", {**VALID["Send"], "to": "9lives"}, "bad_username"),
    ("DeleteAccount", {"confirm": False}, "bad_request"),
    ("Hello", {"role": "user"}, "bad_request"),
])
def test_a_field_that_breaks_its_limit_is_refused_with_its_code(op, data, code):
    with pytest.raises(rules.RuleError) as info:
        operations.get(op).validate(data)
    assert info.value.code == code
    assert "secret-value" not in info.value.reason


def test_refusals_never_quote_the_value():
    with pytest.raises(rules.RuleError) as info:
        operations.get("Send").validate({**VALID["Send"], "to": "secret-value!"})
    assert "secret-value" not in info.value.reason


def test_checks_normalise_what_they_accept():
    assert operations.get("Send").validate({**VALID["Send"], "to": "Bob"})["to"] == "bob"
    assert operations.get("Hello").validate({"role": "login", "peer": "p" * 100})["peer"] \
        == "p" * operations.PEER_MAX


# -- the protocol reads the registry -------------------------------------------------

def test_the_protocol_schemas_and_moves_are_the_registrys():
    for op in operations.CLIENT_OPERATIONS:
        schema = protocol.SCHEMAS[("client", op.name)]
        fields = {field.name: (field.kind, field.required) for field in op.fields}
        rid = {"required": {"rid": (int, True)}, "optional": {"rid": (int, False)},
               "none": {}}[op.rid]
        assert schema == {**rid, **fields}
        assert protocol.TRANSITIONS[("client", protocol.SESSION, op.name)] == protocol.SESSION
    session_ops = {op for (sender, state, op) in protocol.TRANSITIONS
                   if sender == "client" and state == protocol.SESSION}
    assert session_ops == {op.name for op in operations.CLIENT_OPERATIONS}


def test_every_operation_reaching_the_monitor_has_an_answer_and_a_role():
    for op in operations.OPERATIONS:
        assert op.role in operations.ROLES
        assert (op.handler is not None) == op.reaches_monitor, op.name
        assert not op.relayed or op.client, op.name


# -- the documents ----------------------------------------------------------------

def documented_session_operations(text):
    """{op: (fields, result)} from PROTOCOL.md's table headed op | fields | result | meaning."""
    lines = iter(text.splitlines())
    for line in lines:
        if line.replace(" ", "") == "|op|fields|result|meaning|":
            break
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            return rows
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] != "---":
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_protocol_md_documents_exactly_the_registrys_session_operations():
    documented = documented_session_operations(read_doc("PROTOCOL.md"))
    expected = {op.name: (operations.describe_request(op), operations.describe_reply(op))
                for op in operations.CLIENT_OPERATIONS}
    assert documented == expected


def test_design_md_quotes_the_monitors_tables_as_the_code_builds_them():
    assert describe_tables() in read_doc("DESIGN.md")


def test_protocol_md_lists_every_code_a_refusal_can_carry():
    codes = set(re.findall(r"`([a-z_]+)`", read_doc("PROTOCOL.md").split("Error codes.")[1]
                           .split("### Limits")[0]))
    assert {"bad_frame", "bad_chunk", "bad_batch", "bad_login", "truncated",
            "frame_too_large", "decrypt_failed", "bad_encoding", "illegal_move"} <= codes
    assert {"bad_request", "bad_username", "bad_subject", "too_large", "bad_client_id", "not_found",
            "account_deleted", "unavailable", "internal"} <= codes


# -- the client's limits are the server's ----------------------------------------------

def _ids(values):
    return " ".join(str(value) for value in values)


# (op, field) -> (how the value is put on a command line, values to try).
COMMAND_LINES = {
    ("Send", "to"): (lambda v: f"send {shlex.quote(v)} s b",
                     ["ab", "abc", "a" * 32, "a" * 33, "9lives", "parley", "Bob", "b_b"]),
    ("Send", "subject"): (lambda v: f"send bob {shlex.quote(v)} b",
                          ["x" * rules.SUBJECT_MAX, "x" * (rules.SUBJECT_MAX + 1), "a\nb"]),
    ("Send", "body"): (lambda v: f"send bob s {shlex.quote(v)}",
                       ["x" * rules.BODY_MAX, "x" * (rules.BODY_MAX + 1),
                        "é" * (rules.BODY_MAX // 2), "é" * (rules.BODY_MAX // 2 + 1)]),
    ("Inbox", "before"): (lambda v: f"inbox --before {v}", [0, 1, ID_MAX, ID_MAX + 1]),
    ("Inbox", "limit"): (lambda v: f"inbox --limit {v}",
                         [0, 1, operations.INBOX_PAGE_MAX, operations.INBOX_PAGE_MAX + 1]),
    ("Read", "id"): (lambda v: f"read {v}", [0, 1, ID_MAX, ID_MAX + 1]),
    ("Sent", "before"): (lambda v: f"sent --before {v}", [0, 1, ID_MAX, ID_MAX + 1]),
    ("Sent", "limit"): (lambda v: f"sent --limit {v}",
                        [0, 1, operations.INBOX_PAGE_MAX, operations.INBOX_PAGE_MAX + 1]),
    ("History", "with"): (lambda v: f"history {shlex.quote(v)}",
                          ["ab", "a" * 32, "a" * 33, "9lives", "Bob", "b_b"]),
    ("History", "before"): (lambda v: f"history bob --before {v}", [0, 1, ID_MAX + 1]),
    ("History", "limit"): (lambda v: f"history bob --limit {v}",
                           [0, 1, operations.INBOX_PAGE_MAX + 1]),
    ("Search", "text"): (lambda v: f"search {shlex.quote(v)}",
                         ["lunch", "x" * operations.SEARCH_MAX,
                          "x" * (operations.SEARCH_MAX + 1)]),
    ("Search", "before"): (lambda v: f"search x --before {v}", [0, 1, ID_MAX + 1]),
    ("Search", "limit"): (lambda v: f"search x --limit {v}",
                          [0, 1, operations.INBOX_PAGE_MAX + 1]),
    ("Delete", "ids"): (lambda v: f"delete {_ids(v)}",
                        [[1], [0], [ID_MAX], [ID_MAX + 1],
                         list(range(1, operations.IDS_MAX + 1)),
                         list(range(1, operations.IDS_MAX + 2))]),
    # issue 13, my account
    ("ChangePassword", "old_password"): (
        lambda v: f"passwd {shlex.quote(v)} {shlex.quote(PASSWORD)}",
        ["short", "x" * rules.PASSWORD_MAX, "x" * (rules.PASSWORD_MAX + 1)]),
    ("ChangePassword", "new_password"): (
        lambda v: f"passwd {shlex.quote(PASSWORD)} {shlex.quote(v)}",
        ["x" * 7, "x" * 8, "x" * rules.PASSWORD_MAX, "x" * (rules.PASSWORD_MAX + 1)]),
    ("Block", "username"): (lambda v: f"block {shlex.quote(v)}",
                            ["ab", "abc", "a" * 32, "a" * 33, "9lives", "Bob"]),
    ("Unblock", "username"): (lambda v: f"unblock {shlex.quote(v)}",
                              ["ab", "abc", "a" * 33, "b_b"]),
    # issue 14, files
    ("FileOffer", "to"): (lambda v: f"send-file {shlex.quote(v)} a.txt",
                          ["ab", "abc", "a" * 33, "9lives", "Bob"]),
    ("FileOffer", "note"): (lambda v: f"send-file bob a.txt --note {shlex.quote(v)}",
                            ["x" * operations.FILE_NOTE_MAX, "x" * (operations.FILE_NOTE_MAX + 1),
                             "bell\x07"]),
    ("FileFetch", "id"): (lambda v: f"download {v}", [0, 1, ID_MAX, ID_MAX + 1]),
    ("FileDecline", "id"): (lambda v: f"decline {v}", [0, 1, ID_MAX + 1]),
    ("FileDecline", "note"): (lambda v: f"decline 1 --note {shlex.quote(v)}",
                              ["x" * operations.FILE_NOTE_MAX,
                               "x" * (operations.FILE_NOTE_MAX + 1)]),
}
COMMAND_LINES.update({                                                   # presence (issue 13)
    ("Presence", "state"): (lambda v: f"presence {shlex.quote(v)}",
                            ["on", "off", "OFF", "maybe", "", "o" * 40]),
    ("LastSeen", "username"): (lambda v: f"last {shlex.quote(v)}",
                               ["ab", "abc", "a" * 32, "a" * 33, "9lives", "parley", "Bob"]),
})
# Fields the client fills in itself; no person types them.
SET_BY_THE_CLIENT = {("Send", "client_id"), ("DeleteAccount", "confirm"), ("Ack", "ids"),
                     ("Ack", "read"), ("Online", "after"), ("Online", "limit"),
                     # send-file and download: from the file, the server's answers, the window
                     ("FileOffer", "name"), ("FileOffer", "size"), ("FileOffer", "sha256"),
                     ("FileChunk", "upload"), ("FileChunk", "index"), ("FileChunk", "data"),
                     ("FileDone", "upload"), ("FileFetch", "index")}


def _limited(field):
    return field.low is not None or field.high is not None or field.check is not None \
        or field.items is not None


def test_every_limited_field_a_client_sends_is_checked_here():
    limited = {(op.name, field.name) for op in operations.CLIENT_OPERATIONS
               for field in op.fields if _limited(field)}
    assert limited == set(COMMAND_LINES) | SET_BY_THE_CLIENT


def _client_accepts(line):
    try:
        parse_line(line)
    except UsageError:
        return False
    return True


def _server_accepts(op, field, value):
    try:
        operations.get(op).validate({**VALID[op], field: value})
    except rules.RuleError:
        return False
    return True


@pytest.mark.parametrize("op, field", sorted(COMMAND_LINES))
def test_the_client_accepts_exactly_what_the_server_accepts(op, field):
    line_of, values = COMMAND_LINES[(op, field)]
    verdicts = [(value if len(str(value)) < 40 else f"<{len(value)} long>",
                 _client_accepts(line_of(value)), _server_accepts(op, field, value))
                for value in values]
    disagreements = [v for v in verdicts if v[1] != v[2]]
    assert not disagreements, f"(value, client, server): {disagreements}"
    assert {client for _, client, _ in verdicts} == {True, False}   # both sides tried
