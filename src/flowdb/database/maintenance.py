"""Resetting and dropping a database: remove everything flowdb owns, nothing else.

Both run under the migration lock and refuse another application's database (its own
``alembic_version`` and tables that merely share flowdb's names) unless told to take
it over. Tables that are not flowdb's are left alone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flowdb.database import commands
from flowdb.database.alembic_commands import with_alembic_lock
from flowdb.database.bookkeeping import ALEMBIC_VERSION_TABLE
from flowdb.database.commands import go_ahead
from flowdb.database.planning import Plan
from flowdb.database.target import Database

if TYPE_CHECKING:
    from flowdb.database.commands import Approval
    from flowdb.database.target import Database

logger = logging.getLogger("flowdb.migrations")

#: Enum types flowdb's migrations create where enums are types of their own.
ENUM_TYPES = ("state_type",)


def flowdb_table_names() -> list[str]:
    """Every table flowdb's schema has, children first, plus Alembic's version table."""
    from flowdb.database.orm_models import Base

    return [table.name for table in reversed(Base.metadata.sorted_tables)] + [ALEMBIC_VERSION_TABLE]


@with_alembic_lock
def reset_database(
    database: Database | None = None,
    *,
    take_over: bool = False,
    approve: Approval | None = None,
) -> None:
    """Drop every flowdb table (and enum type), then upgrade the empty database to head.

    One lock around both steps, so no other command migrates in between; the nested
    commands re-enter it.
    """

    database = database or Database.from_settings()
    with database.errors(), database.lock("reset"):
        drop_database(database, take_over=take_over, approve=approve)
        commands.migrate(database, "upgrade", "head")


@with_alembic_lock
def drop_database(
    database: Database | None = None,
    *,
    take_over: bool = False,
    approve: Approval | None = None,
) -> None:
    """Drop every flowdb table (and enum type) and leave the database empty, at base."""

    database = database or Database.from_settings()
    database.dialect.check_migratable()
    with database.errors(), database.lock("drop"):
        status = database.status()
        status.require_known(database, take_over=take_over)
        plan = Plan("downgrade", status.current, None, ())
        go_ahead(database, plan, status, approve, "drop")
        drop_flowdb_objects(database)
        logger.info("Dropped all flowdb tables")


def drop_flowdb_objects(database: Database) -> None:
    """Drop flowdb's tables and types in one transaction; missing ones are skipped."""
    import sqlalchemy as sa

    statements = database.dialect.drop_statements(flowdb_table_names(), ENUM_TYPES)
    engine = database.engine("flowdb-reset")
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()
