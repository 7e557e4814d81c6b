"""The client's commands: parsing one command line, and running it.

One syntax for the interactive prompt and for batch input: words split the
way a POSIX shell splits them (`shlex`), so `send bob "Lunch" "At noon?"`
has three arguments. In batch input a quotation may stay open across
lines; the lines are joined with newlines (`LineJoiner`), which is how a
multi-line body is written. Blank lines and lines starting with # are
ignored.

    send TO [SUBJECT [BODY]]       inbox [--before ID] [--limit N]
    read ID                        delete ID [ID ...]
    delete-account                 help [COMMAND]
    logout (also quit, exit)

`parse_line()` is pure: it returns a `Command` or None and raises
`UsageError` with one sentence (naming the closest known command when the
word is unknown). The `Runner` carries a parsed command out through a
`ClientSession` and hands every result or error to the `Output` as a
record; a missing subject or body, or the delete-account confirmation, is
asked through the `ui` object in interactive mode (batch mode has none:
the command must be complete and delete-account is not asked again).

Failures: a usage mistake or an Error reply is reported for that command
and the session goes on (the outcome is "failed"); a lost connection
(`ConnectionLost`) propagates to the caller, which ends the session.
"""

import difflib
import shlex

from Modules import operations, rules
from Modules.client import (
    account_commands,
    file_commands,
    mail_commands,
    people_commands,
)
from Modules.client import output as out_mod
from Modules.client.command_words import (  # noqa: F401  (re-exported API)
    Cancelled,
    Command,
    UsageError,
    checked,
    message_id,
    no_arguments,
    no_on_cancel,
    page_limit,
    parse_flags,
    passes,
)
from Modules.client.session import RequestFailed

# The command modules beside this one: each has COMMANDS (name, usage,
# summary), PARSERS {name: parse(words)} and RUNS {name: run(runner, args)}.
EXTENSIONS = (mail_commands, account_commands, people_commands, file_commands)

COMMANDS = (
    ("send", "send TO [SUBJECT [BODY]]", "send a message (asks for what is missing)"),
    ("inbox", "inbox [--before ID] [--limit N]", "list your messages, newest first"),
    ("read", "read ID", "show one message in full and mark it read"),
    ("delete", "delete ID [ID ...]", "delete messages"),
    ("delete-account", "delete-account", "delete your account; unread messages "
                                         "go back to their senders"),
    ("help", "help [COMMAND]", "this list"),
    ("logout", "logout", "log out and quit (also: quit, exit, Ctrl-D)"),
)
COMMANDS = COMMANDS[:-2] + tuple(
    entry for module in EXTENSIONS for entry in module.COMMANDS) + COMMANDS[-2:]
ALIASES = {"quit": "logout", "exit": "logout", "?": "help"}
MAX_LINE = 4 * rules.BODY_MAX     # a batch command with an open quote stops here
# The limits a command checks early are the server's own, from the registry.
SEND = operations.get("Send")
INBOX_LIMIT = operations.get("Inbox").field("limit")
MESSAGE_ID = operations.get("Read").field("id")
DELETE_IDS = operations.get("Delete").field("ids")

OK, FAILED, LOGOUT, ACCOUNT_DELETED = "ok", "failed", "logout", "account_deleted"


# ------------------------------------------------------------ parsing


