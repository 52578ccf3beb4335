"""Comparing the live database schema with the ORM models (``flowdb database check``).

Uses Alembic's autogenerate comparison, the same one ``revision --autogenerate`` uses,
so "no differences" here means a new revision would have nothing to write. Tables of
other applications sharing the database are left out (``include_in_comparison``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowdb.database.target import Database


def schema_differences(database: Database) -> list[str]:
    """Each difference between the database and the models, as one readable line."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from flowdb.database.orm_models import Base

    engine = database.engine("flowdb-check")
    try:
        with database.errors(), engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": include_in_comparison},
            )
            differences = [_describe(diff) for diff in compare_metadata(context, Base.metadata)]
            connection.rollback()
            return differences
    finally:
        engine.dispose()


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe(item) for item in diff)
    action, *details = diff
    names = []
    for detail in details:
        name = getattr(detail, "name", None)
        if name is not None:
            table = getattr(detail, "table", None)
            names.append(
                f"{table.name}.{name}" if table is not None and table.name != name else name
            )
        elif isinstance(detail, str):
            names.append(detail)
    # Column diffs carry the table name and then "table.column": keep the precise one.
    names = [n for n in names if not any(other.startswith(f"{n}.") for other in names)]
    return f"{action.replace('_', ' ')}: {', '.join(names) or details}"


def include_in_comparison(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Compare flowdb's own tables only.

    Alembic's version table, flowdb's own tables (``bookkeeping``), and
    tables of other applications that share the database (in the database, but neither
    in the models nor ever created by flowdb's history),
    are neither reported by ``check`` nor dropped by ``revision --autogenerate``.
    """
    from flowdb.database.bookkeeping import TABLES
    from flowdb.database.history import load_history

    if type_ != "table":
        return True
    if name == "alembic_version" or name in TABLES:
        return False
    foreign = reflected and compare_to is None and name not in load_history().all_tables
    return not foreign
