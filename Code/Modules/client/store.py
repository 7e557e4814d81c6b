"""What the interactive client remembers between runs, per server and user.

Where: the user's data directory, `$XDG_DATA_HOME/parley` (an absolute
path), else `~/.local/share/parley`; inside it one folder per server and
account, `HOST_PORT/USER/` (anything but letters, digits, '.', '_' and '-'
in the host becomes '_'). Folders are created mode 0700, files 0600.

What:
* `history`: the command lines typed at the prompt (prompt_toolkit's
  FileHistory format), for Up/Down and Ctrl-R. Passwords never go there:
  they are asked by a separate prompt without history.
* `people`: the usernames this user has written to or heard from, most
  recent first, one per line (at most MAX_PEOPLE); `send` completes them.
  Only names that pass `rules.check_username` are kept, so nothing a
  sender chose can smuggle control characters into the completion menu.

Talks to: the file system only. How it fails: a folder or file that
cannot be created, read or written never stops the client; the store says
so once through `note` and keeps working in memory for this run (history
is then not saved). Nothing here is secret, but the files stay private.
"""

import os
import re
import tempfile
import threading

from Modules import rules

MAX_PEOPLE = 500
_UNSAFE_HOST_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def data_home(environ=None):
    """The client's data directory: $XDG_DATA_HOME/parley or ~/.local/share/parley."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):      # the XDG spec says to ignore relative paths
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "parley")


def account_dir(host, port, user, environ=None):
    """The folder for one account on one server."""
    server = f"{_UNSAFE_HOST_CHARS.sub('_', host)}_{int(port)}"
    return os.path.join(data_home(environ), server, user)


def known_name(name):
    """`name` normalised if it is a username a person could write to, else None."""
    try:
        return rules.check_username(name)
    except rules.RuleError:
        return None


def _why(error):
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class UserStore:
    """History file and known people for one account on one server."""

    def __init__(self, directory, note=None):
        self.directory = directory
        self.note = note or (lambda text: None)
        self._lock = threading.Lock()
        self._warned = False
        self._usable = self._make_directory()
        self._people = self._load_people()

    # -- the folder ------------------------------------------------------------------
    def _make_directory(self):
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            return True
        except OSError as error:
            self._warn(error)
            return False

    def _warn(self, error):
        if not self._warned:
            self._warned = True
            self.note(f"Cannot keep history and names in {self.directory} ({_why(error)}); "
                      "they are kept for this run only.")

    def path(self, name):
        return os.path.join(self.directory, name)

    def history_path(self):
        """The history file (created private), or None when it cannot be used."""
        if not self._usable:
            return None
        path = self.path("history")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            return path
        except OSError as error:
            self._warn(error)
            return None

    # -- people ----------------------------------------------------------------------
    def _load_people(self):
        try:
            with open(self.path("people"), encoding="utf-8", errors="replace") as file:
                names = [known_name(line.strip()) for line in file]
        except FileNotFoundError:
            return []
        except OSError as error:
            self._warn(error)
            return []
        return list(dict.fromkeys(name for name in names if name))[:MAX_PEOPLE]

    def people(self):
        """The known usernames, most recent first."""
        with self._lock:
            return list(self._people)

    def remember(self, *names):
        """Put the valid, non-reserved `names` (most recent first) at the top; save."""
        fresh = [name for name in map(known_name, names) if name]
        if not fresh:
            return
        with self._lock:
            updated = list(dict.fromkeys(fresh + self._people))[:MAX_PEOPLE]
            if updated == self._people:
                return
            self._people = updated
            self._save_people(updated)

    def _save_people(self, names):
        if not self._usable:
            return
        try:
            _write_private(self.path("people"), "".join(name + "\n" for name in names))
        except OSError as error:
            self._warn(error)


def _write_private(path, text):
    """Replace `path` with `text` atomically, readable by the owner only."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".people-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
