"""The operator's commands: one table for the console and the admin command line.

`run(context, words)` carries out one command line (already split into
words) and returns an `Outcome`: an exit status (0 done, 1 refused or
failed, 2 not a valid command line), the data (a dict, what `--json`
prints) and the text a person reads. `COMMANDS` is the table: name, usage,
summary, how many words it takes, and the function that runs it. The
console (`server/console.py`) and the admin socket (`server/admin_socket.py`,
used by `admin_cli.py`) both call `run`; neither knows any command.

Most commands are requests to the monitor in its admin role, made through
`context.call(op, **fields)` (a `DbLink` opened by the daemon, so the
monitor's table and its checks apply and every change lands in the audit
trail with the operator's name). A few are the daemon's own: the server's
connection figures in `stats` and `metrics` (`server/metrics.py`), `log-level`
(the daemon's and the database's; sessions already running keep theirs),
and `shutdown`.

How it fails: never raises for bad input. An unknown command, a missing or
extra argument is status 2 with a one-line usage; a refusal from the
monitor (no such account, a bad value) is status 1 with its sentence; the
database being away is status 1 with a sentence saying so.
"""

import time
from typing import Callable, NamedTuple

from Modules import operations
from Modules.database.link import DbError, DbUnavailable

LINE_MAX = 4096                  # characters of one command line, at most


class Outcome(NamedTuple):
    status: int                  # 0 done, 1 refused or failed, 2 a bad command line
    data: dict
    text: str


class Command(NamedTuple):
    name: str
    usage: str
    summary: str
    least: int                   # words after the name, at least
    most: int | None             # and at most (None: the rest is one text)
    run: Callable


def line_problem(line, dropped=0):
    """Why a typed line cannot be a command line (one sentence), or None; `dropped`
    characters were typed after it was already too long."""
    if len(line) + dropped > LINE_MAX:
        return (f"That line is {len(line) + dropped:,} characters long, and a command "
                f"line is at most {LINE_MAX:,}; nothing was run.")
    if not all(char.isprintable() for char in line):
        return ("That line holds control characters or bytes that are not UTF-8 text; "
                "nothing was run.")
    return None


def _when(seconds):
    return "-" if seconds is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _duration(seconds):
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"


def table(headers, rows):
    """Columns padded to their widest cell, a header line first."""
    cells = [list(map(str, headers))] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in cells)


def _ok(data, text):
    return Outcome(0, data, text)


# -- the commands -----------------------------------------------------------------------

def _help(context, _words):
    rows = [(command.usage, command.summary) for command in COMMANDS.values()]
    return _ok({"commands": [{"usage": u, "summary": s} for u, s in rows]}, table(
        ("command", "what it does"), rows))


def _state(session):
    if "server" in session:              # one of the other servers on a shared database
        return f"on {session['server']}"
    return "parked" if session.get("parked") else "active"


def _who(context, _words):
    sessions = context.call("Who")["sessions"]
    now = time.time()
    rows = [(s["user"], s["address"], _when(s["since"]), _duration(now - s["since"]),
             "-" if s["idle"] is None else _duration(s["idle"]), _state(s))
            for s in sessions]
    text = table(("user", "address", "since", "online", "idle", "state"), rows) if rows else \
        "Nobody is logged in."
    return _ok({"sessions": sessions}, text)


def _users(context, words):
    reply = context.call("Users", pattern=words[0] if words else None)
    rows = [(u["username"], u["sessions"], u["logins"], u["logoffs"], u["messages_sent"],
             u["messages_received"], u["failed_logins"], _when(u["last_login"]),
             "suspended" if u["suspended"] else "") for u in reply["users"]]
    text = table(("user", "online", "logins", "logoffs", "sent", "received", "failed",
                  "last login", ""), rows) if rows else "No accounts match."
    if reply["more"]:
        text += "\n(more accounts match; give a pattern)"
    return _ok({"users": reply["users"], "more": reply["more"]}, text)


