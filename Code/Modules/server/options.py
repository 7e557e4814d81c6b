"""The server's command-line options, each also settable as PARLEY_<NAME>.

`parse_server_options(argv, environ)` returns an argparse Namespace. A
command-line flag beats the environment, which beats the default. A bad
value (a port that is not a number, an unknown log level, a negative
client limit, an empty log file name, a greeting file that cannot be read)
stops the program with a one-line message naming the option and where it
came from, before anything is started. `--greeting` and `--motd` take the
text itself or `@FILE`, read from that file at start.
"""

import argparse
import logging
import os
import re

from Modules import operations, rules

DEFAULT_PORT = 7117
DEFAULT_DATA_DIR = "./parley-data"
MAX_OFF_OR_SECONDS = 30 * 24 * 3600


def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("a port is between 0 and 65535")
    return value


def _positive(text):
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _seconds(text):
    value = float(text)
    if not 0 < value <= 3600:
        raise ValueError("must be between 0 and 3600 seconds")
    return value


def _off_or_seconds(text):
    """0 turns the feature off; otherwise seconds, at most 30 days."""
    value = float(text)
    if not 0 <= value <= MAX_OFF_OR_SECONDS:
        raise ValueError("use 0 (off) or a number of seconds up to 30 days")
    return value


def _keepalive(text):
    value = int(text)
    if not 1 <= value <= 7200:
        raise ValueError("use a whole number of seconds from 1 to 7200")
    return value


def _port_fallback(text):
    value = int(text)
    if not 0 <= value <= 1000:
        raise ValueError("use a whole number from 0 to 1000")
    return value


def _log_level(text):
    if not isinstance(logging.getLevelName(text.upper()), int):
        raise ValueError("use DEBUG, INFO, WARNING or ERROR")
    return text.upper()


def _log_file(text):
    """An absolute path (every process opens it, whatever its working directory)."""
    if not text.strip():
        raise ValueError("give a file name")
    return os.path.abspath(os.path.expanduser(text))


def _directory(text):
    """An absolute directory path (the database process may start elsewhere)."""
    if not text.strip():
        raise ValueError("give a directory")
    return os.path.abspath(os.path.expanduser(text))


def _storage(text):
    """Where the database process keeps the data: "" or "sqlite" for the three SQLite
    files in the data dir, or a PostgreSQL URL (issue 18; docs/postgresql.md)."""
    cleaned = text.strip()
    if cleaned in ("", "sqlite"):
        return None
    if not cleaned.startswith(("postgresql://", "postgres://")):
        raise ValueError("use sqlite (the default) or a URL postgresql://[user@]host/dbname")
    return cleaned


def _spares(text):
    value = int(text)
    if not 0 <= value <= 64:
        raise ValueError("use a whole number from 0 to 64")
    return value


def _registration(text):
    value = text.strip().lower()
    if value not in ("open", "closed"):
        raise ValueError("use open or closed")
    return value


class _Text(str):
    """An operator's text already read: argparse converts a string default again,
    and a file's text that starts with '@' must not be taken for a file name."""


def _operator_text(text):
    """The text, or with `@FILE` that file's text (one final newline dropped); at
    most operations.TEXT_MAX characters and no control characters but newlines."""
    if isinstance(text, _Text):
        return text
    if text.startswith("@"):
        try:
            with open(os.path.expanduser(text[1:]), encoding="utf-8") as file:
                text = file.read().removesuffix("\n")
        except (OSError, UnicodeDecodeError) as error:
            why = getattr(error, "strerror", None) or str(error)
            raise ValueError(f"cannot read {text[1:]}: {why}") from None
    if len(text) > operations.TEXT_MAX:
        raise ValueError(f"at most {operations.TEXT_MAX} characters, not {len(text)}")
    try:
        return _Text(operations.TEXT.check(text))
    except rules.RuleError as error:
        raise ValueError(error.reason) from None


