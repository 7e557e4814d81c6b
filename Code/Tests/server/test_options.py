"""Tests for Modules/server/options.py: the server's command line and PARLEY_<NAME> variables.

Defaults; every option from the command line and from the environment (an
environ dict is passed, the real environment is never read); the command
line beats the environment; bad values stop with SystemExit(2) and a message
on stderr naming the option (the flag, or the variable it came from).
"""

import pytest

from Modules.server.options import DEFAULT_DATA_DIR, DEFAULT_PORT, parse_server_options

# (option, command-line text, environment text)
EVERY_OPTION = [
    ("host", "0.0.0.0", "::1"),
    ("port", "8000", "9000"),
    ("data_dir", "/tmp/parley-a", "/tmp/parley-b"),
    ("log_level", "debug", "warning"),
    ("max_clients", "5", "7"),
    ("login_timeout", "2.5", "30"),
    ("port_fallback", "3", "10"),
    ("keepalive", "2", "300"),
    ("idle_timeout", "1.5", "600"),
    ("exit_when_idle", "90", "0"),
    ("log_file", "/var/log/parley.log", "/tmp/parley-env.log"),
    ("metrics_port", "9464", "9100"),
    ("greeting", "Welcome to the lab.", "Hello from the environment."),
    ("motd", "Exam on Friday.", "No class today."),
    ("storage", "postgresql://parley@db1/parley", "postgres:///parley?host=/run/pg"),
    ("files_dir", "/srv/parley-files", "/mnt/shared/files"),
]
CONVERT = {"port": int, "max_clients": int, "login_timeout": float,
           "log_level": str.upper, "port_fallback": int, "keepalive": int,
           "idle_timeout": float, "exit_when_idle": float, "metrics_port": int}


def parse(argv=(), environ=None):
    return parse_server_options(list(argv), environ or {})


def flag(name):
    return "--" + name.replace("_", "-")


def expected(name, text):
    return CONVERT.get(name, str)(text)


def exits(capsys, argv=(), environ=None):
    """The stderr text of a parse that must exit with status 2."""
    with pytest.raises(SystemExit) as info:
        parse(argv, environ)
    assert info.value.code == 2
    return capsys.readouterr().err


# ------------------------------------------------------------------ values


def test_defaults():
    options = parse()
    assert options.host == "127.0.0.1"
    assert options.port == DEFAULT_PORT == 7117
    assert options.data_dir == DEFAULT_DATA_DIR
    assert options.log_level == "INFO"
    assert options.max_clients == 1000
    assert options.login_timeout == 60.0
    assert options.port_fallback == 0 and options.keepalive == 60
    assert options.idle_timeout == 0 and options.exit_when_idle == 0   # 0: off
    assert options.log_file is None
    assert options.metrics_port == 0                                   # 0: off
    assert options.greeting is None and options.motd is None   # keep the stored ones
    assert options.debug is False and not options.fingerprint


def test_real_environment_is_not_needed(monkeypatch):
    monkeypatch.setenv("PARLEY_PORT", "1234")
    assert parse_server_options([], {}).port == DEFAULT_PORT


@pytest.mark.parametrize("name, cli, _env", EVERY_OPTION)
def test_every_option_from_the_command_line(name, cli, _env):
    assert getattr(parse([flag(name), cli]), name) == expected(name, cli)
    assert getattr(parse([f"{flag(name)}={cli}"]), name) == expected(name, cli)


@pytest.mark.parametrize("name, _cli, env", EVERY_OPTION)
def test_every_option_from_the_environment(name, _cli, env):
    options = parse(environ={f"PARLEY_{name.upper()}": env})
    assert getattr(options, name) == expected(name, env)


@pytest.mark.parametrize("name, cli, env", EVERY_OPTION)
def test_command_line_beats_environment(name, cli, env):
    options = parse([flag(name), cli], {f"PARLEY_{name.upper()}": env})
    assert getattr(options, name) == expected(name, cli)


def test_all_options_together():
    options = parse(["--port", "1", "--debug", "--fingerprint"],
                    {"PARLEY_HOST": "10.0.0.1", "PARLEY_PORT": "2",
                     "PARLEY_MAX_CLIENTS": "3", "PARLEY_UNKNOWN": "ignored"})
    assert (options.host, options.port, options.max_clients) == ("10.0.0.1", 1, 3)
    assert options.debug is True and options.fingerprint is True