def split_words(line):
    """The shell-style words of `line`, or None for a blank line or a comment."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    try:
        return shlex.split(line)
    except ValueError:
        raise UsageError("A quotation mark is not closed (or the line ends with a "
                         "backslash).") from None


def is_incomplete(text):
    """True when `text` ends inside a quotation, so the next line belongs to it."""
    if not text.strip() or text.lstrip().startswith("#"):
        return False
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


def suggest(word, extra=()):
    """The known command (or one of `extra`) closest to `word`, or None."""
    names = [name for name, _usage, _summary in COMMANDS] + list(ALIASES) + list(extra)
    close = difflib.get_close_matches(word.lower(), names, n=1, cutoff=0.6)
    return ALIASES.get(close[0], close[0]) if close else None


def parse_line(line, extra=None):
    """A Command for one command line, None for nothing to do; UsageError if wrong.

    `extra` maps more command names to their parsers (the interactive
    prompt's own commands); batch mode passes none.
    """
    words = split_words(line)
    if not words:
        return None
    extra = extra or {}
    name = ALIASES.get(words[0].lower(), words[0].lower())
    parser = extra.get(name) or _PARSERS.get(name)
    if parser is None:
        hint = suggest(words[0], extra)
        again = f" Did you mean '{hint}'?" if hint else " Type 'help' for the list."
        raise UsageError(f"There is no command '{out_mod.neutralise(words[0])}'.{again}")
    return Command(name, parser(words[1:]), line)


def _usage(name):
    usage = next(u for n, u, _s in COMMANDS if n == name)
    return UsageError(f"Usage: {usage}")








def parse_send(words):
    if not 1 <= len(words) <= 3:
        raise _usage("send")
    args = {}
    for name, word in zip(("to", "subject", "body"), words):
        args[name] = checked(SEND.field(name), word)
    return args


def _parse_inbox(words):
    args, rest = {}, list(words)
    while rest:
        flag = rest.pop(0)
        name, _, value = flag.partition("=")
        if name not in ("--before", "--limit"):
            raise _usage("inbox")
        if not value:
            if not rest:
                raise _usage("inbox")
            value = rest.pop(0)
        args[name[2:]] = message_id(value) if name == "--before" else page_limit(value)
    return args




def _parse_read(words):
    if len(words) != 1:
        raise _usage("read")
    return {"id": message_id(words[0])}


def _parse_delete(words):
    if not words:
        raise _usage("delete")
    ids = list(dict.fromkeys(message_id(word) for word in words))
    if not passes(DELETE_IDS, ids):
        raise UsageError(f"delete takes at most {DELETE_IDS.high} message numbers at once.")
    return {"ids": ids}


def _no_arguments(name):
    return no_arguments(next(u for n, u, _s in COMMANDS if n == name))


def _parse_help(words):
    if len(words) > 1:
        raise _usage("help")
    return {"topic": ALIASES.get(words[0].lower(), words[0].lower())} if words else {}




_PARSERS = {"send": parse_send, "inbox": _parse_inbox, "read": _parse_read,
            "delete": _parse_delete, "delete-account": _no_arguments("delete-account"),
            "help": _parse_help, "logout": _no_arguments("logout")}
_PARSERS.update((name, parse) for module in EXTENSIONS for name, parse in module.PARSERS.items())
_RUNS = {name: run for module in EXTENSIONS for name, run in module.RUNS.items()}


class LineJoiner:
    """Batch input: joins physical lines while a quotation is open."""

    def __init__(self, max_chars=MAX_LINE):
        self.max_chars = max_chars
        self._pending = None

    def feed(self, line):
        """The complete command text once it is whole, else None."""
        line = line.rstrip("\r\n")
        text = line if self._pending is None else self._pending + "\n" + line
        if is_incomplete(text) and len(text) < self.max_chars:
            self._pending = text
            return None
        self._pending = None
        return text

    def leftover(self):
        """At end of input: the unfinished command text, if any."""
        text, self._pending = self._pending, None
        return text


def help_entries(topic=None):
    """(usage, summary) pairs: every command, or just `topic`."""
    entries = [(usage, summary) for name, usage, summary in COMMANDS
               if topic is None or name == topic]
    if not entries:
        raise UsageError(f"There is no command '{out_mod.neutralise(topic)}'. "
                         "Type 'help' for the list.")
    return entries


# ------------------------------------------------------------ running


class Runner:
    """Runs parsed commands against a session; results go to the output."""

    def __init__(self, session, output, ui=None, user=None):
        self.session, self.output, self.ui, self.user = session, output, ui, user

    def run(self, command):
        """OK, FAILED, LOGOUT or ACCOUNT_DELETED; ConnectionLost propagates."""
        try:
            own = getattr(self, "_" + command.name.replace("-", "_"), None)
            if own is not None:
                return own(command.args)
            return _RUNS[command.name](self, command.args)
        except UsageError as error:
            self.output.error(error.reason, "bad_command", command.line)
        except RequestFailed as failure:
            self.output.error(failure.message, failure.code, command.line)
        except Cancelled:
            self.output.human("Cancelled; nothing was sent.")
            return OK
        return FAILED

    def _send(self, args):
        to = args["to"]
        subject = args.get("subject")
        if subject is None:
            subject = checked(SEND.field("subject"), self._ask("ask_subject", to))
        body = args.get("body")
        if body is None:
            body = checked(SEND.field("body"), self._ask("ask_body", to))
        result = self.session.send_message(to, subject, body)
        self.output.emit(out_mod.sent_record(result, to))
        return OK

    def _ask(self, question, *args):
        if self.ui is None:
            raise UsageError('Give the whole message on one line: send TO "SUBJECT" "BODY".')
        return getattr(self.ui, question)(*args)

    def _inbox(self, args):
        result = self.session.request("Inbox", before=args.get("before"),
                                      limit=args.get("limit"))
        self.output.emit(out_mod.inbox_record(result))
        return OK

    def _read(self, args):
        result = self.session.request("Read", id=args["id"])
        self.output.emit(out_mod.message_record(result.get("message", {}), "read"))
        return OK

    def _delete(self, args):
        self.output.emit(out_mod.deleted_record(self.session.request("Delete", ids=args["ids"])))
        return OK

    def _delete_account(self, _args):
        if self.ui is not None and not self.ui.confirm_delete(self.user):
            self.output.human("The account was not deleted.")
            return OK
        result = self.session.delete_account()
        self.output.emit(out_mod.account_deleted_record(result))
        return ACCOUNT_DELETED

    def _help(self, args):
        self.output.emit(out_mod.help_record(help_entries(args.get("topic"))))
        return OK

    def _logout(self, _args):
        if not self.session.logout():
            self.output.note("The server did not say goodbye; closing anyway.")
        return LOGOUT
