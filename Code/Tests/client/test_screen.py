"""Tests for Modules/client/screen.py: how the interactive client looks.

Received times as a person says them, widths in terminal cells, the pager
between screens, the next step after an error, help with an example for
every command, the inbox table (fitted to the width, neutralised, bounces
marked) and a returned message marked as such when read or sent.
"""

from Modules.client import output as client_output
from Modules.client.output import iso_time
from Tests.support.client_fakes import HOSTILE, _hostile_message


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


def test_a_broadcast_is_marked_on_the_screen():
    from Modules.client.screen import ScreenOutput, inbox_subject
    message = {"id": 9, "from": "parley", "to": "bob", "subject": "Exam moved",
               "body": "To Monday.", "sent_at": 0, "kind": "broadcast"}
    for via in ("push", "login", "read"):
        text = ScreenOutput().render(client_output.message_record(message, via))
        assert "[broadcast] from the administrator" in text and "Exam moved" in text
    assert inbox_subject({"subject": "Exam moved", "kind": "broadcast"}) == \
        "[broadcast] Exam moved"


def test_lines_wrap_at_spaces_to_the_cells_of_the_terminal():
    from prompt_toolkit.utils import get_cwidth

    from Modules.client.screen import wrap_cells
    assert wrap_cells("one two three four", 9) == ["one two", "three", "four"]
    assert wrap_cells("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]     # no space: cut
    assert wrap_cells("", 10) == [""]
    rows = wrap_cells("日本語のテキスト" * 10, 15)
    assert all(sum(map(get_cwidth, row)) <= 15 for row in rows)
    assert "".join(rows) == "日本語のテキスト" * 10
    assert wrap_cells("a\tb", 80) == ["a    b"]


def test_a_long_push_is_wrapped_and_cut_by_rows_and_by_length():
    from Modules.client.screen import PUSH_BODY_CHARS, push_rows
    rows, complete = push_rows("word " * 1000, columns=80, lines=40)       # 5,000 characters
    assert not complete and len(rows) <= 20 and all(len(row) <= 75 for row in rows)
    rows, complete = push_rows("x" * 5000, columns=400, lines=100)
    assert not complete and sum(map(len, rows)) == PUSH_BODY_CHARS        # wide: by length
    rows, complete = push_rows("line\n" * 30, columns=80, lines=12)
    assert not complete and len(rows) == 6                                 # half a short screen
    assert push_rows("Are you there?", 80, 40) == (["Are you there?"], True)


def test_a_pushed_message_fits_the_screen_and_says_how_to_see_the_rest(monkeypatch):
    from Modules.client import screen
    monkeypatch.setattr(screen, "terminal_size", lambda: (60, 30))
    message = {"id": 7, "from": "bob", "to": "al", "subject": "", "body": "y" * 5000,
               "sent_at": 0, "kind": "message"}
    text = screen.ScreenOutput().render(client_output.message_record(message, "push"))
    lines = text.split("\n")
    assert lines[0].startswith("New message #7 from bob: (no subject)")
    assert len(lines) == 1 + 15 + 1 and all(len(line) <= 60 for line in lines)   # half of 30
    assert lines[-1].strip() == "… cut short here; 'read 7' shows all of it."


def test_a_message_read_in_full_is_wrapped_with_its_header_aligned():
    from Modules.client.screen import ScreenOutput
    record = client_output.message_record(
        {"id": 3, "from": "parley", "to": "al", "subject": "Lost", "sent_at": 0,
         "kind": "bounce", "body": "long " * 100, "original_to": "zed",
         "note": "No user named 'zed' exists on this server."}, "read")
    lines = ScreenOutput().message_lines(record, columns=50)
    assert all(len(line) <= 50 for line in lines)
    assert "Returned: No user named 'zed' exists on this" in lines
    assert "Subject:  Lost" in lines and "Sent to:  zed" in lines
    assert "Returned: No user" in client_output.Output().render(record)   # batch text too


def test_only_a_push_shown_uncut_counts_as_shown_whole(monkeypatch):
    from Modules.client import screen
    monkeypatch.setattr(screen, "terminal_size", lambda: (80, 24))
    output = screen.ScreenOutput()

    def record(body, via):
        return client_output.message_record({"id": 1, "from": "bob", "to": "al",
                                             "subject": "s", "body": body, "sent_at": 0,
                                             "kind": "message"}, via)
    assert output.shows_whole(record("Short.", "push"))
    assert not output.shows_whole(record("x" * 5000, "push"))          # one long line, cut
    assert not output.shows_whole(record("line\n" * 15, "push"))       # more than 12 rows
    assert not output.shows_whole(record("Short.", "login"))           # a heading only
    assert output.shows_whole(record("x" * 5000, "read"))
