"""Shared fixtures: real databases, one per test.

* ``sqlite_url``: a SQLite file in the test's temporary folder.
* ``postgres_url``: an empty database on the local PostgreSQL server, the test's alone
  (the test process's own database, emptied before each test: see ``WorkerDatabase``).
* ``database_url``: each of SQLite, PostgreSQL and MariaDB in turn (parametrised).
* ``mariadb_url``: an empty utf8mb4 database on the local MariaDB server (root@127.0.0.1:3306,
  override with ``FLOWDB_TEST_MARIADB_URL``), the test's alone, emptied the same way.
* ``pgbouncer_url``: a new PostgreSQL database (created and dropped) reached through a
  real PgBouncer in transaction pooling mode (started once per session), with
  ``FLOWDB_DATABASE_POOL_MODE=transaction`` set.
* ``configured``: points flowdb's settings (``FLOWDB_*``) at ``database_url``.
* ``api``: a started REST API (test client) on ``configured``.

PostgreSQL is expected on 127.0.0.1:5432 (override with ``FLOWDB_TEST_POSTGRES_URL``).
A missing server fails the tests that need it; it is never a skip.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import ordering
from tests.dbtools import (
    DIALECTS,
    WorkerDatabase,
    create_postgres_database,
    drop_postgres_database,
    reset_postgres_database,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real ~/.flowdb and from the caller's FLOWDB_* settings."""
    for name in list(os.environ):
        if name.startswith("FLOWDB_") and name != "FLOWDB_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLOWDB_HOME", str(tmp_path / "flowdb-home"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a (not yet created) SQLite file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'flowdb.db'}"


@pytest.fixture(scope="session")
def _worker_postgres() -> Iterator[WorkerDatabase]:
    """This test process's own PostgreSQL database, dropped at the end of the session."""
    worker = WorkerDatabase(
        create_postgres_database, drop_postgres_database, reset_postgres_database
    )
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture(scope="session")
def _worker_mariadb() -> Iterator[WorkerDatabase]:
    """This test process's own MariaDB database, dropped at the end of the session."""
    from tests.dbtools import create_mariadb_database, drop_mariadb_database, reset_mariadb_database

    worker = WorkerDatabase(create_mariadb_database, drop_mariadb_database, reset_mariadb_database)
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture
def postgres_url(_worker_postgres: WorkerDatabase) -> str:
    """URL of an empty PostgreSQL database that only this test uses."""
    return _worker_postgres.fresh()


@pytest.fixture
def mariadb_url(_worker_mariadb: WorkerDatabase) -> str:
    """URL of an empty utf8mb4 database on the local MariaDB server that only this test uses."""
    return _worker_mariadb.fresh()


@pytest.fixture
def _own_postgres_url() -> Iterator[str]:
    """A PostgreSQL database created for this test and dropped after it."""
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def pgbouncer_port() -> Iterator[int]:
    """The port of a PgBouncer in transaction pooling mode in front of the test server."""
    from tests.dbtools import ADMIN_URL
    from tests.pgbouncer import running_pgbouncer

    with running_pgbouncer(ADMIN_URL) as port:
        yield port


@pytest.fixture
def pgbouncer_url(
    _own_postgres_url: str, pgbouncer_port: int, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A new PostgreSQL database through PgBouncer (transaction pooling), flowdb told so.

    A database of its own, not the worker's: PgBouncer keeps server connections to a
    database between tests, which a reset would end under it.
    """
    from tests.pgbouncer import through

    monkeypatch.setenv("FLOWDB_DATABASE_POOL_MODE", "transaction")
    return through(pgbouncer_port, _own_postgres_url)


@pytest.fixture
def pgbouncer_direct_url(_own_postgres_url: str, pgbouncer_url: str) -> str:
    """The database ``pgbouncer_url`` reaches, connected to directly (not pooled)."""
    return _own_postgres_url


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database: once on each dialect (SQLite, PostgreSQL, MariaDB)."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "postgres_url", "mariadb": "mariadb_url"}[
        request.param
    ]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``database_url``, also set as FLOWDB_DATABASE_URL for the code under test."""
    monkeypatch.setenv("FLOWDB_DATABASE_URL", database_url)
    return database_url


@pytest.fixture
def api(configured: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The REST API on ``configured`` (both dialects), admin routes on, started (so migrated)."""
    from fastapi.testclient import TestClient

    from flowdb.server.app import create_app

    monkeypatch.setenv("FLOWDB_SERVER_ADMIN_ROUTES", "true")
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--store-durations`` (``tests/ordering.py``)."""
    ordering.add_option(parser)


#: Allocations (less deallocations) between two young-generation collections: ten times
#: CPython's default, so that the middle and oldest generations fill more slowly too.
GC_THRESHOLDS = (10_000, 10, 10)


def pytest_configure(config: pytest.Config) -> None:
    """Record the durations when asked (``--store-durations``); collect garbage less often.

    A test process keeps a large heap of long-lived objects (SQLAlchemy, FastAPI,
    Alembic, hypothesis), which CPython's full collections scan again each time: with
    the default thresholds those took 9% of a test process's CPU (about 160 ms each).
    """
    gc.set_threshold(*GC_THRESHOLDS)
    if config.getoption("store_durations"):
        config.pluginmanager.register(ordering.DurationRecorder(), "flowdb-durations")


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports and the collection made out of the collector's sight."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest items first (``tests/ordering.py``); leave out the ``exhaustive`` items
    unless ``-m`` names that marker.

    They are the crash chains' kill points beyond the deterministic sample CI runs
    (``pytest -m exhaustive -n 2`` runs them all).
    """
    ordering.longest_first(items, ordering.known_durations())
    if "exhaustive" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("exhaustive") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(
            items=[item for item in items if item.get_closest_marker("exhaustive")]
        )
        items[:] = kept
