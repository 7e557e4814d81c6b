"""The audit trail: `audit.log` in the data dir, appended to, never rewritten.

Two kinds of entries, each a block of plain text lines that starts with an
ISO 8601 UTC time stamp (the format is documented in README.md, "Operating
a server"):

    2026-12-01T23:59:01Z action kick by root: alice (1 session ended)

one line per admin action as it happens (who ran it is the Unix user the
daemon read from the caller's socket credentials), and the report of the
`audit` command:

    2026-12-01T23:59:30Z report by root: 2 accounts
      alice  logins=3 logoffs=3 sent=4 received=1 bounced=0 broadcasts=1 failed=0
             last_login=2026-12-01T23:50:00Z from 127.0.0.1 last_failed=- state=active
             files_stored=2 file_bytes=1048576 files_waiting=0
      ...
      server  logins=5 ... accounts=2
    2026-12-01T23:59:30Z end of report

Never a password, a hash, a subject or a body: actions are named with
their target and a count, and a broadcast or announcement is recorded by
its length, not its text.

With the data dir encrypted at rest (`Modules/database/db_key.py`) the entries
go to the server's log instead (`parley.audit`, one record a line): the log is
outside the data dir (a --log-file inside it is refused then).

Talks to: the file system only (the monitor calls it; nothing else writes
the data dir). The file is created 0600 and opened with O_APPEND for each
entry, so concurrent entries never interleave within a line and nothing
already written is ever touched. How it fails: `OSError` to the caller,
which answers the admin request with an error; the server goes on.
"""

import logging
import os
import time

log = logging.getLogger("parley.audit")

AUDIT_NAME = "audit.log"

_REPORT_FIGURES = (("logins", "logins"), ("logoffs", "logoffs"), ("sent", "messages_sent"),
                   ("received", "messages_received"), ("bounced", "messages_bounced"),
                   ("broadcasts", "broadcasts_received"), ("failed", "failed_logins"))
_FILE_FIGURES = (("files_stored", "files_stored"), ("file_bytes", "file_bytes"),
                 ("files_waiting", "files_waiting"))


def stamp(when):
    """'2026-12-01T23:59:01Z', or '-' for None."""
    if when is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _clean(text):
    """One line of plain text: control characters and newlines become spaces."""
    return "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(text))


class AuditLog:
    """Appends entries to `<data_dir>/audit.log`; with `to_log` (the data dir encrypted
    at rest: no file in it may name a user) to the server's log instead, a record a line."""

    def __init__(self, data_dir, clock=time.time, to_log=False):
        self.path = "the server log" if to_log else os.path.join(data_dir, AUDIT_NAME)
        self.to_log = to_log
        self.clock = clock

    def action(self, operator, action, target="", outcome=""):
        """One line for one admin action."""
        line = f"{stamp(self.clock())} action {_clean(action)} by {_clean(operator)}"
        if target:
            line += f": {_clean(target)}"
        if outcome:
            line += f" ({_clean(outcome)})"
        self._append([line])

    def report(self, operator, users, totals):
        """The dated report of every account and the server's totals; returns its path."""
        now = stamp(self.clock())
        lines = [f"{now} report by {_clean(operator)}: {len(users)} accounts"]
        for user in users:
            lines.extend(_user_lines(user))
        lines.append("  server  " + " ".join(f"{name}={value}"
                                             for name, value in sorted(totals.items())))
        lines.append(f"{now} end of report")
        self._append(lines)
        return self.path

    def _append(self, lines):
        if self.to_log:
            for line in lines:
                log.warning("audit: %s", line)     # WARNING: kept at every --log-level
            return
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def _user_lines(user):
    figures = " ".join(f"{label}={user.get(name, 0)}" for label, name in _REPORT_FIGURES)
    state = "suspended" if user.get("suspended") else "active"
    where = f" from {_clean(user['last_login_address'])}" if user.get("last_login_address") \
        else ""
    files = " ".join(f"{label}={user.get(name, 0)}" for label, name in _FILE_FIGURES)
    return [f"  {_clean(user['username'])}  {figures}",
            f"      last_login={stamp(user.get('last_login'))}{where} "
            f"last_failed={stamp(user.get('last_failed_login'))} state={state}",
            f"      {files}"]