def test_debug_flag_and_variable():
    assert parse(["--debug"]).debug is True
    for text in ("1", "true", "YES", " on "):
        assert parse(environ={"PARLEY_DEBUG": text}).debug is True
    for text in ("0", "false", "No", "off", ""):
        assert parse(environ={"PARLEY_DEBUG": text}).debug is False
    assert parse(["--debug"], {"PARLEY_DEBUG": "0"}).debug is True


def test_no_console_flag_and_variable():
    assert parse().no_console is False
    assert parse(["--no-console"]).no_console is True
    assert parse(environ={"PARLEY_NO_CONSOLE": "1"}).no_console is True
    assert parse(environ={"PARLEY_NO_CONSOLE": "off"}).no_console is False


def test_port_zero_and_edges():
    assert parse(["--port", "0"]).port == 0
    assert parse(["--port", "65535"]).port == 65535
    assert parse(environ={"PARLEY_PORT": "0"}).port == 0


def test_log_level_is_upper_cased_everywhere():
    assert parse(["--log-level", "error"]).log_level == "ERROR"
    assert parse(environ={"PARLEY_LOG_LEVEL": "Debug"}).log_level == "DEBUG"


def test_log_file_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse(["--log-file", "logs/p.log"]).log_file == str(tmp_path / "logs" / "p.log")
    assert parse(environ={"PARLEY_LOG_FILE": "p.log"}).log_file == str(tmp_path / "p.log")


def test_greeting_and_motd_read_from_a_file(tmp_path):
    (tmp_path / "greeting.txt").write_text("@home: the lab server\nBe kind.\n")
    (tmp_path / "motd.txt").write_text("Exam on Friday.")
    argument = f"@{tmp_path / 'greeting.txt'}"
    assert parse(["--greeting", argument]).greeting == "@home: the lab server\nBe kind."
    assert parse(environ={"PARLEY_GREETING": argument}).greeting == \
        "@home: the lab server\nBe kind."      # a text starting with @ is not read again
    assert parse(["--motd", f"@{tmp_path / 'motd.txt'}"]).motd == "Exam on Friday."
    assert parse(["--motd", ""]).motd == ""      # empty: no message of the day


@pytest.mark.parametrize("text, words", [
    ("@/no/such/file", "cannot read /no/such/file"), ("x" * 2001, "at most 2000"),
    ("bell\x07", "control characters")], ids=["no file", "too long", "control"])
def test_a_bad_greeting_or_motd_stops_the_start(capsys, text, words):
    for argv, environ, where in ((["--greeting", text], None, "--greeting"),
                                 ([], {"PARLEY_MOTD": text}, "PARLEY_MOTD")):
        err = exits(capsys, argv, environ)
        assert where in err and words in err and "Traceback" not in err
        assert len(err.splitlines()[-1]) < 300  # a long text is not echoed whole


def test_storage_defaults_to_sqlite_and_takes_a_postgresql_url():
    assert parse().storage is None
    assert parse(["--storage", "sqlite"]).storage is None
    assert parse(environ={"PARLEY_STORAGE": " postgresql://h/db "}).storage == "postgresql://h/db"


@pytest.mark.parametrize("argv, words", [
    (["--storage", "mysql://h/db"], "bad value 'mysql://h/db' for --storage: use sqlite"),
    (["--storage", "postgresql://h/db", "--key-file", "/k"], "encrypt PostgreSQL's disk"),
])
def test_a_bad_storage_stops_the_start(capsys, argv, words):
    with pytest.raises(SystemExit) as stopped:
        parse(argv)
    assert stopped.value.code == 2 and words in capsys.readouterr().err


def test_file_limits_take_bytes_with_an_optional_unit():
    options = parse()
    assert (options.file_max_bytes, options.file_quota_bytes) == (1024 ** 3, 5 * 1024 ** 3)
    assert parse(["--file-max-bytes", "2048"]).file_max_bytes == 2048
    assert parse(["--file-max-bytes", "3M"]).file_max_bytes == 3 * 1024 ** 2
    assert parse(["--file-quota-bytes", "2GiB"]).file_quota_bytes == 2 * 1024 ** 3
    assert parse(environ={"PARLEY_FILE_QUOTA_BYTES": "10k"}).file_quota_bytes == 10 * 1024
    assert options.file_storage_bytes == 50 * 1024 ** 3
    assert parse(["--file-storage-bytes", "1T"]).file_storage_bytes == 1024 ** 4


