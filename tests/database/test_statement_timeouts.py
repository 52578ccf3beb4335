"""Migrations keep their own statement timeout, whatever PostgreSQL sets for the API."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from flowdb.database.alembic_commands import alembic_upgrade
from flowdb.database.history import load_history
from flowdb.errors import MigrationFailedError
from tests.dbtools import ADMIN_URL, revision_of, sync_engine

BEFORE_BACKFILL = "2c9f4d1a8e65"  # the next revision updates every flow run


@pytest.fixture
def big_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A PostgreSQL database before the backfill, with 50,000 flow runs to update."""
    monkeypatch.setenv("FLOWDB_DATABASE_URL", postgres_url)
    alembic_upgrade(BEFORE_BACKFILL)
    engine = sync_engine(postgres_url)
    try:
        with engine.begin() as connection:
            flow = "INSERT INTO flow (id, name) VALUES (gen_random_uuid(), 'f')"
            connection.execute(sa.text(flow))
            connection.execute(
                sa.text(
                    "INSERT INTO flow_run (id, flow_id, name) SELECT gen_random_uuid(), "
                    "(SELECT id FROM flow), 'run-' || i FROM generate_series(1, 50000) AS i"
                )
            )
    finally:
        engine.dispose()
    return postgres_url


def set_database_default_timeout(url: str, value: str) -> None:
    """What an operator does to bound the API's queries: a default on the database."""
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            name = sa.make_url(url).database
            setting = f"ALTER DATABASE \"{name}\" SET statement_timeout = '{value}'"
            connection.execute(sa.text(setting))
    finally:
        admin.dispose()


def test_a_database_wide_api_timeout_does_not_cut_migrations_short(big_postgres: str) -> None:
    set_database_default_timeout(big_postgres, "1ms")
    engine = sync_engine(big_postgres)
    try:
        # The default bites plain connections: the 50,000-row update cannot finish (on a
        # busy machine even the driver's first query on connecting may be cancelled).
        with pytest.raises(sa.exc.OperationalError), engine.connect() as connection:
            connection.execute(sa.text("UPDATE flow_run SET name = name"))
    finally:
        engine.dispose()
    alembic_upgrade()
    assert revision_of(big_postgres) == load_history().head


def test_the_migration_timeout_cancels_and_rolls_back_cleanly(
    big_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWDB_MIGRATION_STATEMENT_TIMEOUT", "0.001")
    with pytest.raises(MigrationFailedError, match="FLOWDB_MIGRATION_STATEMENT_TIMEOUT"):
        alembic_upgrade()
    assert revision_of(big_postgres) == BEFORE_BACKFILL
    monkeypatch.setenv("FLOWDB_MIGRATION_STATEMENT_TIMEOUT", "0")
    alembic_upgrade()
    assert revision_of(big_postgres) == load_history().head


def test_the_server_bounds_its_queries(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowdb.database.target import Database
    from flowdb.server.engine import ServerDatabase

    monkeypatch.setenv("FLOWDB_SERVER_QUERY_TIMEOUT", "2.5")

    async def server_timeout() -> str:
        database = ServerDatabase(Database.from_url(postgres_url))
        try:
            async with database.session() as session:
                return str(await session.scalar(sa.text("SHOW statement_timeout")))
        finally:
            await database.dispose()

    assert asyncio.run(server_timeout()) == "2500ms"
