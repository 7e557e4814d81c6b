"""The shared word parsers of the client's command modules."""

import pytest

from Modules.client.command_words import (
    UsageError,
    message_id,
    no_arguments,
    page_limit,
    parse_flags,
)


def test_message_numbers_take_a_hash_and_refuse_words_and_zero():
    assert message_id("12") == 12 and message_id("#12") == 12
    for word in ("x", "0", "-3", "1.5"):
        with pytest.raises(UsageError, match="is not a message number"):
            message_id(word)


def test_page_limits_are_the_servers_own():
    assert page_limit("200") == 200
    with pytest.raises(UsageError, match="--limit is a number from 1 to 200"):
        page_limit("201")


def test_flags_take_their_value_after_them_or_joined_with_an_equals_sign():
    assert parse_flags(["bob", "--before", "9", "--limit=5"], "x NAME", positional=1) == (
        ["bob"], {"before": 9, "limit": 5})


@pytest.mark.parametrize("words", [["--before"], ["--since", "3"], ["a", "b"]])
def test_a_flag_without_value_an_unknown_flag_or_a_word_too_many_is_refused(words):
    with pytest.raises(UsageError, match=r"^Usage: x \[NAME\]$"):
        parse_flags(words, "x [NAME]", positional=1 if len(words) == 2 else 0)


def test_a_command_without_arguments_refuses_any():
    assert no_arguments("who")([]) == {}
    with pytest.raises(UsageError, match="^Usage: who$"):
        no_arguments("who")(["x"])


def test_a_switch_is_true_when_given_false_when_not_and_takes_no_value():
    switches = {"--force": "force"}
    assert parse_flags(["12", "--force"], "d ID", {}, positional=1, switches=switches) == (
        ["12"], {"force": True})
    assert parse_flags(["12"], "d ID", {}, positional=1, switches=switches) == (
        ["12"], {"force": False})
    with pytest.raises(UsageError, match="^Usage: d ID$"):
        parse_flags(["--force", "--forse"], "d ID", {}, positional=1, switches=switches)
