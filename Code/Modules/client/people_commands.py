"""The client's presence commands: `who`, `presence [on|off]` and `last NAME`.

A command module beside `commands` (listed in its EXTENSIONS): `COMMANDS`
(name, usage, summary), `PARSERS` {name: parse(words) -> args} and `RUNS`
{name: run(runner, args) -> "ok"}; `HELP` {name: (details, examples)} for
the interactive `help NAME`. Its records, printed as JSON lines in --json
mode and as human text otherwise (renderers registered in
`output.RENDERERS`):

    {"type":"who","people":[{"user","since","idle"}]}    since: ISO 8601 UTC;
                                                         idle: seconds
    {"type":"presence","presence":"on"|"off"}
    {"type":"last","user","online","since","last_seen"}  times ISO or null

`who` asks the server (`Online`) page by page until it has everyone; at
the interactive prompt a long list is shown a screenful at a time (Space
or Enter for more, q to stop). The join and leave notices themselves are
System `presence` events ("bob is online"), printed by the client like
every System event, above the prompt.

Talks to: the runner's session (`request`) and output. Fails like every
command: a usage mistake is a `UsageError` with one sentence, an Error
reply a `RequestFailed`, which the Runner reports.
"""

import shutil

from Modules import operations
from Modules.client import output as out_mod
from Modules.client.command_words import UsageError, checked, no_arguments, usage

OK = "ok"                     # commands.OK (this module cannot import commands)
ONLINE = operations.get("Online")
PRESENCE = operations.get("Presence")
LAST_SEEN = operations.get("LastSeen")
PAGE = ONLINE.field("limit").high     # people fetched per request

COMMANDS = (
    ("who", "who", "the people online now, since when, idle"),
    ("presence", "presence [on|off]", "show or set whether others see you online"),
    ("last", "last NAME", "when NAME was last online"),
)
HELP = {
    "who": ("List the people online now: their name, since when they are connected and "
            "how long they have been idle. People who turned their presence off, and "
            "people who blocked you, are not listed. A long list is shown a screen at a "
            "time (Space for more, q to stop).", ["who"]),
    "presence": ("Without a word, say whether others see you online. 'presence off' makes "
                 "you invisible: you are not in anyone's 'who', nobody is told when you "
                 "come or go, 'last' tells nothing about you, and you get no notices "
                 "about others. 'presence on' (the default) undoes it.",
                 ["presence", "presence off", "presence on"]),
    "last": ("Say whether NAME is online now, or when they last were. About someone who "
             "turned their presence off or blocked you, or a name without an account, "
             "nothing is known.", ["last bob"]),
}


# -- parsing ------------------------------------------------------------------------
def _parse_presence(words):
    if len(words) > 1:
        raise usage("presence [on|off]")
    if not words:
        return {}
    if words[0].lower() not in operations.PRESENCE_STATES:
        raise UsageError(f"'{out_mod.neutralise(words[0][:32])}' is not a presence setting: "
                         "use 'presence on' or 'presence off'.")
    return {"state": checked(PRESENCE.field("state"), words[0])}


def _parse_last(words):
    if len(words) != 1:
        raise usage("last NAME")
    return {"username": checked(LAST_SEEN.field("username"), words[0])}


PARSERS = {"who": no_arguments("who"), "presence": _parse_presence, "last": _parse_last}


# -- records --------------------------------------------------------------------------
def who_record(people):
    return {"type": "who", "people": [
        {"user": person.get("user"), "since": out_mod.iso_time(person.get("since")),
         "idle": person.get("idle")} for person in people]}


def presence_record(result):
    return {"type": "presence", "presence": result.get("presence")}


def last_record(result):
    return {"type": "last", "user": result.get("user"), "online": bool(result.get("online")),
            "since": out_mod.iso_time(result.get("since")) if "since" in result else None,
            "last_seen": out_mod.iso_time(result.get("last_seen"))
            if "last_seen" in result else None}


# -- running --------------------------------------------------------------------------
def everyone_online(session):
    """Every person the server lists, fetching page after page."""
    people, after = [], None
    while True:
        result = session.request("Online", after=after, limit=PAGE)
        page = result.get("people", [])
        people += page
        if not result.get("more") or not page:
            return people
        after = page[-1]["user"]


def _run_who(runner, _args):
    record = who_record(everyone_online(runner.session))
    more = getattr(runner.ui, "more", None)
    if runner.output.json_mode or more is None:
        runner.output.emit(record)
        return OK
    lines = who_lines(runner.output, record).split("\n")
    room = max(3, shutil.get_terminal_size((80, 24)).lines - 2)
    for start in range(0, len(lines), room):
        if start and not more():
            break
        runner.output.human("\n".join(lines[start:start + room]))
    return OK


def _run_presence(runner, args):
    result = runner.session.request("Presence", state=args.get("state"))
    runner.output.emit(presence_record(result))
    return OK


def _run_last(runner, args):
    runner.output.emit(last_record(runner.session.request("LastSeen",
                                                          username=args["username"])))
    return OK


RUNS = {"who": _run_who, "presence": _run_presence, "last": _run_last}


# -- human text -------------------------------------------------------------------------
def idle_text(seconds):
    """'0s', '42s', '5m', '3h', '2d'."""
    try:
        seconds = max(0, int(seconds))
    except (TypeError, ValueError):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def who_lines(output, record):
    people = record["people"]
    if not people:
        return "Nobody you can see is online."
    width = max(4, *(len(out_mod.neutralise(p["user"])) for p in people))
    lines = [output.paint(f"  {'NAME':<{width}}  {'SINCE':<16}  IDLE", dim=True)]
    lines += [f"  {out_mod.neutralise(p['user']):<{width}}  "
              f"{out_mod.local_time(p['since']):<16}  {idle_text(p['idle'])}" for p in people]
    count = len(people)
    lines.append(f"{count} {'person' if count == 1 else 'people'} online.")
    return "\n".join(lines)


def presence_text(output, record):
    if record["presence"] == "off":
        return output.paint("Your presence is off: nobody sees you online, and you get no "
                            "notices. 'presence on' undoes it.", "yellow")
    return output.paint("Your presence is on: others see you online.", "green")


def last_text(output, record):
    name = out_mod.neutralise(record["user"])
    if record["online"]:
        return f"{name} is online now (since {out_mod.local_time(record['since'])})."
    if record["last_seen"] is not None:
        return f"{name} was last online {out_mod.local_time(record['last_seen'])}."
    return f"Nothing is known about when {name} was last online."


out_mod.RENDERERS.update(who=who_lines, presence=presence_text, last=last_text)
