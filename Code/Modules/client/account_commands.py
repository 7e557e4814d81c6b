"""The client's "my account" commands (issue 13): passwd, block, unblock, blocked.

A command module beside `commands` (listed in its EXTENSIONS): `COMMANDS`
(name, usage, summary), `PARSERS` {name: parse(words)} and `RUNS`
{name: run(runner, args)}; its records' human text is registered in
`output.RENDERERS`.

    passwd                 at a terminal: asks the current password and the new
                           one twice, never shown (like the login's prompts)
    passwd OLD NEW         batch and --json mode: the two passwords as words of
                           the command line read from standard input (shell
                           quoting for spaces), never from the program's
                           arguments; at the prompt it is refused
    block NAME, unblock NAME, blocked

Passwords: never printed, never in an error record (`output.redacted`) and
never in the prompt's history (`output.holds_secret`, which the terminal's
history asks). After a change the interactive client logs in again with
the new password when the connection drops (its link's password is
replaced); the account's other sessions are ended by the server and do not
log in again by themselves (`link.ENDING_EVENTS`).

JSON records: {"type":"password_changed","ended":N},
{"type":"block","user","changed"}, {"type":"unblock","user","changed"},
{"type":"blocked","blocked":[{"user","since"}]} (`since` ISO 8601 UTC).

Talks to: the runner's session (`session.request`), its `ui` (the
terminal, or None in batch mode) and its output. Fails like every command:
a usage mistake or the server's refusal is one error record and the
session goes on.
"""

from Modules import operations, rules
from Modules.client import output as out_mod
from Modules.client.command_words import UsageError, checked, usage

CHANGE = operations.get("ChangePassword")
BLOCK_NAME = operations.get("Block").field("username")
PASSWD_USAGE = "passwd  (batch: passwd OLD NEW)"

COMMANDS = (
    ("passwd", PASSWD_USAGE, "change your password; your other sessions are logged out"),
    ("block", "block NAME", "refuse mail from NAME (they are told only 'not accepted')"),
    ("unblock", "unblock NAME", "accept mail from NAME again"),
    ("blocked", "blocked", "the names you block"),
)
AT_THE_PROMPT = ("At the prompt type just 'passwd': the passwords are then asked without "
                 "being shown or kept in the history.")
IN_BATCH = "In batch mode give both passwords: passwd OLD NEW (on standard input)."
OK = "ok"        # commands.OK (commands imports this module, so not from there)
HELP = {         # `help NAME` at the interactive prompt (screen.HELP takes these)
    "passwd": ("Change your password: type the current one, then the new one twice (none "
               "is shown, none is kept in the history). Your other sessions are logged "
               "out; this one stays, and reconnects with the new password. In batch mode "
               "write 'passwd OLD NEW' on standard input.", ["passwd"]),
    "block": ("Refuse messages from someone: theirs come back to them marked 'not "
              "accepted by the recipient' (they are not told it is a block).",
              ["block bob"]),
    "unblock": ("Accept messages from someone you blocked again.", ["unblock bob"]),
    "blocked": ("List the names you block, and since when.", ["blocked"]),
}


# ------------------------------------------------------------ parsing


def parse_passwd(words):
    """{} (ask for both) or {old, new} (batch: both on the line)."""
    if not words:
        return {}
    if len(words) != 2:
        raise usage(PASSWD_USAGE)
    return {"old": checked(CHANGE.field("old_password"), words[0]),
            "new": checked(CHANGE.field("new_password"), words[1])}


def _one_name(command):
    def parse(words):
        if len(words) != 1:
            raise usage(f"{command} NAME")
        return {"username": checked(BLOCK_NAME, words[0])}
    return parse


def _parse_blocked(words):
    if words:
        raise usage("blocked")
    return {}


# ------------------------------------------------------------ running


def run_passwd(runner, args):
    if runner.ui is not None and args:
        raise UsageError(AT_THE_PROMPT)
    if runner.ui is None and not args:
        raise UsageError(IN_BATCH)
    old, new = (args["old"], args["new"]) if args else _ask_passwords(runner)
    result = runner.session.request("ChangePassword", old_password=old, new_password=new)
    _remember_new_password(runner, new)
    runner.output.emit({"type": "password_changed", "ended": result.get("ended", 0)})
    return OK


def _ask_passwords(runner):
    """The current password, then the new one twice, none of them shown."""
    ui, say = runner.ui, runner.output.note
    old = ui.ask_secret("Current password: ")
    while True:
        new = ui.ask_secret("New password: ")
        try:
            rules.check_password(new)
        except rules.RuleError as error:
            say(error.reason)
            continue
        if ui.ask_secret("Repeat the new password: ") == new:
            return old, new
        say("The two passwords differ; please type them again.")


def _remember_new_password(runner, new):
    """The interactive client logs in again with the new password after a drop."""
    link = getattr(getattr(runner, "client", None), "link", None)
    if link is not None:
        link.password = new


def run_block(runner, args):
    result = runner.session.request("Block", username=args["username"])
    runner.output.emit({"type": "block", "user": args["username"],
                        "changed": result.get("changed", False)})
    return OK


def run_unblock(runner, args):
    result = runner.session.request("Unblock", username=args["username"])
    runner.output.emit({"type": "unblock", "user": args["username"],
                        "changed": result.get("changed", False)})
    return OK


def run_blocked(runner, _args):
    result = runner.session.request("Blocked")
    runner.output.emit({"type": "blocked", "blocked": [
        {"user": entry.get("username"), "since": out_mod.iso_time(entry.get("since"))}
        for entry in result.get("blocked", [])]})
    return OK


# ------------------------------------------------------------ human text


def _render_password_changed(_output, record):
    ended = record["ended"]
    others = "" if not ended else (f" {ended} other session{'s' if ended != 1 else ''} "
                                   f"{'were' if ended != 1 else 'was'} logged out.")
    return "Your password is changed." + others


def _render_block(_output, record):
    name = out_mod.neutralise(record["user"])
    if not record["changed"]:
        return f"You were already blocking {name}."
    return f"Blocked {name}: their messages come back to them as not accepted."


def _render_unblock(_output, record):
    name = out_mod.neutralise(record["user"])
    return f"Unblocked {name}." if record["changed"] else f"You were not blocking {name}."


def _render_blocked(_output, record):
    entries = record["blocked"]
    if not entries:
        return "You block nobody."
    width = max(len(entry["user"]) for entry in entries)
    lines = [f"  {out_mod.neutralise(entry['user']).ljust(width)}  since "
             f"{out_mod.local_time(entry['since'])}" for entry in entries]
    return "\n".join([f"You block {len(entries)} name{'s' if len(entries) != 1 else ''}:"]
                     + lines)


out_mod.RENDERERS.update({"password_changed": _render_password_changed,
                          "block": _render_block, "unblock": _render_unblock,
                          "blocked": _render_blocked})

PARSERS = {"passwd": parse_passwd, "block": _one_name("block"),
           "unblock": _one_name("unblock"), "blocked": _parse_blocked}
RUNS = {"passwd": run_passwd, "block": run_block, "unblock": run_unblock,
        "blocked": run_blocked}
