"""The client's commands for one's own mail beyond the inbox.

    sent [--before ID] [--limit N]          unread [--before ID] [--limit N]
    history NAME [--before ID] [--limit N]  search WORD... [--before ID] [--limit N]
    reply ID [BODY] [--quote]               forward ID NAME [NOTE]

`sent`, `unread`, `history` and `search` ask the server for one page and
print it as one record; `reply` and `forward` read the message (`Read`),
then send a new one through the runner's own send, so in the interactive
client a reply typed while the connection is down is kept and sent once
it is back, like any message. A reply goes to the other person of the
message (its sender, or the recipient of one's own sent copy); its
subject gets "Re: " once, and `--quote` adds the original, quoted. A
forward's subject gets "Fwd: " once, its body the note and the original
with its header.

Talks to the server through the runner's session; fails like every
command (`UsageError` for a mistake, `RequestFailed` for a refusal).
"""

from Modules import operations, rules
from Modules.client import output as out_mod
from Modules.client.command_words import (
    UsageError,
    checked,
    message_id,
    parse_flags,
    usage,
)

SEND = operations.get("Send")
RECIPIENT = SEND.field("to")
SEARCH_TEXT = operations.get("Search").field("text")
OK = "ok"

COMMANDS = (
    ("sent", "sent [--before ID] [--limit N]", "list the messages you sent: delivered? read?"),
    ("unread", "unread [--before ID] [--limit N]", "list only the messages you have not read"),
    ("history", "history NAME [--before ID] [--limit N]",
     "your conversation with one person, both directions"),
    ("search", "search WORD... [--before ID] [--limit N]",
     "your messages (received and sent) holding every word"),
    ("reply", "reply ID [BODY] [--quote]", "answer a message (Re: subject)"),
    ("forward", "forward ID NAME [NOTE]", "send a copy of a message to someone"),
)
_USAGE = {name: text for name, text, _summary in COMMANDS}

HELP = {
    "sent": ("List the messages you sent, newest first: number, recipient, subject, when, "
             "and whether it was delivered and read; for a file you sent, what became of "
             "it (offered, downloaded, declined, returned, deleted). Deleting your copy "
             "('delete ID') leaves the recipient's.", ["sent", "sent --before 40"]),
    "unread": ("List only the messages you have not read yet, newest first.",
               ["unread"]),
    "history": ("Your conversation with one person, oldest first: what they sent you and "
                "what you sent them. 'history NAME --before ID' goes further back.",
                ["history bob", "history bob --before 120"]),
    "search": ("Find your messages, received and sent, whose subject or body holds every "
               "word given (whole words; case and accents do not matter).",
               ["search lunch", "search budget 2027"]),
    "reply": ("Answer a message: to its sender (or, for a message you sent, to its "
              "recipient), subject 'Re: ...'. Without BODY it is asked for. --quote adds "
              "the original, quoted.", ["reply 12", 'reply 12 "Yes, noon." --quote']),
    "forward": ("Send a copy of a message, with its sender, date and subject, to someone "
                "else, after an optional note.", ["forward 12 carol", 'forward 12 carol "FYI"']),
}


# ------------------------------------------------------------ parsing


def _parse_page(name):
    def parse(words):
        return parse_flags(words, _USAGE[name])[1]
    return parse


def _parse_history(words):
    plain, args = parse_flags(words, _USAGE["history"], positional=1)
    return {"with": checked(RECIPIENT, plain[0]), **args}


def _parse_search(words):
    plain, args = parse_flags(words, _USAGE["search"], positional=(1, None))
    text = checked(SEARCH_TEXT, " ".join(plain))
    if not any(ch.isalnum() for ch in text):
        raise UsageError("Give at least one word to search for.")
    return {"text": text, **args}


def _parse_reply(words):
    plain, args = parse_flags(words, _USAGE["reply"], {}, positional=(1, 2),
                              switches={"--quote": "quote"})
    args["id"] = message_id(plain[0])
    if len(plain) == 2:
        args["body"] = plain[1]
    return args


def _parse_forward(words):
    if not 2 <= len(words) <= 3:
        raise usage(_USAGE["forward"])
    args = {"id": message_id(words[0]), "to": checked(RECIPIENT, words[1])}
    if len(words) == 3:
        args["note"] = words[2]
    return args


