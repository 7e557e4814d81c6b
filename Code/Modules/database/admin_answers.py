"""What the monitor answers an admin connection: the operator's requests.

An admin connection is opened only by the daemon (`NewAnswers.admin`
checks the peer's pid on the socket), on behalf of the operator at its
console or of the admin command line, whose Unix user the daemon read from
the socket's credentials and named in the `Admin` request. Every request
here is in the registry's admin role (`Modules/operations.py`), so the
monitor's rules apply: nothing outside the table, fields validated before
anything is done.

Reads (Who, Users, UserStats, ServerStats, Ledger) change nothing and are
not recorded; every change (Broadcast, Announce, Kick, Suspend,
Unsuspend, ResetPassword, DeleteUser, ReleaseName, Setting with a value, Audit,
Backup, LogLevel, and what the daemon does itself and names in a Note: shutdown) is appended to the audit trail (`audit.py`) with the operator's
name once it is done. Secrets stay here: a one-time password is returned
once, to the operator who asked, and only its hash is stored.

Talks to: the shared `Monitor` (writer, readers, hasher, hub, settings,
audit trail) and the connections of logged-in users (to tell or end
them). How it fails: an unknown account is a `not_found` refusal; an
audit file that cannot be written is an `unavailable` refusal; anything
unexpected becomes the connection's "internal" refusal.
"""

import logging
import os
import secrets
import time

from Modules import rules
from Modules.database import (
    administration,
    auth,
    backup,
    file_upkeep,
    mailbox,
    reserved_names,
    statistics,
    storage,
)
from Modules.database.answers import Refusal, _Answers, delete_account
from Modules.database.reserved_names import ReservedNameAnswers

NUMBER_SETTING_MAX = 10 ** 12
log = logging.getLogger("parley.database")

ONE_TIME_WORDS = 3          # groups of a one-time password, 4 letters each
_ONE_TIME_LETTERS = "abcdefghjkmnpqrstuvwxyz23456789"   # nothing to confuse


def _now():
    return time.time()


def no_account(username):
    return Refusal("not_found", f"There is no account '{username}'.")


def one_time_password():
    """'kq7m-x3fd-9prt': easy to read out, 60 bits."""
    return "-".join("".join(secrets.choice(_ONE_TIME_LETTERS) for _ in range(4))
                    for _ in range(ONE_TIME_WORDS))


