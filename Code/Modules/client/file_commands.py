"""The client's file commands (issue 14): send a file to a person, fetch one.

    send-file NAME PATH [--note TEXT]    files
    download ID [PATH] [--force]         decline ID [--note TEXT]

A command module beside `commands` (listed in its EXTENSIONS): `COMMANDS`,
`PARSERS`, `RUNS`, and the human text of its records in
`output.RENDERERS`.

`send-file` reads the file twice, a chunk at a time: once for its SHA-256
(announced in FileOffer, with its size, so that a file too large or over
the quota is refused before any byte is sent), then to send it;
`download` fetches it into a partial file beside its target, checks size
and SHA-256, and only then gives it its name: the sender's name made safe
(`safe_file_name`, below), or PATH. An existing file is never replaced
without `--force`. The chunks move in `Modules/client/transfers.py`,
which resumes both after an interruption (from the last chunk the other
side holds) and shows progress.

JSON records: {"type":"file_sent","id","to","name","size","sha256",
"message","bounced","note"?}, {"type":"files","files":[{"id","direction",
"from","to","name","size","sha256","note","state","sent_at","stored"}]},
{"type":"file_downloaded","id","name","path","size","sha256","verified"},
{"type":"file_declined","id"}; while a file moves, the "progress" and
"transfer_resumed" records of `transfers`.

Talks to the runner's session (`request`, and `start_request` /
`finish_request` for the window) and the local file system. Fails like
every command: a usage mistake, a file that cannot be read or written, a
hash that does not match (nothing is kept) or the server's refusal is one
error record and the session goes on; no partial file is left behind.
"""

import os
import stat
import unicodedata

from Modules import operations
from Modules.client import output as out_mod
from Modules.client import transfers
from Modules.client.command_words import (
    UsageError,
    checked,
    message_id,
    parse_flags,
    usage,
)

OFFER = operations.get("FileOffer")
DECLINE = operations.get("FileDecline")
CHUNK = operations.FILE_CHUNK
OK = "ok"                # commands.OK (commands imports this module, so not from there)

COMMANDS = (
    ("send-file", "send-file NAME PATH [--note TEXT]",
     "send a file to someone (checked end to end, stored encrypted)"),
    ("files", "files", "the files offered to you and those you sent"),
    ("download", "download ID [PATH] [--force]", "save a file offered to you, checked"),
    ("decline", "decline ID [--note TEXT]", "send a file offered to you back"),
)
_USAGE = {name: text for name, text, _summary in COMMANDS}
HELP = {
    "send-file": ("Send a file to someone. It goes to the server in pieces, checked with "
                  "SHA-256, and is kept there encrypted until they decline it, it expires "
                  "(then, if they never downloaded it, it comes back to you) or neither of "
                  "you keeps the message that offers it; they get that message now or at "
                  "their next login.",
                  ["send-file bob report.pdf", 'send-file bob notes.txt --note "For Monday"']),
    "files": ("List the files offered to you and those you sent, with their number, size "
              "and state (offered, downloaded, declined, returned, deleted), while you "
              "keep the message that offers them.", ["files"]),
    "download": ("Save a file offered to you, in this directory under its (made safe) name, "
                 "in another directory, or as PATH. Its SHA-256 is checked before it gets "
                 "its name; an existing file is kept unless you add --force.",
                 ["download 7", "download 7 ~/Downloads", "download 7 copy.pdf --force"]),
    "decline": ("Send a file offered to you back to its sender, with an optional note.",
                ["decline 7", 'decline 7 --note "Wrong file?"']),
}


# ------------------------------------------------------------ parsing


def _note(word):
    return checked(OFFER.field("note"), word)


def _parse_send_file(words):
    plain, args = parse_flags(words, _USAGE["send-file"], {"--note": ("note", _note)},
                              positional=2)
    return {"to": checked(OFFER.field("to"), plain[0]), "path": plain[1], **args}


def _parse_download(words):
    plain, args = parse_flags(words, _USAGE["download"], {}, positional=(1, 2),
                              switches={"--force": "force"})
    args["id"] = file_id(plain[0])
    if len(plain) == 2:
        args["path"] = plain[1]
    return args


