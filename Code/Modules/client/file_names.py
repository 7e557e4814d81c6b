"""File names from other people, made safe to use on this computer.

A file's name is what its sender's client said it was: untrusted. Before
`download` puts it on disk, `safe_file_name()` makes it one plain name
inside the download directory, whatever it held:

* only the last component of any path is kept (`/` and `\\` both count as
  separators), so `../../.bashrc`, `/etc/passwd` or `C:\\x\\y` cannot leave
  the directory;
* leading dots and spaces go (no hidden files, no `.` or `..`), and so do
  trailing dots and spaces (which some systems drop silently);
* control characters (C0, DEL, C1), format characters such as
  bidirectional overrides, line and paragraph separators, and the
  characters `<>:"|?*` become `_`, so nothing reaches a terminal or a shell
  raw and the name is valid on Windows too;
* a reserved device name (CON, PRN, AUX, NUL, COM1–COM9, LPT1–LPT9, with
  any extension, any case) gets a `_` in front;
* a name longer than 255 bytes (UTF-8) is cut, keeping its extension;
* what is left empty becomes `file-ID`.

`target_path(directory, name, file_id)` joins the directory and the safe
name and checks, once more, that the result is directly inside it.

Talks to nothing but `os.path`; pure functions. Fails with ValueError only
when the joined path would leave the directory (which the rules above
make impossible; the check is the last line of defence).
"""

import os
import unicodedata

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
    """One plain file name made from `name` (see the module's rules)."""
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join(ch if _plain(ch) else "_" for ch in last)
    cleaned = cleaned.lstrip(". ").rstrip(". ")
    if not cleaned:
        return f"file-{file_id}"
    if cleaned.split(".", 1)[0].upper().rstrip(" ") in _RESERVED:
        cleaned = "_" + cleaned
    return _cut(cleaned)


def target_path(directory, name, file_id):
    """The path in `directory` where the file `name` is saved; ValueError if it
    would not be directly inside it."""
    safe = safe_file_name(name, file_id)
    path = os.path.join(directory, safe)
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(directory):
        raise ValueError(f"the file name {safe!r} would leave the download directory")
    return path
