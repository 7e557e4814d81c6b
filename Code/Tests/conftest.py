"""Fixtures that start real servers and always clean them up, even on failure."""

import pytest

from Tests.support import ServerProcess


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(*args, env=...) -> a started ServerProcess."""
    started = []

    def make(*args, env=None, subdir="srv"):
        directory = tmp_path / subdir
        directory.mkdir(exist_ok=True)
        server = ServerProcess(directory, *args, env=env)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill_group()


@pytest.fixture
def server(make_server):
    return make_server()
