"""Tests for Modules/client/session_parts.py: failures, the Ack of what was shown."""

from Modules.client.session_parts import (
    CannotConnect,
    ConnectionLost,
    RequestFailed,
    ack_packet,
    new_client_id,
)


def test_an_ack_names_every_id_shown_and_reads_those_shown_whole():
    packet = ack_packet([(4, True), (5, False), (6, True)])
    assert (packet.op, packet.data) == ("Ack", {"ids": [4, 5, 6], "read": [4, 6]})
    assert ack_packet([(7, False)]).data == {"ids": [7]}      # no read field at all


def test_failures_carry_their_sentence_code_and_exit_status():
    refused = RequestFailed("Too many requests.", "rate_limited", 3)
    assert (refused.message, refused.code, refused.retry_after) == (
        "Too many requests.", "rate_limited", 3)
    assert CannotConnect("x").exit_code == 2 and ConnectionLost("y").exit_code == 1


def test_message_ids_are_fresh_and_fit_the_servers_rule():
    from Modules import rules
    ids = {new_client_id() for _ in range(100)}
    assert len(ids) == 100 and all(rules.check_client_id(i) == i for i in ids)
