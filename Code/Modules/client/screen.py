"""How the interactive client looks: tables, messages, help and next steps.

`ScreenOutput` is the `Output` of the interactive prompt (never of batch
or --json mode, whose text is a stable interface and stays as
`client_output` prints it). It renders for a person reading a terminal:

* the inbox as a table (unread mark, id, from, subject, received) sized to
  the terminal's width, newest first, bold for unread, yellow for returned
  messages, shown a screenful at a time by `Pager`;
* messages that arrive: the backlog at login as one line each, later
  pushes with their body wrapped to the terminal's width and cut after 20
  rows or 1,000 characters (`push_rows`); `read ID` in full, wrapped and
  shown by the same `Pager` as the inbox, a returned message (bounce)
  marked as such with its note, a broadcast from the server's
  administrator marked "[broadcast] from the administrator";
* `help` (every command) and `help COMMAND` (what it does and examples);
* every error as one plain sentence followed, where a person can act, by
  what to do next (`next_step()`).

Safety: every text another person chose passes through `neutralise()`
before it is laid out; widths count terminal cells, so wide characters
cannot break the table.

Talks to: sys.stdout and sys.stderr through `Output._write` (which
prompt_toolkit's patch_stdout redirects above the prompt), and to a
`more()` callable (the terminal) for paging. Fails never: a time that
cannot be read shows as "?".
"""

import shutil
import sys
import textwrap
from datetime import datetime

from prompt_toolkit.utils import get_cwidth

from Modules.client import commands as client_commands
from Modules.client.output import (
    BROADCAST,
    PUSH_BODY_LINES,
    Output,
    neutralise,
    subject_text,
)

INTERACTIVE_COMMANDS = (
    ("reconnect", "reconnect", "connect again now (also done by itself)"),
)
HELP = {
    "send": ("Send a message. 'send NAME' asks for the subject, then the body: type as "
             "many lines as you like and finish with Ctrl-D (or a line with only '.'); "
             "Ctrl-C cancels without sending (asking first about a draft longer than a "
             "short line). An empty subject or body is asked about. Press Tab after "
             "'send ' to choose among the people you have written to or heard from. A "
             "name without an account sends the message back to you, marked as returned. "
             "While the connection is down the message waits and goes out by itself once "
             "it is back.",
             ["send bob", 'send bob "Lunch" "At noon?"']),
    "inbox": ("List your messages, newest first: number, sender, subject and when it "
              "arrived. * marks unread messages; returned messages say 'Returned'. A long "
              "inbox is shown a screen at a time (Space for more, q to stop).",
              ["inbox", "inbox --limit 10", "inbox --before 40"]),
    "read": ("Show one message in full and mark it read; a long one a screen at a time "
             "(Space for more, q to stop). The number is the one in the inbox list (or in "
             "the line that announced the message).", ["read 12"]),
    "delete": ("Delete one or more of your messages for good.",
               ["delete 12", "delete 12 13 14"]),
    "delete-account": ("Delete your account, after you type its name to confirm. Messages "
                       "you have not read go back to their senders. Afterwards you can "
                       "log in as someone else, or press Ctrl-D to leave.",
                       ["delete-account"]),
    "reconnect": ("Connect to the server again now and log in with the same name and "
                  "password (kept in memory for this run only, never on disk). The client "
                  "does this by itself when the connection drops, unless it was started "
                  "with --no-retry.", ["reconnect"]),
    "help": ("List the commands, or explain one with an example.", ["help", "help send"]),
    "logout": ("Log out and leave the client. 'quit', 'exit' and Ctrl-D do the same.",
               ["quit"]),
}
HELP.update(topic for module in client_commands.EXTENSIONS      # the command modules
            for topic in getattr(module, "HELP", {}).items())      # own topics
KEYS_HELP = ("Keys: Tab completes commands and names; Up and Down recall earlier lines; "
             "Ctrl-C clears the line; Ctrl-D leaves.")
