"""Client test data shared by more than one module of Tests/client.

HOSTILE: a text full of terminal escapes, C1 controls, a bidi override
and a DEL, as a hostile sender would choose it; `_hostile_message(kind,
via)`: the client_output record of a message (or, with kind="bounce", a
returned message) whose every field a person chose is HOSTILE. Used by
test_output (nothing passes an escape) and test_screen (the interactive
screen neither).
"""

from Modules.client import output as client_output

HOSTILE = "a\x1b]0;owned\x07b\x1b[2Jc\x9b1m\u202eevil\x7f\r"


def _hostile_message(kind="message", via="push"):
    message = {"id": 5, "from": "m\x1b[0allory", "to": "bob", "subject": HOSTILE,
               "body": HOSTILE + "\nline 2", "sent_at": 1795227000.5, "kind": kind}
    if kind == "bounce":
        message.update(note=HOSTILE, original_to="e\x1bve")
    return client_output.message_record(message, via)
