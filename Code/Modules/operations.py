"""The registry: every operation a session or a monitor connection may send, once.

One declarative table, `OPERATIONS`. Each `Operation` says:

* `name`, and the monitor *role* whose connections may send it: "new" (a
  connection that has not said who it is), "login" (a login process),
  "user" (a user process, bound to one account);
* `fields`: the request's fields, each a `Field` with its type, whether
  it is required, its limits (`low`/`high`: a number's range, a string's
  length, a list's number of items; `items`: the Field of a list's items)
  and the rule it must meet (`check`, from `Modules.rules`);
* `reply`: the fields of the answer ("note?" marks an optional one);
* flags: `client` (a client sends it on the TCP connection), `relayed`
  (the user process passes it on to the monitor), `replies` (the monitor
  answers it; an Ack gets no answer), `once` (at most once per
  connection), `phase` (the monitor phase the connection enters when the
  request is accepted), and `rid` (whether the client's request id is
  required, optional or absent);
* `handler`: the name of the method that answers it in the role's answer
  set (`Modules.database.answers`), and `command`: the client command
  that sends it.

Who reads it: `wire.protocol` (the packet schemas and legal moves of a
session), `server.user_process` (what to relay, which reply fields to
pass back), `database.monitor` (the per-role dispatch tables and the
validation of every request), `database.link` (which requests are
answered), and the client (the same limits for early, clear errors).
`docs/PROTOCOL.md` documents exactly these operations; a test keeps the two
equal. Adding an operation touches this table, one handler and the
client's command.

Talks to nothing; `validate()` raises `rules.RuleError` with the code and
sentence a refusal carries, and never echoes the value it refused.
"""

from typing import Callable, NamedTuple

from Modules import rules

NEW, LOGIN, USER, ADMIN, CLOSED = "new", "login", "user", "admin", "closed"
DAEMON = "daemon"                 # the daemon's link for parked sessions (issue 16)
ROLES = (NEW, LOGIN, USER, ADMIN, DAEMON)
ID_MAX = 2 ** 63 - 1              # message ids are positive 64-bit integers
INBOX_PAGE_MAX = 200              # the most messages one Inbox answer lists
INBOX_PAGE_DEFAULT = 50
IDS_MAX = 10_000                  # the most ids one Delete or Ack may name
PEER_MAX = 64                     # characters of a peer description kept
SETTINGS = ("greeting", "motd", "mailbox_messages", "mailbox_bytes",   # set live
            "reserved_name_days")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAILBOX_DEFAULTS = {"mailbox_messages": 10_000,          # an inbox's limits (settings)
                    "mailbox_bytes": 100 * 1024 * 1024}
SEARCH_MAX = 200                  # characters of a search text
TEXT_MAX = 2000                   # characters of a greeting, motd, broadcast or announcement
ONLINE_PAGE_MAX = 200             # the most people one Online answer lists
ONLINE_PAGE_DEFAULT = 100
PRESENCE_STATES = ("on", "off")
FILE_NAME_MAX = 255               # characters of a file's name (as its sender gave it)
FILE_NOTE_MAX = 2000              # characters of a file's note, or a decline's
FILE_CHUNK = 64 * 1024            # plaintext bytes of one FileChunk / FileFetch
FILE_CHUNK_BASE64 = 4 * FILE_CHUNK // 3 + 4   # ... as base64 text
_MISSING = object()


