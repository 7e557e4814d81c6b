"""Blocks: the people an account does not take mail from.

(A first version with only what sending needs; the account engineer's
module replaces it.)

Talks to: the storage connection (table `main.blocks`); runs inside the
caller's transaction like `Modules.database.storage`.
"""

NOT_ACCEPTED_NOTE = "The message was not accepted by the recipient."


def refusal_note(db, sender, recipient):
    """The bounce's note if `recipient` blocked `sender`, else None (the note does
    not say why)."""
    row = db.execute("SELECT 1 FROM blocks WHERE owner = ? AND blocked = ?",
                     (recipient, sender)).fetchone()
    return None if row is None else NOT_ACCEPTED_NOTE
