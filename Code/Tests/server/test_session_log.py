"""Tests for Modules/server/session_log.py: a user session's log lines."""

import logging

from Modules.server.session_log import SessionLog, message_size


def test_deliveries_acknowledged_together_are_one_log_line_naming_each(caplog):
    trace = SessionLog("bob")
    with caplog.at_level(logging.INFO, logger="parley.user"):
        for n in (1, 2, 3):
            trace.pushed({"id": n, "from": "alice", "subject": "s", "body": "x" * n,
                          "kind": "bounce" if n == 3 else "message"})
        trace.acknowledged([1, 2, 3, 99, "x"])           # 99 was never pushed: not logged
        trace.pushed({"id": 4, "from": "carol", "subject": "hi", "body": "", "kind": "message"})
        trace.acknowledged([4])
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["delivered to bob: #1 from alice (2 bytes), #2 from alice (3 bytes), "
                     "bounce #3 from alice (4 bytes)",
                     "delivered #4 from carol to bob (2 bytes)"]
    assert trace.delivered == 4


def test_a_size_counts_utf8_bytes_of_subject_and_body_and_the_end_says_how(caplog):
    assert message_size("é", "ab") == 4
    trace = SessionLog("bob")
    trace.send_result(("carol", 5), {"id": 3, "bounced": True})
    with caplog.at_level(logging.INFO, logger="parley.user"):
        trace.send_result(("carol", 5), {"id": 4})
        trace.ended("logout")
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "bob sent #4 to carol (5 bytes)"
    assert lines[1].startswith("bob logged out (after ") and "1 sent, 0 delivered" in lines[1]
