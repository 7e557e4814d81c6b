"""The operator's command table: `Modules/server/admin_commands.py`.

How a command line becomes requests and an outcome: words counted against
each command's usage, the rest of a line taken as one text, monitor
refusals and a missing database turned into status 1 sentences. The
commands' real effects are checked against real daemons in
`Tests/server/test_admin_cli.py`; here a recording context stands in for
the monitor so that each request can be seen.
"""

import pytest

from Modules.database.link import DbError, DbUnavailable
from Modules.server import admin_commands


class Recorder:
    """Answers every request with `answers[op]` (or raises it) and keeps them all."""

    def __init__(self, **answers):
        self.answers, self.calls, self.stopped = answers, [], None

    def call(self, op, **fields):
        self.calls.append((op, fields))
        answer = self.answers.get(op, {})
        if isinstance(answer, Exception):
            raise answer
        return answer

    def server_figures(self):
        return {"uptime": 5, "connections": 2, "logging_in": 0, "peak_connections": 3}

    def set_log_level(self, level):
        self.level = level

    def shutdown(self, seconds):
        self.stopped = seconds


def test_the_rest_of_the_line_is_one_text():
    context = Recorder(Broadcast={"stored": 3, "live": 1})
    outcome = admin_commands.run(context, ["broadcast", "Lab", "closed", "today"])
    assert context.calls == [("Broadcast", {"text": "Lab closed today"})]
    assert outcome == (0, {"stored": 3, "live": 1},
                       "Broadcast stored for 3 accounts (1 online now).")


@pytest.mark.parametrize("words, said", [
    ([], "Type a command"), (["nope"], "Unknown command 'nope'"), (["kick"], "Usage: kick"),
    (["kick", "a", "b"], "Usage: kick USER"), (["who", "extra"], "Usage: who"),
    (["shutdown", "--in"], "whole seconds"), (["shutdown", "--in", "-5"], "whole seconds"),
])
def test_bad_command_lines_are_status_2_and_ask_nothing(words, said):
    context = Recorder()
    outcome = admin_commands.run(context, words)
    assert outcome.status == 2 and said in outcome.text
    assert context.calls == []


def test_a_refusal_is_status_1_with_its_sentence():
    context = Recorder(Kick=DbError("not_found", "There is no account 'ghost'."))
    assert admin_commands.run(context, ["kick", "ghost"]) == (
        1, {"error": "There is no account 'ghost'.", "code": "not_found"},
        "There is no account 'ghost'.")


def test_a_database_that_does_not_answer_is_status_1():
    outcome = admin_commands.run(Recorder(Who=DbUnavailable("gone")), ["who"])
    assert outcome.status == 1 and "not answering" in outcome.text


def test_shutdown_records_tells_everyone_then_stops():
    context = Recorder()
    outcome = admin_commands.run(context, ["shutdown", "--in", "30", "new", "version"])
    assert context.calls == [("Note", {"action": "shutdown", "detail": "in 30 s"}),
                             ("Announce", {"text": "The server will shut down in 30s: "
                                                   "new version"})]
    assert context.stopped == 30 and outcome.status == 0


def test_settings_are_shown_set_and_cleared():
    context = Recorder(Setting={"name": "motd", "value": ""})
    assert admin_commands.run(context, ["motd"]).text == "No motd is set."
    admin_commands.run(context, ["motd", ""])
    assert context.calls[-1] == ("Setting", {"name": "motd", "value": ""})


def test_who_and_stats_render_tables():
    context = Recorder(Who={"sessions": [{"user": "alice", "address": "10.0.0.1",
                                          "since": 0, "idle": 75}]},
                       ServerStats={"totals": {name: 0 for name in (
                           "accounts", "logins", "failed_logins", "logoffs",
                           "messages_accepted", "messages_delivered", "messages_bounced",
                           "broadcasts")}, "sessions": 1, "peak_sessions": 2,
                           "database_bytes": 2 * 1048576})
    who = admin_commands.run(context, ["who"]).text.splitlines()
    assert who[0].split() == ["user", "address", "since", "online", "idle", "state"]
    assert who[1].startswith("alice") and who[1].split()[-2:] == ["75s", "active"]
    stats = admin_commands.run(context, ["stats"])
    assert "connections now / peak                   2 / 3" in stats.text
    assert stats.data["peak_connections"] == 3 and "2.0 MiB" in stats.text


def test_stats_show_the_file_store_when_the_database_reports_it():
    totals = {name: 0 for name in ("accounts", "logins", "failed_logins", "logoffs",
                                   "messages_accepted", "messages_delivered",
                                   "messages_bounced", "broadcasts")}
    files = {"stored": 3, "stored_bytes": 3 * 1048576, "uploads": 1,
             "upload_bytes": 1048576 // 2, "waiting": 2, "disk_bytes": 4 * 1048576,
             "storage_limit": 50 * 1024 * 1048576}
    context = Recorder(ServerStats={"totals": totals, "sessions": 0, "peak_sessions": 0,
                                    "database_bytes": 0, "files": files})
    stats = admin_commands.run(context, ["stats"])
    lines = {line.split("  ")[0]: line.split("  ")[-1].strip()
             for line in stats.text.splitlines()}
    assert lines["files stored"] == "3 (3.0 MiB of 50.0 GiB), 2 not yet downloaded"
    assert lines["uploads in progress"] == "1 (0.5 MiB)"
    assert lines["files on disk"] == "4.0 MiB"
    assert stats.data["files"] == files


def test_help_lists_every_command_once():
    outcome = admin_commands.run(Recorder(), ["HELP"])
    listed = [entry["usage"].split()[0] for entry in outcome.data["commands"]]
    assert listed == list(admin_commands.COMMANDS)
