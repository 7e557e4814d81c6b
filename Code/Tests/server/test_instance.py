"""One server per data dir, and finding it: `Modules/server/instance.py`."""

import json
import os
import stat

import pytest

from Modules.server import instance


def test_a_claim_is_exclusive_and_names_the_holder(tmp_path):
    data_dir = str(tmp_path / "data")
    first = instance.claim(data_dir)
    first.publish("/run/parley-x", 7117)
    with pytest.raises(instance.InstanceError) as info:
        instance.claim(data_dir)
    assert f"(pid {os.getpid()})" in str(info.value) and "stop it first" in str(info.value)
    first.release()
    instance.claim(data_dir).release()                    # free again


def test_the_published_info_is_found_only_while_the_claim_is_held(tmp_path):
    data_dir = str(tmp_path / "data")
    assert instance.find_running(data_dir) is None        # no data dir at all
    held = instance.claim(data_dir)
    assert instance.find_running(data_dir) is None        # claimed, not yet published
    held.publish("/run/parley-x", 7117)
    info = instance.find_running(data_dir)
    assert info["runtime_dir"] == "/run/parley-x" and info["port"] == 7117
    assert info["pid"] == os.getpid()
    mode = stat.S_IMODE(os.stat(instance.lock_path(data_dir)).st_mode)
    assert mode == 0o600
    held.release()
    assert instance.find_running(data_dir) is None


def test_a_stale_file_without_a_holder_means_no_server(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / instance.LOCK_NAME).write_text(json.dumps({"pid": 1, "runtime_dir": "/x"}))
    assert instance.find_running(str(data_dir)) is None


def test_garbage_in_the_file_is_no_server_and_no_crash(tmp_path):
    data_dir = str(tmp_path / "data")
    held = instance.claim(data_dir)
    with open(instance.lock_path(data_dir), "wb") as f:
        f.write(b"\xff\x00 not json")
    assert instance.find_running(data_dir) is None
    with pytest.raises(instance.InstanceError) as info:
        instance.claim(data_dir)
    assert "another Parley server is using" in str(info.value)
    held.release()