PARSERS = {"sent": _parse_page("sent"), "unread": _parse_page("unread"),
           "history": _parse_history, "search": _parse_search,
           "reply": _parse_reply, "forward": _parse_forward}


# ------------------------------------------------------------ running


def _emit_paged(runner, record):
    """The interactive prompt shows a long listing a screen at a time."""
    show = getattr(runner, "show_paged", None)
    if show is None:
        runner.output.emit(record)
    else:
        show(record)


def _run_sent(runner, args):
    result = runner.session.request("Sent", before=args.get("before"), limit=args.get("limit"))
    _emit_paged(runner, sent_list_record(result))
    return OK


def _run_unread(runner, args):
    result = runner.session.request("Inbox", before=args.get("before"),
                                    limit=args.get("limit"), unread=True)
    runner.output.emit({**out_mod.inbox_record(result), "unread_only": True})
    return OK


def _run_history(runner, args):
    result = runner.session.request("History", before=args.get("before"),
                                    limit=args.get("limit"), **{"with": args["with"]})
    _emit_paged(runner, conversation_record("history", result, args["with"]))
    return OK


def _run_search(runner, args):
    result = runner.session.request("Search", text=args["text"], before=args.get("before"),
                                    limit=args.get("limit"))
    _emit_paged(runner, conversation_record("search", result, args["text"]))
    return OK


def _original(runner, message_number):
    message = runner.session.request("Read", id=message_number).get("message", {})
    if message.get("kind") != "message":
        raise UsageError(f"Message #{message_number} came from the server; there is nobody "
                         "to answer.")
    return message


def _run_reply(runner, args):
    original = _original(runner, args["id"])
    to = other_person(original, runner.user)
    subject = reply_subject(original["subject"])
    body = args.get("body")
    if body is None:
        body = runner._ask("ask_body", to)
    if args["quote"]:
        body = quoted_reply(body, original)
    return runner._send({"to": to, "subject": checked(SEND.field("subject"), subject),
                         "body": checked(SEND.field("body"), body)})


def _run_forward(runner, args):
    original = _original(runner, args["id"])
    subject = prefixed("Fwd: ", original["subject"])
    body = forwarded_body(args.get("note", ""), original)
    return runner._send({"to": args["to"], "subject": checked(SEND.field("subject"), subject),
                         "body": checked(SEND.field("body"), body)})


RUNS = {"sent": _run_sent, "unread": _run_unread, "history": _run_history,
        "search": _run_search, "reply": _run_reply, "forward": _run_forward}


# ------------------------------------------------------------ texts and records


def other_person(message, user):
    """Whom a reply to `message` goes to: its sender, or for one's own sent copy
    its recipient (the windowed client's Reply and Conversation use it too)."""
    return message["to"] if message["from"] == user else message["from"]


def prefixed(prefix, subject):
    """'Re: x' from 'x' and from 'Re: x' (once, any case), cut to the subject limit."""
    text = subject if subject.lower().startswith(prefix.lower()) else prefix + subject
    return text if len(text) <= rules.SUBJECT_MAX else text[:rules.SUBJECT_MAX - 1] + "…"


def reply_subject(subject):
    return prefixed("Re: ", subject)


def quoted_reply(body, original):
    when = out_mod.local_time(out_mod.iso_time(original.get("sent_at")))
    quoted = "\n".join("> " + line for line in original.get("body", "").split("\n"))
    return f"{body.rstrip()}\n\nOn {when}, {original.get('from')} wrote:\n{quoted}"


def forwarded_body(note, original):
    header = "\n".join([
        "---------- Forwarded message ----------",
        f"From: {original.get('from')}", f"To: {original.get('to')}",
        f"Date: {out_mod.local_time(out_mod.iso_time(original.get('sent_at')))}",
        f"Subject: {original.get('subject')}"])
    return (f"{note.rstrip()}\n\n" if note.strip() else "") + \
        f"{header}\n\n{original.get('body', '')}"


def sent_list_record(result):
    entries = [_sent_entry(e) for e in result.get("messages", [])]
    return {"type": "sent_list", "messages": entries, "more": bool(result.get("more"))}


