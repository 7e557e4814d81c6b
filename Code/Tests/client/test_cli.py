"""Tests for Modules/client/cli.py: the client's command line.

Defaults and PARLEY_HOST/PARLEY_PORT (an environ dict is passed, the real
environment is never read), every flag including --no-retry, bad usage as
one sentence (exit status 2, before any connection), the password taken
from the variable --password-env names, and --help.
"""

import io

import pytest

from Modules import identity
from Modules.client import cli as client_cli
from Modules.client.commands import UsageError


def test_defaults_without_environment():
    args = client_cli.parse_args([], {})
    assert (args.host, args.port) == ("127.0.0.1", 7117)
    assert not (args.batch or args.json or args.create or args.accept_new_host_key)
    assert args.known_hosts == identity.default_known_hosts_path()


def test_environment_gives_host_and_port_and_flags_win():
    environ = {"PARLEY_HOST": "example.org", "PARLEY_PORT": "9000"}
    args = client_cli.parse_args([], environ)
    assert (args.host, args.port) == ("example.org", 9000)
    args = client_cli.parse_args(["--host", "h", "--port", "1234"], environ)
    assert (args.host, args.port) == ("h", 1234)


def test_all_flags_parse():
    args = client_cli.parse_args(
        ["--user", "bob", "--password-env", "PW", "--create", "--batch", "--json",
         "--known-hosts", "/tmp/kh", "--accept-new-host-key", "--no-color"], {})
    assert (args.user, args.password_env, args.known_hosts) == ("bob", "PW", "/tmp/kh")
    assert args.create and args.batch and args.json and args.accept_new_host_key
    assert args.no_color


@pytest.mark.parametrize("argv, environ, words", [
    (["--port", "x"], {}, "--port"),
    (["--port", "70000"], {}, "1 to 65535"),
    ([], {"PARLEY_PORT": "seven"}, "PARLEY_PORT"),
    (["--frobnicate"], {}, "unrecognized"),
    (["--user", " "], {}, "--user"),
])
def test_bad_usage_is_one_sentence(argv, environ, words):
    with pytest.raises(UsageError) as caught:
        client_cli.parse_args(argv, environ)
    assert words in caught.value.reason


def test_password_comes_from_the_named_variable():
    args = client_cli.parse_args(["--password-env", "PW"], {})
    assert client_cli.password_from(args, {"PW": "s3cret-pw"}) == "s3cret-pw"
    with pytest.raises(UsageError) as caught:
        client_cli.password_from(args, {})
    assert "PW" in caught.value.reason and "s3cret" not in caught.value.reason
    assert client_cli.password_from(client_cli.parse_args([], {}), {}) is None


def test_main_exits_2_on_bad_usage(capsys):
    assert client_cli.main(["--port", "nope"], {}) == 2
    assert "--port" in capsys.readouterr().err


def test_batch_without_credentials_exits_2_before_connecting(capsys):
    status = client_cli.main(["--batch", "--port", "1"], {}, io.StringIO(""))
    assert status == 2
    assert "--user" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert client_cli.main(["--help"], {}) == 0
    assert "--accept-new-host-key" in capsys.readouterr().out


def test_no_retry_flag_parses():
    assert client_cli.parse_args(["--no-retry"], {}).no_retry
    assert not client_cli.parse_args([], {}).no_retry


def test_gui_flag_parses():     # the windows themselves: Tests/client/gui/
    assert client_cli.parse_args(["--gui"], {}).gui
    assert not client_cli.parse_args([], {}).gui