RECEIVED_WIDTH = 15       # "yesterday 14:02"
FROM_WIDTH = 16
PUSH_BODY_CHARS = 1000    # a pushed body is cut after this many characters too
BODY_INDENT = "    "      # a pushed body, under its one-line heading
HEADER_WIDTH = 10         # "Subject: ", "Returned: " and their values after them


# ------------------------------------------------------------ pure helpers


def all_commands():
    """(name, usage, summary) of every command at the interactive prompt."""
    commands = list(client_commands.COMMANDS)
    return commands[:-2] + list(INTERACTIVE_COMMANDS) + commands[-2:]


def received(iso, now=None):
    """A short local time: 'today 14:02', 'yesterday 09:10', '21 Nov 14:02', '2025-11-21'."""
    try:
        moment = datetime.fromisoformat(iso).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
    now = now or datetime.now().astimezone()
    days = (now.date() - moment.date()).days
    if days == 0:
        return moment.strftime("today %H:%M")
    if days == 1:
        return moment.strftime("yesterday %H:%M")
    if moment.year == now.year:
        return moment.strftime("%d %b %H:%M")
    return moment.strftime("%Y-%m-%d")


def fit(text, width):
    """`text` cut (with …) and padded to exactly `width` terminal cells."""
    if width <= 0:
        return ""
    cells = sum(get_cwidth(char) for char in text)
    if cells > width:
        kept, used = [], 0
        for char in text:
            if used + get_cwidth(char) > width - 1:
                break
            kept.append(char)
            used += get_cwidth(char)
        text, cells = "".join(kept) + "…", used + 1
    return text + " " * (width - cells)


def wrapped(text, columns, first="", rest=None):
    """`text` wrapped to `columns`, after `first`, later lines indented like it."""
    rest = " " * len(first) if rest is None else rest
    return textwrap.fill(text, width=max(len(first) + 20, columns - 1),
                         initial_indent=first, subsequent_indent=rest)


def wrap_cells(line, width):
    """One line of text as the rows a terminal `width` cells wide shows it in,
    broken after the last space that fits (mid-word only when none does).
    Widths count terminal cells; tabs count as four spaces."""
    width = max(1, width)
    rows, row, used, space = [], [], 0, -1
    for char in line.replace("\t", "    "):
        cells = max(0, get_cwidth(char))
        if used + cells > width and row:
            cut = space if space > 0 else len(row)
            rows.append("".join(row[:cut]).rstrip(" "))
            row = row[cut + 1:] if space > 0 else []
            used, space = sum(max(0, get_cwidth(c)) for c in row), -1
        row.append(char)
        used += cells
        if char == " ":
            space = len(row) - 1
    rows.append("".join(row))
    return rows


def body_rows(text, width):
    """The rows of a (neutralised) multi-line body wrapped to `width` cells."""
    return [row for line in text.split("\n") for row in wrap_cells(line, width)]


