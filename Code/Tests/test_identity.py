"""Tests for Modules/identity.py: the server key file and the client's known hosts."""

import base64
import hashlib
import os
import stat
import threading

import pytest

from Modules.identity import (
    CHANGED,
    MATCH,
    NEW,
    IdentityError,
    KnownHosts,
    default_known_hosts_path,
    fingerprint,
    daemon_key,
    host_id,
    load_or_create_server_key,
)
from Modules.wire.noise import KeyPair


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------ server key


def test_key_is_created_private_and_persists(tmp_path):
    first = load_or_create_server_key(str(tmp_path))
    path = tmp_path / "server_key"
    assert mode_of(path) == 0o600
    second = load_or_create_server_key(str(tmp_path))
    assert second.public == first.public and second.private == first.private
    assert [p.name for p in tmp_path.iterdir()] == ["server_key"]  # no temp left


def test_key_file_mode_ignores_a_loose_umask(tmp_path):
    old = os.umask(0)
    try:
        load_or_create_server_key(str(tmp_path))
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "server_key") == 0o600


def test_missing_data_dir_is_created(tmp_path):
    data_dir = tmp_path / "data" / "nested"
    key = load_or_create_server_key(str(data_dir))
    assert isinstance(key, KeyPair) and (data_dir / "server_key").exists()


@pytest.mark.parametrize("content", [
    b"", b"garbage", b"parley-server-key-v1 not*base64\n",
    b"parley-server-key-v1 " + base64.b64encode(bytes(31)) + b"\n",
    b"other-tag " + base64.b64encode(bytes(32)) + b"\n", bytes(32), b"x" * 10000,
])
def test_corrupt_key_file_is_refused_and_kept(tmp_path, content):
    path = tmp_path / "server_key"
    path.write_bytes(content)
    with pytest.raises(IdentityError) as info:
        load_or_create_server_key(str(tmp_path))
    assert str(path) in str(info.value) and "untouched" in str(info.value)
    assert path.read_bytes() == content
    assert isinstance(info.value, ValueError)


def test_error_never_shows_the_key_material(tmp_path):
    secret = base64.b64encode(b"s" * 31).decode()
    (tmp_path / "server_key").write_text(f"parley-server-key-v1 {secret}\n")
    with pytest.raises(IdentityError) as info:
        load_or_create_server_key(str(tmp_path))
    assert secret not in str(info.value)


def test_existing_valid_file_is_read(tmp_path):
    key = KeyPair.generate()
    (tmp_path / "server_key").write_text(
        "parley-server-key-v1 " + base64.b64encode(key.private).decode() + "\n")
    assert load_or_create_server_key(str(tmp_path)).public == key.public


def test_concurrent_creators_agree_on_one_key(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        load_or_create_server_key(str(tmp_path)).public)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results) == 8


def test_unreadable_key_path_is_identity_error(tmp_path):
    (tmp_path / "server_key").mkdir()
    with pytest.raises(IdentityError):
        load_or_create_server_key(str(tmp_path))


def test_the_daemon_gets_the_public_half_of_a_wrapped_key_and_nothing_without_it(tmp_path):
    plain = daemon_key(str(tmp_path))                 # made plain; its public half beside it
    assert isinstance(plain, KeyPair)
    (tmp_path / "server_key").write_bytes(b"parley-wrapped-v1 \x00\x01 sealed")
    public_only = daemon_key(str(tmp_path))           # as the database process leaves it
    assert public_only.public == plain.public and not hasattr(public_only, "private")
    (tmp_path / "server_key.pub").unlink()
    with pytest.raises(IdentityError, match="cannot read the server's public key"):
        daemon_key(str(tmp_path))
    (tmp_path / "server_key.pub").write_text("parley-server-public-key-v1 not-base64!\n")
    with pytest.raises(IdentityError, match="not a valid Parley public key"):
        daemon_key(str(tmp_path))


