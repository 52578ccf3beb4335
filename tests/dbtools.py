"""Helpers for tests that talk to real databases (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

ADMIN_URL = os.environ.get(
    "FLOWDB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DIALECTS = ["sqlite", "postgresql"]


def create_postgres_database() -> str:
    """Create an empty database on the test server and return its URL."""
    name = f"flowdb_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this test and is not reachable: {exc}")
    finally:
        admin.dispose()
    return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by ``create_postgres_database``, disconnecting its sessions."""
    name = sa.make_url(url).database
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def sync_engine(url: str) -> sa.Engine:
    """A plain engine for test assertions (sync drivers, no flowdb behaviour)."""
    from flowdb.database.urls import parse_database_url

    return sa.create_engine(parse_database_url(url).sync_url, poolclass=sa.pool.NullPool)
