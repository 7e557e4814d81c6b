"""Blocks in storage: mail from a blocked sender is refused without saying why."""

from Modules.database import blocks
from Tests.support.storage import T0, make_users
from Tests.support.storage import send_stored as send


def test_mail_from_someone_the_recipient_blocked_bounces_without_saying_why(db):
    make_users(db, "alice", "bob")
    db.execute("INSERT INTO blocks (owner, blocked, created_at) VALUES ('bob', 'alice', ?)",
               (T0,))
    assert blocks.refusal_note(db, "alice", "bob") == blocks.NOT_ACCEPTED_NOTE
    assert blocks.refusal_note(db, "bob", "alice") is None
    result = send(db, "alice", "bob")
    assert result["bounced"] and result["note"] == "The message was not accepted by the " \
        "recipient."
    assert "block" not in result["note"]