def _sent_entry(e):
    """One sent message; one that offers a file says which and its state
    (offered, downloaded, declined, returned, deleted)."""
    entry = {"id": e.get("id"), "to": e.get("to"), "subject": e.get("subject"),
             "sent_at": out_mod.iso_time(e.get("sent_at")),
             "delivered": bool(e.get("delivered")), "read": bool(e.get("read"))}
    if isinstance(e.get("file"), dict):
        entry["file"] = {"id": e["file"].get("id"), "state": e["file"].get("state")}
    return entry


def conversation_entry(entry):
    shaped = {field: entry.get(field) for field in ("id", "from", "to", "subject",
                                                    "preview")}
    shaped["sent_at"] = out_mod.iso_time(entry.get("sent_at"))
    shaped["kind"] = entry.get("kind", "message")
    shaped["cut"] = bool(entry.get("cut"))
    for field in ("unread", "delivered", "read", "note"):
        if field in entry:
            shaped[field] = entry[field]
    return shaped


def conversation_record(kind, result, about):
    """A history (oldest first) or a search (newest first) as one record."""
    entries = [conversation_entry(e) for e in result.get("messages", [])]
    if kind == "history":
        entries.reverse()
        return {"type": "history", "with": about, "messages": entries,
                "more": bool(result.get("more"))}
    return {"type": "search", "text": about, "messages": entries,
            "more": bool(result.get("more"))}


# ------------------------------------------------------------ human text


def _state(entry):
    if entry.get("read"):
        return "read"
    return "delivered" if entry.get("delivered") else "waiting"


def render_sent_list(out, r):
    if not r["messages"]:
        return "You have sent nothing (that you kept)." if not r["more"] else ""
    lines = [out.paint(f"  {'ID':>6}  {'TO':<16} {'TIME':<16}  {'STATE':<9}  SUBJECT",
                       dim=True)]
    for e in r["messages"]:
        offered = e.get("file")
        about = f"  (file {offered['id']}: {out_mod.neutralise(str(offered['state']))})" \
            if offered else ""
        lines.append(f"  {e['id']:>6}  {out_mod.shorten(out_mod.neutralise(e['to']), 16):<16} "
                     f"{out_mod.local_time(e['sent_at']):<16}  {_state(e):<9}  "
                     f"{out_mod.shorten(out_mod.subject_text(e['subject']), 50)}{about}")
    if r["more"]:
        lines.append(out.paint(f"More: sent --before {r['messages'][-1]['id']}", dim=True))
    return "\n".join(lines)


def _conversation_lines(out, e):
    who = (f"{out_mod.neutralise(e['from'])} → {out_mod.neutralise(e['to'])}")
    mark = out.paint("*", "cyan", bold=True) if e.get("unread") else " "
    state = f" ({_state(e)})" if "delivered" in e else ""
    head = (f"{mark} #{e['id']} {out_mod.local_time(e['sent_at'])}  {who}: "
            f"{out_mod.subject_text(e['subject'])}{state}")
    preview = out_mod.neutralise(e.get("preview") or "", multiline=True).split("\n")
    body = [f"      {line}" for line in preview[:3] if line.strip()]
    if e.get("cut") or len(preview) > 3:
        body.append(out.paint(f"      … read {e['id']}", dim=True))
    return [out.paint(head, bold=bool(e.get("unread")))] + body


def render_history(out, r):
    name = out_mod.neutralise(r["with"])
    if not r["messages"]:
        return f"No messages between you and {name}." if not r["more"] else ""
    lines = [out.paint(f"Your conversation with {name}, oldest first:", dim=True)]
    if r["more"]:
        lines.append(out.paint(f"(Earlier: history {name} --before {r['messages'][0]['id']})",
                               dim=True))
    for entry in r["messages"]:
        lines += _conversation_lines(out, entry)
    return "\n".join(lines)


def render_search(out, r):
    if not r["messages"]:
        return "No message of yours holds all those words." if not r["more"] else ""
    lines = []
    for entry in r["messages"]:
        lines += _conversation_lines(out, entry)
    if r["more"]:
        lines.append(out.paint(f"More: search --before {r['messages'][-1]['id']} ...",
                               dim=True))
    return "\n".join(lines)


out_mod.RENDERERS.update({"sent_list": render_sent_list, "history": render_history,
                          "search": render_search})
