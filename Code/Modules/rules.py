"""The rules a username, password and message must meet, and their limits.

Shared by the server (which enforces them) and the client (which checks
early to give the same clear message sooner). Each check returns the
normalised value or raises `RuleError` with one plain sentence a person can
act on. No I/O, no secrets in messages.
"""

import re

USERNAME_MIN = 3
USERNAME_MAX = 32
PASSWORD_MIN = 8
PASSWORD_MAX = 1024          # bounds the work one hash can cost
SUBJECT_MAX = 200            # characters
BODY_MAX = 64 * 1024         # bytes of UTF-8
CLIENT_ID_MAX = 64           # characters
RESERVED_NAMES = frozenset({"parley", "system", "admin", "root", "postmaster"})
SYSTEM_SENDER = "parley"

_USERNAME_RE = re.compile(r"[a-z][a-z0-9_.-]*")
_USERNAME_CHARACTERS = ("A username starts with a letter and has only the letters a-z, "
                        "digits, '_', '.' and '-'.")
# Every character Python's str.splitlines() breaks a line at: a subject is one line.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# The same characters as one regex class: searched in C, not a generator per character
# (checked on every Send, by the database process and the client).
_LINE_BREAK_RE = re.compile("[" + re.escape("".join(sorted(_LINE_BREAKS))) + "]")
_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_.:-]+")


class RuleError(ValueError):
    """A value a person supplied breaks a rule; `str(error)` says which."""

    code = "invalid"

    def __init__(self, reason, code="invalid"):
        super().__init__(reason)
        self.reason = reason
        self.code = code


def normalize_username(name):
    """Usernames are case-insensitive: 'Alice' and 'alice' are one account.

    Surrounding white space is dropped. Only ASCII is lower-cased: a name
    with anything else in it is refused before lower-casing, so that no
    character folds into a letter (U+212A KELVIN SIGN would become 'k').
    """
    if not isinstance(name, str):
        raise RuleError("A username must be text.", "bad_username")
    name = name.strip()
    if not name.isascii():
        raise RuleError(_USERNAME_CHARACTERS, "bad_username")
    return name.lower()


def check_username(name, allow_reserved=False):
    """The normalised username, or RuleError explaining what is wrong."""
    name = normalize_username(name)
    if not USERNAME_MIN <= len(name) <= USERNAME_MAX:
        raise RuleError(f"A username has {USERNAME_MIN} to {USERNAME_MAX} characters.",
                        "bad_username")
    if not _USERNAME_RE.fullmatch(name):
        raise RuleError(_USERNAME_CHARACTERS, "bad_username")
    if name in RESERVED_NAMES and not allow_reserved:
        raise RuleError(f"The name '{name}' is reserved; choose another.", "bad_username")
    return name


def check_password(password):
    """The password unchanged, or RuleError (never echoing the password)."""
    if not isinstance(password, str):
        raise RuleError("A password must be text.", "bad_password")
    if len(password) < PASSWORD_MIN:
        raise RuleError(f"A password has at least {PASSWORD_MIN} characters.",
                        "bad_password")
    if len(password) > PASSWORD_MAX:
        raise RuleError(f"A password has at most {PASSWORD_MAX} characters.",
                        "bad_password")
    return password


def check_subject(subject):
    """The subject, or RuleError if it is too long or has line breaks."""
    if not isinstance(subject, str):
        raise RuleError("A subject must be text.", "bad_subject")
    if len(subject) > SUBJECT_MAX:
        raise RuleError(f"A subject has at most {SUBJECT_MAX} characters.", "too_large")
    if _LINE_BREAK_RE.search(subject):
        raise RuleError("A subject is one line.", "bad_subject")
    return subject


def check_body(body):
    """The body, or RuleError if it is larger than BODY_MAX bytes."""
    if not isinstance(body, str):
        raise RuleError("A message body must be text.", "bad_body")
    if len(body) > BODY_MAX or len(body.encode("utf-8", "surrogatepass")) > BODY_MAX:
        raise RuleError(f"A message body has at most {BODY_MAX // 1024} KiB.", "too_large")
    return body


def check_client_id(client_id):
    """The client-chosen id that makes a retried send idempotent."""
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= CLIENT_ID_MAX \
            or not _CLIENT_ID_RE.fullmatch(client_id):
        raise RuleError(f"A client id has 1 to {CLIENT_ID_MAX} characters from "
                        "A-Z a-z 0-9 _ . : -.", "bad_client_id")
    return client_id


def check_recipient(name):
    """A recipient must look like a username; whether it exists is the server's call."""
    return check_username(name, allow_reserved=True)