def push_rows(body, columns, lines):
    """(rows, complete) of a pushed body on a terminal of `columns` x `lines`:
    wrapped under its heading, cut after PUSH_BODY_LINES rows (fewer on a
    short terminal) or PUSH_BODY_CHARS characters; `complete` is False when
    something was cut, so that only `read ID` shows all of it."""
    text = neutralise(body, multiline=True)
    room = min(PUSH_BODY_LINES, max(3, lines // 2))
    rows = body_rows(text[:PUSH_BODY_CHARS], columns - len(BODY_INDENT) - 1)
    complete = len(text) <= PUSH_BODY_CHARS and len(rows) <= room
    return rows[:room], complete


def terminal_size():
    """(columns, lines) of the terminal, with sane fallbacks."""
    size = shutil.get_terminal_size((80, 24))
    return max(40, size.columns), max(6, size.lines)


def inbox_subject(entry):
    subject = subject_text(entry.get("subject"))
    if entry.get("kind") == "bounce":
        return f"Returned: {subject} — {neutralise(entry.get('note'))}"
    if entry.get("kind") == "broadcast":
        return f"[broadcast] {subject}"
    return subject


def next_step(code, reason="", command=None):
    """What a person can do about an error, or '' when the reason says it all."""
    word = (command or "").split()[:1]
    name = client_commands.ALIASES.get(word[0].lower(), word[0].lower()) if word else ""
    if code == "not_found":
        return "Type 'inbox' to see the numbers of your messages."
    if code == "bad_command" and reason.startswith("Usage:") and name in HELP:
        return f"Type 'help {name}' for an example."
    if code in ("unavailable", "busy", "timeout") and "again" not in reason:
        return "Try again in a moment."
    return ""


class Pager:
    """Writes lines a screenful at a time, asking `more()` between screens."""

    def __init__(self, write, more, height):
        self.write, self.more = write, more
        self.room = max(3, height - 2)
        self.used = 0
        self.stopped = False

    def show(self, lines):
        """Write `lines`; False once the person chose to stop."""
        for line in lines:
            if self.used >= self.room:
                if not self.more():
                    self.stopped = True
                    return False
                self.used = 0
            self.write(line)
            self.used += 1
        return True


# ------------------------------------------------------------ the output


class ScreenOutput(Output):
    """Human output for the interactive prompt: tables, hints, marked bounces."""

    def __init__(self, color=False):
        super().__init__(json_mode=False, color=color)

    # -- errors and remarks -------------------------------------------------------
    def error(self, reason, code, command=None):
        text = neutralise(reason, multiline=True)
        hint = next_step(code, reason, command)
        # a usage line is no sentence: its hint goes under it, not after it
        gap = "\n" if reason.startswith("Usage:") else " "
        self._write_err(self.paint(text, "red") + (f"{gap}{hint}" if hint else ""))

    def warn(self, text):
        """A problem worth a colour, on stderr (connection lost, not sent)."""
        self._write_err(self.paint(neutralise(text, multiline=True), "yellow"))

    def good(self, text):
        self._write_out(self.paint(text, "green"))

    def _write_err(self, text):
        self._write(sys.stderr, text)

    def _write_out(self, text):
        self._write(sys.stdout, text)

    # -- messages -----------------------------------------------------------------
    def _render_message(self, r):
        if r["via"] == "login":
            return self._one_line(r)
        if r["via"] == "read":
            return self._full_message(r)
        return f"{self._one_line(r)}\n{self._indented_body(r['body'], r['id'])}".rstrip()

    def _one_line(self, r):
        when = self.paint(f"({received(r['sent_at'])})", dim=True)
        if r["kind"] == "bounce":
            text = (f"Returned message #{r['id']} (to {neutralise(r.get('original_to'))}): "
                    f"{subject_text(r['subject'])} — {neutralise(r.get('note'))}")
            return f"{self.paint(text, 'yellow')} {when}"
        if r["kind"] == "broadcast":
            head = self.paint(f"{BROADCAST} (#{r['id']}): ", "magenta", bold=True)
            return f"{head}{self.paint(subject_text(r['subject']), bold=True)} {when}"
        head = self.paint(f"New message #{r['id']} from {neutralise(r['from'])}: ", "cyan",
                          bold=True)
        return f"{head}{self.paint(subject_text(r['subject']), bold=True)} {when}"

    def shows_whole(self, record):
        """Whether the screen showed the message's whole text: `read`, or a push
        whose body `push_rows` did not cut (a backlog line at login shows none)."""
        if record.get("via") == "read":
            return True
        if record.get("via") != "push":
            return False
        columns, lines = terminal_size()
        return push_rows(record.get("body") or "", columns, lines)[1]

    def _indented_body(self, body, message_id):
        columns, lines = terminal_size()
        rows, complete = push_rows(body, columns, lines)
        if not complete:
            rows.append(self.paint(f"… cut short here; 'read {message_id}' shows all of it.",
                                   dim=True))
        return "\n".join(BODY_INDENT + row for row in rows)

    def _full_message(self, r):
        return "\n".join(self.message_lines(r))

    def message_lines(self, r, columns=None):
        """A message as read in full: its screen rows, wrapped to the terminal."""
        columns = columns or terminal_size()[0]
        rows = []
        if r["kind"] == "bounce":
            banner = ("RETURNED: this message was not delivered to "
                      f"{neutralise(r.get('original_to'))}. {neutralise(r.get('note'))}")
            rows += [self.paint(row, "yellow", bold=True)
                     for row in wrap_cells(banner, columns - 1)]
        title = self.paint(f"Message #{r['id']}", bold=True)
        if r["kind"] == "broadcast":
            title += " " + self.paint(BROADCAST, "magenta", bold=True)
        rows.append(title)
        for name, value in self.header_rows(r):
            wrapped_value = wrap_cells(neutralise(value), columns - HEADER_WIDTH - 1)
            rows.append(self.paint(f"{name}:".ljust(HEADER_WIDTH), dim=True) + wrapped_value[0])
            rows += [" " * HEADER_WIDTH + row for row in wrapped_value[1:]]
        return rows + [""] + body_rows(neutralise(r["body"], multiline=True), columns - 1)

    def _render_sent(self, r):
        if not r["bounced"]:
            return super()._render_sent(r)
        note = neutralise(r.get("note") or "The message was returned.")
        return self.paint(f"Not delivered: {note} Check the name (Tab after 'send ' lists "
                          f"the people you know). Your text came back as #{r['id']}.",
                          "yellow")

    # -- the inbox ------------------------------------------------------------------
    @staticmethod
    def inbox_columns(entries, width):
        """(id, from, subject) column widths for a table `width` cells wide."""
        id_width = max([2] + [len(str(e.get("id"))) for e in entries])
        from_width = min(FROM_WIDTH, max([4] + [len(neutralise(e.get("from")))
                                                for e in entries]))
        subject = width - (2 + id_width) - from_width - RECEIVED_WIDTH - 6 - 1
        return id_width, from_width, max(10, subject)

    def inbox_header(self, widths):
        cells = [" " * (widths[0] - 2) + "ID", fit("FROM", widths[1]),
                 fit("SUBJECT", widths[2]), "RECEIVED"]
        return self.paint("  " + "  ".join(cells), dim=True)

    def inbox_lines(self, entries, widths):
        """One table row per inbox entry."""
        return [self._inbox_row(entry, widths) for entry in entries]

    def _inbox_row(self, e, widths):
        mark = self.paint("*", "cyan", bold=True) if e.get("unread") else " "
        cells = [f"{e.get('id')!s:>{widths[0]}}", fit(neutralise(e.get("from")), widths[1]),
                 fit(inbox_subject(e), widths[2]), received(e.get("sent_at"))]
        row = "  ".join(cells)
        if e.get("kind") == "bounce":
            row = self.paint(row, "yellow")
        elif e.get("unread"):
            row = self.paint(row, bold=True)
        return f"{mark} {row}"

    def inbox_footer(self, shown, unread, more_hint=None):
        text = (f"{shown} message{'s' if shown != 1 else ''}, {unread} unread (*). "
                "Type 'read ID' to open one.")
        if more_hint:
            text += f" Older ones: inbox --before {more_hint}"
        return self.paint(text, dim=True)

    # -- help -------------------------------------------------------------------------
    def help_list(self, columns=None):
        columns = columns or terminal_size()[0]
        width = max(len(usage) for _n, usage, _s in all_commands())
        lines = [wrapped(summary, columns, f"  {usage:<{width}}  ")
                 for _n, usage, summary in all_commands()]
        lines += ["", wrapped("Type 'help COMMAND' (for example 'help send') for details and "
                              "examples.", columns), wrapped(KEYS_HELP, columns, "", "      ")]
        return "\n".join(lines)

    def help_topic(self, name, columns=None):
        columns = columns or terminal_size()[0]
        usage = next(u for n, u, _s in all_commands() if n == name)
        details, examples = HELP[name]
        lines = [self.paint(usage, bold=True), wrapped(details, columns, "  "), "",
                 "Example" + ("s:" if len(examples) > 1 else ":")]
        return "\n".join(lines + [f"  {example}" for example in examples])