# ------------------------------------------------------------ fingerprints


def test_fingerprint_is_ssh_style():
    public = bytes(range(32))
    expected = base64.b64encode(hashlib.sha256(public).digest()).decode().rstrip("=")
    assert fingerprint(public) == "SHA256:" + expected
    assert "=" not in fingerprint(public) and len(fingerprint(public)) == 7 + 43


def test_host_id_formats():
    assert host_id("example.org", 7000) == "example.org:7000"
    assert host_id("::1", 7000) == "[::1]:7000"


# ------------------------------------------------------------ known hosts


def test_known_hosts_new_match_changed(tmp_path):
    hosts = KnownHosts(tmp_path / "known_hosts")
    key, other = KeyPair.generate().public, KeyPair.generate().public
    assert hosts.check("example.org:7000", key) == NEW
    assert hosts.known_key("example.org:7000") is None
    hosts.add("example.org:7000", key)
    assert hosts.check("example.org:7000", key) == MATCH
    assert hosts.check("example.org:7000", other) == CHANGED
    assert hosts.check("example.org:7001", key) == NEW
    assert KnownHosts(tmp_path / "known_hosts").known_key("example.org:7000") == key


def test_add_after_change_replaces_the_pin(tmp_path):
    hosts = KnownHosts(tmp_path / "known_hosts")
    old, new = KeyPair.generate().public, KeyPair.generate().public
    hosts.add("h:1", old)
    hosts.add("h:1", new)
    assert hosts.check("h:1", new) == MATCH and hosts.check("h:1", old) == CHANGED


def test_file_format_and_modes(tmp_path):
    path = tmp_path / "config" / "parley" / "known_hosts"
    key = KeyPair.generate().public
    KnownHosts(path).add("127.0.0.1:7000", key)
    KnownHosts(path).add("127.0.0.1:7000", key)  # already pinned: no second line
    assert path.read_text() == "127.0.0.1:7000 " + base64.b64encode(key).decode() + "\n"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700 and mode_of(path.parent.parent) == 0o700


def test_comments_blank_lines_and_missing_newline(tmp_path):
    path = tmp_path / "known_hosts"
    first, second = KeyPair.generate().public, KeyPair.generate().public
    path.write_text("# my servers\n\n   \n  a:1 " + base64.b64encode(first).decode())
    hosts = KnownHosts(path)
    assert hosts.check("a:1", first) == MATCH
    hosts.add("b:2", second)
    assert hosts.entries() == {"a:1": first, "b:2": second}
    assert path.read_text().endswith(base64.b64encode(first).decode() + "\nb:2 "
                                     + base64.b64encode(second).decode() + "\n")


@pytest.mark.parametrize("bad_line", [
    "onlyonefield", "a:1 not-base64!", "a:1 " + base64.b64encode(bytes(16)).decode(),
    "a:1 " + base64.b64encode(bytes(32)).decode() + " extra",
])
def test_malformed_line_names_its_number(tmp_path, bad_line):
    path = tmp_path / "known_hosts"
    path.write_text("# header\n\n" + bad_line + "\n")
    with pytest.raises(IdentityError) as info:
        KnownHosts(path).check("a:1", bytes(32))
    assert "line 3" in str(info.value) and str(path) in str(info.value)


def test_bad_arguments_are_refused(tmp_path):
    hosts = KnownHosts(tmp_path / "known_hosts")
    with pytest.raises(IdentityError):
        hosts.add("has space:1", bytes(32))
    with pytest.raises(IdentityError):
        hosts.add("#comment:1", bytes(32))
    with pytest.raises(IdentityError):
        hosts.check("a:1", b"short")
    assert not (tmp_path / "known_hosts").exists()


def test_default_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_known_hosts_path() == str(tmp_path / "parley" / "known_hosts")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".config" / "parley" / "known_hosts"
    assert default_known_hosts_path() == str(expected)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert default_known_hosts_path() == str(expected)
