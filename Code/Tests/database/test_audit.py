"""The audit trail: `Modules/database/audit.py` (appends, 0600, no secrets; three
lines per account in a report, its file storage the third)."""

import os
import stat

from Modules.database.audit import AuditLog, stamp

T = 1_796_000_000.0


def test_actions_and_reports_are_appended_with_a_utc_stamp(tmp_path):
    audit = AuditLog(str(tmp_path), clock=lambda: T)
    audit.action("root", "kick", "alice", "1 sessions ended")
    users = [{"username": "alice", "logins": 3, "logoffs": 2, "messages_sent": 4,
              "messages_received": 1, "messages_bounced": 0, "broadcasts_received": 1,
              "failed_logins": 1, "last_login": T - 60, "last_login_address": "10.0.0.1",
              "last_failed_login": None, "suspended": False, "files_stored": 2,
              "file_bytes": 4096, "files_waiting": 1}]
    path = audit.report("ops", users, {"logins": 3, "accounts": 1})
    text = open(path).read()
    lines = text.splitlines()
    assert lines[0] == f"{stamp(T)} action kick by root: alice (1 sessions ended)"
    assert lines[1] == f"{stamp(T)} report by ops: 1 accounts"
    assert "alice  logins=3 logoffs=2 sent=4 received=1 bounced=0 broadcasts=1 failed=1" \
        in lines[2]
    assert f"last_login={stamp(T - 60)} from 10.0.0.1 last_failed=- state=active" in lines[3]
    assert lines[4] == "      files_stored=2 file_bytes=4096 files_waiting=1"
    assert lines[5] == "  server  accounts=1 logins=3"
    assert lines[6] == f"{stamp(T)} end of report"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    AuditLog(str(tmp_path), clock=lambda: T + 1).action("root", "audit")
    assert open(path).read().startswith(text)                   # never rewritten


def test_control_characters_cannot_forge_lines(tmp_path):
    audit = AuditLog(str(tmp_path), clock=lambda: T)
    audit.action("root\n2026-01-01T00:00:00Z action forged", "kick", "bob\r\x1b[2J")
    lines = open(audit.path).read().splitlines()
    assert len(lines) == 1 and "\x1b" not in lines[0]


def test_stamp_is_iso_8601_utc():
    assert stamp(0) == "1970-01-01T00:00:00Z" and stamp(None) == "-"


def test_with_the_data_dir_encrypted_entries_go_to_the_log_not_a_file(tmp_path, caplog):
    audit = AuditLog(str(tmp_path), clock=lambda: 0.0, to_log=True)
    with caplog.at_level("WARNING", logger="parley.audit"):
        audit.action("root", "kick", "alice", "1 session ended")
        assert audit.report("root", [{"username": "bob"}], {"logins": 1}) == "the server log"
    assert os.listdir(tmp_path) == []
    assert "audit: 1970-01-01T00:00:00Z action kick by root: alice" in caplog.text
    assert "  bob  " in caplog.text