def test_file_expiry_times_take_fractions_and_default_to_30_days_and_24_hours():
    options = parse()
    assert (options.file_expiry_days, options.upload_expiry_hours) == (30.0, 24.0)
    assert parse(["--file-expiry-days", "0.00003"]).file_expiry_days == 0.00003
    assert parse(environ={"PARLEY_UPLOAD_EXPIRY_HOURS": "1.5"}).upload_expiry_hours == 1.5


@pytest.mark.parametrize("name, text", [
    ("file_expiry_days", "0"), ("file_expiry_days", "-1"), ("file_expiry_days", "nan"),
    ("file_expiry_days", "inf"), ("file_expiry_days", "soon"),
    ("upload_expiry_hours", "0"), ("upload_expiry_hours", "1e9"),
])
def test_a_bad_expiry_time_is_one_clear_sentence(capsys, name, text):
    err = exits(capsys, [f"{flag(name)}={text}"])
    last = err.splitlines()[-1]
    assert flag(name) in last and repr(text) in last and "Traceback" not in err
    unit = "days" if name == "file_expiry_days" else "hours"
    assert last.endswith(f"use a number of {unit} above 0, at most "
                         f"{36500 if unit == 'days' else 876000}, e.g. 1.5")


# -------------------------------------------------------------- bad values


@pytest.mark.parametrize("name, text", [
    ("port", "abc"), ("port", "70000"), ("port", "-1"), ("max_clients", "0"),
    ("max_clients", "-3"), ("max_clients", "many"), ("log_level", "LOUD"),
    ("login_timeout", "0"), ("login_timeout", "5000"), ("login_timeout", "soon"),
    ("port_fallback", "-1"), ("port_fallback", "1001"), ("keepalive", "0"),
    ("keepalive", "1.5"), ("keepalive", "99999"), ("idle_timeout", "-5"),
    ("idle_timeout", "forever"), ("exit_when_idle", "99999999"),
    ("log_file", " "), ("metrics_port", "70000"), ("metrics_port", "http"),
    ("file_max_bytes", "0"), ("file_max_bytes", "-1G"), ("file_quota_bytes", "lots"),
    ("file_quota_bytes", "1.5G"),
])
def test_bad_command_line_value_exits_naming_the_option(capsys, name, text):
    err = exits(capsys, [f"{flag(name)}={text}"])
    assert flag(name) in err and repr(text) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name, text", [
    ("port", "abc"), ("port", "70000"), ("max_clients", "0"), ("log_level", "LOUD"),
    ("login_timeout", "-1"), ("port", ""), ("port_fallback", "many"), ("keepalive", "-1"),
    ("idle_timeout", "soon"), ("exit_when_idle", "-1"),
    ("login_timeout", "-1"), ("port", ""), ("log_file", ""), ("metrics_port", "-1"),
])
def test_bad_environment_value_exits_naming_the_variable(capsys, name, text):
    err = exits(capsys, environ={f"PARLEY_{name.upper()}": text})
    assert f"PARLEY_{name.upper()}" in err and repr(text) in err
    assert "Traceback" not in err


def test_bad_debug_variable_exits(capsys):
    err = exits(capsys, environ={"PARLEY_DEBUG": "maybe"})
    assert "PARLEY_DEBUG" in err


def test_unknown_flag_exits(capsys):
    err = exits(capsys, ["--no-such-option"])
    assert "--no-such-option" in err


def test_help_names_the_environment_variables(capsys):
    with pytest.raises(SystemExit) as info:
        parse(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in ("PARLEY_PORT", "PARLEY_DATA_DIR", "PARLEY_MAX_CLIENTS", "PARLEY_DEBUG",
                 "PARLEY_PORT_FALLBACK", "PARLEY_KEEPALIVE", "PARLEY_IDLE_TIMEOUT",
                 "PARLEY_EXIT_WHEN_IDLE", "PARLEY_GREETING", "PARLEY_MOTD"):
        assert name in out