_USER_LINES = (("logins", "logins"), ("logoffs", "logoffs"), ("online now", "sessions"),
               ("messages sent", "messages_sent"), ("messages received", "messages_received"),
               ("messages bounced", "messages_bounced"),
               ("broadcasts received", "broadcasts_received"),
               ("failed logins", "failed_logins"))


def _stats(context, words):
    if words:
        user = context.call("UserStats", username=words[0])["user"]
        lines = [(label, user[key]) for label, key in _USER_LINES]
        lines += [("last login", f"{_when(user['last_login'])} from "
                                 f"{user['last_login_address'] or '-'}"),
                  ("last failed login", f"{_when(user['last_failed_login'])} from "
                                        f"{user['last_failed_address'] or '-'}"),
                  ("created", _when(user["created_at"])),
                  ("state", "suspended" if user["suspended"] else "active")]
        return _ok({"user": user}, f"{user['username']}:\n" + table(("", ""), lines)
                   .split("\n", 1)[1])
    reply = context.call("ServerStats")
    figures = {**context.server_figures(), **reply}
    totals = reply["totals"]
    lines = [("uptime", _duration(figures["uptime"])),
             ("connections now / peak", f"{figures['connections']} / "
                                        f"{figures['peak_connections']}"),
             ("sessions now / peak", f"{reply['sessions']} / {reply['peak_sessions']}"),
             ("parked connections", figures.get("parked", 0)),
             ("accounts", totals["accounts"]),
             ("logins / failed / logoffs", f"{totals['logins']} / {totals['failed_logins']}"
                                           f" / {totals['logoffs']}"),
             ("messages accepted / delivered / bounced",
              f"{totals['messages_accepted']} / {totals['messages_delivered']} / "
              f"{totals['messages_bounced']}"),
             ("broadcasts", totals["broadcasts"]),
             ("database size", f"{reply['database_bytes'] / 1048576:.1f} MiB")]
    lines += _file_lines(reply.get("files"))
    data = {k: v for k, v in figures.items() if k not in ("rid", "ok")}
    return _ok(data, table(("", ""), lines).split("\n", 1)[1])


def _mib(count):
    """'3.0 MiB', or '50.0 GiB' from 1 GiB on."""
    if count >= 1024 ** 3:
        return f"{count / 1024 ** 3:.1f} GiB"
    return f"{count / 1048576:.1f} MiB"


def _file_lines(files):
    """The file store's lines of `stats` (issue 14)."""
    if not files:
        return []
    return [("files stored", f"{files['stored']} ({_mib(files['stored_bytes'])} of "
                             f"{_mib(files['storage_limit'])}), {files['waiting']} not yet "
                             "downloaded"),
            ("uploads in progress", f"{files['uploads']} ({_mib(files['upload_bytes'])})"),
            ("files on disk", _mib(files["disk_bytes"]))]


def _ledger(context, words):
    reply = context.call("Ledger", username=words[0])
    rows = [(e["address"], e["attempts"], e["successes"], _when(e["first_seen"]),
             _when(e["last_seen"]), "yes" if e["address"] in reply["active"] else "")
            for e in reply["addresses"]]
    text = table(("address", "attempts", "succeeded", "first seen", "last seen", "active"),
                 rows) if rows else f"No logins recorded for {words[0]}."
    return _ok({"addresses": reply["addresses"], "active": reply["active"]}, text)


def _broadcast(context, words):
    reply = context.call("Broadcast", text=words[0])
    return _ok({"stored": reply["stored"], "live": reply["live"]},
               f"Broadcast stored for {reply['stored']} accounts ({reply['live']} online now).")


def _announce(context, words):
    told = context.call("Announce", text=words[0])["told"]
    return _ok({"told": told}, f"Told {told} sessions.")


def _kick(context, words):
    ended = context.call("Kick", username=words[0])["ended"]
    return _ok({"ended": ended}, f"Ended {ended} sessions of {words[0]}.")


def _suspend(context, words):
    reply = context.call("Suspend", username=words[0])
    said = "suspended" if reply["changed"] else "was already suspended"
    return _ok({"changed": reply["changed"], "ended": reply["ended"]},
               f"{words[0]} {said}; {reply['ended']} sessions ended.")


