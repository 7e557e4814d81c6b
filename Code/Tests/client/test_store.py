"""Tests for Modules/client/store.py: what is kept on disk between runs.

The data directory ($XDG_DATA_HOME, absolute paths only) and the folder
per server and account; `UserStore` keeping only valid people, most
recent first, in private files, and working in memory when it cannot
write.
"""


def test_data_home_follows_xdg():
    from Modules.client.store import account_dir, data_home
    assert data_home({"XDG_DATA_HOME": "/x"}) == "/x/parley"
    assert data_home({"XDG_DATA_HOME": "rel"}).endswith("/.local/share/parley")
    assert account_dir("::1", 7117, "bob", {"XDG_DATA_HOME": "/x"}) == "/x/parley/__1_7117/bob"


def test_store_keeps_valid_people_most_recent_first_and_private(tmp_path):
    import os

    from Modules.client.store import UserStore
    directory = str(tmp_path / "parley" / "h_1" / "alice")
    store = UserStore(directory)
    store.remember("Bob", "carol", "parley", "\x1b[2Jx", "bob", None)
    assert store.people() == ["bob", "carol"]
    store.remember("carol")
    assert UserStore(directory).people() == ["carol", "bob"]
    history = store.history_path()
    assert os.path.exists(history)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    for name in ("history", "people"):
        assert os.stat(os.path.join(directory, name)).st_mode & 0o777 == 0o600


def test_store_works_in_memory_when_it_cannot_write(tmp_path):
    from Modules.client.store import UserStore
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    notes = []
    store = UserStore(str(blocker / "alice"), notes.append)
    store.remember("bob")
    assert store.people() == ["bob"] and store.history_path() is None
    assert len(notes) == 1 and "this run only" in notes[0]