class Field(NamedTuple):
    """One field of a request: its type, its limits and its rule."""

    name: str
    kind: type
    required: bool = True
    low: int | None = None        # int: smallest value; str: fewest characters; list: items
    high: int | None = None       # int: largest value; str: most characters; list: items
    items: "Field | None" = None  # list: every item must pass this field's checks
    check: Callable | None = None  # the normalised value, or rules.RuleError
    default: object = None        # the value of an optional field that is absent

    def clean(self, value, where):
        """The value as the handler gets it, or RuleError naming `where`."""
        if type(value) is not self.kind and (   # noqa: E721 -- the exact type, fast
                not isinstance(value, self.kind) or isinstance(value, bool)):
            raise rules.RuleError(f"{where}: {self.name} must be {_KIND_WORDS[self.kind]}.",
                                  "bad_request")
        if self.low is not None or self.high is not None:
            size = value if self.kind is int else len(value)
            if (self.low is not None and size < self.low) or (
                    self.high is not None and size > self.high):
                raise rules.RuleError(f"{where}: {self.name} {self.limit_text()}.",
                                      "bad_request")
        if self.items is not None:
            value = self.items.clean_all(value, where)
        return self.check(value) if self.check is not None else value

    def clean_all(self, values, where):
        """Every item of a list, cleaned; integers in a range take a fast path
        (an Ack may name thousands of ids)."""
        if self.kind is int and self.check is None and self.items is None:
            if all(type(value) is int for value in values) and (   # noqa: E721 -- no bools
                    not values or ((self.low is None or min(values) >= self.low)
                                   and (self.high is None or max(values) <= self.high))):
                return values
        return [self.clean(value, where) for value in values]

    def limit_text(self):
        """'is between 1 and 200', 'has at most 64 characters', ... ('' without limits)."""
        unit = {str: " characters", list: " items"}.get(self.kind, "")
        if self.kind is int:
            if self.low is not None and self.high is not None:
                return f"is between {self.low} and {self.high}"
            return f"is at least {self.low}" if self.low is not None else f"is at most {self.high}"
        if self.low is not None and self.high is not None:
            return f"has {self.low} to {self.high}{unit}"
        if self.high is not None:
            return f"has at most {self.high}{unit}"
        return f"has at least {self.low}{unit}" if self.low is not None else ""


_KIND_WORDS = {str: "text", int: "an integer", bool: "true or false", list: "a list",
               dict: "an object"}

# Fields that several operations share.
MESSAGE_ID = Field("id", int, low=1, high=ID_MAX)
MESSAGE_IDS = Field("ids", list, high=IDS_MAX, items=MESSAGE_ID._replace(name="id"))
USERNAME = Field("username", str, check=rules.check_username)
BEFORE = Field("before", int, required=False, low=1, high=ID_MAX)
LIMIT = Field("limit", int, required=False, low=1, high=INBOX_PAGE_MAX,
              default=INBOX_PAGE_DEFAULT)


def _must_be_true(value):
    if value is not True:
        raise rules.RuleError("DeleteAccount needs confirm: true.", "bad_request")
    return value


def _login_role(value):
    if value != "login":
        raise rules.RuleError("Hello takes role 'login'.", "bad_request")
    return value


def _short(value):
    return value[:PEER_MAX]


def _one_of(choices, what):
    def check(value):
        cleaned = value.strip().lower()
        cleaned = cleaned.upper() if cleaned.upper() in choices else cleaned
        if cleaned not in choices:
            raise rules.RuleError(f"Unknown {what} '{value[:32]}': use "
                                  f"{', '.join(choices)}.", "bad_request")
        return cleaned
    return check


