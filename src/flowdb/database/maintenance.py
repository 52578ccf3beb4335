"""Resetting a database: drop everything flowdb owns, then upgrade to head."""

from __future__ import annotations

import logging

from flowdb.database.alembic_commands import alembic_upgrade, with_alembic_lock
from flowdb.database.engines import create_sync_engine, translated_errors
from flowdb.database.locking import migration_lock
from flowdb.database.status import VERSION_TABLE
from flowdb.database.urls import DatabaseUrl, configured_database_url

logger = logging.getLogger("flowdb.migrations")

#: Enum types flowdb's migrations create on PostgreSQL.
ENUM_TYPES = ("state_type",)


def flowdb_table_names() -> list[str]:
    """Every table flowdb's schema has, children first, plus Alembic's version table."""
    from flowdb.database.orm_models import Base

    return [table.name for table in reversed(Base.metadata.sorted_tables)] + [VERSION_TABLE]


@with_alembic_lock
def reset_database() -> None:
    """Drop every flowdb table (and enum type), then upgrade the empty database to head.

    Runs under the migration lock, so no other command migrates in between; tables
    that do not belong to flowdb are left alone.
    """
    database = configured_database_url()
    # One lock around both steps; the nested commands re-enter it (it is reentrant).
    with translated_errors(database), migration_lock(database, "reset"):
        drop_database()
        alembic_upgrade()


@with_alembic_lock
def drop_database() -> None:
    """Drop every flowdb table (and enum type) and leave the database empty, at base.

    Under the migration lock, like every command that changes the schema.
    """
    database = configured_database_url()
    with translated_errors(database), migration_lock(database, "drop"):
        drop_flowdb_objects(database)
        logger.info("Dropped all flowdb tables", extra={"dropped": True})


def drop_flowdb_objects(database: DatabaseUrl) -> None:
    """Drop flowdb's tables and types in one transaction; missing ones are skipped."""
    import sqlalchemy as sa

    cascade = "" if database.is_sqlite else " CASCADE"
    engine = create_sync_engine(database, application_name="flowdb-reset")
    try:
        with engine.begin() as connection:
            for name in flowdb_table_names():
                connection.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"{cascade}'))
            if not database.is_sqlite:
                for enum in ENUM_TYPES:
                    connection.execute(sa.text(f'DROP TYPE IF EXISTS "{enum}"'))
    finally:
        engine.dispose()