class AdminAnswers(ReservedNameAnswers, _Answers):
    """Phase "admin": the operator's requests, through the daemon."""

    def _done(self, action, target="", outcome=""):
        self.monitor.audit.action(self.conn.operator, action, target, outcome)
        log.info("admin %s by %s%s", action, self.conn.operator,
                 f": {target}" if target else "")

    # -- reads ---------------------------------------------------------------------
    async def who(self, _args):
        now = time.time()
        sessions = [{"user": conn.user, "address": conn.address, "since": conn.bound_at,
                     "idle": None if conn.last_request is None  # on another server
                     else round(max(0.0, now - conn.last_request), 1),
                     **({"parked": True} if conn.parked else {}),
                     **({"server": conn.server} if hasattr(conn, "server") else {})}
                    for conn in self.monitor.user_sessions(everywhere=True)]
        sessions.sort(key=lambda s: (s["user"], s["since"]))
        return {"sessions": sessions}

    async def users(self, args):
        users, more = await self.query(statistics.list_users, args["pattern"])
        online = self.monitor.sessions_by_user()
        for user in users:
            user["sessions"] = len(online.get(user["username"], ()))
        return {"users": users, "more": more}

    async def user_stats(self, args):
        user = await self.query(statistics.user_statistics, args["username"])
        if user is None:
            return no_account(args["username"])
        user["sessions"] = len(self.monitor.sessions_by_user().get(args["username"], ()))
        return {"user": user}

    async def server_stats(self, _args):
        totals = await self.query(statistics.totals)
        return {"totals": totals, "sessions": len(self.monitor.user_sessions()),
                "peak_sessions": self.monitor.peak_sessions,
                "database_bytes": database_bytes(self.monitor.data_dir),
                "files": await self._file_storage()}

    async def _file_storage(self):
        """The file store's figures (issue 14), its disk use and its limit."""
        files = self.monitor.files
        figures = await self.query(file_upkeep.storage_figures)
        figures["disk_bytes"] = await files.run(file_upkeep.disk_bytes, files.store)
        figures["storage_limit"] = files.limits.storage_bytes
        return figures

    async def ledger(self, args):
        addresses = await self.query(statistics.ledger, args["username"])
        if addresses is None:
            return no_account(args["username"])
        active = sorted({conn.address for conn in
                         self.monitor.sessions_by_user().get(args["username"], ())})
        return {"addresses": addresses, "active": active}

    # -- telling people ------------------------------------------------------------
    async def broadcast(self, args):
        deliveries = await self.job(administration.store_broadcast, args["text"], _now(),
                                    delivers=lambda deliveries: deliveries)
        live = len({recipient for recipient, _ in deliveries
                    if recipient in self.monitor.hub.subscribers})
        self._done("broadcast", f"{len(args['text'])} characters",
                   f"stored for {len(deliveries)}, {live} online")
        return {"stored": len(deliveries), "live": live}

    async def announce(self, args):
        told = 0
        for conn in self.monitor.user_sessions():
            conn.send_notice("announce", args["text"])
            told += 1
        self._done("announce", f"{len(args['text'])} characters", f"{told} sessions told")
        return {"told": told}

    # -- accounts ------------------------------------------------------------------
    async def kick(self, args):
        if await self.query(statistics.user_statistics, args["username"]) is None:
            return no_account(args["username"])
        ended = self.monitor.end_sessions(args["username"], "kicked")
        self._done("kick", args["username"], f"{ended} sessions ended")
        return {"ended": ended}

    async def suspend(self, args):
        changed = await self.job(administration.set_suspended, args["username"], True, _now())
        if changed is None:
            return no_account(args["username"])
        ended = self.monitor.end_sessions(args["username"], "suspended")
        self._done("suspend", args["username"],
                   f"{'suspended' if changed else 'already suspended'}, {ended} sessions ended")
        return {"changed": changed, "ended": ended}

    async def unsuspend(self, args):
        changed = await self.job(administration.set_suspended, args["username"], False,
                                 _now())
        if changed is None:
            return no_account(args["username"])
        self._done("unsuspend", args["username"], "unsuspended" if changed else "was not")
        return {"changed": changed}

    async def reset_password(self, args):
        username = args["username"]
        if await self.query(statistics.user_statistics, username) is None:
            return no_account(username)
        password = one_time_password()
        try:
            password_hash = await self.monitor.hasher.hash(password)
        except auth.Busy:
            return Refusal("busy", "The server is busy with logins; try again in a moment.")
        await self.job(storage.set_password_hash, username, password_hash, _now(), True)
        ended = self.monitor.end_sessions(username, "password_reset")
        self._done("reset-password", username, f"one-time password issued, {ended} "
                                               "sessions ended")
        return {"password": password}

    async def delete_user(self, args):
        username = args["username"]
        if await self.query(statistics.user_statistics, username) is None:
            return no_account(username)
        self.monitor.end_sessions(username, "account_deleted")
        bounced = await delete_account(self.monitor, username)
        self._done("delete-user", username, f"{bounced} unread messages returned")
        return {"bounced": bounced}

    # -- the server ----------------------------------------------------------------
    async def setting(self, args):
        name, value = args["name"], args["value"]
        if value is not None and name in mailbox.SETTING_NAMES and value.strip() and not (
                value.strip().isdigit() and 1 <= int(value.strip()) <= NUMBER_SETTING_MAX):
            return Refusal("bad_request", f"{name} is a whole number from 1 to "
                                          f"{NUMBER_SETTING_MAX} (or empty for the default).")
        if value is not None and name == reserved_names.SETTING:     # issue 13
            try:
                value = reserved_names.days_setting(value)
            except rules.RuleError as error:
                return Refusal(error.code, error.reason)
        if value is not None:
            await self.job(administration.set_setting, name, value.strip(), _now(),
                           self.conn.operator)
            self.monitor.settings[name] = value.strip()
            self._done(name, "cleared" if not value.strip() else
                       f"set, {len(value.strip())} characters")
        default = str(reserved_names.DEFAULT_DAYS) if name == reserved_names.SETTING else ""
        return {"name": name, "value": self.monitor.settings.get(name) or default}

    async def audit(self, _args):
        users, _more = await self.query(statistics.list_users, None, 10 ** 9)
        totals = await self.query(statistics.totals)
        storage_of = await self.query(file_upkeep.storage_by_user)
        for user in users:
            user.update(storage_of.get(user["username"], {}))
        totals.update({f"files_{name}": value for name, value in
                       (await self.query(file_upkeep.storage_figures)).items()})
        try:
            path = self.monitor.audit.report(self.conn.operator, users, totals)
        except OSError as error:
            return Refusal("unavailable", f"Cannot write the audit file: "
                                          f"{error.strerror or error}.")
        log.info("admin audit by %s: %d accounts", self.conn.operator, len(users))
        return {"path": path, "accounts": len(users)}

    async def backup(self, args):
        """Issue 15: the online backup (`Modules/database/backup.py`)."""
        backend = getattr(self.monitor, "backend", None)
        if backend is not None and not backend.supports_backup:
            return Refusal("bad_request", "The data is in PostgreSQL: back it up with "
                           "PostgreSQL's own tools (pg_dump, or pg_basebackup with WAL "
                           "archiving); see docs/postgresql.md.")
        try:
            manifest = await backup.take(self.monitor, args["directory"],
                                         key_paths=self.monitor.key_paths)
        except backup.BackupError as error:
            return Refusal("bad_request", str(error))
        files = manifest["files"]
        self._done("backup", args["directory"], f"{len(files)} files, "
                   f"{manifest['seconds']} s")
        return {"directory": args["directory"], "files": len(files),
                "bytes": sum(entry["size"] for entry in files.values()),
                "ids": manifest["ids"], "missing_files": manifest["missing_files"],
                "seconds": manifest["seconds"]}

    async def note(self, args):
        self._done(args["action"], args["detail"] or "")
        return {}

    async def log_level(self, args):
        logging.getLogger().setLevel(args["level"])
        self._done("log-level", args["level"])
        return {"level": args["level"]}


def database_bytes(data_dir):
    """The size of the three files and their write-ahead logs."""
    total = 0
    for name in storage.SCHEMAS:
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(os.path.join(data_dir, f"{name}.db{suffix}"))
            except OSError:
                pass
    return total