def _parse_decline(words):
    plain, args = parse_flags(words, _USAGE["decline"],
                              {"--note": ("note", lambda w: checked(DECLINE.field("note"), w))},
                              positional=1)
    return {"id": file_id(plain[0]), **args}


def _parse_files(words):
    if words:
        raise usage(_USAGE["files"])
    return {}


def file_id(word):
    """A file number ('7' or '#7'), as `files` lists them."""
    try:
        return message_id(word)
    except UsageError:
        raise UsageError(f"'{out_mod.neutralise(word)}' is not a file number (see "
                         "'files').") from None


PARSERS = {"send-file": _parse_send_file, "files": _parse_files,
           "download": _parse_download, "decline": _parse_decline}


# ------------------------------------------------------------ sending


def _open_regular(path):
    """The open file and its size; UsageError for what cannot be sent."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise UsageError(f"Cannot read {out_mod.neutralise(path)}: "
                         f"{error.strerror or error}.") from None
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        raise UsageError(f"{out_mod.neutralise(path)} is not a regular file.")
    return handle, info.st_size


def _run_send_file(runner, args):
    handle, size = _open_regular(args["path"])
    with handle:
        name = os.path.basename(os.path.normpath(args["path"])) or "file"
        fields = {"to": args["to"], "name": name, "size": size,
                  "sha256": transfers.file_sha256(handle)}
        if args.get("note") is not None:
            fields["note"] = args["note"]
        progress = transfers.progress_for(runner, "upload", name, size)
        try:
            done, digest = transfers.send_file(runner, handle, fields, progress)
        finally:
            progress.finish()
    record = {"type": "file_sent", "id": done.get("id"), "to": args["to"], "name": name,
              "size": size, "sha256": digest, "message": done.get("message"),
              "bounced": bool(done.get("bounced"))}
    if done.get("note"):
        record["note"] = done["note"]
    runner.output.emit(record)
    return OK


# ------------------------------------------------------------ the list, declining


def files_record(result):
    entries = []
    for entry in result.get("files", []):
        entries.append({"id": entry.get("id"), "direction": entry.get("direction"),
                        "from": entry.get("sender"), "to": entry.get("recipient"),
                        "name": entry.get("name"), "size": entry.get("size"),
                        "sha256": entry.get("sha256"), "note": entry.get("note"),
                        "state": entry.get("state"),
                        "sent_at": out_mod.iso_time(entry.get("created_at")),
                        "stored": bool(entry.get("stored"))})
    return {"type": "files", "files": entries}


def _run_files(runner, _args):
    runner.output.emit(files_record(runner.session.request("Files")))
    return OK


def _run_decline(runner, args):
    runner.session.request("FileDecline", id=args["id"], note=args.get("note"))
    runner.output.emit({"type": "file_declined", "id": args["id"]})
    return OK


# ------------------------------------------------------------ downloading


def _target(args, name):
    """Where the file goes: PATH as given (a directory: the safe name in it), or the
    safe name here. UsageError if it exists and --force was not given."""
    path = args.get("path")
    if path is None or os.path.isdir(path):
        path = target_path(path or os.curdir, name, args["id"])
    if os.path.lexists(path) and not args["force"]:
        raise UsageError(f"{out_mod.neutralise(path)} exists already; add --force to "
                         "replace it, or give another PATH.")
    if os.path.isdir(path):
        raise UsageError(f"{out_mod.neutralise(path)} is a directory.")
    return path


def _run_download(runner, args):
    made = []

    def progress_of(first):
        made.append(transfers.progress_for(runner, "download", first.get("name", ""),
                                           first.get("size", 0)))
        return made[0]

    try:
        first, path = transfers.fetch_file(runner, args["id"],
                                           lambda first: _target(args, first.get("name", "")),
                                           args["force"], progress_of)
    finally:
        for progress in made:
            progress.finish()
    runner.output.emit({"type": "file_downloaded", "id": args["id"],
                        "name": first.get("name"), "path": path, "size": first.get("size"),
                        "sha256": first.get("sha256"), "verified": True})
    return OK


RUNS = {"send-file": _run_send_file, "files": _run_files, "download": _run_download,
        "decline": _run_decline}


# ------------------------------------------------------------ other people's file names
#
# A file's name is what its sender's client said it was: untrusted. Before
# `download` puts it on disk, `safe_file_name()` makes it one plain name inside
# the download directory, whatever it held: only the last component of any path
# is kept (`/` and `\\` both separate), so `../../.bashrc`, `/etc/passwd` or
# `C:\\x\\y` cannot leave the directory; leading dots and spaces go (no hidden
# files, no `.` or `..`), and trailing ones (some systems drop them silently);
# control characters (C0, DEL, C1), format characters such as bidirectional
# overrides, line and paragraph separators and `<>:"|?*` become `_`, so nothing
# reaches a terminal or a shell raw and the name is valid on Windows too; a
# reserved device name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, any extension, any
# case) gets a `_` in front; a name over 255 bytes of UTF-8 is cut, its extension
# kept; what is left empty becomes `file-ID`. `target_path()` joins directory and
# safe name and checks once more that the result is directly inside it.

NAME_BYTES_MAX = 255
_FORBIDDEN = set('<>:"|?*\\/')
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
             *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}


def _plain(ch):
    """A character harmless in a file name and on a terminal."""
    if ch in _FORBIDDEN:
        return False
    category = unicodedata.category(ch)
    return not (category[0] == "C" or category in ("Zl", "Zp"))


def _cut(name, limit=NAME_BYTES_MAX):
    """At most `limit` bytes of UTF-8, the extension (if short) kept."""
    if len(name.encode("utf-8", "replace")) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > 16:
        stem, extension = name, ""
    keep = limit - len(extension.encode("utf-8")) - (1 if extension else 0)
    while len(stem.encode("utf-8", "replace")) > keep:
        stem = stem[:-1]
    return stem + ("." + extension if extension else "")


def safe_file_name(name, file_id):
    """One plain file name made from `name` (see the rules above)."""
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if _plain(ch) else "_" for ch in last)
    cleaned = cleaned.lstrip(". ").rstrip(". ")
    if not cleaned:
        return f"file-{file_id}"
    if cleaned.split(".", 1)[0].upper().rstrip(" ") in _RESERVED:
        cleaned = "_" + cleaned
    return _cut(cleaned)


def target_path(directory, name, file_id):
    """The path in `directory` where the file `name` is saved; UsageError if it
    would not be directly inside it (the rules above make that impossible: this
    is the last line of defence)."""
    safe = safe_file_name(name, file_id)
    path = os.path.join(directory, safe)
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(directory):
        raise UsageError(f"The file name {out_mod.neutralise(safe)} would leave the "
                         "download directory; give a PATH.")
    return path


# ------------------------------------------------------------ human text


def size_text(size):
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def render_file_sent(_out, r):
    shown = out_mod.neutralise(r["name"])
    if r["bounced"]:
        return f"File #{r['id']} ({shown}) came back: {out_mod.neutralise(r.get('note', ''))}"
    return (f"Sent {shown} ({size_text(r['size'])}) to {out_mod.neutralise(r['to'])} as file "
            f"#{r['id']}; the server checked its SHA-256 {r['sha256'][:16]}…")


def render_files(out, r):
    if not r["files"]:
        return "No files offered to you, and none sent."
    lines = [out.paint(f"  {'ID':>6}  {'FROM/TO':<18} {'SIZE':>10}  {'STATE':<10}  NAME",
                       dim=True)]
    for e in r["files"]:
        who = (f"from {e['from']}" if e["direction"] == "received" else f"to {e['to']}")
        lines.append(f"  {e['id']:>6}  {out_mod.shorten(out_mod.neutralise(who), 18):<18} "
                     f"{size_text(e['size'] or 0):>10}  {e['state'] or '':<10}  "
                     f"{out_mod.shorten(out_mod.neutralise(e['name']), 40)}")
    return "\n".join(lines)


def render_file_downloaded(_out, r):
    return (f"Saved file #{r['id']} as {out_mod.neutralise(r['path'])} "
            f"({size_text(r['size'])}); SHA-256 checked: {r['sha256'][:16]}… matches.")


def render_file_declined(_out, r):
    return f"File #{r['id']} was sent back to its sender."


out_mod.RENDERERS.update({"file_sent": render_file_sent, "files": render_files,
                          "file_downloaded": render_file_downloaded,
                          "file_declined": render_file_declined})
