"""What the Parley client prints: records, JSON lines, human text, and safety.

Every result, error and message becomes one *record*, a plain dict with a
"type" (the shapes are listed in `Modules/client/cli.py`). With --json a
record is printed as exactly one JSON line on stdout; otherwise it is
rendered as human text, in colour when allowed. Errors always go to stderr
as one plain sentence too (in JSON mode as well, so a person watching a
script still sees them); local notes go to stderr only.

Safety: everything another person chose (usernames, subjects, bodies,
bounce notes, server messages) passes through `neutralise()` before it
reaches a terminal: C0/C1 control characters, DEL, bidirectional-text
overrides and lone surrogates become visible escapes such as "\\x1b", so
nothing received can move the cursor, change colours or set the window
title. JSON lines are written with those same characters as \\uXXXX escapes,
which keeps the data exact for programs and inert for terminals.

Talks to: sys.stdout and sys.stderr, looked up at every write so that
prompt_toolkit's patch_stdout() can take them over. Writes are serialised
with one lock because the network reader thread prints pushed messages
while the main thread prints results. A closed stdout (a reader such as
`head` went away) is ignored rather than turned into a traceback.
"""

import json
import re
import sys
import threading
from datetime import datetime, timedelta, timezone

try:
    from termcolor import colored
except ImportError:  # colours are a nicety, never a requirement
    colored = None

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# C0 controls, DEL, C1 controls, bidi marks/overrides/isolates, line and
# paragraph separators, and lone surrogates (not encodable for a terminal).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                     "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What json.dumps(ensure_ascii=False) leaves raw but a terminal might act on.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                          "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

BROADCAST = "[broadcast] from the administrator"   # how a broadcast is marked
PUSH_BODY_LINES = 20      # longer pushed bodies are cut; `read ID` shows all
NO_SUBJECT = "(no subject)"   # how an empty subject reads (human text only)
SUBJECT_COLUMN = 40       # inbox table: subjects are cut to this width


# ------------------------------------------------------------ pure helpers


def _escape_char(char):
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralise(text, multiline=False):
    """`text` with every control or cursor-moving character made visible.

    In multi-line text (message bodies) newline and tab are kept and CR LF
    becomes a newline; everywhere else they are escaped too.
    """
    if text is None:
        return ""
    text = text if isinstance(text, str) else str(text)
    if multiline:
        text = text.replace("\r\n", "\n")
        return _UNSAFE.sub(lambda m: m.group() if m.group() in "\n\t"
                           else _escape_char(m.group()), text)
    return _UNSAFE.sub(lambda m: _escape_char(m.group()), text)


def json_line(record):
    """One JSON text on one line, exact for programs and inert for terminals."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def iso_time(epoch):
    """Epoch seconds as ISO 8601 UTC with milliseconds: '2026-11-21T02:10:00.123Z'.

    None when the value is not a usable time.
    """
    try:
        millis = round(float(epoch) * 1000)
        moment = _EPOCH + timedelta(milliseconds=millis)
    except (TypeError, ValueError, OverflowError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_time(iso, with_seconds=False):
    """An ISO time from `iso_time()` as local wall-clock text, or '?'."""
    try:
        moment = datetime.fromisoformat(iso).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
    return moment.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def subject_text(subject):
    """A subject as a person reads it: neutralised, and "(no subject)" when empty."""
    text = neutralise(subject)
    return text if text.strip() else NO_SUBJECT


def shorten(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


# ------------------------------------------------------------ record shapes


def login_record(user, created):
    return {"type": "login", "user": user, "created": bool(created)}


def greeting_record(text):
    return {"type": "greeting", "message": text}


def motd_record(text):
    return {"type": "motd", "message": text}


def ready_record(user):
    return {"type": "ready", "user": user}


def message_record(message, via):
    """A Message packet's data (or a Read result's message) as a record."""
    record = {"type": "message", "via": via}
    for field in ("id", "from", "to", "subject", "body"):
        record[field] = message.get(field)
    record["sent_at"] = iso_time(message.get("sent_at"))
    record["kind"] = message.get("kind", "message")
    for field in ("note", "original_to", "read"):
        if field in message:
            record[field] = message[field]
    return record


def sent_record(result, to):
    record = {"type": "sent", "id": result.get("id"), "to": to,
              "bounced": bool(result.get("bounced")),
              "duplicate": bool(result.get("duplicate"))}
    if result.get("note"):
        record["note"] = result["note"]
    return record


def inbox_entry(entry):
    shaped = {field: entry.get(field) for field in ("id", "from", "subject")}
    shaped["sent_at"] = iso_time(entry.get("sent_at"))
    shaped["kind"] = entry.get("kind", "message")
    shaped["unread"] = bool(entry.get("unread"))
    if "note" in entry:
        shaped["note"] = entry["note"]
    return shaped


def inbox_record(result):
    return {"type": "inbox", "messages": [inbox_entry(e) for e in result.get("messages", [])],
            "more": bool(result.get("more"))}


def deleted_record(result):
    return {"type": "deleted", "deleted": list(result.get("deleted", [])),
            "missing": list(result.get("missing", []))}


def account_deleted_record(result):
    return {"type": "account_deleted", "bounced": result.get("bounced", 0)}


def system_record(event, message):
    return {"type": "system", "event": event, "message": message}


def error_record(reason, code, command=None):
    return {"type": "error", "error": reason, "code": code, "command": redacted(command)}


SECRET_COMMANDS = frozenset({"passwd"})   # their words are passwords: never repeated


def holds_secret(line):
    """Whether a command line carries passwords (`passwd OLD NEW`): it is never
    printed back (error records) nor kept in the prompt's history."""
    words = (line or "").split(None, 1)
    return len(words) == 2 and words[0].lower() in SECRET_COMMANDS


