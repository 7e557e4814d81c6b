"""Fixtures that start real servers and always clean them up, even on failure."""

import pytest
from hypothesis import HealthCheck, settings

from Tests.support import ServerProcess

# No timing in tests, Hypothesis's own included: its deadline and its "input generation
# is slow" check fail a correct test on a busy machine. Every @settings inherits this.
settings.register_profile("parley", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("parley")


def pytest_generate_tests(metafunc):
    """A module or test marked `both_backends` runs its servers on SQLite and on
    PostgreSQL (a fresh database of the tests' own cluster for each test)."""
    if "storage_args" in metafunc.fixturenames and \
            metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("storage_args", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def storage_args(request):
    """The storage options of the servers a test starts: none (SQLite), or
    `--storage` and a fresh PostgreSQL database (`both_backends`)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return ()
    return ("--storage", request.getfixturevalue("pg_dsn"))


@pytest.fixture
def make_server(tmp_path, storage_args):
    """Factory: make_server(*args, env=..., prefix=...) -> a started ServerProcess."""
    started = []

    def make(*args, env=None, subdir="srv", prefix=()):
        directory = tmp_path / subdir
        directory.mkdir(exist_ok=True)
        server = ServerProcess(directory, *storage_args, *args, env=env, prefix=prefix)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill_group()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL cluster for this test worker (`Tests/support/postgres.py`)."""
    from Tests.support.postgres import PostgresCluster, find_binaries

    if find_binaries() is None:
        pytest.skip("The PostgreSQL tests need PostgreSQL's server binaries (Debian: "
                    "apt-get install postgresql); skipping them.")
    cluster = PostgresCluster()
    try:
        yield cluster.init().start()
    finally:
        cluster.remove()


@pytest.fixture
def pg_dsn(postgres):
    """A fresh empty database in that cluster, dropped afterwards: its DSN."""
    if postgres.pid() is None:                 # an earlier test stopped or killed it
        postgres.start()
    dsn = postgres.create_database()
    yield dsn
    if postgres.pid() is None:
        postgres.start()
    from Tests.support.postgres import database_name
    postgres.drop_database(database_name(dsn))