def _unsuspend(context, words):
    changed = context.call("Unsuspend", username=words[0])["changed"]
    return _ok({"changed": changed}, f"{words[0]} may log in again." if changed else
               f"{words[0]} was not suspended.")


def _reset_password(context, words):
    password = context.call("ResetPassword", username=words[0])["password"]
    return _ok({"password": password},
               f"One-time password for {words[0]}: {password}\n"
               "Give it to them; they must choose a new password when they log in with it.")


def _delete_user(context, words):
    bounced = context.call("DeleteUser", username=words[0])["bounced"]
    return _ok({"bounced": bounced}, f"Deleted {words[0]}; {bounced} unread messages "
                                     "returned to their senders.")


def _setting(name):
    def run(context, words):
        reply = context.call("Setting", name=name, value=words[0] if words else None)
        value = reply["value"]
        if words:
            text = f"The {name} is now: {value}" if value else f"The {name} is cleared."
        else:
            text = value or f"No {name} is set."
        return _ok({"name": name, "value": value}, text)
    return run


def _release_name(context, words):
    context.call("ReleaseName", username=words[0])
    return _ok({"released": True}, f"The name {words[0]} may be taken by a new account now.")


def _reserved_name_days(context, words):
    """Issue 13: the days a deleted account's name is kept back (0: not at all)."""
    reply = context.call("Setting", name="reserved_name_days",
                         value=words[0] if words else None)
    days = int(reply["value"])
    text = ("The names of deleted accounts are free at once." if days == 0 else
            f"The name of a deleted account is kept back for {days} day"
            f"{'' if days == 1 else 's'}.")
    return _ok({"name": reply["name"], "value": reply["value"]}, text)


def _mailbox_limits(context, words):
    """Issue 13: the most messages and bytes one inbox stores (MESSAGES [BYTES])."""
    for name, word in zip(("mailbox_messages", "mailbox_bytes"), words):
        context.call("Setting", name=name, value=word)
    values = {}
    for name, default in operations.MAILBOX_DEFAULTS.items():
        value = context.call("Setting", name=name, value=None)["value"]
        values[name] = int(value) if value.isdigit() else default
    return _ok(values, f"An inbox holds at most {values['mailbox_messages']} messages and "
                       f"{values['mailbox_bytes']} bytes of subjects and bodies; a message "
                       "that does not fit goes back to its sender.")


def _audit(context, _words):
    reply = context.call("Audit")
    return _ok({"path": reply["path"], "accounts": reply["accounts"]},
               f"Appended a report of {reply['accounts']} accounts to {reply['path']}.")


def _backup(context, words):
    """Issue 15: an online copy into a new directory (an absolute path)."""
    reply = context.call("Backup", directory=words[0])
    gone = reply["missing_files"]
    note = f" ({len(gone)} stored files expired while it ran)" if gone else ""
    return _ok({name: reply[name] for name in ("directory", "files", "bytes", "ids",
                                               "missing_files", "seconds")},
               f"Backed up {reply['files']} files ({_mib(reply['bytes'])}) into "
               f"{reply['directory']} in {reply['seconds']} s{note}; highest message id "
               f"{reply['ids']['messages']}.")


def _metrics(context, _words):
    from Modules.server import metrics     # prometheus_client: loaded when asked for

    values = metrics.read_figures(context)
    return _ok({"metrics": values}, metrics.render(values).rstrip("\n"))


def _log_level(context, words):
    level = context.call("LogLevel", level=words[0])["level"]
    context.set_log_level(level)
    return _ok({"level": level}, f"Log level {level} (new sessions too; running ones keep "
                                 "theirs).")


def _shutdown(context, words):
    seconds, words = 0, list(words)
    if words[:1] == ["--in"]:
        try:
            seconds = int(words[1])
            if not 0 <= seconds <= 86400:
                raise ValueError
        except (IndexError, ValueError):
            return Outcome(2, {"error": "bad --in"}, "shutdown --in takes whole seconds "
                                                    "from 0 to 86400.")
        words = words[2:]
    message = " ".join(words)
    context.call("Note", action="shutdown", detail=f"in {seconds} s")
    when = "now" if seconds == 0 else f"in {_duration(seconds)}"
    text = f"The server will shut down {when}" + (f": {message}" if message else ".")
    context.call("Announce", text=text)
    context.shutdown(seconds)
    return _ok({"in": seconds}, f"Shutting down {when}; everyone was told.")