def _flag(text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("use 1/0, true/false, yes/no")


def _account(text):
    """A Unix account's name, as useradd takes it."""
    name = text.strip()
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", name):
        raise ValueError("use a Unix account name: up to 32 lower-case letters, digits, "
                         "'_', '.' or '-', starting with a letter or '_'")
    return name


def _ledger_addresses(text):
    value = int(text)
    if not 1 <= value <= 10_000:
        raise ValueError("use a whole number from 1 to 10000")
    return value


def _ledger_days(text):
    value = float(text)
    if not 0 < value <= 36_500:
        raise ValueError("use a number of days above 0, at most 36500")
    return value


def _positive_time(unit, most):
    """A number of days or hours above 0 (fractions too), at most `most`."""
    def convert(text):
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not 0 < value <= most:               # also NaN and infinity
            raise ValueError(f"use a number of {unit} above 0, at most {most}, e.g. 1.5")
        return value
    return convert


_BYTE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


def _byte_count(text):
    """Bytes, as a whole number with an optional K, M, G or T (powers of 1024)."""
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _BYTE_UNITS else ""
    value = int(cleaned[:len(cleaned) - len(unit)]) * _BYTE_UNITS[unit]
    if value < 1:
        raise ValueError("use a number of bytes of at least 1, e.g. 1073741824 or 1G")
    return value


# (name, type, default, help); --name on the command line, PARLEY_NAME in the environment.
SERVER_OPTIONS = [
    ("host", str, "127.0.0.1", "address to listen on"),
    ("port", _port, DEFAULT_PORT, "TCP port (0 picks a free port)"),
    ("port_fallback", _port_fallback, 0, "if the port is taken, try the next N ports"),
    ("data_dir", str, DEFAULT_DATA_DIR, "directory for the databases and the server key"),
    ("storage", _storage, None, "keep accounts and messages in SQLite in the data dir "
     "(sqlite) or in PostgreSQL, a URL postgresql://[user@]host[:port]/dbname shared by "
     "several servers (a password belongs in ~/.pgpass, not in the URL)"),
    ("files_dir", _directory, None, "directory of the files people send each other, "
     "encrypted (default: files/ in the data dir); several servers on one PostgreSQL "
     "share one, on a shared mount"),
    ("key_file", str, None, "encrypt the data dir at rest with the key in this file (kept "
     "outside the data dir; made 0400 on the first start; losing it loses the data); "
     "or $PARLEY_DB_KEY (hex) or the systemd credential parley-db-key"),
    ("log_level", _log_level, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    ("log_file", _log_file, None, "also append the log to this file (plain text, 0600; "
     "reopened on SIGHUP and when logrotate moves it)"),
    ("max_clients", _positive, 1000, "most connections served at once"),
    ("login_timeout", _seconds, 60.0, "seconds a connection has to log in"),
    ("spare_processes", _spares, 4, "processes started ahead of logins (0 to 64)"),
    ("max_startups", _positive, 128, "connections logging in at once; from half of it on, "
     "new ones are dropped at random"),
    ("max_startups_per_address", _positive, 16, "connections still logging in from one "
     "address"),
    ("connection_rate_per_address", _positive, 20, "new connections per second from one "
     "address (bursts of twice that)"),
    ("registration", _registration, "open", "open: anyone may create an account; closed: "
     "nobody"),
    ("registrations_per_address", _positive, 20, "new accounts per source address per hour"),
    ("registrations_per_hour", _positive, 200, "new accounts per hour on the whole server"),
    ("keepalive", _keepalive, 60, "seconds a connection may be silent before TCP keepalive "
     "probes ask whether its client is still there (4 unanswered probes end it)"),
    ("idle_timeout", _off_or_seconds, 0.0, "end a logged-in session after this many "
     "seconds with nothing from its client, telling it why (0: never)"),
    ("park_after", _off_or_seconds, 30.0, "hand an idle session's connection back to the "
     "daemon after this many seconds with nothing from its client; it wakes at once when "
     "the client sends or a message arrives (0: never)"),
    ("exit_when_idle", _off_or_seconds, 0.0, "stop cleanly after this many seconds with "
     "no connection at all (0: never)"),
    ("ledger_addresses", _ledger_addresses, 50, "addresses kept in each account's IP "
     "ledger (the least recently seen are forgotten first)"),
    ("ledger_days", _ledger_days, 90.0, "days an address stays in the IP ledger after it "
     "was last seen"),
    ("metrics_port", _port, 0, "serve Prometheus metrics at http://127.0.0.1:PORT/metrics "
     "(loopback only; 0: off)"),
    ("file_max_bytes", _byte_count, "1G", "the largest file a person may send (bytes, or "
     "with K, M, G)"),
    ("file_quota_bytes", _byte_count, "5G", "what the files one person sent may hold on the "
     "server together, while it keeps them"),
    ("file_storage_bytes", _byte_count, "50G", "what everyone's files may hold on the server "
     "together (a file is also refused when the disk would keep less than 1G free)"),
    ("file_expiry_days", _positive_time("days", 36_500), 30.0, "days the server keeps a "
     "file: one not downloaded or declined by then goes back to its sender"),
    ("upload_expiry_hours", _positive_time("hours", 876_000), 24.0, "hours a half-sent "
     "file is kept with nothing arriving before it is removed"),
    ("user", _account, "parley", "the Unix account the login and user processes run as "
     "when the server starts as root (the default one is created if missing)"),
    ("seccomp", _flag, "on", "filter the system calls of login and user processes (on, "
     "or off to measure or to rule it out)"),
    ("greeting", _operator_text, None, "text shown to every client before it logs in, or "
     "@FILE to read it from FILE; replaces the stored one, which the console changes live"),
    ("motd", _operator_text, None, "message of the day, shown after each login (text or "
     "@FILE); replaces the stored one"),
]


def _shown(text):
    """A bad value as an error message quotes it: a long text only in part."""
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(kind, name):
    def convert(text):
        try:
            return kind(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"bad value {_shown(text)!r} for --{name}: "
                                             f"{error}")
    return convert


def build_parser():
    parser = argparse.ArgumentParser(
        prog="server_daemon.py", description="Parley messaging server. Every option can "
        "also be set in the environment as PARLEY_<NAME>, e.g. PARLEY_PORT=7117.")
    for name, kind, default, text in SERVER_OPTIONS:
        flag = "--" + name.replace("_", "-")
        shown = "off" if default is None else default
        parser.add_argument(flag, dest=name, type=_typed(kind, flag[2:]), default=default,
                            help=f"{text} (default {shown}; env PARLEY_{name.upper()})")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="debug logging (env PARLEY_DEBUG=1); never logs secrets")
    parser.add_argument("--no-console", dest="no_console", action="store_true", default=False,
                        help="no operator console even in a terminal (env "
                             "PARLEY_NO_CONSOLE=1)")
    parser.add_argument("--fingerprint", action="store_true",
                        help="print the server key's fingerprint and exit")
    return parser


def parse_server_options(argv, environ=os.environ):
    parser = build_parser()
    defaults = {}
    for name, kind, _default, _text in SERVER_OPTIONS:
        env_name = f"PARLEY_{name.upper()}"
        if env_name in environ:
            try:
                defaults[name] = kind(environ[env_name])
            except ValueError as error:
                parser.error(f"bad value {_shown(environ[env_name])!r} in {env_name}: "
                             f"{error}")
    for flag in ("debug", "no_console"):
        env_name = f"PARLEY_{flag.upper()}"
        if env_name in environ:
            try:
                defaults[flag] = _flag(environ[env_name])
            except ValueError as error:
                parser.error(f"bad value in {env_name}: {error}")
    parser.set_defaults(**defaults)
    options = parser.parse_args(argv)
    if options.storage and options.key_file:
        parser.error("--key-file encrypts the SQLite files at rest; with --storage "
                     "postgresql:// encrypt PostgreSQL's disk instead (docs/postgresql.md)")
    return options


def db_key_source(options, environ):
    """Where the database process finds its key: --key-file, $PARLEY_DB_KEY (taken out of
    this process's environment, so no child inherits it) or a systemd credential dir."""
    return {"file": getattr(options, "key_file", None), "hex": environ.pop("PARLEY_DB_KEY", None),
            "credentials": environ.get("CREDENTIALS_DIRECTORY")}
