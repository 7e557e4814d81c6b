"""Tests for Modules/rules.py: what usernames, passwords and messages may be.

Usernames (case folding, length bounds, allowed characters, a leading
letter, reserved names refused for accounts but allowed as recipients),
passwords (minimum and maximum length, never echoed), subjects (length, one
line), bodies (the 64 KiB limit counts UTF-8 bytes), client ids, and a
Hypothesis check that check_username returns a name matching the documented
rule or raises RuleError, nothing else.
"""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from Modules import rules
from Modules.rules import (
    BODY_MAX,
    CLIENT_ID_MAX,
    PASSWORD_MAX,
    PASSWORD_MIN,
    RESERVED_NAMES,
    SUBJECT_MAX,
    USERNAME_MAX,
    USERNAME_MIN,
    RuleError,
    check_body,
    check_client_id,
    check_password,
    check_recipient,
    check_subject,
    check_username,
)

DOCUMENTED_USERNAME = re.compile(r"[a-z][a-z0-9_.-]{%d,%d}" % (USERNAME_MIN - 1,
                                                              USERNAME_MAX - 1))


def refused(check, value, code=None):
    with pytest.raises(RuleError) as info:
        check(value)
    assert isinstance(info.value, ValueError)
    assert info.value.reason and str(info.value) == info.value.reason
    if code is not None:
        assert info.value.code == code
    return info.value


# ---------------------------------------------------------------- usernames


@pytest.mark.parametrize("given_name, expected", [
    ("alice", "alice"), ("Alice", "alice"), ("ALICE", "alice"), ("  bob  ", "bob"),
    ("a.b-c_9", "a.b-c_9"), ("abc", "abc"), ("a" * USERNAME_MAX, "a" * USERNAME_MAX),
    ("Z99", "z99"),
])
def test_good_usernames_are_normalised(given_name, expected):
    assert check_username(given_name) == expected
    assert check_recipient(given_name) == expected


@pytest.mark.parametrize("name", ["", "ab", "a" * (USERNAME_MAX + 1), "   "])
def test_username_length_bounds(name):
    error = refused(check_username, name, "bad_username")
    assert f"{USERNAME_MIN} to {USERNAME_MAX}" in error.reason


@pytest.mark.parametrize("name", ["9lives", "_alice", ".alice", "-alice", "al ice",
                                  "alice!", "al:ice", "ali/ce", "alïce", "al\nice",
                                  "\u0430lice"])
def test_username_characters(name):
    error = refused(check_username, name, "bad_username")
    assert "starts with a letter" in error.reason


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_names_refused_for_accounts_but_fine_as_recipients(name):
    error = refused(check_username, name.upper(), "bad_username")
    assert "reserved" in error.reason
    assert check_recipient(name.upper()) == name
    assert check_username(name, allow_reserved=True) == name


def test_system_sender_is_reserved():
    assert rules.SYSTEM_SENDER in RESERVED_NAMES


def test_a_username_is_ascii_before_it_is_lower_cased():
    for folding in ("\u212aelvin", "\u0130stanbul", "\uff41lice", "alice\u00e9"):
        refused(check_username, folding, "bad_username")    # KELVIN SIGN would be 'k'
    assert check_username("  Alice\t") == "alice"           # white space around is dropped


@pytest.mark.parametrize("value", [None, 42, b"alice", ["alice"]])
def test_username_must_be_text(value):
    refused(check_username, value, "bad_username")
    refused(check_recipient, value, "bad_username")


@given(st.one_of(st.text(max_size=40),
                 st.from_regex(r"\A\s*[A-Za-z][A-Za-z0-9_.-]{0,35}\s*\Z"),
                 st.sampled_from(sorted(RESERVED_NAMES)),
                 st.none(), st.integers(), st.binary(max_size=8)),
       st.booleans())
def test_check_username_returns_a_valid_name_or_raises_rule_error(value, allow_reserved):
    try:
        name = check_username(value, allow_reserved=allow_reserved)
    except RuleError as error:
        assert error.reason
        return
    assert isinstance(name, str) and DOCUMENTED_USERNAME.fullmatch(name)
    assert name == value.strip().lower()
    assert allow_reserved or name not in RESERVED_NAMES


# ---------------------------------------------------------------- passwords


def test_password_bounds():
    assert check_password("x" * PASSWORD_MIN) == "x" * PASSWORD_MIN
    assert check_password("é" * PASSWORD_MAX) == "é" * PASSWORD_MAX
    assert check_password("  spaces kept  ") == "  spaces kept  "
    short = refused(check_password, "x" * (PASSWORD_MIN - 1), "bad_password")
    assert str(PASSWORD_MIN) in short.reason
    long = refused(check_password, "x" * (PASSWORD_MAX + 1), "bad_password")
    assert str(PASSWORD_MAX) in long.reason


@pytest.mark.parametrize("value", [None, 12345678, b"bytes-password"])
def test_password_must_be_text(value):
    refused(check_password, value, "bad_password")


def test_password_never_echoed():
    for secret in ("hunter2", "y" * (PASSWORD_MAX + 5)):
        error = refused(check_password, secret)
        assert secret not in str(error) and secret not in repr(error)


# ---------------------------------------------------------- subject, body, ids


def test_subject_rules():
    assert check_subject("") == ""
    assert check_subject("é" * SUBJECT_MAX) == "é" * SUBJECT_MAX
    refused(check_subject, "x" * (SUBJECT_MAX + 1), "too_large")
    for bad in ("two\nlines", "carriage\rreturn", "end\n", "line\u2028separator",
                "next\x85line", "para\u2029graph", "form\x0cfeed", "vertical\x0btab"):
        refused(check_subject, bad, "bad_subject")
    refused(check_subject, None, "bad_subject")


def test_body_limit_counts_utf8_bytes():
    assert BODY_MAX == 64 * 1024
    assert check_body("") == ""
    assert check_body("x" * BODY_MAX) == "x" * BODY_MAX
    assert check_body("é" * (BODY_MAX // 2)) == "é" * (BODY_MAX // 2)   # 2 bytes each
    refused(check_body, "x" * (BODY_MAX + 1), "too_large")
    refused(check_body, "é" * (BODY_MAX // 2 + 1), "too_large")
    refused(check_body, "€" * (BODY_MAX // 3 + 1), "too_large")         # 3 bytes each
    refused(check_body, "😀" * (BODY_MAX // 4 + 1), "too_large")        # 4 bytes each
    assert check_body("😀" * (BODY_MAX // 4)) == "😀" * (BODY_MAX // 4)
    assert check_body("multi\nline\r\nbody") == "multi\nline\r\nbody"
    refused(check_body, b"bytes", "bad_body")


@pytest.mark.parametrize("client_id", ["a", "A-z_0.9:x", "x" * CLIENT_ID_MAX,
                                       "2024-01-01T00:00:00.1"])
def test_good_client_ids(client_id):
    assert check_client_id(client_id) == client_id


@pytest.mark.parametrize("client_id", ["", "x" * (CLIENT_ID_MAX + 1), "has space",
                                       "slash/", "é", "new\nline", None, 7])
def test_bad_client_ids(client_id):
    refused(check_client_id, client_id, "bad_client_id")
