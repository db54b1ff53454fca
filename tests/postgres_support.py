"""A real PostgreSQL server for the tests, started by the suite itself (a pytest plugin).

Fixtures
--------
``postgres`` (session)
    A :class:`PostgresServer`: Debian's server binaries (``pg_config --bindir``, else the
    newest ``/usr/lib/postgresql/*/bin``), ``initdb`` into a temporary directory, a random
    port, listening on a unix socket in that directory only (no TCP), stopped and removed
    after the session. Missing binaries skip the test — and fail it under ``CI=true``
    (``.ci/run`` installs Debian's ``postgresql``).
``storage_engine`` (module)
    ``"sqlite"``, unless the module sets ``STORAGE_ENGINES = ("sqlite", "postgresql")``:
    then its tests run once per engine, and the ``server``/``make_server`` fixtures of
    ``conftest.py`` start ``salon serve`` on that engine (a fresh database each).

The server itself and its helpers live in ``tests/support/postgres.py`` (no pytest there, so
the benches import them too) and are re-exported here: :meth:`PostgresServer.create_database`
(a new, empty database's URL) and :func:`pg_query` (rows, with SQLite's ``?`` placeholders)
for tests that look into the tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from support.postgres import PostgresServer, find_bindir, is_postgres, pg_dump, pg_query

__all__ = ["PostgresServer", "find_bindir", "is_postgres", "pg_dump", "pg_query"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    engines = getattr(metafunc.module, "STORAGE_ENGINES", None)
    if engines and "storage_engine" in metafunc.fixturenames:
        metafunc.parametrize("storage_engine", engines, indirect=True, scope="module")


@pytest.fixture(scope="module")
def storage_engine(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="module")
def storage_url(request: pytest.FixtureRequest, storage_engine: str) -> Iterator[Any]:
    """A factory: ``storage_url()`` is ``""`` on SQLite (the server's own data directory),
    else the URL of a new PostgreSQL database."""
    if storage_engine == "sqlite":
        yield lambda: ""
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    yield server.create_database
