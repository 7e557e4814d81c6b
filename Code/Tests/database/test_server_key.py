"""Tests for Modules/database/server_key.py: the static key held by the monitor.

Against a real database process given a key: KeyAgree returns the same
X25519 agreement the key itself computes, a second one from the same
process (on another connection too) is refused and logged, a key that is
not a point is refused with a sentence, a user connection may not ask at
all, and a monitor without a key says it is unavailable. Pure: a process
is remembered once, by pid and start time, and the oldest are forgotten
past the bound.
"""

import os

import pytest

from Modules.database import server_key
from Modules.database.link import DbError
from Modules.wire import noise
from Modules.wire.errors import ProtocolError
from Tests.support import running_database
from Tests.support.monitor import login_link, user_link

KEY = noise.KeyPair.generate()


def test_a_process_is_known_by_its_pid_and_start_time_and_remembered_once():
    me = server_key.process_identity(os.getpid())
    assert me[0] == os.getpid() and me == server_key.process_identity(os.getpid())
    assert server_key.process_identity(None) is None
    assert server_key.process_identity(2 ** 22 + 12345) is None        # no such process
    holder = server_key.KeyHolder(KEY.private, remembered=2)
    assert holder.first_use(me) and not holder.first_use(me)
    assert not holder.first_use(None)
    assert holder.first_use((1, 1)) and holder.first_use((2, 2))     # `me` is forgotten
    assert holder.first_use(me)
    with pytest.raises(ProtocolError):
        holder.agree(b"\0" * 32)                     # not a usable X25519 point


def test_the_monitor_agrees_once_per_login_process_and_never_shows_the_key(tmp_path):
    peer = noise.KeyPair.generate()
    log_path = tmp_path / "db.log"
    with running_database(tmp_path, log_path=str(log_path),
                          server_private_key=KEY.private) as (_proc, config):
        with pytest.raises(DbError) as user:
            user_link(config, "alice").call("KeyAgree", ephemeral=peer.public.hex())
        assert user.value.code == "refused" and "not allowed here" in user.value.reason
        shared = login_link(config).call("KeyAgree", ephemeral=peer.public.hex())["shared"]
        assert bytes.fromhex(shared) == peer.dh(KEY.public) == KEY.dh(peer.public)
        with pytest.raises(DbError) as again:                 # same process, new link
            login_link(config).call("KeyAgree", ephemeral=peer.public.hex())
        assert again.value.code == "refused"
    log = log_path.read_text()
    assert "a second key agreement" in log
    assert KEY.private.hex() not in log and shared not in log


def test_a_monitor_without_a_key_says_so(database):
    _, config = database
    with pytest.raises(DbError) as refused:
        login_link(config).call("KeyAgree", ephemeral=noise.KeyPair.generate().public.hex())
    assert refused.value.code == "unavailable"