def redacted(line):
    """The command line as an error record may repeat it (a password's line: its name)."""
    return line.split(None, 1)[0] + " …" if holds_secret(line) else line


def help_record(commands):
    return {"type": "help", "commands": [{"usage": u, "summary": s} for u, s in commands]}


# ------------------------------------------------------------ output

# record type -> render(output, record): the human text of the records that
# the command modules beside `commands` define (they register here).
RENDERERS = {}



def colour_allowed(no_color_flag, stream, environ):
    """Colour unless --no-color, NO_COLOR is set, or `stream` is not a terminal."""
    if no_color_flag or environ.get("NO_COLOR") or colored is None:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Output:
    """Prints records as JSON lines or human text; thread-safe."""

    def __init__(self, json_mode=False, color=False):
        self.json_mode = json_mode
        self.color = color
        self._lock = threading.RLock()
        self._open_line = False        # a line redrawn in place is on the screen

    # -- the public face -------------------------------------------------------
    def emit(self, record):
        """Print one record: a JSON line, or its human rendering."""
        if self.json_mode:
            self._write(sys.stdout, json_line(record))
        else:
            text = self.render(record)
            if text:
                self._write(sys.stdout, text)
        if record["type"] == "error":
            self._write(sys.stderr, neutralise(record["error"], multiline=True))

    def error(self, reason, code, command=None):
        """An error result: a record on stdout (JSON mode) and a sentence on stderr."""
        self.emit(error_record(reason, code, command))

    def note(self, text):
        """A local remark for the person (stderr, never part of the JSON stream)."""
        self._write(sys.stderr, text)

    def human(self, text):
        """Text meant only for a person at a terminal (skipped in JSON mode)."""
        if not self.json_mode:
            self._write(sys.stdout, text)

    def overwrite(self, text, end=False):
        """A line redrawn in place at a terminal (a transfer's progress bar); with
        `end` it is left behind. Other output clears it first."""
        with self._lock:
            self._open_line = bool(text) and not end
            self._put(sys.stdout, "\r\x1b[K" + text + ("\n" if end and text else ""))

    def _write(self, stream, text):
        with self._lock:
            if self._open_line:
                self._open_line = False
                self._put(sys.stdout, "\r\x1b[K")
            self._put(stream, text + "\n")

    @staticmethod
    def _put(stream, text):
        try:
            stream.write(text)
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # nobody is reading any more; nothing useful to do

    # -- human rendering ---------------------------------------------------------
    def paint(self, text, colour=None, bold=False, dim=False):
        if not self.color:
            return text
        attrs = [name for name, on in (("bold", bold), ("dark", dim)) if on]
        return colored(text, colour, attrs=attrs or None, force_color=True)

    def render(self, record):
        """The human text of a record ('' when a person needs to see nothing)."""
        renderer = getattr(self, "_render_" + record["type"], None)
        if renderer is not None:
            return renderer(record)
        extra = RENDERERS.get(record["type"])
        return extra(self, record) if extra else ""

    def _render_login(self, r):
        user = neutralise(r["user"])
        if r["created"]:
            return self.paint(f"Created the account {user}; you are logged in.", "green")
        return self.paint(f"Logged in as {user}.", "green")

    def _render_ready(self, _r):
        return ""

    def _render_greeting(self, r):
        return self.paint(neutralise(r["message"], multiline=True), "magenta")

    def _render_motd(self, r):
        return self.paint("Message of the day: ", "magenta", bold=True) + self.paint(
            neutralise(r["message"], multiline=True), "magenta")

    def _render_message(self, r):
        if r["via"] == "read":
            return self._full_message(r)
        when = self.paint(f"({local_time(r['sent_at'])})", dim=True)
        if r["kind"] == "bounce":
            head = (f"Returned message #{r['id']} (to {neutralise(r.get('original_to'))}): "
                    f"{subject_text(r['subject'])} — {neutralise(r.get('note'))}")
            head = self.paint(head, "yellow", bold=True)
        elif r["kind"] == "broadcast":
            head = self.paint(f"{BROADCAST} (#{r['id']}): ", "magenta", bold=True) + \
                self.paint(subject_text(r["subject"]), bold=True)
        else:
            head = self.paint(f"New message #{r['id']} from {neutralise(r['from'])}: ", "cyan",
                              bold=True) + self.paint(subject_text(r["subject"]), bold=True)
        return f"{head} {when}\n{self._indented_body(r['body'], r['id'])}".rstrip()

    def shows_whole(self, record):
        """Whether emitting this message record showed its whole text (a push's
        body is cut after PUSH_BODY_LINES lines on a person's screen)."""
        if self.json_mode or record.get("via") == "read":
            return True
        return len(neutralise(record.get("body") or "", multiline=True).split("\n")) \
            <= PUSH_BODY_LINES

    def _indented_body(self, body, message_id):
        lines = neutralise(body, multiline=True).split("\n")
        if len(lines) > PUSH_BODY_LINES:
            hidden = len(lines) - PUSH_BODY_LINES
            lines = lines[:PUSH_BODY_LINES] + [self.paint(
                f"… {hidden} more lines: read {message_id}", dim=True)]
        return "\n".join("    " + line for line in lines)

    @staticmethod
    def header_rows(r):
        """(name, value) of the header lines of a message read in full."""
        rows = [("From", r["from"]), ("To", r["to"]),
                ("Date", local_time(r["sent_at"], with_seconds=True)),
                ("Subject", subject_text(r["subject"]))]
        if r["kind"] == "bounce":
            rows += [("Returned", r.get("note")), ("Sent to", r.get("original_to"))]
        return rows

    def _full_message(self, r):
        title = self.paint(f"Message #{r['id']}", bold=True)
        if r["kind"] == "broadcast":
            title += " " + self.paint(BROADCAST, "magenta", bold=True)
        header = "\n".join(self.paint(f"{name}:".ljust(10), dim=True) + neutralise(value)
                           for name, value in self.header_rows(r))
        return f"{title}\n{header}\n\n{neutralise(r['body'], multiline=True)}"

    def _render_sent(self, r):
        if r["bounced"]:
            text = f"Not delivered: {neutralise(r.get('note') or 'the message was returned')}"
            return self.paint(f"{text} (returned as message #{r['id']}).", "yellow")
        text = f"Sent message #{r['id']} to {neutralise(r['to'])}."
        if r["duplicate"]:
            text += " (It had already arrived; it is stored once.)"
        return self.paint(text, "green")

    def _render_inbox(self, r):
        if not r["messages"]:
            if r["more"]:
                return ""
            return "You have no unread messages." if r.get("unread_only") else \
                "Your inbox is empty."
        lines = [self.paint(f"  {'ID':>6}  {'FROM':<16} {'TIME':<16}  SUBJECT", dim=True)]
        lines += [self._inbox_line(entry) for entry in r["messages"]]
        if r["more"]:
            oldest = r["messages"][-1]["id"]
            lines.append(self.paint(f"More messages: inbox --before {oldest}", dim=True))
        return "\n".join(lines)

    def _inbox_line(self, e):
        mark = self.paint("*", "cyan", bold=True) if e["unread"] else " "
        subject = subject_text(e["subject"])
        if e["kind"] == "bounce":
            subject = f"Returned: {subject} — {neutralise(e.get('note'))}"
        elif e["kind"] == "broadcast":
            subject = f"[broadcast] {subject}"
        sender = shorten(neutralise(e["from"]), 16)
        line = (f"{mark} {e['id']:>6}  {sender:<16} {local_time(e['sent_at']):<16}  "
                f"{shorten(subject, SUBJECT_COLUMN)}")
        return self.paint(line, bold=True) if e["unread"] else line

    def _render_deleted(self, r):
        parts = []
        if r["deleted"]:
            parts.append("Deleted " + ", ".join(f"#{i}" for i in r["deleted"]) + ".")
        if r["missing"]:
            parts.append("No such message: " + ", ".join(f"#{i}" for i in r["missing"]) + ".")
        return " ".join(parts) or "Nothing was deleted."

    def _render_account_deleted(self, r):
        count = r["bounced"]
        returned = "1 unread message was" if count == 1 else f"{count} unread messages were"
        return self.paint(f"The account is deleted; {returned} returned to the senders.",
                          "yellow")

    def _render_system(self, r):
        return self.paint(neutralise(r["message"]), "magenta")

    def _render_help(self, r):
        width = max(len(c["usage"]) for c in r["commands"])
        return "\n".join(f"  {c['usage']:<{width}}  {c['summary']}" for c in r["commands"])

    def _render_error(self, _r):
        return ""   # errors are written to stderr by emit()