def _operator_text(value):
    """An operator's text for people's screens: no control characters but newlines."""
    if any(ord(ch) < 32 and ch not in "\n\t" or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise rules.RuleError("The text may not hold control characters.", "bad_request")
    return value


def _sha256_hex(value):
    """A SHA-256 as 64 hexadecimal digits, lower-cased."""
    cleaned = value.strip().lower()
    if len(cleaned) != 64 or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise rules.RuleError("sha256 must be 64 hexadecimal digits.", "bad_request")
    return cleaned


def _x25519_hex(value):
    """An X25519 public key as 64 hexadecimal digits."""
    if len(value) != 64 or any(ch not in "0123456789abcdef" for ch in value):
        raise rules.RuleError("ephemeral must be 64 lower-case hexadecimal digits.",
                              "bad_request")
    return value


PATH_MAX = 4096                   # characters of a path the operator names


def _absolute_path(value):
    """A path the database process can use whatever its working directory."""
    if not value.startswith("/") or "\0" in value:
        raise rules.RuleError("The directory must be an absolute path.", "bad_request")
    return value


ACCOUNT = Field("username", str, check=rules.check_recipient)   # an existing account's name
TEXT = Field("text", str, low=1, high=TEXT_MAX, check=_operator_text)
TICKET = Field("ticket", str, high=256)
BLOCKED_NAME = Field("username", str, check=rules.check_recipient)   # block, unblock


class Operation(NamedTuple):
    """One operation: who may send it, its fields, its answer, its flags."""

    name: str
    role: str
    handler: str | None           # None: the user process answers it, not the monitor
    fields: tuple = ()
    reply: tuple = ()
    client: bool = False          # a client sends it in SESSION over TCP
    relayed: bool = False         # the user process passes it on to the monitor
    replies: bool = True          # the monitor answers it
    once: bool = False            # at most once per monitor connection
    phase: str | None = None      # the phase a monitor connection enters on acceptance
    rid: str = "required"         # the client's request id: required, optional, none
    command: str | None = None    # the client command that sends it
    summary: str = ""

    def field(self, name):
        return next(f for f in self.fields if f.name == name)

    def validate(self, data):
        """The request's fields as the handler gets them (defaults filled in).

        Unknown fields are ignored; a missing, mistyped, out-of-range or
        rule-breaking field raises rules.RuleError.
        """
        args = {}
        for spec in self.fields:
            value = data.get(spec.name, _MISSING)
            if value is _MISSING or (value is None and not spec.required):
                if spec.required:
                    raise rules.RuleError(f"{self.name}: the field '{spec.name}' is "
                                          "missing.", "bad_request")
                args[spec.name] = spec.default
            else:
                args[spec.name] = spec.clean(value, self.name)
        return args

    @property
    def reaches_monitor(self):
        """Whether the monitor ever sees it (Logout stays in the user process)."""
        return self.relayed or not self.client

    def reply_fields(self):
        """The reply's field names, without the '?' of optional ones."""
        return tuple(name.rstrip("?") for name in self.reply)


OPERATIONS = (
    # -- role "new": a fresh monitor connection says what it is ------------------
    Operation("Hello", NEW, "hello", once=True, phase=LOGIN,
              fields=(Field("role", str, check=_login_role),
                      Field("peer", str, required=False, default="?", check=_short),
                      Field("address", str, required=False, check=_short)),
              reply=("greeting?",),
              summary="a login process introduces itself (peer, address); the greeting"),
    Operation("Bind", NEW, "bind", once=True, phase=USER,
              fields=(TICKET,
                      Field("peer", str, required=False, default="?", check=_short)),
              reply=("user",),
              summary="a user process binds the connection to its ticket's account"),
    # -- role "login": a login process, before anyone is authenticated ------------
    Operation("Exists", LOGIN, "exists", fields=(USERNAME,), reply=("outcome", "reason?"),
              summary="outcome exists, missing or registration_closed"),
    Operation("Verify", LOGIN, "verify",
              fields=(USERNAME, Field("password", str, high=rules.PASSWORD_MAX)),
              reply=("outcome", "ticket?", "reason?", "retry_after?", "motd?"),
              summary="outcome verified (with a ticket), wrong_password, throttled, busy, "
                      "suspended or must_change"),
    Operation("Create", LOGIN, "create",
              fields=(USERNAME, Field("password", str, check=rules.check_password)),
              reply=("outcome", "ticket?", "reason?", "retry_after?", "motd?"),
              summary="outcome created (with a ticket), create_failed or throttled"),
    Operation("KeyAgree", LOGIN, "key_agree", once=True,
              fields=(Field("ephemeral", str, check=_x25519_hex),),
              reply=("shared",),
              summary="the X25519 agreement of the server's static key with this "
                      "connection's handshake key (hex); once per login process, the key "
                      "never leaves the monitor"),
    Operation("SetPassword", LOGIN, "set_password",
              fields=(Field("password", str, check=rules.check_password),),
              reply=("outcome", "ticket?", "reason?", "retry_after?", "motd?"),
              summary="after must_change on this connection: the new password; outcome "
                      "verified (with a ticket) or busy"),
    # -- role "user": a user process, bound to one account ------------------------
    Operation("Subscribe", USER, "subscribe", once=True, reply=("backlog",),
              summary="push the stored backlog, then every new message"),
    Operation("Park", USER, "park",
              fields=(Field("seen", int, low=0, high=ID_MAX),),
              summary="an idle session hands its connection back to the daemon: no more "
                      "pushes here, the user stays online; refused (busy) if anything "
                      "above message id `seen` was pushed meanwhile or a file is uploading"),
    Operation("Send", USER, "send", client=True, relayed=True, command="send",
              fields=(Field("to", str, check=rules.check_recipient),
                      Field("subject", str, check=rules.check_subject),
                      Field("body", str, check=rules.check_body),
                      Field("client_id", str, check=rules.check_client_id)),
              reply=("id", "bounced", "duplicate", "note?"),
              summary="send a message"),
    Operation("Inbox", USER, "inbox", client=True, relayed=True, command="inbox",
              fields=(BEFORE, LIMIT, Field("unread", bool, required=False)),
              reply=("messages", "more"),
              summary="list own messages (only the unread ones if unread), newest first, "
                      "ids below before"),
    Operation("Read", USER, "read", client=True, relayed=True, command="read",
              fields=(MESSAGE_ID,), reply=("message",),
              summary="one own message, received (marks it read) or sent"),
    Operation("Delete", USER, "delete", client=True, relayed=True, command="delete",
              fields=(MESSAGE_IDS,), reply=("deleted", "missing"),
              summary="delete own copies (received or sent; the other person's stays)"),
    # -- role "user": my mail and my conversations (issue 13) ---------------------
    Operation("Sent", USER, "sent", client=True, relayed=True, command="sent",
              fields=(BEFORE, LIMIT), reply=("messages", "more"),
              summary="list own sent copies (delivered, read), newest first"),
    Operation("History", USER, "history", client=True, relayed=True, command="history",
              fields=(Field("with", str, check=rules.check_recipient), BEFORE, LIMIT),
              reply=("messages", "more"),
              summary="the conversation with one person, both directions, newest first"),
    Operation("Search", USER, "search", client=True, relayed=True, command="search",
              fields=(Field("text", str, low=1, high=SEARCH_MAX), BEFORE, LIMIT),
              reply=("messages", "more"),
              summary="own messages (received and sent) holding every word of text"),
    Operation("DeleteAccount", USER, "delete_account", client=True, relayed=True,
              phase=CLOSED, command="delete-account",
              fields=(Field("confirm", bool, check=_must_be_true),),
              reply=("deleted", "bounced"),
              summary="delete the account (`confirm` must be true; see section 6)"),
    Operation("Ack", USER, "ack", client=True, relayed=True, replies=False, rid="none",
              fields=(MESSAGE_IDS, MESSAGE_IDS._replace(name="read", required=False)),
              summary="the client has shown these messages, those in read in full "
                      "(no reply)"),
    Operation("Logout", USER, None, client=True, rid="optional", command="logout",
              summary="end the session (answered by the user process itself)"),
    # -- role "user": presence (issue 13) ------------------------------------------
    Operation("Online", USER, "online", client=True, relayed=True, command="who",
              fields=(Field("after", str, required=False, high=rules.USERNAME_MAX),
                      Field("limit", int, required=False, low=1, high=ONLINE_PAGE_MAX,
                            default=ONLINE_PAGE_DEFAULT)),
              reply=("people", "more"),
              summary="the people online now whom this user may see (user, since, idle "
                      "seconds), by name, names after `after`"),
    Operation("Presence", USER, "presence", client=True, relayed=True, command="presence",
              fields=(Field("state", str, required=False, high=32,
                            check=_one_of(PRESENCE_STATES, "presence setting")),),
              reply=("presence",),
              summary="set (`on`: seen, `off`: invisible and told nothing) or, without "
                      "`state`, show this user's presence"),
    Operation("LastSeen", USER, "last_seen", client=True, relayed=True, command="last",
              fields=(ACCOUNT,), reply=("user", "online", "since?", "last_seen?"),
              summary="whether a person is online (since when) or when they last were; "
                      "nothing if hidden from this user or no such account"),
    # -- role "user": my account (issue 13) ----------------------------------------
    Operation("ChangePassword", USER, "change_password", client=True, relayed=True,
              command="passwd",
              fields=(Field("old_password", str, high=rules.PASSWORD_MAX),
                      Field("new_password", str, check=rules.check_password)),
              reply=("ended",),
              summary="replace the password (the old one is checked); the account's other "
                      "sessions end"),
    Operation("Block", USER, "block", client=True, relayed=True, command="block",
              fields=(BLOCKED_NAME,), reply=("changed",),
              summary="refuse mail from that account (its sender is told only "
                      "\"not accepted\")"),
    Operation("Unblock", USER, "unblock", client=True, relayed=True, command="unblock",
              fields=(BLOCKED_NAME,), reply=("changed",),
              summary="accept mail from that name again"),
    Operation("Blocked", USER, "blocked", client=True, relayed=True, command="blocked",
              reply=("blocked",),
              summary="the names I block, with since when"),
    # -- role "user": files between people (issue 14; `Modules/database/files.py`) ----
    Operation("FileOffer", USER, "file_offer", client=True, relayed=True,
              command="send-file",
              fields=(Field("to", str, check=rules.check_recipient),
                      Field("name", str, low=1, high=FILE_NAME_MAX),
                      Field("size", int, low=0, high=ID_MAX),
                      Field("sha256", str, check=_sha256_hex),
                      Field("note", str, required=False, high=FILE_NOTE_MAX,
                            check=_operator_text)),
              reply=("upload", "chunk_size", "chunks", "next", "resumed"),
              summary="announce a file for `to` (size and SHA-256 up front); refused "
                      "before any byte when too large or over the quota; the same file "
                      "again resumes its upload from chunk `next`"),
    Operation("FileChunk", USER, "file_chunk", client=True, relayed=True,
              command="send-file",
              fields=(Field("upload", int, low=1, high=ID_MAX),
                      Field("index", int, low=0, high=ID_MAX),
                      Field("data", str, high=FILE_CHUNK_BASE64)),
              reply=("received",),
              summary="chunk `index` of an upload, base64, in order"),
    Operation("FileDone", USER, "file_done", client=True, relayed=True,
              command="send-file",
              fields=(Field("upload", int, low=1, high=ID_MAX),),
              reply=("id", "message", "bounced", "note?"),
              summary="every chunk sent: stored durably if the SHA-256 matches, and "
                      "offered to the recipient"),
    Operation("Files", USER, "files", client=True, relayed=True, command="files",
              reply=("files",),
              summary="the files offered to me and those I sent, newest first"),
    Operation("FileFetch", USER, "file_fetch", client=True, relayed=True,
              command="download",
              fields=(MESSAGE_ID._replace(name="id"),
                      Field("index", int, low=0, high=ID_MAX)),
              reply=("data", "index", "chunks", "size", "sha256", "name"),
              summary="chunk `index` of a file offered to me or sent by me, base64"),
    Operation("FileDecline", USER, "file_decline", client=True, relayed=True,
              command="decline",
              fields=(MESSAGE_ID._replace(name="id"),
                      Field("note", str, required=False, high=FILE_NOTE_MAX,
                            check=_operator_text)),
              reply=("declined",),
              summary="return a file offered to me to its sender, as a bounce"),
    # -- role "admin": the daemon, for the operator's console and command line -----
    Operation("Admin", NEW, "admin", once=True, phase=ADMIN,
              fields=(Field("operator", str, low=1, high=64, check=_short),),
              summary="the daemon opens an admin connection for `operator` (a Unix user)"),
    # -- role "daemon": the daemon's link for parked sessions (issue 16) ------------
    Operation("Daemon", NEW, "daemon", once=True, phase=DAEMON,
              summary="the daemon opens its parking link (SO_PEERCRED pid must be the "
                      "daemon's); the monitor sends it `Wake` packets"),
    Operation("Parked", DAEMON, "parked", replies=False, fields=(TICKET,),
              summary="the daemon holds this ticket's connection parked (after a hand-back "
                      "the database may not have seen, e.g. across its restart)"),
    Operation("Ended", DAEMON, "ended", replies=False, fields=(TICKET,),
              summary="this ticket's connection is closed: a parked session of it is over"),
    Operation("Who", ADMIN, "who", reply=("sessions",),
              summary="who is online: user, address, since, idle seconds"),
    Operation("Users", ADMIN, "users", reply=("users", "more"),
              fields=(Field("pattern", str, required=False, high=64),),
              summary="accounts (matching a shell pattern) with their statistics"),
    Operation("UserStats", ADMIN, "user_stats", fields=(ACCOUNT,), reply=("user",),
              summary="one account's statistics"),
    Operation("ServerStats", ADMIN, "server_stats", reply=("totals", "sessions",
                                                          "peak_sessions", "database_bytes",
                                                          "files"),
              summary="the server's totals and figures, file storage included"),
    Operation("Ledger", ADMIN, "ledger", fields=(ACCOUNT,), reply=("addresses", "active"),
              summary="the IP ledger of one account"),
    Operation("Broadcast", ADMIN, "broadcast", fields=(TEXT,), reply=("stored", "live"),
              summary="a message to every account, stored, from the reserved sender"),
    Operation("Announce", ADMIN, "announce", fields=(TEXT,), reply=("told",),
              summary="a notice to everyone online, not stored"),
    Operation("Kick", ADMIN, "kick", fields=(ACCOUNT,), reply=("ended",),
              summary="end an account's sessions"),
    Operation("Suspend", ADMIN, "suspend", fields=(ACCOUNT,), reply=("changed", "ended"),
              summary="an account may not log in; its sessions end"),
    Operation("Unsuspend", ADMIN, "unsuspend", fields=(ACCOUNT,), reply=("changed",),
              summary="an account may log in again"),
    Operation("ResetPassword", ADMIN, "reset_password", fields=(ACCOUNT,),
              reply=("password",),
              summary="a one-time password the user must change at the next login"),
    Operation("DeleteUser", ADMIN, "delete_user", fields=(ACCOUNT,), reply=("bounced",),
              summary="delete an account as its own delete-account does"),
    Operation("ReleaseName", ADMIN, "release_name", fields=(USERNAME,), reply=("released",),
              summary="a deleted account's name may be taken again now (issue 13)"),
    Operation("Setting", ADMIN, "setting",
              fields=(Field("name", str, high=32, check=_one_of(SETTINGS, "setting")),
                      Field("value", str, required=False, high=TEXT_MAX,
                            check=_operator_text)),
              reply=("name", "value"),
              summary="read or set the greeting, the message of the day or the days a deleted "
                      "account's name is kept back"),
    Operation("Audit", ADMIN, "audit", reply=("path", "accounts"),
              summary="append a report of every account to audit.log"),
    Operation("Backup", ADMIN, "backup",
              fields=(Field("directory", str, low=2, high=PATH_MAX, check=_absolute_path),),
              reply=("directory", "files", "bytes", "ids", "missing_files", "seconds"),
              summary="an online, consistent copy of the databases, stored files and keys "
                      "into a new directory (issue 15)"),
    Operation("Note", ADMIN, "note",
              fields=(Field("action", str, low=1, high=32, check=_operator_text),
                      Field("detail", str, required=False, high=200, check=_operator_text)),
              summary="record an action the daemon carries out (shutdown) in the audit trail"),
    Operation("LogLevel", ADMIN, "log_level",
              fields=(Field("level", str, high=16, check=_one_of(LOG_LEVELS, "level")),),
              reply=("level",), summary="the database process's log level"),
)

BY_NAME = {operation.name: operation for operation in OPERATIONS}
CLIENT_OPERATIONS = tuple(op for op in OPERATIONS if op.client)


def describe_request(operation):
    """The request's fields as docs/PROTOCOL.md lists them (a test keeps them equal)."""
    words = {"required": ["`rid`"], "optional": ["`rid?`"], "none": []}[operation.rid]
    return ", ".join(words + [_describe_field(field) for field in operation.fields]) or "none"


def describe_reply(operation):
    """The reply's fields as docs/PROTOCOL.md lists them ("no reply" for an Ack)."""
    if not operation.replies:
        return "no reply"
    if operation.handler is None:          # Logout: the user process says goodbye
        return "`System` `goodbye`"
    return ", ".join(f"`{name}`" for name in operation.reply) or "nothing"


def _describe_field(field):
    kind = f"[{_TYPE_NAMES[field.items.kind]}]" if field.items else _TYPE_NAMES[field.kind]
    text = f"`{field.name}{'' if field.required else '?'}: {kind}`"
    notes = [_range_text(field)] if field.low is not None or field.high is not None else []
    if field.items is not None and (field.items.low is not None or field.items.high is not None):
        notes.append(f"each {_range_text(field.items)}")
    if field.default is not None and not field.required:
        notes.append(f"default {field.default}")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _range_text(field):
    def number(value):
        return "2^63−1" if value == ID_MAX else str(value)
    unit = {str: " characters", list: " items"}.get(field.kind, "")
    if field.low is not None and field.high is not None:
        return f"{number(field.low)}–{number(field.high)}{unit}"
    if field.high is not None:
        return f"at most {number(field.high)}{unit}"
    return f"at least {number(field.low)}{unit}"


_TYPE_NAMES = {str: "str", int: "int", bool: "bool", list: "list", dict: "object"}


def get(name):
    """The operation called `name`, or None."""
    return BY_NAME.get(name)


def for_role(role):
    """The operations a monitor connection in `role` may send, in table order."""
    return tuple(op for op in OPERATIONS if op.role == role and op.reaches_monitor)
