"""The small parts every client command module shares: its errors and word parsers.

A command module (`commands` for the core, and one module per group of
commands beside it) declares its commands as a table of (name, usage,
summary), a parser per name and a runner per name; the parsers here turn
the words of a command line into the fields of a request, checked with
the server's own limits from the registry, so a mistake is caught before
anything is sent.

Talks to nothing. Every parser raises `UsageError` with one sentence; no
parser echoes more of a mistaken word than `output.neutralise` lets
through.
"""

from typing import NamedTuple

from Modules import operations, rules
from Modules.client import output as out_mod

MESSAGE_ID = operations.get("Read").field("id")
PAGE_LIMIT = operations.get("Inbox").field("limit")


class UsageError(Exception):
    """A command line that cannot be run; `reason` says why in one sentence."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class Cancelled(Exception):
    """The person cancelled a question (Ctrl-C while typing a message)."""


class Command(NamedTuple):
    name: str
    args: dict
    line: str


def no_on_cancel(ask):
    """A yes/no question where Ctrl-C or Ctrl-D means no (None stays None)."""
    if ask is None:
        return None

    def asking(question):
        try:
            return ask(question)
        except Cancelled:
            return False
    return asking


def usage(text):
    """The UsageError of a command used wrongly: its usage line."""
    return UsageError(f"Usage: {text}")


def passes(field, value):
    """Whether the registry's field accepts `value`."""
    try:
        field.clean(value, "")
    except rules.RuleError:
        return False
    return True


def checked(field, value):
    """The value as the server's registry cleans it, or a UsageError with its rule."""
    try:
        return field.clean(value, field.name)
    except rules.RuleError as error:
        raise UsageError(error.reason) from None


def message_id(word):
    """A message number ('12' or '#12')."""
    text = word[1:] if word.startswith("#") else word
    if not text.isdigit() or not passes(MESSAGE_ID, int(text)):
        raise UsageError(f"'{out_mod.neutralise(word)}' is not a message number "
                         "(see 'inbox').")
    return int(text)


def page_limit(word):
    """A page size (--limit N) within the server's limits."""
    if not word.isdigit() or not passes(PAGE_LIMIT, int(word)):
        raise UsageError(f"--limit is a number from {PAGE_LIMIT.low} to {PAGE_LIMIT.high}.")
    return int(word)


PAGE_FLAGS = {"--before": ("before", message_id), "--limit": ("limit", page_limit)}


def parse_flags(words, usage_text, flags=PAGE_FLAGS, positional=0, switches=None):
    """(positional words, {field: value}) of words like `NAME --before 9 --limit 20`.

    `flags` maps a flag to (field name, parser of its value); a flag's value
    may follow it or be joined with '='. `switches` maps a flag that takes no
    value to its field, True when given and False when not. Exactly
    `positional` other words, or with a (fewest, most) pair, that many (most
    None: no upper bound).
    """
    fewest, most = positional if isinstance(positional, tuple) else (positional,) * 2
    switches = switches or {}
    args = {field: False for field in switches.values()}
    plain, rest = [], list(words)
    while rest:
        word = rest.pop(0)
        if not word.startswith("--") or len(word) == 2:
            plain.append(word)
            continue
        if word in switches:
            args[switches[word]] = True
            continue
        flag, _, value = word.partition("=")
        if flag not in flags:
            raise usage(usage_text)
        if not value:
            if not rest:
                raise usage(usage_text)
            value = rest.pop(0)
        field, parse = flags[flag]
        args[field] = parse(value)
    if len(plain) < fewest or (most is not None and len(plain) > most):
        raise usage(usage_text)
    return plain, args


def no_arguments(usage_text):
    """The parser of a command that takes no words."""
    def parse(words):
        if words:
            raise usage(usage_text)
        return {}
    return parse