COMMANDS = {command.name: command for command in (
    Command("help", "help", "this list", 0, 0, _help),
    Command("who", "who", "who is online: name, address, since, idle", 0, 0, _who),
    Command("users", "users [PATTERN]", "accounts and their statistics (PATTERN: a* etc.)",
            0, 1, _users),
    Command("stats", "stats [USER]", "one account's statistics, or the server's", 0, 1,
            _stats),
    Command("ledger", "ledger USER", "the addresses USER logged in from, or tried", 1, 1,
            _ledger),
    Command("broadcast", "broadcast TEXT", "a message to every account, stored", 1, None,
            _broadcast),
    Command("announce", "announce TEXT", "a notice to everyone online, not stored", 1, None,
            _announce),
    Command("kick", "kick USER", "end USER's sessions", 1, 1, _kick),
    Command("suspend", "suspend USER", "USER may not log in; sessions end (mail is kept)",
            1, 1, _suspend),
    Command("unsuspend", "unsuspend USER", "USER may log in again", 1, 1, _unsuspend),
    Command("reset-password", "reset-password USER", "a one-time password USER must change",
            1, 1, _reset_password),
    Command("delete-user", "delete-user USER", "delete USER; unread mail goes back", 1, 1,
            _delete_user),
    Command("release-name", "release-name NAME", "a deleted account's name may be taken "
            "again now", 1, 1, _release_name),
    Command("reserved-name-days", "reserved-name-days [DAYS]", "show or set how long a "
            "deleted account's name is kept back (default 30, 0: not at all)", 0, 1,
            _reserved_name_days),
    Command("mailbox-limits", "mailbox-limits [MESSAGES [BYTES]]", "show or set how much "
            "one inbox stores (default 10000 messages, 104857600 bytes)", 0, 2,
            _mailbox_limits),
    Command("greeting", "greeting [TEXT]", "show or set what clients see before logging in "
            "('' clears)", 0, None, _setting("greeting")),
    Command("motd", "motd [TEXT]", "show or set the message of the day ('' clears)", 0, None,
            _setting("motd")),
    Command("audit", "audit", "append a report of every account to audit.log", 0, 0, _audit),
    Command("backup", "backup DIR", "an online copy of the data into DIR (new or empty, "
            "outside the data dir); restore with `admin restore`", 1, 1, _backup),
    Command("metrics", "metrics", "the server's figures in the Prometheus text format", 0, 0,
            _metrics),
    Command("log-level", "log-level LEVEL", "DEBUG, INFO, WARNING or ERROR", 1, 1,
            _log_level),
    Command("shutdown", "shutdown [--in SECONDS] [MESSAGE]", "tell everyone, then stop "
            "cleanly", 0, None, _shutdown),
)}


def run(context, words):
    """Carry out one command line; an Outcome, whatever the input."""
    if not words:
        return Outcome(2, {"error": "empty"}, "Type a command; `help` lists them.")
    command = COMMANDS.get(words[0].lower())
    if command is None:
        return Outcome(2, {"error": "unknown command"},
                       f"Unknown command '{words[0][:40]}'; `help` lists the commands.")
    args = list(words[1:])
    if command.most is None and len(args) > 1 and command.name not in ("shutdown",):
        args = [" ".join(args)]                       # the rest of the line is one text
    if len(args) < command.least or (command.most is not None and len(args) > command.most):
        return Outcome(2, {"error": "usage", "usage": command.usage},
                       f"Usage: {command.usage}")
    try:
        return command.run(context, args)
    except DbError as error:
        return Outcome(1, {"error": error.reason, "code": error.code}, error.reason)
    except DbUnavailable:
        return Outcome(1, {"error": "database unavailable", "code": "unavailable"},
                       "The server's database is not answering; try again in a moment.")
